//! Checkpoint configuration: the original LLaVA `config.json` (`LlavaLlamaForCausalLM`,
//! `mm_*` keys, S2) and the llava-hf layout (`LlavaForConditionalGeneration` with
//! `vision_config` / `text_config`). Every field is checked; an unknown or
//! inconsistent value fails with a message naming the field.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

/// Which naming and prompt-expansion convention a checkpoint follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The LLaVA repository's `LlavaLlamaForCausalLM` (what LLaVA-Med++ ships).
    Original,
    /// transformers' `LlavaForConditionalGeneration` (llava-hf).
    Hf,
}

/// The language model: Llama, or Mistral (Llama's layers with an optional sliding
/// attention window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    /// Which family's config this is (`model_type`).
    pub family: TextFamily,
    /// Mistral's `sliding_window`: each token sees itself and the `sliding_window - 1`
    /// tokens before it (`None`: all of them, as `null` in Mistral-7B-v0.2's config).
    pub sliding_window: Option<usize>,
    /// `hidden_size`: width of the residual stream.
    pub hidden_size: usize,
    /// `intermediate_size`: width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// `num_hidden_layers`: decoder layers.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`: query heads.
    pub num_attention_heads: usize,
    /// `num_key_value_heads`: key/value heads (grouped-query attention; defaults to
    /// `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// `head_dim`, or `hidden_size / num_attention_heads` when absent; always even.
    pub head_dim: usize,
    /// `vocab_size`: rows of the token embedding and the LM head.
    pub vocab_size: usize,
    /// `rms_norm_eps` (default 1e-6).
    pub rms_norm_eps: f64,
    /// RoPE base: `rope_theta`, or `rope_parameters.rope_theta` (default 10000).
    pub rope_theta: f64,
    /// RoPE frequency scaling: `rope_scaling`, or transformers 5's `rope_parameters`.
    pub rope_scaling: RopeScaling,
    /// `max_position_embeddings` (default 2048).
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`: the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// `attention_bias`: the q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// `mlp_bias`: the MLP projections have biases.
    pub mlp_bias: bool,
    /// End-of-sequence ids from the config (one or several).
    pub eos_token_ids: Vec<u32>,
}

/// A language-model family mt runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFamily {
    /// Llama 2, Llama 3, Llama 3.1 (`llama`).
    Llama,
    /// Mistral (`mistral`; LLaVA-Med v1.5's `llava_mistral`).
    Mistral,
    /// Phi-3 (`phi3`; LLaVA-pp's `llava_phi`): fused `qkv_proj` and `gate_up_proj`.
    Phi3,
    /// Qwen2 (`qwen2`): biases on the query, key and value projections only.
    Qwen2,
}

/// How RoPE's frequencies are scaled (transformers' `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// `default`: unscaled.
    Default,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3` (Llama 3.1 and later): wavelengths above
    /// `original_max_position_embeddings / low_freq_factor` divided by `factor`, those
    /// below `original_max_position_embeddings / high_freq_factor` kept, a smooth blend
    /// between.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Sets the longest wavelength kept unscaled in the blend.
        low_freq_factor: f64,
        /// Sets the shortest wavelength that is scaled at all.
        high_freq_factor: f64,
        /// The context length of pre-training.
        original_max_position_embeddings: usize,
    },
}

/// Activation inside the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (the OpenAI CLIP towers).
    QuickGelu,
    /// `gelu`: exact (erf) GELU.
    Gelu,
}

/// The CLIP ViT vision tower.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipConfig {
    /// `hidden_size`: width of the ViT tokens.
    pub hidden_size: usize,
    /// `intermediate_size`: width of the MLP.
    pub intermediate_size: usize,
    /// `num_hidden_layers`: encoder layers.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`: heads per layer.
    pub num_attention_heads: usize,
    /// `image_size`: side of the square input, in pixels.
    pub image_size: usize,
    /// `patch_size`: side of one patch, in pixels.
    pub patch_size: usize,
    /// `num_channels`: always 3 (RGB).
    pub num_channels: usize,
    /// `layer_norm_eps` (default 1e-5).
    pub layer_norm_eps: f64,
    /// `hidden_act` (default `quick_gelu`).
    pub hidden_act: ClipActivation,
}

