//! The Llama decoder (transformers' `LlamaForCausalLM`): embeddings, pre-norm blocks
//! of grouped-query attention with rotary positions and a SwiGLU MLP, final RMSNorm,
//! and a tied or separate LM head. Positions are given per row, so left-padded
//! batches see exactly the positions an unpadded row would.

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};

use crate::core::model::arch::attention::{causal_padding_mask, lowest};
use crate::core::model::arch::linear::{Linear, Matrix};
use crate::core::model::arch::norm::RmsNorm;
use crate::core::model::load::config::{LlamaConfig, RopeScaling, TextFamily};
use crate::core::model::load::weights::Params;
use crate::core::model::ops::{self, attend, attend_rows, split_heads};

/// The language model.
pub struct Llama {
    pub cfg: LlamaConfig,
    /// Token embeddings `(vocab, hidden)`.
    pub embed: Matrix,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    /// The LM head shares the embedding matrix (`tie_word_embeddings`, no stored head).
    pub tied_head: bool,
    inv_freq: Tensor,
}

/// Llama's self-attention: the query, key, value and output projections.
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
}

/// Llama's gated MLP: `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// One transformer block: pre-norm attention and pre-norm MLP, each with a residual.
pub struct Block {
    pub input_norm: RmsNorm,
    pub attn: Attention,
    pub post_norm: RmsNorm,
    pub mlp: Mlp,
}

/// Per-layer keys and values of the tokens seen so far, preallocated to `capacity`
/// slots so decoding appends in place.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `batch` rows and at most `capacity` tokens.
    pub(crate) fn new(
        cfg: &LlamaConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, len: 0 })
    }

    /// Tokens cached so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots for this many tokens in all.
    pub(crate) fn capacity(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Rows (sequences) it has room for.
    pub(crate) fn rows(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(k, _)| k.dim(0).unwrap_or(0))
    }

    /// A cache of `rows` x `capacity` slots holding this one's first `keep_rows` rows and
    /// first `keep` tokens of each.
    pub(crate) fn regrown(
        &self,
        rows: usize,
        capacity: usize,
        keep_rows: usize,
        keep: usize,
    ) -> Result<Self> {
        ensure!(
            keep_rows <= rows.min(self.rows()) && keep <= capacity.min(self.capacity()),
            "cannot keep {keep_rows} rows of {keep} tokens in {rows} x {capacity} slots"
        );
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                let grow = |t: &Tensor| -> Result<Tensor> {
                    let (_, heads, _, d) = t.dims4()?;
                    let out = Tensor::zeros((rows, heads, capacity, d), t.dtype(), t.device())?;
                    if keep_rows > 0 && keep > 0 {
                        let kept = t
                            .narrow(0, 0, keep_rows)?
                            .narrow(2, 0, keep)?
                            .contiguous()?;
                        out.narrow(0, 0, keep_rows)?.slice_set(&kept, 2, 0)?;
                    }
                    Ok(out)
                };
                Ok((grow(k)?, grow(v)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: self.len.min(keep),
        })
    }

    /// Writes the first `n` tokens of row `from` of `source` into row `to` of this cache.
    pub(crate) fn copy_row(
        &mut self,
        to: usize,
        source: &KvCache,
        from: usize,
        n: usize,
    ) -> Result<()> {
        for (mine, theirs) in self.layers.iter_mut().zip(&source.layers) {
            put_row(&mine.0, to, &theirs.0, from, n)?;
            put_row(&mine.1, to, &theirs.1, from, n)?;
        }
        Ok(())
    }

    /// Copies the first `n` tokens of row `from` over row `to`.
    pub(crate) fn move_row(&mut self, from: usize, to: usize, n: usize) -> Result<()> {
        for (k, v) in &self.layers {
            put_row(k, to, k, from, n)?;
            put_row(v, to, v, from, n)?;
        }
        Ok(())
    }

    /// Row `row`'s first `n` tokens as a one-row cache.
    pub(crate) fn row(&self, row: usize, n: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                let take = |t: &Tensor| owned(&t.narrow(0, row, 1)?.narrow(2, 0, n)?);
                Ok((take(k)?, take(v)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, len: n })
    }

    /// Starts every row of this empty cache with the first `n` tokens of `prefix`, a
    /// one-row cache of a prompt start all rows share ([`Llama::prefix_cache`], or the
    /// cache of a conversation's earlier turns).
    pub(crate) fn start_with(&mut self, prefix: &KvCache, n: usize) -> Result<()> {
        ensure!(self.is_empty(), "a shared prefix goes into an empty cache");
        ensure!(
            n <= prefix.len,
            "the prefix cache holds {} tokens, not {n}",
            prefix.len
        );
        for (mine, theirs) in self.layers.iter_mut().zip(&prefix.layers) {
            for (to, from) in [(&mut mine.0, &theirs.0), (&mut mine.1, &theirs.1)] {
                let (rows, heads, _, d) = to.dims4()?;
                let rows_of_prefix = from
                    .narrow(2, 0, n)?
                    .broadcast_as((rows, heads, n, d))?
                    .contiguous()?;
                to.slice_set(&rows_of_prefix, 2, 0)?;
            }
        }
        self.len = n;
        Ok(())
    }
}

