//! LayerNorm (CLIP) and RMSNorm (Llama). When no gradient can flow through a call
//! (neither input nor weight is tracked) candle's fused kernels run; otherwise the
//! composite, differentiable form does (candle's fused norms record no backward).

use anyhow::Result;
use candle_core::Tensor;

use crate::core::model::load::weights::Params;
use crate::core::model::ops;

/// `LayerNorm(x) = (x - mean) / sqrt(var + eps) * weight + bias`, statistics in f32.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of width `dim`.
    pub(crate) fn load(p: &Params, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.get("weight", &[dim])?,
            bias: p.get("bias", &[dim])?,
            eps,
        })
    }

    /// Normalises over the last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Llama's RMSNorm: `x / sqrt(mean(x^2) + eps) * weight`, statistics in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `weight` of width `dim`.
    pub(crate) fn load(p: &Params, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.get("weight", &[dim])?,
            eps,
        })
    }

    /// Normalises over the last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::ops::softmax_last;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_composite_paths_agree_and_the_composite_has_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.5]], &dev).unwrap();
        let w = Var::new(&[1.0f32, 0.5, 2.0, -1.0], &dev).unwrap();
        let fused = RmsNorm {
            weight: w.as_tensor().detach(),
            eps: 1e-5,
        }
        .forward(&x)
        .unwrap();
        let norm = RmsNorm {
            weight: w.as_tensor().clone(),
            eps: 1e-5,
        };
        let slow = norm.forward(&x).unwrap();
        let diff = crate::core::model::max_abs_diff(&fused, &slow);
        assert!(diff < 1e-6, "{diff}");
        let grads = slow.sum_all().unwrap().backward().unwrap();
        let g = grads.get(w.as_tensor()).expect("weight gradient");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );

        let p = softmax_last(&x)
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(p.iter().all(|s| (s - 1.0).abs() < 1e-6));
    }
}
