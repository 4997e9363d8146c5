//! LoRA adapters (PEFT semantics): `y = W x + (alpha / r) * B (A x)`, with A of shape
//! `(r, in)` and B of shape `(out, r)`. Any [`super::linear::Linear`] can carry one.

use anyhow::{Result, ensure};
use candle_core::Tensor;

/// One low-rank update of a Linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `lora_A.weight`, `(r, in)`.
    pub a: Tensor,
    /// `lora_B.weight`, `(out, r)`.
    pub b: Tensor,
    /// `alpha / r` (or `alpha / sqrt(r)` for rsLoRA).
    pub scale: f64,
}

impl LoraAdapter {
    /// Builds an adapter, checking that A and B fit a Linear of `in_dim -> out_dim`.
    pub fn new(a: Tensor, b: Tensor, scale: f64, in_dim: usize, out_dim: usize) -> Result<Self> {
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        ensure!(
            a_in == in_dim && b_out == out_dim && b_r == r,
            "LoRA A {:?} / B {:?} do not fit a {in_dim} -> {out_dim} layer",
            a.dims(),
            b.dims()
        );
        Ok(Self { a, b, scale })
    }

    /// The adapter's contribution for `x` of shape `(n, in)`.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let low = x.matmul(&self.a.t()?)?;
        Ok((low.matmul(&self.b.t()?)? * self.scale)?)
    }
}
