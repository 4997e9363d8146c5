//! LoRA adapters (PEFT semantics): `y = W x + (alpha / r) * B (A dropout(x))`, with A of
//! shape `(r, in)` and B of shape `(out, r)`. Any [`crate::core::model::arch::linear::Linear`] can carry one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, ensure};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::core::hash::keyed;

/// One low-rank update of a Linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `lora_A.weight`, `(r, in)`.
    pub a: Tensor,
    /// `lora_B.weight`, `(out, r)`.
    pub b: Tensor,
    /// `alpha / r` (or `alpha / sqrt(r)` for rsLoRA).
    pub scale: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: Option<LoraDropout>,
}

/// PEFT's `lora_dropout`, with masks that are a pure function of a training key (set
/// per micro-batch by the trainer), the adapter and the element: a recomputed forward
/// pass (activation checkpointing) and a resumed run see the same masks.
#[derive(Debug, Clone)]
pub struct LoraDropout {
    /// Probability of dropping an input element.
    pub p: f64,
    /// This adapter's number (distinct masks per layer).
    pub index: u64,
    /// The current key; 0 means not training (no dropout).
    pub key: Arc<AtomicU64>,
}

impl LoraAdapter {
    /// Builds an adapter, checking that A and B fit a Linear of `in_dim -> out_dim`.
    pub(crate) fn new(
        a: Tensor,
        b: Tensor,
        scale: f64,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Self> {
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        ensure!(
            a_in == in_dim && b_out == out_dim && b_r == r,
            "LoRA A {:?} / B {:?} do not fit a {in_dim} -> {out_dim} layer",
            a.dims(),
            b.dims()
        );
        Ok(Self {
            a,
            b,
            scale,
            dropout: None,
        })
    }

    /// The adapter's contribution for `x` of shape `(n, in)`. The scale multiplies the
    /// `(n, r)` product rather than PEFT's `(n, out)` one: the same value (bit for bit
    /// with a power-of-two `alpha / r`, such as the presets' 2), and one full-width
    /// tensor less that candle's graph keeps per adapter until the backward pass.
    pub(crate) fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.dropout {
            Some(d) => d.apply(x)?,
            None => x.clone(),
        };
        let low = (x.matmul(&self.a.t()?)? * self.scale)?;
        Ok(low.matmul(&self.b.t()?)?)
    }
}

impl LoraDropout {
    /// `x * mask / (1 - p)` with a keep-mask drawn from (key, index, element); `x` as
    /// is when the key is 0 or `p` is 0. On a GPU the mask comes from the device's
    /// generator seeded with (key, index), so it never leaves the device.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let key = self.key.load(Ordering::Relaxed);
        if key == 0 || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = 1.0 / (1.0 - self.p);
        let base = keyed(key, self.index, 0);
        if x.device().is_cpu() {
            let mask = KeyedMask {
                base,
                threshold: (self.p * (1u64 << 53) as f64) as u64,
                scale: scale as f32,
            };
            if x.dtype() == DType::F32 {
                return Ok(x.contiguous()?.apply_op1(mask)?);
            }
            let factors = mask.times(&vec![1f32; x.elem_count()]);
            let factors = Tensor::from_vec(factors, x.shape(), x.device())?;
            return Ok((x * factors.to_dtype(x.dtype())?)?);
        }
        x.device().set_seed(base)?;
        let uniform = x.to_dtype(DType::F32)?.rand_like(0.0, 1.0)?;
        Ok((x * (uniform.ge(self.p)?.to_dtype(x.dtype())? * scale)?)?)
    }
}

/// The CPU dropout mask: element `i` is kept (times `scale`) when the top 53 bits of
/// `keyed(base, i, 1)` reach `threshold`. As a custom op on f32 it draws the mask again
/// in the backward pass: candle's `x * mask` would keep the mask until then and also
/// compute (and keep) a gradient for it.
struct KeyedMask {
    base: u64,
    threshold: u64,
    scale: f32,
}

impl KeyedMask {
    /// `xs[i] * mask[i]` for the elements of a contiguous tensor.
    fn times(&self, xs: &[f32]) -> Vec<f32> {
        const CHUNK: usize = 1 << 14;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (out, xs))| {
                for (j, (o, x)) in out.iter_mut().zip(xs).enumerate() {
                    let i = (c * CHUNK + j) as u64;
                    let keep = keyed(self.base, i, 1) >> 11 >= self.threshold;
                    *o = x * if keep { self.scale } else { 0.0 };
                }
            });
        out
    }
}

impl CustomOp1 for KeyedMask {
    fn name(&self) -> &'static str {
        "keyed-dropout"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("keyed dropout on a non-contiguous tensor");
        };
        let out = self.times(&x.as_slice::<f32>()?[start..end]);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let out = self.times(&grad.flatten_all()?.to_vec1::<f32>()?);
        Ok(Some(Tensor::from_vec(out, grad.shape(), grad.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn dropout_masks_are_keyed_scaled_and_off_when_not_training() {
        let dev = Device::Cpu;
        let key = Arc::new(AtomicU64::new(0));
        let d = LoraDropout {
            p: 0.25,
            index: 3,
            key: key.clone(),
        };
        let x = Tensor::ones((64, 64), DType::F32, &dev).unwrap();
        let mask = || -> Vec<f32> {
            d.apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let off = d.apply(&x).unwrap();
        assert_eq!(off.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4096.0);
        key.store(7, Ordering::Relaxed);
        let (a, b) = (mask(), mask());
        assert_eq!(a, b, "the same key gives the same mask");
        let kept = a.iter().filter(|v| **v > 0.0).count() as f64 / a.len() as f64;
        assert!((kept - 0.75).abs() < 0.03, "{kept}");
        assert!(
            a.iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
        key.store(8, Ordering::Relaxed);
        let c = mask();
        assert_ne!(a, c, "another key, another mask");
    }

    /// The op's gradient is the upstream gradient times the same mask, as candle's
    /// `x * mask` gives it.
    #[test]
    fn dropout_gradient_is_the_masked_upstream() {
        let dev = Device::Cpu;
        let d = LoraDropout {
            p: 0.1,
            index: 2,
            key: Arc::new(AtomicU64::new(11)),
        };
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1., (70, 1000), &dev).unwrap())
            .unwrap();
        let upstream = Tensor::randn(0f32, 1., (70, 1000), &dev).unwrap();
        let y = d.apply(x.as_tensor()).unwrap();
        let store = (&y * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mask = d
            .apply(&Tensor::ones((70, 1000), DType::F32, &dev).unwrap())
            .unwrap();
        let want = (&upstream * &mask).unwrap();
        let got = store.get(x.as_tensor()).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let forward = (x.as_tensor() * &mask).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            forward.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
