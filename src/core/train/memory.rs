//! The memory plan of a training run (`--plan`): what one device holds for a stage, LoRA
//! or full, world size, batch, length, checkpointing, dtype, `--zero` and `--offload`,
//! from the config alone (no weight is read). Every run prints it first and refuses one
//! that does not fit before loading weights.
//!
//! The parts follow what the trainer keeps: weights (quantized ones at their block
//! size), the gradients of the trained tensors as the backward pass leaves them and the
//! f32 sums that accumulation, several ranks or ZeRO keep, f32 master weights when the
//! parameters are not f32, two f32 AdamW moments, activations, and a workspace (the
//! runtime and the largest transient). Activations are counted tensor by tensor from the
//! model code (`activation_bytes`), then scaled by two factors measured on the CPU with
//! the ~100M bench model (`bench/train_memory.sh`).

use serde::Serialize;

use super::params::Tune;
use super::zero::ZeroStage;
use crate::core::display::binary_bytes;
use crate::core::model::load::config::{LlavaConfig, ProjectorKind, TextFamily};
use crate::core::model::quant::QuantKind;

/// What shapes a run's memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    pub tune: Tune,
    /// Bytes of one parameter (4: f32, 2: bf16).
    pub dtype_bytes: u64,
    /// Data-parallel ranks.
    pub world: usize,
    pub zero: ZeroStage,
    /// Master weights and moments in host memory.
    pub offload: bool,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Tokens per sample (the longest a batch can be).
    pub max_len: usize,
    pub grad_accum: usize,
    pub checkpointing: bool,
    /// On a GPU (candle's kernels) rather than the CPU (mt's fused attention for f32).
    pub gpu: bool,
    /// The frozen language model loaded quantized (QLoRA).
    pub quantize: Option<QuantKind>,
}

/// Parameter counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Parameters {
    pub total: u64,
    pub trainable: u64,
    pub language_model: u64,
    pub vision_tower: u64,
    pub projector: u64,
    /// LoRA adapters (zero without LoRA).
    pub adapters: u64,
}

/// What one device holds, in bytes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct DeviceBytes {
    pub weights_bytes: u64,
    pub gradients_bytes: u64,
    pub master_weights_bytes: u64,
    pub optimizer_moments_bytes: u64,
    pub activations_bytes: u64,
    pub workspace_bytes: u64,
    pub total_bytes: u64,
}

/// The plan: parameters, the device's parts, and the host's with `--offload`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryPlan {
    pub parameters: Parameters,
    pub per_device: DeviceBytes,
    /// Master weights and moments kept in host memory (`--offload optimizer`).
    pub host_bytes: u64,
}

/// Measured on the CPU (bench/train_memory.sh, ~100M model, f32): the bytes a decoder
/// layer keeps for its backward pass are this many times those `activation_bytes`
/// counts (candle's graph keeps a few views and small tensors the count leaves out).
const KEPT_PER_COUNTED: f64 = 1.26;
/// Measured likewise (stage 1 at batch 1, 2 and 4): a layer that trains nothing, under a
/// projector that does, keeps this many times its counted bytes (more than a trained
/// layer; why is not yet understood, so it is a measured factor).
const KEPT_PER_COUNTED_FROZEN: f64 = 1.55;
/// Measured likewise: the gradients in flight while one layer is differentiated, as a
/// multiple of the counted bytes of that layer without its LoRA adapters (the adapters'
/// frozen bases pass no weight gradients).
const IN_FLIGHT_PER_COUNTED: f64 = 2.1;
/// What the process holds besides the model on the CPU (code, tokenizer, data, threads).
const CPU_RUNTIME: u64 = 64 << 20;
/// A CUDA context with cuBLAS's workspace (not yet measured on a device).
const GPU_RUNTIME: u64 = 1 << 30;