impl ClipConfig {
    /// Patches per side of one tile.
    pub(crate) fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Built-in configs for the public CLIP towers LLaVA checkpoints name.
    pub fn known(name: &str) -> Option<Self> {
        let image_size = match name.trim_end_matches('/') {
            "openai/clip-vit-large-patch14-336" => 336,
            "openai/clip-vit-large-patch14" => 224,
            _ => return None,
        };
        Some(Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size,
            patch_size: 14,
            num_channels: 3,
            layer_norm_eps: 1e-5,
            hidden_act: ClipActivation::QuickGelu,
        })
    }

    /// Reads a tower's `config.json`: a `CLIPConfig` (with `vision_config`) or a
    /// `CLIPVisionConfig`.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let json = read_json(path)?;
        let vision = json.get("vision_config").unwrap_or(&json);
        let prefix = if json.get("vision_config").is_some() {
            "vision_config"
        } else {
            ""
        };
        Self::parse(&Fields::new(vision, prefix)).with_context(|| format!("{}", path.display()))
    }

    fn parse(f: &Fields) -> Result<Self> {
        let hidden_act = match f.str_or("hidden_act", "quick_gelu")? {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => bail!(
                "field `{}` is {other:?}; supported: quick_gelu, gelu",
                f.path("hidden_act")
            ),
        };
        let cfg = Self {
            hidden_size: f.usize_or("hidden_size", 768)?,
            intermediate_size: f.usize_or("intermediate_size", 3072)?,
            num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: f.usize_or("num_attention_heads", 12)?,
            image_size: f.usize_or("image_size", 224)?,
            patch_size: f.usize_or("patch_size", 32)?,
            num_channels: f.usize_or("num_channels", 3)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
            hidden_act,
        };
        f.check(
            cfg.hidden_size.is_multiple_of(cfg.num_attention_heads),
            "hidden_size",
            "must be a multiple of num_attention_heads",
        )?;
        f.check(
            cfg.image_size.is_multiple_of(cfg.patch_size),
            "image_size",
            "must be a multiple of patch_size",
        )?;
        f.check(cfg.num_channels == 3, "num_channels", "must be 3 (RGB)")?;
        Ok(cfg)
    }
}

/// Which CLIP tokens feed the projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectFeature {
    /// Patch tokens only (CLS dropped): LLaVA's `patch`, llava-hf's `default`.
    Patch,
    /// CLS and patch tokens: LLaVA's `cls_patch`, llava-hf's `full`.
    ClsPatch,
}

/// How a non-square image becomes the square the vision tower sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AspectMode {
    /// Pad to a square with the CLIP mean colour, then resize (LLaVA `pad`).
    Pad,
    /// Resize the shortest side, then centre-crop (the plain CLIP processor).
    Crop,
}

/// The multimodal projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorKind {
    /// `linear`: one Linear layer.
    Linear,
    /// `mlp{depth}x_gelu`: Linear, then (GELU, Linear) x (depth - 1).
    MlpGelu {
        /// Number of Linear layers (at least 1).
        depth: usize,
    },
}