/// Writes the first `n` slots of row `from` of `src` `(B, H, T, D)` into row `to` of
/// `dst` (through a copy, so both may be the same tensor).
fn put_row(dst: &Tensor, to: usize, src: &Tensor, from: usize, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let row = owned(&src.narrow(0, from, 1)?.narrow(2, 0, n)?)?;
    dst.narrow(0, to, 1)?.slice_set(&row, 2, 0)?;
    Ok(())
}

/// A contiguous copy of `t` in storage of its own.
fn owned(t: &Tensor) -> candle_core::Result<Tensor> {
    match t.is_contiguous() {
        true => t.copy(),
        false => t.contiguous(),
    }
}

/// What one forward pass sees: where its tokens sit and which keys they may attend to.
pub(crate) struct Step<'a> {
    /// Rotary position of every token, `(B, L)` as u32.
    pub positions: &'a Tensor,
    /// Additive attention mask `(B, 1, L, past + L)`, or `None` when nothing is masked.
    pub mask: Option<&'a Tensor>,
    /// Only the last position's output is wanted (generation): the last layer runs its
    /// queries, attention and MLP on that position alone, while every position's keys
    /// and values still go to the cache.
    pub last_only: bool,
}

/// Where one layer's keys and values go.
enum LayerCache<'a> {
    /// One cache for the whole batch, `past` tokens in (rows aligned by left padding).
    Batch(&'a mut (Tensor, Tensor), usize),
    /// One slot row per sequence, each with its own length (`lens[b]` tokens in row
    /// `b`): a decoding step of sequences that started at different times (continuous
    /// batching). The step's token of row `b` goes to slot `lens[b]`.
    Slots(&'a mut (Tensor, Tensor), &'a [usize]),
}

impl Llama {
    /// Loads `llm.*`.
    pub(crate) fn load(p: &Params, cfg: &LlamaConfig) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed = p.matrix("embed_tokens.weight", (v, h))?;
        let tied_head = cfg.tie_word_embeddings && !p.has("lm_head.weight");
        let lm_head = if tied_head {
            Linear {
                weight: embed.clone(),
                bias: None,
                lora: None,
            }
        } else {
            Linear::load(&p.pp("lm_head"), h, v, false)?
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&p.pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let half = cfg.head_dim / 2;
        let inv_freq = rope_inv_freq(cfg.rope_theta, cfg.head_dim, cfg.rope_scaling);
        Ok(Self {
            inv_freq: Tensor::from_vec(inv_freq, (1, 1, half), embed.device())?,
            norm: RmsNorm::load(&p.pp("norm"), h, cfg.rms_norm_eps)?,
            embed,
            layers,
            lm_head,
            tied_head,
            cfg: cfg.clone(),
        })
    }

