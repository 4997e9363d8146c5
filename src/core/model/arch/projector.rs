//! The multimodal projector: `linear`, or `mlp{N}x_gelu` (Linear, then (GELU, Linear)
//! x (N - 1), with exact erf GELU as `nn.GELU()`).

use anyhow::Result;
use candle_core::Tensor;

use crate::core::model::arch::linear::Linear;
use crate::core::model::load::config::ProjectorKind;
use crate::core::model::load::weights::Params;

/// Maps vision features to the language model's width.
pub struct Projector {
    pub layers: Vec<Linear>,
    /// A bare `nn.Linear` (`linear`), not an `nn.Sequential`.
    bare: bool,
}

impl Projector {
    /// Loads `projector.{0,2,4,...}` (the `nn.Sequential` indices LLaVA saves).
    pub(crate) fn load(
        p: &Params,
        kind: ProjectorKind,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let depth = match kind {
            // LLaVA's `linear` projector is a bare nn.Linear: `mm_projector.weight`.
            ProjectorKind::Linear => {
                return Ok(Self {
                    layers: vec![Linear::load(p, in_dim, out_dim, bias)?],
                    bare: true,
                });
            }
            ProjectorKind::MlpGelu { depth } => depth,
        };
        let layers = (0..depth)
            .map(|i| {
                let from = if i == 0 { in_dim } else { out_dim };
                Linear::load(&p.pp(2 * i), from, out_dim, bias)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            bare: false,
        })
    }

    /// Every tensor under its canonical name (`projector.0.weight`, ...; a bare
    /// `linear` projector is `projector.weight`).
    pub(crate) fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        if self.bare {
            self.layers[0].tensors_mut("projector", &mut out);
            return out;
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.tensors_mut(&format!("projector.{}", 2 * i), &mut out);
        }
        out
    }

    /// Projects `(..., in)` to `(..., out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.layers[0].forward(x)?;
        for layer in &self.layers[1..] {
            x = layer.forward(&x.gelu_erf()?)?;
        }
        Ok(x)
    }
}
