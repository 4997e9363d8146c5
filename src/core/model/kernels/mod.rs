//! Hand-written f32 CPU kernels, called only through [`super::ops`]:
//! - [`attention`]: fused attention with its own backward pass (inference and training);
//! - [`fused`]: `silu(gate) * up`, `quick_gelu`, and Linear products on a few rows
//!   ([`small_m_matmul`]) or through gemm called directly;
//! - [`rowwise`]: RMSNorm, and the split into attention heads with the rotary embedding.
//!
//! **The inference switch.** Every kernel but the attention computes candle's math in
//! another summation order, so it runs only inside [`inference`], a scope that sets a
//! thread-local flag: training never enters it, and its passes with and without a
//! gradient (activation checkpointing) keep identical bits. Captioning and evaluation
//! wrap their forward passes in it.

pub(crate) mod attention;
pub(crate) mod fused;
pub(crate) mod rowwise;
pub(crate) mod small_m_matmul;

pub(crate) use fused::inference;