    /// Every tensor under its canonical name (`llm.embed_tokens.weight`,
    /// `llm.layers.0.self_attn.q_proj.weight`, ...); a tied head is not listed twice
    /// (call [`Llama::retie`] after replacing the embedding).
    pub(crate) fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        if let Matrix::Dense(embed) = &mut self.embed {
            out.push(("llm.embed_tokens.weight".to_string(), embed));
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("llm.layers.{i}");
            // In the order the layer runs them: input norm, projections, post norm.
            let ([(input, input_norm), (post, post_norm)], linears) = layer.parts_mut();
            out.push((format!("{p}.{input}.weight"), &mut input_norm.weight));
            for (name, lin) in linears {
                lin.tensors_mut(&format!("{p}.{name}"), &mut out);
            }
            out.push((format!("{p}.{post}.weight"), &mut post_norm.weight));
        }
        out.push(("llm.norm.weight".to_string(), &mut self.norm.weight));
        if !self.tied_head {
            self.lm_head.tensors_mut("llm.lm_head", &mut out);
        }
        out
    }

    /// The decoder layers' Linear layers (LoRA targets) under their canonical names
    /// (`llm.layers.0.self_attn.q_proj`, ...).
    pub(crate) fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, lin) in layer.parts_mut().1 {
                out.push((format!("llm.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// Points a tied LM head at the (possibly replaced) embedding matrix again.
    pub(crate) fn retie(&mut self) {
        if self.tied_head {
            self.lm_head.weight = self.embed.clone();
        }
    }

    /// Token embeddings for `ids` `(B, L)`.
    pub(crate) fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.rows(ids)
    }

    /// Runs the decoder on `x` `(B, L, hidden)`; appends to `cache` when given.
    /// Returns the final normalised hidden states `(B, L, hidden)`, or `(B, 1, hidden)`
    /// of the last position with [`Step::last_only`].
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let rotary = self.rotary(step.positions, x.dtype())?;
        let tokens = x.dim(1)?;
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache
                .as_deref_mut()
                .map(|c| LayerCache::Batch(&mut c.layers[i], c.len));
            let last_only = step.last_only && i + 1 == self.layers.len();
            x = layer.forward(&x, &rotary, step.mask, &self.cfg, kv, last_only)?;
        }
        if let Some(cache) = cache {
            cache.len += tokens;
        }
        self.norm.forward(&x)
    }

    /// One decoding step of sequences of different lengths that share `cache` by rows:
    /// `x` `(B, 1, hidden)` holds row `b`'s next token, which sits at position `lens[b]`
    /// and goes to that slot of row `b`. Every product, attention included, runs once for
    /// the batch; a mask hides each row's slots past its own length. Returns the final
    /// normalised hidden states `(B, 1, hidden)`; the caller counts the new tokens.
    pub(crate) fn decode_slots(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        lens: &[usize],
    ) -> Result<Tensor> {
        let device = x.device();
        let rows = lens.len();
        ensure!(
            x.dims3()?.0 == rows && x.dim(1)? == 1 && rows <= cache.rows(),
            "one token for each of {rows} rows (the cache has {})",
            cache.rows()
        );
        let total = lens.iter().max().map_or(0, |m| m + 1);
        ensure!(
            total <= cache.capacity(),
            "KV cache full: {total} tokens > capacity {}",
            cache.capacity()
        );
        let positions: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let positions = Tensor::from_vec(positions, (rows, 1), device)?;
        let rotary = self.rotary(&positions, x.dtype())?;
        let mask = slot_mask(lens, total, self.cfg.sliding_window, x.dtype(), device)?;
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = LayerCache::Slots(&mut cache.layers[i], lens);
            x = layer.forward(&x, &rotary, mask.as_ref(), &self.cfg, Some(kv), false)?;
        }
        self.norm.forward(&x)
    }

    /// The one-row cache of prompt tokens `ids` (positions from 0) that batches sharing
    /// them start from ([`KvCache::start_with`]), so the shared tokens run once.
    pub fn prefix_cache(&self, ids: &[u32]) -> Result<KvCache> {
        let device = self.embed.device();
        let n = ids.len();
        let x = self.embed_ids(&Tensor::new(ids, device)?.unsqueeze(0)?)?;
        let positions = Tensor::arange(0u32, n as u32, device)?.unsqueeze(0)?;
        let mask = causal_padding_mask(
            &[vec![true; n]],
            0,
            n,
            self.cfg.sliding_window,
            x.dtype(),
            device,
        )?;
        let step = Step {
            positions: &positions,
            mask: mask.as_ref(),
            last_only: true,
        };
        let mut cache = KvCache::new(&self.cfg, 1, n, x.dtype(), device)?;
        self.forward(&x, &step, Some(&mut cache))?;
        Ok(cache)
    }

    /// Decoder layer `i` alone (no cache), for training loops that run the layers one
    /// by one (activation checkpointing); `rotary` comes from [`Llama::rotary`].
    pub(crate) fn layer_forward(
        &self,
        i: usize,
        x: &Tensor,
        rotary: &(Tensor, Tensor),
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.layers[i].forward(x, rotary, mask, &self.cfg, None, false)
    }

    /// Next-token logits (f32) for hidden states `(..., hidden)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }

    /// `cos`, `sin` of shape `(B, L, head_dim / 2)` for `positions` `(B, L)`, computed in
    /// f32 as transformers does.
    pub(crate) fn rotary(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.unsqueeze(2)?;
        let freqs = pos.broadcast_mul(&self.inv_freq)?;
        Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
    }
}