impl Setup {
    /// The plan for `cfg` (its vision config resolved).
    pub(crate) fn plan(&self, cfg: &LlavaConfig) -> MemoryPlan {
        let parameters = count_parameters(cfg, self.tune);
        let b = self.dtype_bytes;
        let t = parameters.trainable;
        let w = self.world.max(1) as u64;
        let shard = |bytes: u64| match self.zero.shards() {
            true => bytes.div_ceil(w),
            false => bytes,
        };
        let (quantized, quantized_bytes) = self.quantized(cfg);
        let weights =
            (parameters.total - quantized) * b + quantized_bytes + parameters.adapters * b;
        // The backward pass leaves gradients in the parameters' dtype; f32 sums appear
        // when micro-batches are accumulated or ranks reduced. One process offloading
        // accumulates in host memory.
        let summed = self.grad_accum > 1 || self.world > 1;
        let host_sums = self.offload && self.world == 1 && self.grad_accum > 1;
        let sums = match self.zero {
            _ if host_sums => 0,
            ZeroStage::Off if summed => t * 4,
            ZeroStage::Off => 0,
            ZeroStage::Optimizer => {
                (if self.grad_accum > 1 { t * 4 } else { 0 }) + (t * 4).div_ceil(w)
            }
            ZeroStage::Gradients => (t * 4).div_ceil(w),
        };
        let gradients = t * b + sums;
        // f32 parameters need no master copy, unless the state moves off their GPU.
        let master = if b == 4 && !(self.offload && self.gpu) {
            0
        } else {
            shard(t * 4)
        };
        let moments = shard(t * 8);
        let (device_master, device_moments, host) = match self.offload {
            true => (0, 0, master + moments + if host_sums { t * 4 } else { 0 }),
            false => (master, moments, 0),
        };
        let activations = self.activations(cfg);
        let workspace = self.workspace(cfg);
        let total = weights + gradients + device_master + device_moments + activations + workspace;
        MemoryPlan {
            parameters,
            per_device: DeviceBytes {
                weights_bytes: weights,
                gradients_bytes: gradients,
                master_weights_bytes: device_master,
                optimizer_moments_bytes: device_moments,
                activations_bytes: activations,
                workspace_bytes: workspace,
                total_bytes: total,
            },
            host_bytes: host,
        }
    }

    /// The parameters of the language model's matrices that load quantized, and their
    /// bytes in blocks.
    fn quantized(&self, cfg: &LlavaConfig) -> (u64, u64) {
        let Some(kind) = self.quantize else {
            return (0, 0);
        };
        matrices(cfg)
            .into_iter()
            .filter_map(|(rows, cols)| {
                let ggml = kind.for_width(cols)?;
                let blocks = (rows * cols / ggml.block_size()) as u64;
                Some(((rows * cols) as u64, blocks * ggml.type_size() as u64))
            })
            .fold((0, 0), |(p, b), (mp, mb)| (p + mp, b + mb))
    }

    /// Activations of one micro-batch at its longest.
    fn activations(&self, cfg: &LlavaConfig) -> u64 {
        let text = &cfg.text;
        let b = self.dtype_bytes as f64;
        let tokens = (self.batch_size * self.max_len) as f64;
        let Counted {
            base,
            scores,
            adapters,
        } = self.layer_bytes_per_token(cfg);
        let keeps = match self.tune {
            Tune::Projector => KEPT_PER_COUNTED_FROZEN,
            _ => KEPT_PER_COUNTED,
        };
        // The attention scores are kept as counted, and differentiated a block of
        // queries at a time (measured in bf16 on the CPU, where candle's ops run them).
        let kept = (keeps * (base + adapters) + scores) * tokens;
        let in_flight = IN_FLIGHT_PER_COUNTED * base * tokens;
        let layers = text.num_hidden_layers as f64;
        let decoder = match self.checkpointing {
            // Each layer's input, then one layer recomputed and differentiated.
            true => layers * tokens * text.hidden_size as f64 * b + kept + in_flight,
            false => layers * kept + in_flight,
        };
        // The head runs on supervised positions only: at most the text tokens.
        let image_rows = cfg.image_tokens().min(self.max_len);
        let supervised = (self.batch_size * (self.max_len - image_rows)) as f64;
        let (h, v) = (text.hidden_size as f64, text.vocab_size as f64);
        let widen = if b < 4.0 { 4.0 } else { 0.0 };
        let head = supervised * (norm_bytes(h, b) + v * (b + widen + 12.0 + 12.0));
        // Embeddings with the image rows spliced in, and the projector's activations.
        let images = (self.batch_size * image_rows) as f64;
        let embeds = tokens * h * b * 2.0 + images * 6.0 * h * b;
        let mask = self.batch_size as f64 * (self.max_len * self.max_len) as f64 * 4.0;
        (decoder + head + embeds + mask) as u64
    }