/// Everything needed to build a LLaVA model from a checkpoint folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlavaConfig {
    /// Which convention the checkpoint follows.
    pub layout: Layout,
    /// The language model (top level in the original layout, `text_config` in llava-hf).
    pub text: LlamaConfig,
    /// The vision tower config; `None` for original checkpoints until the tower
    /// folder is resolved (see [`crate::core::model::load::checkpoint`]).
    pub vision: Option<ClipConfig>,
    /// `mm_vision_tower`: a hub id or a path (original layout).
    pub vision_tower: Option<String>,
    /// `mm_projector_type` (original; default `linear`); always `mlp2x_gelu` in llava-hf.
    pub projector: ProjectorKind,
    /// The projector's Linear layers have biases (llava-hf
    /// `multimodal_projector_bias`; always true in the original layout).
    pub projector_bias: bool,
    /// Width of the vision features entering the projector.
    pub mm_hidden_size: usize,
    /// Index into the CLIP hidden states (embeddings first), negative from the end
    /// (`mm_vision_select_layer` / `vision_feature_layer`; default -2).
    pub select_layer: i64,
    /// `mm_vision_select_feature` / `vision_feature_select_strategy`.
    pub select_feature: SelectFeature,
    /// `image_aspect_ratio` (original: `pad` or `square`); in llava-hf the image
    /// processor's `do_pad` (`LlavaImageProcessor`), else CLIP's resize and centre crop.
    pub aspect: AspectMode,
    /// S2 multi-scale image sizes, ascending (`None`: single scale).
    pub s2_scales: Option<Vec<usize>>,
    /// Token id that stands for one image feature in llava-hf prompts.
    pub image_token_index: Option<u32>,
}

/// How a llava-hf checkpoint's processor shapes images: padded to a square with the mean
/// colour when its `preprocessor_config.json` says `do_pad` (`LlavaImageProcessor`), else
/// resized and centre-cropped (`CLIPImageProcessor`, as llava-hf's LLaVA-1.5 repositories).
fn hf_aspect(dir: &Path) -> Result<AspectMode> {
    let path = dir.join("preprocessor_config.json");
    if !path.is_file() {
        return Ok(AspectMode::Crop);
    }
    let json = read_json(&path)?;
    Ok(match json.get("do_pad").and_then(Value::as_bool) {
        Some(true) => AspectMode::Pad,
        _ => AspectMode::Crop,
    })
}