/// Module paths inside a block, as the checkpoints name them.
const INPUT_NORM: &str = "input_layernorm";
const POST_NORM: &str = "post_attention_layernorm";
const SELF_ATTN: &str = "self_attn";
const MLP: &str = "mlp";
const Q: &str = "q_proj";
const K: &str = "k_proj";
const V: &str = "v_proj";
const O: &str = "o_proj";
const GATE: &str = "gate_proj";
const UP: &str = "up_proj";
const DOWN: &str = "down_proj";
/// Phi-3's fused projections: q, k and v; gate and up.
const QKV: &str = "qkv_proj";
const GATE_UP: &str = "gate_up_proj";

/// Phi-3's stored layers that mt splits at load, and their parts in row order (module
/// paths within a decoder layer).
pub(crate) const FUSED: [(&str, &[&str]); 2] = [
    (
        "self_attn.qkv_proj",
        &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    ),
    ("mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"]),
];

/// The stored fused layer a split Phi-3 projection belongs to: for
/// `PREFIX.self_attn.k_proj`, `(PREFIX.self_attn.qkv_proj, 1, 3)` (its place among the
/// fused layer's parts, and their number).
pub(crate) fn fused_layer(path: &str) -> Option<(String, usize, usize)> {
    FUSED.iter().find_map(|(fused, parts)| {
        let i = parts.iter().position(|p| {
            path.strip_suffix(p)
                .is_some_and(|prefix| prefix.ends_with('.'))
        })?;
        let prefix = &path[..path.len() - parts[i].len()];
        Some((format!("{prefix}{fused}"), i, parts.len()))
    })
}

impl Attention {
    fn load(p: &Params, cfg: &LlamaConfig) -> Result<Self> {
        let (h, d, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let (qd, kvd) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let linear = |name: &str, i, o| Linear::load(&p.pp(name), i, o, bias);
        if cfg.family == TextFamily::Qwen2 {
            // Biases on q, k and v, none on o (attention_bias is not in its config).
            let biased = |name: &str, i, o| Linear::load(&p.pp(name), i, o, true);
            return Ok(Self {
                q: biased(Q, h, qd)?,
                k: biased(K, h, kvd)?,
                v: biased(V, h, kvd)?,
                o: Linear::load(&p.pp(O), qd, h, false)?,
            });
        }
        if cfg.family == TextFamily::Phi3 {
            let [q, k, v] = Linear::load_fused(&p.pp(QKV), h, [qd, kvd, kvd])?;
            let o = linear(O, qd, h)?;
            return Ok(Self { q, k, v, o });
        }
        Ok(Self {
            q: linear(Q, h, qd)?,
            k: linear(K, h, kvd)?,
            v: linear(V, h, kvd)?,
            o: linear(O, qd, h)?,
        })
    }

    /// The projections by their module paths inside the attention.
    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 4] {
        [
            (Q, &mut self.q),
            (K, &mut self.k),
            (V, &mut self.v),
            (O, &mut self.o),
        ]
    }