    /// The bytes one decoder layer's forward pass creates for one token, tensor by
    /// tensor as the training path computes them.
    fn layer_bytes_per_token(&self, cfg: &LlavaConfig) -> Counted {
        let t = &cfg.text;
        let b = self.dtype_bytes as f64;
        let (h, i) = (t.hidden_size as f64, t.intermediate_size as f64);
        let q = (t.num_attention_heads * t.head_dim) as f64;
        let kv = (t.num_key_value_heads * t.head_dim) as f64;
        let norms = 2.0 * norm_bytes(h, b);
        // Projections, heads split (a copy) and rotated (cat, two products and a sum).
        let qkv = b * (q + 2.0 * kv) + b * (q * 5.5 + kv * 5.5 + kv);
        let fused_attention = !self.gpu && self.dtype_bytes == 4;
        let (attention, scores) = match fused_attention {
            // mt's CPU kernel keeps only its output.
            true => (b * q, 0.0),
            // candle's ops, causal blocks of 128 queries: scores, scaled, masked, f32
            // softmax (difference, exponentials, quotient), back to the dtype, then the
            // blocks' outputs, their concatenation and the heads merged.
            false => {
                let keys = self.max_len as f64 / 2.0 + 64.0;
                let per_score = 3.0 * b + if b < 4.0 { 4.0 } else { 0.0 } + 12.0 + b;
                (3.0 * b * q, t.num_attention_heads as f64 * keys * per_score)
            }
        };
        let out = b * h * 2.0; // o_proj and the residual sum
        let mlp = b * (4.0 * i + 2.0 * h);
        let lora = match self.tune {
            Tune::Lora(spec) => {
                let r = spec.r as f64;
                let dropout = spec.dropout > 0.0;
                [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
                    .iter()
                    .map(|&(inp, outp)| {
                        b * (if dropout { inp } else { 0.0 } + 2.0 * r + 2.0 * outp)
                    })
                    .sum()
            }
            _ => 0.0,
        };
        Counted {
            base: norms + qkv + attention + out + mlp,
            scores,
            adapters: lora,
        }
    }

    /// The runtime, and the largest transient: a gradient widened to f32 for the
    /// reduction or the update, the embedding gradient's scatter, the vision tower's
    /// widest activation.
    fn workspace(&self, cfg: &LlavaConfig) -> u64 {
        let b = self.dtype_bytes;
        let text = &cfg.text;
        let embedding = (text.vocab_size * text.hidden_size) as u64;
        let largest_trained = match self.tune {
            Tune::Full => embedding,
            _ => projector_parameters(cfg).max(1),
        };
        let embedding_scatter = match self.tune {
            Tune::Full => 2 * embedding * b,
            _ => 0,
        };
        let v = cfg.vision();
        let rows = (v.grid() * v.grid() + 1) as u64;
        let tower = 2 * self.batch_size as u64 * rows * v.intermediate_size as u64 * b;
        let runtime = if self.gpu { GPU_RUNTIME } else { CPU_RUNTIME };
        runtime + (largest_trained * 4).max(embedding_scatter).max(tower)
    }
}

/// A decoder layer's counted bytes per token.
struct Counted {
    /// Everything but the attention scores and the adapters.
    base: f64,
    /// The attention scores (candle's ops; none under mt's fused CPU kernel).
    scores: f64,
    /// The LoRA adapters'.
    adapters: f64,
}

/// RMSNorm's tensors per row of width `h`: the square, the normalised row in f32 (after
/// an f32 copy of a narrower input), and the weighted result (after a cast back).
fn norm_bytes(h: f64, b: f64) -> f64 {
    if b < 4.0 {
        12.0 * h + 4.0 * h + 2.0 * b * h
    } else {
        12.0 * h
    }
}

/// Parameter counts of `cfg`'s model as mt loads it (the vision layers LLaVA reads).
pub(crate) fn count_parameters(cfg: &LlavaConfig, tune: Tune) -> Parameters {
    let t = &cfg.text;
    let (h, i, v) = (t.hidden_size, t.intermediate_size, t.vocab_size);
    let (q, kv) = (
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
    );
    let attention_biases = match t.family {
        TextFamily::Qwen2 => q + 2 * kv,
        _ if t.attention_bias => q + 2 * kv + h,
        _ => 0,
    };
    let mlp_biases = if t.mlp_bias { 2 * i + h } else { 0 };
    let per_layer = matrices_of_layer(cfg)
        .iter()
        .map(|(r, c)| r * c)
        .sum::<usize>()
        + attention_biases
        + mlp_biases
        + 2 * h;
    let head = if t.tie_word_embeddings { 0 } else { v * h };
    let language = (v * h + t.num_hidden_layers * per_layer + h + head) as u64;

    let vc = cfg.vision();
    let (hv, iv) = (vc.hidden_size, vc.intermediate_size);
    let grid = vc.grid();
    let embeddings =
        hv * vc.num_channels * vc.patch_size * vc.patch_size + hv + (grid * grid + 1) * hv + 2 * hv;
    let vision_layer = 4 * (hv * hv + hv) + 4 * hv + 2 * hv * iv + iv + hv;
    let vision = (embeddings + cfg.vision_layers_used() * vision_layer) as u64;

    let projector = projector_parameters(cfg);
    let adapters = match tune {
        Tune::Lora(spec) => {
            let per_layer: usize = matrices_of_layer(cfg)
                .iter()
                .map(|(out, inp)| spec.r * (out + inp))
                .sum();
            (t.num_hidden_layers * per_layer) as u64
        }
        _ => 0,
    };
    let trainable = match tune {
        Tune::Projector => projector,
        Tune::Full => language + projector,
        Tune::Lora(_) => adapters + projector,
    };
    Parameters {
        total: language + vision + projector,
        trainable,
        language_model: language,
        vision_tower: vision,
        projector,
        adapters,
    }
}

fn projector_parameters(cfg: &LlavaConfig) -> u64 {
    let (m, h) = (cfg.mm_hidden_size, cfg.text.hidden_size);
    let depth = match cfg.projector {
        ProjectorKind::Linear => 1,
        ProjectorKind::MlpGelu { depth } => depth,
    };
    let bias = if cfg.projector_bias { depth * h } else { 0 };
    (m * h + (depth - 1) * h * h + bias) as u64
}

/// A decoder layer's seven projections as `(out, in)`.
fn matrices_of_layer(cfg: &LlavaConfig) -> [(usize, usize); 7] {
    let t = &cfg.text;
    let (h, i) = (t.hidden_size, t.intermediate_size);
    let (q, kv) = (
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
    );
    [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]
}

/// The language model's matrices `--quantize` applies to, as `(rows, cols)`: every
/// projection, the token embeddings and the LM head.
fn matrices(cfg: &LlavaConfig) -> Vec<(usize, usize)> {
    let t = &cfg.text;
    let mut all = vec![(t.vocab_size, t.hidden_size)];
    if !t.tie_word_embeddings {
        all.push((t.vocab_size, t.hidden_size));
    }
    for _ in 0..t.num_hidden_layers {
        all.extend(matrices_of_layer(cfg));
    }
    all
}

impl Setup {
    /// One line of what the plan is for: `full, bf16, 8 ranks, ZeRO 1, 4 x 1024 tokens,
    /// checkpointing`.
    pub(crate) fn describe(&self) -> String {
        let tune = match self.tune {
            Tune::Projector => "the projector".to_string(),
            Tune::Full => "full".to_string(),
            Tune::Lora(spec) => format!("LoRA r {}", spec.r),
        };
        let mut parts = vec![
            tune,
            if self.dtype_bytes == 4 { "f32" } else { "bf16" }.to_string(),
        ];
        if let Some(q) = self.quantize {
            parts.push(format!("base {}", q.name()));
        }
        parts.push(format!(
            "{} rank{}",
            self.world,
            if self.world == 1 { "" } else { "s" }
        ));
        if self.zero.shards() {
            parts.push(format!("ZeRO {}", self.zero.level()));
        }
        if self.offload {
            parts.push("optimizer offloaded".into());
        }
        parts.push(format!(
            "{} x {} tokens{}",
            self.batch_size,
            self.max_len,
            if self.grad_accum > 1 {
                format!(" x {} accumulated", self.grad_accum)
            } else {
                String::new()
            }
        ));
        if self.checkpointing {
            parts.push("checkpointing".into());
        }
        parts.push(if self.gpu { "GPU" } else { "CPU" }.into());
        parts.join(", ")
    }