impl LlavaConfig {
    /// Reads and checks `config.json` in a checkpoint folder.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let json = read_json(&path)?;
        let mut cfg = Self::parse(&json).with_context(|| format!("{}", path.display()))?;
        if cfg.layout == Layout::Hf {
            cfg.aspect = hf_aspect(dir)?;
        }
        Ok(cfg)
    }

    /// Parses a config already read into JSON.
    pub fn parse(json: &Value) -> Result<Self> {
        let root = Fields::new(json, "");
        let architectures: Vec<&str> = json
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let model_type = root.str_or("model_type", "")?;
        if architectures.contains(&"LlavaLlamaForCausalLM") || model_type == "llava_llama" {
            Self::parse_original(&root, TextFamily::Llama)
        } else if architectures.contains(&"LlavaMistralForCausalLM")
            || model_type == "llava_mistral"
        {
            Self::parse_original(&root, TextFamily::Mistral)
        } else if architectures.contains(&"LlavaPhiForCausalLM") || model_type == "llava_phi" {
            Self::parse_original(&root, TextFamily::Phi3)
        } else if architectures.contains(&"LlavaForConditionalGeneration") || model_type == "llava"
        {
            Self::parse_hf(&root)
        } else {
            bail!(
                "field `architectures` is {architectures:?} and `model_type` is {model_type:?}; \
                 supported: LlavaLlamaForCausalLM (llava_llama), LlavaMistralForCausalLM \
                 (llava_mistral), LlavaPhiForCausalLM (llava_phi) and \
                 LlavaForConditionalGeneration (llava)"
            )
        }
    }

    fn parse_original(f: &Fields, family: TextFamily) -> Result<Self> {
        let text = parse_llama(f, family)?;
        let projector = parse_projector(f, "mm_projector_type", "linear")?;
        let select_feature = match f.str_or("mm_vision_select_feature", "patch")? {
            "patch" => SelectFeature::Patch,
            "cls_patch" => SelectFeature::ClsPatch,
            other => {
                bail!("field `mm_vision_select_feature` is {other:?}; supported: patch, cls_patch")
            }
        };
        let aspect = match f.str_or("image_aspect_ratio", "square")? {
            "pad" => AspectMode::Pad,
            "square" => AspectMode::Crop,
            other => bail!("field `image_aspect_ratio` is {other:?}; supported: pad, square"),
        };
        let s2_scales = if f.bool_or("s2", false)? {
            Some(parse_scales(f)?)
        } else {
            None
        };
        let vision_tower = f
            .opt_str("mm_vision_tower")?
            .or(f.opt_str("vision_tower")?)
            .ok_or_else(|| anyhow!("field `mm_vision_tower` is missing"))?;
        if f.bool_or("mm_use_im_start_end", false)? {
            bail!(
                "field `mm_use_im_start_end` is true; only checkpoints without image start/end tokens are supported"
            );
        }
        let cfg = Self {
            layout: Layout::Original,
            text,
            vision: None,
            vision_tower: Some(vision_tower.to_string()),
            projector,
            projector_bias: true,
            mm_hidden_size: f.usize("mm_hidden_size")?,
            select_layer: f.i64_or("mm_vision_select_layer", -2)?,
            select_feature,
            aspect,
            s2_scales,
            image_token_index: None,
        };
        Ok(cfg)
    }

    fn parse_hf(f: &Fields) -> Result<Self> {
        let text_json = f.child("text_config")?;
        let text_fields = Fields::new(text_json, "text_config");
        let family = match text_fields.str_or("model_type", "llama")? {
            "llama" => TextFamily::Llama,
            "mistral" => TextFamily::Mistral,
            "phi3" => TextFamily::Phi3,
            "qwen2" => TextFamily::Qwen2,
            other => bail!(
                "field `text_config.model_type` is {other:?}; supported: llama, mistral, phi3, qwen2"
            ),
        };
        let mut text = parse_llama(&text_fields, family)?;
        if text.eos_token_ids.is_empty() {
            text.eos_token_ids = parse_eos(f)?;
        }
        let vision_json = f.child("vision_config")?;
        let vision_fields = Fields::new(vision_json, "vision_config");
        let vision_type = vision_fields.str_or("model_type", "clip_vision_model")?;
        if vision_type != "clip_vision_model" {
            bail!(
                "field `vision_config.model_type` is {vision_type:?}; supported: clip_vision_model"
            );
        }
        let vision = ClipConfig::parse(&vision_fields)?;
        let select_feature = match f.str_or("vision_feature_select_strategy", "default")? {
            "default" => SelectFeature::Patch,
            "full" => SelectFeature::ClsPatch,
            other => bail!(
                "field `vision_feature_select_strategy` is {other:?}; supported: default, full"
            ),
        };
        let select_layer = match f.get("vision_feature_layer") {
            None => -2,
            Some(v) => v.as_i64().ok_or_else(|| {
                anyhow!("field `vision_feature_layer` must be one integer (several layers are not supported), got {v}")
            })?,
        };
        let act = f.str_or("projector_hidden_act", "gelu")?;
        if act != "gelu" {
            bail!("field `projector_hidden_act` is {act:?}; supported: gelu");
        }
        let image_token_index = match f.get("image_token_index").or(f.get("image_token_id")) {
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| anyhow!("field `image_token_index` must be a token id, got {v}"))?,
            None => bail!("field `image_token_index` is missing"),
        };
        let cfg = Self {
            layout: Layout::Hf,
            mm_hidden_size: vision.hidden_size,
            text,
            vision: Some(vision),
            vision_tower: None,
            projector: ProjectorKind::MlpGelu { depth: 2 },
            projector_bias: f.bool_or("multimodal_projector_bias", true)?,
            select_layer,
            select_feature,
            aspect: AspectMode::Pad,
            s2_scales: None,
            image_token_index: Some(image_token_index),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Completes an original-layout config with its tower's config and checks that
    /// the vision side agrees with the projector and S2 settings.
    pub fn with_vision(mut self, vision: ClipConfig) -> Result<Self> {
        self.vision = Some(vision);
        self.validate()?;
        Ok(self)
    }

    /// The vision config (always present once the checkpoint is resolved).
    pub(crate) fn vision(&self) -> &ClipConfig {
        self.vision
            .as_ref()
            .expect("vision config resolved before use")
    }

    /// The square image size the preprocessor produces.
    pub fn input_size(&self) -> usize {
        match &self.s2_scales {
            Some(scales) => *scales.last().expect("non-empty"),
            None => self.vision().image_size,
        }
    }

    /// Image feature rows one image contributes to the prompt.
    pub fn image_tokens(&self) -> usize {
        let grid = self.vision().grid();
        grid * grid + usize::from(self.select_feature == SelectFeature::ClsPatch)
    }

    /// CLIP layers that must run to produce the selected hidden state.
    pub fn vision_layers_used(&self) -> usize {
        let n = self.vision().num_hidden_layers as i64;
        let index = if self.select_layer < 0 {
            n + 1 + self.select_layer
        } else {
            self.select_layer
        };
        index as usize
    }

    fn validate(&self) -> Result<()> {
        let v = self.vision();
        let n = v.num_hidden_layers as i64;
        if self.select_layer > n || self.select_layer < -(n + 1) {
            bail!(
                "field `mm_vision_select_layer` is {} but the vision tower has {n} layers",
                self.select_layer
            );
        }
        let scales = self.s2_scales.as_ref().map_or(1, Vec::len);
        if self.mm_hidden_size != v.hidden_size * scales {
            bail!(
                "field `mm_hidden_size` is {} but the vision tower gives {} x {scales} scale(s) = {}",
                self.mm_hidden_size,
                v.hidden_size,
                v.hidden_size * scales
            );
        }
        if let Some(scales) = &self.s2_scales {
            if scales[0] != v.image_size {
                bail!(
                    "field `s2_scales` starts at {} but the vision tower's image_size is {}",
                    scales[0],
                    v.image_size
                );
            }
            if let Some(bad) = scales.iter().find(|s| *s % scales[0] != 0) {
                bail!(
                    "field `s2_scales` has {bad}, not a multiple of the smallest scale {}",
                    scales[0]
                );
            }
        }
        Ok(())
    }
}