    /// Attention over normalised `y` `(B, L, hidden)` and the rotary tables of its
    /// positions, appending to `cache`; with `last_only`, only the last position's
    /// output `(B, 1, hidden)`.
    fn forward(
        &self,
        y: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cfg: &LlamaConfig,
        cache: Option<LayerCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, l, _) = y.dims3()?;
        let d = cfg.head_dim;
        let out_rows = |t: &Tensor| last_rows(t, l, last_only);
        let (q, k, v) = if last_only {
            let [k, v] = Linear::forward_each([&self.k, &self.v], y)?;
            (self.q.forward(&out_rows(y)?)?, k, v)
        } else {
            let [q, k, v] = Linear::forward_each([&self.q, &self.k, &self.v], y)?;
            (q, k, v)
        };
        let (q_cos, q_sin) = (out_rows(cos)?, out_rows(sin)?);
        let q = split_heads(&q, cfg.num_attention_heads, Some((&q_cos, &q_sin)))?;
        let k = split_heads(&k, cfg.num_key_value_heads, Some((cos, sin)))?;
        let v = split_heads(&v, cfg.num_key_value_heads, None)?;
        let scale = (d as f64).powf(-0.5);
        let a = match cache {
            Some(LayerCache::Slots((ck, cv), lens)) => {
                for (r, &len) in lens.iter().enumerate() {
                    ck.narrow(0, r, 1)?.slice_set(&k.narrow(0, r, 1)?, 2, len)?;
                    cv.narrow(0, r, 1)?.slice_set(&v.narrow(0, r, 1)?, 2, len)?;
                }
                let total = lens.iter().max().map_or(0, |m| m + 1);
                let (k, v) = (
                    ck.narrow(0, 0, b)?.narrow(2, 0, total)?,
                    cv.narrow(0, 0, b)?.narrow(2, 0, total)?,
                );
                match cfg.sliding_window {
                    // Each row's own keys: the mask hides nothing else.
                    None => {
                        let keys: Vec<usize> = lens.iter().map(|l| l + 1).collect();
                        attend_rows(&q, &k, &v, &keys, mask, scale)?
                    }
                    Some(_) => attend(&q, &k, &v, mask, scale, true)?,
                }
            }
            batch => {
                let (k, v) = match batch {
                    Some(LayerCache::Batch(kv, past)) => append(kv, past, &k, &v)?,
                    _ => (k, v),
                };
                let mask = last_mask(mask, l, last_only)?;
                attend(&q, &k, &v, mask.as_ref(), scale, true)?
            }
        };
        let a = a.transpose(1, 2)?.contiguous()?.reshape((
            b,
            q.dim(2)?,
            cfg.num_attention_heads * d,
        ))?;
        self.o.forward(&a)
    }
}

impl Mlp {
    fn load(p: &Params, cfg: &LlamaConfig) -> Result<Self> {
        let (h, m, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let linear = |name: &str, i, o| Linear::load(&p.pp(name), i, o, bias);
        if cfg.family == TextFamily::Phi3 {
            let [gate, up] = Linear::load_fused(&p.pp(GATE_UP), h, [m, m])?;
            let down = linear(DOWN, m, h)?;
            return Ok(Self { gate, up, down });
        }
        Ok(Self {
            gate: linear(GATE, h, m)?,
            up: linear(UP, h, m)?,
            down: linear(DOWN, m, h)?,
        })
    }

    /// The projections by their module paths inside the MLP.
    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 3] {
        [
            (GATE, &mut self.gate),
            (UP, &mut self.up),
            (DOWN, &mut self.down),
        ]
    }

    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let [gate, up] = Linear::forward_each([&self.gate, &self.up], y)?;
        self.down.forward(&ops::silu_mul(&gate, &up)?)
    }
}

