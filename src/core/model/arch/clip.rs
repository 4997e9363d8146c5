//! The CLIP ViT vision tower (transformers' `CLIPVisionModel`), run up to the hidden
//! state LLaVA selects. Hidden state 0 is the embeddings after `pre_layrnorm`, state
//! `i` the output of layer `i`, as in transformers' `hidden_states` list.

use anyhow::Result;
use candle_core::{D, Tensor};

use crate::core::model::arch::linear::Linear;
use crate::core::model::arch::norm::LayerNorm;
use crate::core::model::load::config::{ClipActivation, ClipConfig};
use crate::core::model::load::weights::Params;
use crate::core::model::ops::{self, attend, split_heads};

/// CLIP vision transformer, truncated after the layers LLaVA needs.
pub struct ClipVision {
    cfg: ClipConfig,
    patch: Tensor,
    class: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    layers: Vec<Block>,
}

/// CLIP's self-attention: all heads full width, every projection with a bias.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

/// CLIP's MLP: `fc2(act(fc1(x)))`.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

/// One encoder layer: pre-norm attention and pre-norm MLP, each with a residual.
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl ClipVision {
    /// Loads the embeddings and the first `layers` encoder layers.
    pub(crate) fn load(p: &Params, cfg: &ClipConfig, layers: usize) -> Result<Self> {
        let (h, ps, grid) = (cfg.hidden_size, cfg.patch_size, cfg.grid());
        let e = p.pp("embeddings");
        let enc = p.pp("encoder.layers");
        let layers = (0..layers)
            .map(|i| Block::load(&enc.pp(i), cfg))
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
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
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

impl Attention {
    fn load(p: &Params, h: usize) -> Result<Self> {
        let linear = |name: &str| Linear::load(&p.pp(name), h, h, true);
        Ok(Self {
            q: linear("q_proj")?,
            k: linear("k_proj")?,
            v: linear("v_proj")?,
            out: linear("out_proj")?,
        })
    }

    fn forward(&self, y: &Tensor, heads: usize) -> Result<Tensor> {
        let (n, t, h) = y.dims3()?;
        let [q, k, v] = Linear::forward_each([&self.q, &self.k, &self.v], y)?;
        let (q, k, v) = (
            split_heads(&q, heads, None)?,
            split_heads(&k, heads, None)?,
            split_heads(&v, heads, None)?,
        );
        let d = h / heads;
        let a = attend(&q, &k, &v, None, (d as f64).powf(-0.5), false)?;
        self.out
            .forward(&a.transpose(1, 2)?.contiguous()?.reshape((n, t, h))?)
    }
}

impl Mlp {
    fn load(p: &Params, h: usize, m: usize) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(&p.pp("fc1"), h, m, true)?,
            fc2: Linear::load(&p.pp("fc2"), m, h, true)?,
        })
    }

    fn forward(&self, y: &Tensor, act: ClipActivation) -> Result<Tensor> {
        let y = self.fc1.forward(y)?;
        let y = match act {
            ClipActivation::QuickGelu => ops::quick_gelu(&y)?,
            ClipActivation::Gelu => y.gelu_erf()?,
        };
        self.fc2.forward(&y)
    }
}

impl Block {
    fn load(p: &Params, cfg: &ClipConfig) -> Result<Self> {
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(Self {
            norm1: LayerNorm::load(&p.pp("layer_norm1"), h, eps)?,
            attn: Attention::load(&p.pp("self_attn"), h)?,
            norm2: LayerNorm::load(&p.pp("layer_norm2"), h, eps)?,
            mlp: Mlp::load(&p.pp("mlp"), h, m)?,
        })
    }

    fn forward(&self, x: &Tensor, cfg: &ClipConfig) -> Result<Tensor> {
        let a = self
            .attn
            .forward(&self.norm1.forward(x)?, cfg.num_attention_heads)?;
        let x = (x + a)?;
        let y = self.mlp.forward(&self.norm2.forward(&x)?, cfg.hidden_act)?;
        Ok((x + y)?)
    }
}

/// Drops the CLS token (`patch` features) or keeps it.
pub(crate) fn select_tokens(hidden: &Tensor, keep_cls: bool) -> Result<Tensor> {
    if keep_cls {
        Ok(hidden.clone())
    } else {
        let tokens = hidden.dim(D::Minus2)?;
        Ok(hidden.narrow(1, 1, tokens - 1)?)
    }
}