fn parse_llama(f: &Fields, family: TextFamily) -> Result<LlamaConfig> {
    let act = f.str_or("hidden_act", "silu")?;
    if act != "silu" {
        bail!(
            "field `{}` is {act:?}; supported: silu",
            f.path("hidden_act")
        );
    }
    let (rope_theta, rope_scaling) = parse_rope(f)?;
    let hidden_size = f.usize("hidden_size")?;
    let num_attention_heads = f.usize("num_attention_heads")?;
    let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
    let head_dim = match f.get("head_dim").filter(|v| !v.is_null()) {
        Some(_) => f.usize("head_dim")?,
        None => {
            f.check(
                hidden_size.is_multiple_of(num_attention_heads),
                "hidden_size",
                "must be a multiple of num_attention_heads",
            )?;
            hidden_size / num_attention_heads
        }
    };
    f.check(
        num_attention_heads.is_multiple_of(num_key_value_heads),
        "num_key_value_heads",
        "must divide num_attention_heads",
    )?;
    f.check(
        head_dim.is_multiple_of(2),
        "head_dim",
        "must be even (RoPE)",
    )?;
    let sliding_window = match family {
        TextFamily::Mistral | TextFamily::Phi3
            if f.get("sliding_window").is_some_and(|v| !v.is_null()) =>
        {
            Some(f.usize("sliding_window")?)
        }
        _ => None,
    };
    if family == TextFamily::Qwen2 && f.bool_or("use_sliding_window", false)? {
        bail!(
            "field `{}` is true; Qwen2's per-layer sliding window is not supported",
            f.path("use_sliding_window")
        );
    }
    if let Some(v) = f.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        f.check(
            v.as_f64() == Some(1.0),
            "partial_rotary_factor",
            "must be 1 (rotary embedding on the whole head)",
        )?;
    }
    Ok(LlamaConfig {
        family,
        sliding_window,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_hidden_layers: f.usize("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size: f.usize("vocab_size")?,
        rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        rope_scaling,
        max_position_embeddings: f.usize_or("max_position_embeddings", 2048)?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        attention_bias: f.bool_or("attention_bias", false)?,
        mlp_bias: f.bool_or("mlp_bias", false)?,
        eos_token_ids: parse_eos(f)?,
    })
}

