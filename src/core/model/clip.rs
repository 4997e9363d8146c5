//! The CLIP ViT vision tower (transformers' `CLIPVisionModel`), run up to the hidden
//! state LLaVA selects. Hidden state 0 is the embeddings after `pre_layrnorm`, state
//! `i` the output of layer `i`, as in transformers' `hidden_states` list.

use anyhow::Result;
use candle_core::{D, Tensor};

use super::config::{ClipActivation, ClipConfig};
use super::linear::Linear;
use super::norm::LayerNorm;
use super::ops::{self, attend, split_heads};
use super::weights::Params;

/// CLIP vision transformer, truncated after the layers LLaVA needs.
pub struct ClipVision {
    cfg: ClipConfig,
    patch: Tensor,
    class: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    layers: Vec<ClipLayer>,
}

struct ClipLayer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl ClipVision {
    /// Loads the embeddings and the first `layers` encoder layers.
    pub fn load(p: &Params, cfg: &ClipConfig, layers: usize) -> Result<Self> {
        let (h, ps, grid) = (cfg.hidden_size, cfg.patch_size, cfg.grid());
        let e = p.pp("embeddings");
        let enc = p.pp("encoder.layers");
        let layers = (0..layers)
            .map(|i| ClipLayer::load(&enc.pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch: e
                .get("patch_embedding.weight", &[h, cfg.num_channels, ps, ps])?
                .reshape((h, cfg.num_channels * ps * ps))?,
            class: e.get("class_embedding", &[h])?,
            positions: e.get("position_embedding.weight", &[grid * grid + 1, h])?,
            pre_norm: LayerNorm::load(&p.pp("pre_layrnorm"), h, cfg.layer_norm_eps)?,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// Hidden state after the loaded layers for `pixels` `(N, 3, S, S)`:
    /// `(N, 1 + grid^2, hidden)`, CLS first.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(pixels)?;
        for layer in &self.layers {
            x = layer.forward(&x, &self.cfg)?;
        }
        Ok(x)
    }

    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, c, s, _) = pixels.dims4()?;
        let (ps, h) = (self.cfg.patch_size, self.cfg.hidden_size);
        let g = s / ps;
        // The stride-p convolution as one matmul over unfolded patches.
        let patches = pixels
            .to_dtype(self.patch.dtype())?
            .reshape((n, c, g, ps, g, ps))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * g * g, c * ps * ps))?;
        let tokens = patches.matmul(&self.patch.t()?)?.reshape((n, g * g, h))?;
        let class = self.class.reshape((1, 1, h))?.broadcast_as((n, 1, h))?;
        let x = Tensor::cat(&[&class, &tokens], 1)?;
        let x = x.broadcast_add(&self.positions.unsqueeze(0)?)?;
        self.pre_norm.forward(&x)
    }
}

impl ClipLayer {
    fn load(p: &Params, cfg: &ClipConfig) -> Result<Self> {
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let a = p.pp("self_attn");
        Ok(Self {
            norm1: LayerNorm::load(&p.pp("layer_norm1"), h, eps)?,
            q: Linear::load(&a.pp("q_proj"), h, h, true)?,
            k: Linear::load(&a.pp("k_proj"), h, h, true)?,
            v: Linear::load(&a.pp("v_proj"), h, h, true)?,
            out: Linear::load(&a.pp("out_proj"), h, h, true)?,
            norm2: LayerNorm::load(&p.pp("layer_norm2"), h, eps)?,
            fc1: Linear::load(&p.pp("mlp.fc1"), h, m, true)?,
            fc2: Linear::load(&p.pp("mlp.fc2"), m, h, true)?,
        })
    }

    fn forward(&self, x: &Tensor, cfg: &ClipConfig) -> Result<Tensor> {
        let (n, t, h) = x.dims3()?;
        let heads = cfg.num_attention_heads;
        let d = h / heads;
        let y = self.norm1.forward(x)?;
        let [q, k, v] = Linear::forward_each([&self.q, &self.k, &self.v], &y)?;
        let (q, k, v) = (
            split_heads(&q, heads, None)?,
            split_heads(&k, heads, None)?,
            split_heads(&v, heads, None)?,
        );
        let a = attend(&q, &k, &v, None, (d as f64).powf(-0.5), false)?;
        let a = a.transpose(1, 2)?.contiguous()?.reshape((n, t, h))?;
        let x = (x + self.out.forward(&a)?)?;
        let y = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let y = match cfg.hidden_act {
            ClipActivation::QuickGelu => ops::quick_gelu(&y)?,
            ClipActivation::Gelu => y.gelu_erf()?,
        };
        Ok((x + self.fc2.forward(&y)?)?)
    }
}

/// Drops the CLS token (`patch` features) or keeps it.
pub fn select_tokens(hidden: &Tensor, keep_cls: bool) -> Result<Tensor> {
    if keep_cls {
        Ok(hidden.clone())
    } else {
        let tokens = hidden.dim(D::Minus2)?;
        Ok(hidden.narrow(1, 1, tokens - 1)?)
    }
}