impl Block {
    fn load(p: &Params, cfg: &LlamaConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_norm: RmsNorm::load(&p.pp(INPUT_NORM), h, eps)?,
            attn: Attention::load(&p.pp(SELF_ATTN), cfg)?,
            post_norm: RmsNorm::load(&p.pp(POST_NORM), h, eps)?,
            mlp: Mlp::load(&p.pp(MLP), cfg)?,
        })
    }

    /// The norms and the seven projections, by their module paths inside the block.
    #[allow(clippy::type_complexity)]
    fn parts_mut(
        &mut self,
    ) -> (
        [(&'static str, &mut RmsNorm); 2],
        Vec<(String, &mut Linear)>,
    ) {
        let attn = self.attn.linears_mut().into_iter();
        let mlp = self.mlp.linears_mut().into_iter();
        let linears = attn
            .map(|(name, l)| (format!("{SELF_ATTN}.{name}"), l))
            .chain(mlp.map(|(name, l)| (format!("{MLP}.{name}"), l)))
            .collect();
        (
            [
                (INPUT_NORM, &mut self.input_norm),
                (POST_NORM, &mut self.post_norm),
            ],
            linears,
        )
    }

    /// The block on `x` `(B, L, hidden)`, the rotary tables of its positions, appending
    /// to `cache`; with `last_only`, only the last position's output `(B, 1, hidden)`.
    fn forward(
        &self,
        x: &Tensor,
        rotary: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cfg: &LlamaConfig,
        cache: Option<LayerCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (_, l, h) = x.dims3()?;
        let y = self.input_norm.forward(x)?;
        let a = self.attn.forward(&y, rotary, mask, cfg, cache, last_only)?;
        let x = (last_rows(x, l, last_only)? + a)?;
        let out = (&x + self.mlp.forward(&self.post_norm.forward(&x)?)?)?;
        debug_assert_eq!(out.dim(2)?, h);
        Ok(out)
    }
}

/// Writes a step's keys and values `(B, Hkv, L, D)` into a cache's slots from `past`;
/// returns the cached keys and values so far (views into the cache).
fn append(
    (ck, cv): &mut (Tensor, Tensor),
    past: usize,
    k: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let l = k.dim(2)?;
    ensure!(
        past + l <= ck.dim(2)?,
        "KV cache full: {past} + {l} tokens > capacity {}",
        ck.dim(2)?
    );
    ck.slice_set(k, 2, past)?;
    cv.slice_set(v, 2, past)?;
    Ok((ck.narrow(2, 0, past + l)?, cv.narrow(2, 0, past + l)?))
}

/// The additive mask `(B, 1, 1, total)` of a slotted decoding step: row `b` sees its
/// slots up to `lens[b]`, within the sliding window; `None` when every row sees every slot.
fn slot_mask(
    lens: &[usize],
    total: usize,
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let windowed = window.is_some_and(|w| total > w);
    if !windowed && lens.iter().all(|&l| l + 1 == total) {
        return Ok(None);
    }
    let low = lowest(dtype);
    let data: Vec<f32> = lens
        .iter()
        .flat_map(|&len| {
            (0..total).map(move |j| {
                let seen = j <= len && window.is_none_or(|w| j + w > len);
                if seen { 0.0 } else { low }
            })
        })
        .collect();
    let mask = Tensor::from_vec(data, (lens.len(), 1, 1, total), device)?;
    Ok(Some(mask.to_dtype(dtype)?))
}

/// The mask rows of the queries that run: the last one with `last_only`.
fn last_mask(mask: Option<&Tensor>, l: usize, last_only: bool) -> Result<Option<Tensor>> {
    Ok(match mask {
        Some(m) if last_only => Some(m.narrow(2, l - 1, 1)?),
        m => m.cloned(),
    })
}

/// The rows of `t` `(B, L, ...)` whose outputs are computed: the last one with
/// `last_only`, else all.
fn last_rows(t: &Tensor, l: usize, last_only: bool) -> Result<Tensor> {
    Ok(if last_only {
        t.narrow(1, l - 1, 1)?
    } else {
        t.clone()
    })
}
/// RoPE's inverse frequencies, in f32 and in the order of operations of transformers'
/// `_compute_default_rope_parameters` / `_compute_linear_scaling_rope_parameters` /
/// `_compute_llama3_parameters`, so the angles match theirs bit for bit.
pub(crate) fn rope_inv_freq(theta: f64, head_dim: usize, scaling: RopeScaling) -> Vec<f32> {
    let base =
        (0..head_dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32));
    match scaling {
        RopeScaling::Default => base.collect(),
        RopeScaling::Linear { factor } => base.map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: context,
        } => {
            let factor = factor as f32;
            let low_wavelen = (context as f64 / low_freq_factor) as f32;
            let high_wavelen = (context as f64 / high_freq_factor) as f32;
            let span = (high_freq_factor - low_freq_factor) as f32;
            base.map(|f| {
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                let scaled = if wavelen > low_wavelen { f / factor } else { f };
                if wavelen < high_wavelen || wavelen > low_wavelen {
                    return scaled;
                }
                let smooth = (context as f32 / wavelen - low_freq_factor as f32) / span;
                (1.0 - smooth) * scaled / factor + smooth * scaled
            })
            .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.1's scaled frequencies (head_dim 128, theta 500000, factor 8, low 1, high
    /// 4, context 8192) as transformers 5.24's `_compute_llama3_parameters` gives them
    /// (f32 bits): indices 0-28 kept, 29-34 blended, 35-63 divided by 8.
    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let inv = rope_inv_freq(500000.0, 128, scaling);
        assert_eq!(inv.len(), 64);
        let theirs = [
            (0, 1.0),
            (20, 0.016560440883040428),
            (27, 0.003942275885492563),
            (28, 0.0032114461064338684),
            (29, 0.0021665706299245358),
            (30, 0.0013718936825171113),
            (31, 0.0008567514596506953),
            (32, 0.0005248460220173001),
            (40, 3.428102354519069e-05),
            (50, 4.411534519022098e-06),
            (63, 3.068925877869333e-07),
        ];
        for (i, want) in theirs {
            assert_eq!(inv[i], want as f32, "inv_freq[{i}]");
        }
        let plain = rope_inv_freq(500000.0, 128, RopeScaling::Default);
        assert_eq!(inv[..29], plain[..29]);
        let linear = rope_inv_freq(10000.0, 128, RopeScaling::Linear { factor: 4.0 });
        assert_eq!(linear[0], 0.25);
    }
}