/// The RoPE base and scaling: transformers 5 writes `rope_parameters: {rope_theta,
/// rope_type, factor, ...}`, transformers 4 `rope_theta` and `rope_scaling: {rope_type
/// (or type), factor, ...}`.
fn parse_rope(f: &Fields) -> Result<(f64, RopeScaling)> {
    let theta = f.f64_or("rope_theta", 10000.0)?;
    let (key, params) = match f.get("rope_parameters").filter(|v| !v.is_null()) {
        Some(params) => ("rope_parameters", params),
        None => match f.get("rope_scaling").filter(|v| !v.is_null()) {
            Some(params) => ("rope_scaling", params),
            None => return Ok((theta, RopeScaling::Default)),
        },
    };
    let path = f.path(key);
    let p = Fields::new(params, &path);
    let theta = p.f64_or("rope_theta", theta)?;
    let kind = match p.opt_str("rope_type")? {
        Some(kind) => kind,
        None => p.str_or("type", "default")?,
    };
    let factor = || {
        p.f64_or("factor", f64::NAN)
            .and_then(|x| required(&p, "factor", x))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "llama3" => {
            let low = p.f64_or("low_freq_factor", f64::NAN)?;
            let high = p.f64_or("high_freq_factor", f64::NAN)?;
            let low_freq_factor = required(&p, "low_freq_factor", low)?;
            let high_freq_factor = required(&p, "high_freq_factor", high)?;
            p.check(
                high_freq_factor > low_freq_factor,
                "high_freq_factor",
                "must be above low_freq_factor",
            )?;
            let original = f.usize_or("max_position_embeddings", 2048)?;
            RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: p
                    .usize_or("original_max_position_embeddings", original)?,
            }
        }
        other => bail!(
            "field `{}` is {other:?}; supported RoPE types: default, linear, llama3",
            p.path(if p.get("rope_type").is_some() {
                "rope_type"
            } else {
                "type"
            })
        ),
    };
    Ok((theta, scaling))
}

/// `value` read with a NaN default: an error naming `key` when it was absent.
fn required(p: &Fields, key: &str, value: f64) -> Result<f64> {
    if value.is_nan() {
        bail!("field `{}` is missing", p.path(key));
    }
    Ok(value)
}

fn parse_eos(f: &Fields) -> Result<Vec<u32>> {
    let ids = match f.get("eos_token_id") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_u64)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                anyhow!(
                    "field `{}` must be a token id or a list of them",
                    f.path("eos_token_id")
                )
            })?,
        Some(v) => vec![v.as_u64().ok_or_else(|| {
            anyhow!(
                "field `{}` must be a token id or a list of them, got {v}",
                f.path("eos_token_id")
            )
        })?],
    };
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

fn parse_projector(f: &Fields, key: &str, default: &str) -> Result<ProjectorKind> {
    let name = f.str_or(key, default)?;
    if name == "linear" {
        return Ok(ProjectorKind::Linear);
    }
    let depth = name
        .strip_prefix("mlp")
        .and_then(|rest| rest.strip_suffix("x_gelu"))
        .and_then(|d| d.parse::<usize>().ok())
        .filter(|d| *d >= 1);
    match depth {
        Some(depth) => Ok(ProjectorKind::MlpGelu { depth }),
        None => bail!("field `{key}` is {name:?}; supported: linear, mlp<N>x_gelu"),
    }
}