    /// The flag changes that would make the plan fit `capacity` bytes, each with its
    /// total: ZeRO 2, more ranks, offloading, checkpointing, LoRA, a shorter length.
    pub(crate) fn remedies(&self, cfg: &LlavaConfig, capacity: u64) -> Vec<(String, u64)> {
        let total = |s: &Setup| s.plan(cfg).per_device.total_bytes;
        let mut out = Vec::new();
        // Lists the change when its plan fits, and says whether it did.
        let mut offer = |what: String, s: Setup| {
            let t = total(&s);
            let fits = t <= capacity;
            if fits {
                out.push((what, t));
            }
            fits
        };
        if self.world > 1 && self.zero != ZeroStage::Gradients {
            offer(
                "--zero 2".into(),
                Setup {
                    zero: ZeroStage::Gradients,
                    ..*self
                },
            );
        }
        let more_ranks = [2, 4, 8, 16, 32, 64]
            .into_iter()
            .filter(|&w| w > self.world);
        for world in more_ranks {
            let fits = offer(
                format!("{world} ranks (WORLD_SIZE={world}) with --zero 2"),
                Setup {
                    world,
                    zero: ZeroStage::Gradients,
                    ..*self
                },
            );
            if fits {
                break;
            }
        }
        if !self.offload {
            offer(
                "--offload optimizer".into(),
                Setup {
                    offload: true,
                    ..*self
                },
            );
        }
        if !self.checkpointing {
            offer(
                "--gradient-checkpointing".into(),
                Setup {
                    checkpointing: true,
                    ..*self
                },
            );
        }
        if self.tune == Tune::Full {
            let lora = Tune::Lora(super::params::LoraSpec {
                r: 128,
                alpha: 256.0,
                dropout: 0.05,
            });
            offer(
                "LoRA (--lora-r 128)".into(),
                Setup {
                    tune: lora,
                    ..*self
                },
            );
        }
        let shortest = cfg.image_tokens() + 64;
        let fitting = (shortest..self.max_len).step_by(64).rev().find(|&len| {
            total(&Setup {
                max_len: len,
                ..*self
            }) <= capacity
        });
        if let Some(len) = fitting {
            offer(
                format!("--model-max-length {len}"),
                Setup {
                    max_len: len,
                    ..*self
                },
            );
        }
        out
    }
}

/// What [`Setup::remedies`] found, in one line: each change with its total, or that no
/// single change fits.
pub(crate) fn remedies_text(remedies: &[(String, u64)]) -> String {
    if remedies.is_empty() {
        return "none of --zero 2, more ranks, --offload optimizer, --gradient-checkpointing, \
                LoRA or a shorter --model-max-length fits alone; combine them or pass \
                --device-memory if the device has more"
            .to_string();
    }
    let list: Vec<String> = remedies
        .iter()
        .map(|(what, total)| format!("{what} ({})", binary_bytes(*total as f64)))
        .collect();
    format!("these would fit: {}", list.join("; "))
}

impl MemoryPlan {
    /// The plan as a table: one line per part, then the total against `capacity`.
    pub(crate) fn render(&self, setup: &Setup, capacity: Option<u64>) -> String {
        let gib = |n: u64| format!("{:>8.2} GiB", n as f64 / (1u64 << 30) as f64);
        let d = &self.per_device;
        let p = &self.parameters;
        let mut out = format!(
            "memory plan per device ({})\n  parameters         {:.3} B, {:.3} B trained\n",
            setup.describe(),
            p.total as f64 / 1e9,
            p.trainable as f64 / 1e9,
        );
        for (name, bytes) in [
            ("weights", d.weights_bytes),
            ("gradients", d.gradients_bytes),
            ("master weights", d.master_weights_bytes),
            ("optimizer moments", d.optimizer_moments_bytes),
            ("activations", d.activations_bytes),
            ("workspace", d.workspace_bytes),
        ] {
            out.push_str(&format!("  {name:<18} {}\n", gib(bytes)));
        }
        out.push_str(&format!("  {:<18} {}", "total", gib(d.total_bytes)));
        if let Some(c) = capacity {
            out.push_str(&format!(" of {}", gib(c).trim_start()));
        }
        out.push('\n');
        if self.host_bytes > 0 {
            out.push_str(&format!(
                "  {:<18} {}\n",
                "host (offloaded)",
                gib(self.host_bytes)
            ));
        }
        out
    }
}

/// The memory one device offers: the GPU's free memory, or the host's available memory
/// (`MemAvailable`) for the CPU; `None` where it cannot be read.
pub(crate) fn device_capacity(device: &candle_core::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use candle_core::cuda_backend::cudarc::driver::result::mem_get_info;
        return mem_get_info().ok().map(|(free, _)| free as u64);
    }
    let _ = device;
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
