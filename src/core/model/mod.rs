//! LLaVA-Med++ in candle, in four rooms:
//! - [`arch`]: the math (CLIP + S2, projector, Llama, LLaVA, attention, norms, Linear
//!   with LoRA), written for inference and training alike;
//! - [`load`]: configs, weights and checkpoint folders;
//! - [`engine`]: preprocessing, prompts, batched generation, the captioner;
//! - `ops` and `kernels`: one function per op with more than one implementation,
//!   and the hand-written CPU kernels behind them (the inference switch is
//!   `kernels::inference`).

pub mod arch;
pub mod engine;
pub(crate) mod gguf;
pub(crate) mod kernels;
pub mod load;
pub(crate) mod ops;
pub mod quant;

/// Largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}