fn parse_scales(f: &Fields) -> Result<Vec<usize>> {
    let raw = f.str_or("s2_scales", "336,672,1008")?;
    let mut scales = raw
        .split(',')
        .map(|s| s.trim().parse::<usize>().ok().filter(|s| *s > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            anyhow!("field `s2_scales` is {raw:?}; expected sizes like \"336,672,1008\"")
        })?;
    scales.sort_unstable();
    Ok(scales)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Typed access to one JSON object's fields, with errors that name the field path.
struct Fields<'a> {
    json: &'a Value,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn new(json: &'a Value, prefix: &'a str) -> Self {
        Self { json, prefix }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.json.get(key)
    }

    fn child(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .filter(|v| v.is_object())
            .ok_or_else(|| anyhow!("field `{}` is missing or not an object", self.path(key)))
    }

    fn check(&self, ok: bool, key: &str, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            let value = self
                .get(key)
                .map_or("missing".to_string(), Value::to_string);
            bail!("field `{}` {what} (got {value})", self.path(key))
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        match self.get(key) {
            None | Some(Value::Null) => bail!("field `{}` is missing", self.path(key)),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    anyhow!(
                        "field `{}` must be a positive integer, got {v}",
                        self.path(key)
                    )
                }),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.usize(key),
        }
    }

    fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| anyhow!("field `{}` must be an integer, got {v}", self.path(key))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    anyhow!(
                        "field `{}` must be a positive number, got {v}",
                        self.path(key)
                    )
                }),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                anyhow!("field `{}` must be true or false, got {v}", self.path(key))
            }),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| anyhow!("field `{}` must be a string, got {v}", self.path(key))),
        }
    }

    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn original() -> Value {
        json!({
            "architectures": ["LlavaLlamaForCausalLM"],
            "model_type": "llava_llama",
            "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 8192,
            "eos_token_id": 128001, "hidden_act": "silu", "rope_scaling": null,
            "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 3072,
            "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
            "image_aspect_ratio": "pad", "s2": true, "s2_scales": "336,672,1008",
            "mm_use_im_start_end": false
        })
    }

    #[test]
    fn reads_the_llava_med_pp_config() {
        let cfg = LlavaConfig::parse(&original()).unwrap();
        assert_eq!(cfg.layout, Layout::Original);
        assert_eq!(cfg.text.num_key_value_heads, 8);
        assert_eq!(cfg.text.head_dim, 128);
        assert_eq!(cfg.text.eos_token_ids, vec![128001]);
        assert_eq!(cfg.projector, ProjectorKind::MlpGelu { depth: 2 });
        assert_eq!(cfg.s2_scales, Some(vec![336, 672, 1008]));
        let tower = ClipConfig::known(cfg.vision_tower.as_deref().unwrap()).unwrap();
        let cfg = cfg.with_vision(tower).unwrap();
        assert_eq!(cfg.input_size(), 1008);
        assert_eq!(cfg.image_tokens(), 576);
        assert_eq!(cfg.vision_layers_used(), 23);
    }

    #[test]
    fn errors_name_the_field() {
        let mut bad = original();
        bad["num_key_value_heads"] = json!(7);
        let err = LlavaConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("`num_key_value_heads`"), "{err}");

        let mut bad = original();
        bad["mm_projector_type"] = json!("qformer");
        let err = LlavaConfig::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("`mm_projector_type`") && err.contains("qformer"),
            "{err}"
        );

        let mut bad = original();
        bad["mm_hidden_size"] = json!(1024);
        let cfg = LlavaConfig::parse(&bad).unwrap();
        let err = cfg
            .with_vision(ClipConfig::known("openai/clip-vit-large-patch14-336").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`mm_hidden_size`") && err.contains("3072"),
            "{err}"
        );

        let mut bad = original();
        bad["rope_scaling"] = json!({"rope_type": "yarn", "factor": 8.0});
        let err = LlavaConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("`rope_scaling.rope_type`"), "{err}");
        bad["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        let err = LlavaConfig::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("`rope_scaling.low_freq_factor` is missing"),
            "{err}"
        );
        // Llama 3.1's config as transformers 4 writes it (original and llava-hf alike).
        let mut ok = original();
        ok["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let cfg = LlavaConfig::parse(&ok).unwrap();
        assert_eq!(
            cfg.text.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
        ok["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let cfg = LlavaConfig::parse(&ok).unwrap();
        assert_eq!(cfg.text.rope_scaling, RopeScaling::Linear { factor: 2.0 });

        // LLaVA-Med v1.5: LlavaMistralForCausalLM, its window kept (a Llama's ignored).
        let mut mistral = original();
        mistral["architectures"] = json!(["LlavaMistralForCausalLM"]);
        mistral["model_type"] = json!("llava_mistral");
        mistral["sliding_window"] = json!(4096);
        let cfg = LlavaConfig::parse(&mistral).unwrap();
        assert_eq!(cfg.text.family, TextFamily::Mistral);
        assert_eq!(cfg.text.sliding_window, Some(4096));
        mistral["sliding_window"] = Value::Null;
        assert_eq!(
            LlavaConfig::parse(&mistral).unwrap().text.sliding_window,
            None
        );
        let mut llama = original();
        llama["sliding_window"] = json!(4096);
        assert_eq!(
            LlavaConfig::parse(&llama).unwrap().text.sliding_window,
            None
        );
        // LLaVA-pp's Phi-3: fused projections; a partial rotary embedding is refused.
        let mut phi = original();
        phi["architectures"] = json!(["LlavaPhiForCausalLM"]);
        phi["model_type"] = json!("llava_phi");
        assert_eq!(
            LlavaConfig::parse(&phi).unwrap().text.family,
            TextFamily::Phi3
        );
        phi["partial_rotary_factor"] = json!(0.75);
        let err = LlavaConfig::parse(&phi).unwrap_err().to_string();
        assert!(err.contains("`partial_rotary_factor`"), "{err}");
        // Qwen2's per-layer sliding window is refused by field.
        let qwen = json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "image_token_index": 5,
            "text_config": {"model_type": "qwen2", "use_sliding_window": true,
                "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "vocab_size": 320},
            "vision_config": {}
        });
        let err = LlavaConfig::parse(&qwen).unwrap_err().to_string();
        assert!(err.contains("`text_config.use_sliding_window`"), "{err}");

        let err = LlavaConfig::parse(&json!({"architectures": ["BertModel"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`architectures`"), "{err}");
    }

    #[test]
    fn reads_the_llava_hf_layout() {
        let cfg = LlavaConfig::parse(&json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": 128256,
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 128320, "rope_theta": 500000.0},
            "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                "num_attention_heads": 4, "image_size": 336, "patch_size": 14}
        }))
        .unwrap();
        assert_eq!(cfg.layout, Layout::Hf);
        assert_eq!(cfg.image_token_index, Some(128256));
        assert_eq!(cfg.mm_hidden_size, 32);
        assert_eq!(cfg.vision().hidden_act, ClipActivation::QuickGelu);

        let err = LlavaConfig::parse(&json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "image_token_index": 5,
            "text_config": {"model_type": "gemma"},
            "vision_config": {}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`text_config.model_type`"), "{err}");
    }

    #[test]
    fn a_llava_hf_processor_pads_only_when_it_says_do_pad() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(hf_aspect(dir.path()).unwrap(), AspectMode::Crop);
        let write =
            |json: &str| std::fs::write(dir.path().join("preprocessor_config.json"), json).unwrap();
        write(r#"{"image_processor_type": "CLIPImageProcessor", "crop_size": 336}"#);
        assert_eq!(hf_aspect(dir.path()).unwrap(), AspectMode::Crop);
        write(r#"{"image_processor_type": "LlavaImageProcessor", "do_pad": true}"#);
        assert_eq!(hf_aspect(dir.path()).unwrap(), AspectMode::Pad);
        write("{");
        assert!(hf_aspect(dir.path()).is_err());
    }
}
