//! The settings layer between clap and the library: the argument groups several commands
//! flatten in (model, device, decoding), every closed choice as a `ValueEnum`, and their
//! conversions into core types, so that strings are parsed once, here, and the library
//! never sees a flag's text.
//!
//! A command adjusts a shared flag's help, default or requiredness with
//! `#[command(mut_arg(...))]` on its own `Args`; the flag's name and meaning stay one.

use std::path::{Path, PathBuf};

use crate::core::model::engine::batcher::Sampling;
use anyhow::{Result, bail};
use candle_core::{DType, Device};
use serde::Serialize;

use crate::core::error::usage;
use crate::core::eval::chunks::Chunk;
use crate::core::hub::model_ref;
use crate::core::hub::repo::RepoKind;
use crate::core::model::engine::conversation::Conversation;
use crate::core::model::engine::generate::GenerationConfig;
use crate::core::model::load::checkpoint::{Checkpoint, missing_tower, mt_cache_dir};
use crate::core::model::load::gguf;
use crate::core::model::quant::QuantKind;
use crate::core::roi::Orientation;
use crate::core::train::presets::Preset;
use crate::core::vqa::Bench;

/// The checkpoint a model command loads: `--model` (alias `--ckpt`), `--vision-tower`,
/// `--dtype`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ModelArgs {
    /// Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id
    /// `org/name[@revision]` (from the Hugging Face cache, fetched when missing).
    #[arg(
        long,
        visible_alias = "ckpt",
        value_name = "DIR|ORG/NAME",
        required = true
    )]
    pub model: Option<PathBuf>,
    /// CLIP tower folder when the checkpoint does not carry or find one; with a GGUF
    /// --model, its mmproj GGUF file (llama.cpp's LLaVA pair, as llama-mtmd-cli takes it).
    #[arg(long, visible_alias = "mmproj", value_name = "DIR|FILE")]
    pub vision_tower: Option<PathBuf>,
    /// Compute dtype (default: bf16 on a GPU, f32 on the CPU).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
}

impl ModelArgs {
    /// The checkpoint folder. Every command but `mt caption --dry-run` (which loads no
    /// model) has clap require `--model`.
    pub(crate) fn path(&self) -> &Path {
        self.model.as_deref().unwrap_or(Path::new("."))
    }

    /// Replaces a Hub id given as `--model org/name[@revision]` (not a folder here) by
    /// its snapshot in the Hugging Face cache, fetched first when incomplete; without
    /// `--vision-tower`, fetches the `mm_vision_tower` the checkpoint cannot find.
    ///
    /// A GGUF text model with its `--mmproj` GGUF becomes the checkpoint folder that
    /// describes them (see [`gguf::materialize`]).
    pub(crate) fn resolve_hub(&mut self) -> Result<()> {
        let Some(spec) = &self.model else {
            return Ok(());
        };
        if gguf::is_gguf(spec) {
            let Some(mmproj) = self.vision_tower.as_deref().filter(|p| gguf::is_gguf(p)) else {
                return Err(usage(format!(
                    "{}: a GGUF text model needs its vision tower: --mmproj MMPROJ.gguf \
                     (llama.cpp's LLaVA files come as a pair)",
                    spec.display()
                )));
            };
            let cache = mt_cache_dir().join("gguf");
            self.model = Some(gguf::materialize(spec, mmproj, &cache)?);
            self.vision_tower = None;
            return Ok(());
        }
        if let Some(tower) = self.vision_tower.as_deref().filter(|p| gguf::is_gguf(p)) {
            return Err(usage(format!(
                "{}: an mmproj GGUF goes with a GGUF text model (--model TEXT.gguf); {} is not one",
                tower.display(),
                spec.display()
            )));
        }
        let dir = model_ref::resolve(spec)?;
        if self.vision_tower.is_none()
            && let Some(tower) = missing_tower(&dir)
        {
            model_ref::fetch_tower(&tower);
        }
        self.model = Some(dir);
        Ok(())
    }

    /// Opens the checkpoint (and `--vision-tower`) onto `device` as `dtype`.
    pub(crate) fn open(&self, device: &Device, dtype: DType) -> Result<Checkpoint> {
        Checkpoint::open(self.path(), self.vision_tower.as_deref(), device, dtype)
    }

    /// The dtype on `device`: `--dtype`, else bf16 on a GPU and f32 on the CPU.
    pub(crate) fn dtype(&self, device: &Device) -> Result<DType> {
        match self.dtype {
            Some(d) => Ok(d.into()),
            None => crate::core::model::load::checkpoint::dtype(None, device),
        }
    }
}

/// Where a one-device command runs: `--gpu N` or `--cpu`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct DeviceArgs {
    /// GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else
    /// the CPU.
    #[arg(long, value_name = "N")]
    pub gpu: Option<usize>,
    /// Run on the CPU even when a GPU is visible.
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
}

impl DeviceArgs {
    /// The GPU to use, none for the CPU (see [`super::pick_gpu`]).
    pub(crate) fn gpu(&self) -> Option<usize> {
        super::pick_gpu(self.gpu, self.cpu)
    }
}

/// Where a command that can spread over several GPUs runs: `--gpu 0,1,..` or `--cpu`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct GpusArgs {
    /// GPU indices; with several, one worker process each over contiguous chunks.
    /// Default: GPU 0 when a CUDA build sees one, else the CPU.
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub gpu: Vec<usize>,
    /// Run on the CPU even when a GPU is visible.
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
}

impl GpusArgs {
    /// The GPU a run given neither `--gpu` nor `--cpu` takes: GPU 0 when a CUDA build
    /// sees one (see [`super::pick_gpu`]).
    pub(crate) fn default_gpu(&self) -> Option<usize> {
        match self.gpu.is_empty() {
            true => super::pick_gpu(None, self.cpu),
            false => None,
        }
    }
}

/// How a model command prompts and generates: `--conv-mode`, `--max-new-tokens`,
/// `--temperature`, `--top-p`, `--top-k` (greedy unless asked).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct DecodingArgs {
    /// Conversation template the question is put in (LLaVA's `--conv-mode`: llama3,
    /// vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct,
    /// plain, ...; `llava-med:vicuna_v1` for LLaVA-Med's own rendering). Default: the
    /// checkpoint's (llama3 for LLaVA-Med++).
    #[arg(long, value_name = "NAME", value_parser = parse_conv_mode)]
    pub conv_mode: Option<String>,
    /// Most tokens generated per caption or answer.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature (default 0: greedy, reproducible).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (default 1: off).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens (default 0: off).
    #[arg(long)]
    pub top_k: Option<usize>,
}

impl DecodingArgs {
    /// Rejects values that make no sense.
    pub(crate) fn check(&self) -> Result<()> {
        if self.temperature.is_some_and(|t| t < 0.0)
            || self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0))
        {
            return Err(usage("--temperature must be >= 0 and --top-p in (0, 1]"));
        }
        Ok(())
    }

    /// The temperature (0: greedy).
    pub(crate) fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(0.0)
    }

    /// The nucleus mass (1: off).
    pub(crate) fn top_p(&self) -> f64 {
        self.top_p.unwrap_or(1.0)
    }

    /// The top-k cut (0: off).
    pub(crate) fn top_k(&self) -> usize {
        self.top_k.unwrap_or(0)
    }

    /// A request's decoding settings from these flags, sampling from `seed`.
    pub(crate) fn sampling(&self, seed: u64) -> Sampling {
        Sampling {
            max_tokens: self.max_new_tokens,
            temperature: self.temperature(),
            top_p: self.top_p(),
            top_k: self.top_k(),
            seed,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }

    /// The generation settings these flags ask for (the stop tokens come from the model).
    pub(crate) fn generation(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature(),
            top_p: self.top_p(),
            top_k: self.top_k(),
            stop_tokens: Vec::new(),
        }
    }
}

/// `--quantize`: the language model's weights in llama.cpp's block formats.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct QuantizeArgs {
    /// Quantize the language model at load: its Linear weights, LM head and token
    /// embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a
    /// matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The
    /// vision tower, the projector and the norms stay in --dtype. Inference only.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub quantize: Option<QuantArg>,
}

impl QuantizeArgs {
    /// Asks `ckpt` to load quantized, when `--quantize` was given.
    pub(crate) fn apply(&self, ckpt: &mut Checkpoint) {
        if let Some(q) = self.quantize {
            ckpt.quantize(q.into());
        }
    }

    /// The device text of a run on `gpu` (or the CPU): `cpu f32`, `cuda:0 bf16 q4k`.
    pub(crate) fn describe(&self, gpu: Option<usize>, dtype: DType) -> String {
        let base = device_text(gpu, dtype);
        match self.quantize {
            Some(q) => format!("{base} {}", QuantKind::from(q).name()),
            None => base,
        }
    }
}

/// The device text of a run on `gpu` (or the CPU) in `dtype`: `cpu f32`, `cuda:0 bf16`.
pub(crate) fn device_text(gpu: Option<usize>, dtype: DType) -> String {
    let place = gpu.map_or_else(|| "cpu".to_string(), |i| format!("cuda:{i}"));
    format!("{place} {dtype:?}").to_lowercase()
}

/// `--quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum QuantArg {
    /// 8-bit blocks of 32 (8.5 bits a weight).
    #[value(name = "q8_0", alias = "q8")]
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 6-bit k-quants (6.6 bits a weight).
    #[value(name = "q6k", alias = "q6_k")]
    #[serde(rename = "q6k")]
    Q6K,
    /// 4-bit k-quants (4.5 bits a weight).
    #[value(name = "q4k", alias = "q4_k")]
    #[serde(rename = "q4k")]
    Q4K,
}

impl From<QuantArg> for QuantKind {
    fn from(q: QuantArg) -> QuantKind {
        match q {
            QuantArg::Q8_0 => QuantKind::Q8_0,
            QuantArg::Q6K => QuantKind::Q6K,
            QuantArg::Q4K => QuantKind::Q4K,
        }
    }
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum DTypeArg {
    /// 32-bit float.
    #[value(name = "f32", alias = "float32")]
    #[serde(rename = "f32")]
    F32,
    /// bfloat16.
    #[value(name = "bf16", alias = "bfloat16")]
    #[serde(rename = "bf16")]
    Bf16,
    /// IEEE half precision.
    #[value(name = "f16", alias = "float16")]
    #[serde(rename = "f16")]
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

/// `--bench`: the VQA benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchArg {
    /// VQA-RAD.
    VqaRad,
    /// SLAKE.
    Slake,
    /// PathVQA.
    Pathvqa,
}

impl From<BenchArg> for Bench {
    fn from(b: BenchArg) -> Bench {
        match b {
            BenchArg::VqaRad => Bench::VqaRad,
            BenchArg::Slake => Bench::Slake,
            BenchArg::Pathvqa => Bench::Pathvqa,
        }
    }
}

/// `mt train --stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum StageArg {
    /// Projector alignment: the projector only (lr 2e-3).
    #[value(name = "1")]
    #[serde(rename = "1")]
    One,
    /// Instruction tuning: the language model and the projector (lr 2e-5).
    #[value(name = "2")]
    #[serde(rename = "2")]
    Two,
}

impl From<StageArg> for Preset {
    fn from(s: StageArg) -> Preset {
        match s {
            StageArg::One => Preset::Stage1,
            StageArg::Two => Preset::Stage2,
        }
    }
}

/// `mt caption --pipeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineArg {
    /// Coarse caption + ROI + retrieved knowledge -> a multigranular description.
    Medtrinity,
}

/// `mt roi --orientation`: the left/right convention of position words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrientationArg {
    /// The patient's sides: the image's left is the patient's right (CT, MR, X-ray).
    Radiological,
    /// The sides as the image shows them.
    Anatomical,
}

impl From<OrientationArg> for Orientation {
    fn from(o: OrientationArg) -> Orientation {
        match o {
            OrientationArg::Radiological => Orientation::Radiological,
            OrientationArg::Anatomical => Orientation::Anatomical,
        }
    }
}

/// `mt caption --orientation`: a convention, or `auto` (by modality).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoOrientationArg {
    /// Radiological for CT, MRI, X-ray and PET; as shown otherwise.
    Auto,
    /// The patient's sides: the image's left is the patient's right.
    Radiological,
    /// The sides as the image shows them.
    Anatomical,
}

impl AutoOrientationArg {
    /// The forced convention; none for `auto`.
    pub(crate) fn orientation(self) -> Option<Orientation> {
        match self {
            Self::Auto => None,
            Self::Radiological => Some(Orientation::Radiological),
            Self::Anatomical => Some(Orientation::Anatomical),
        }
    }
}

/// `--image-aspect-ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AspectArg {
    /// Pad to square with the mean colour, then resize.
    Pad,
    /// Resize and centre-crop to square.
    Square,
}

impl AspectArg {
    /// The name LLaVA's config and the training plan use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pad => "pad",
            Self::Square => "square",
        }
    }
}

/// `mt eval score --scorer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerArg {
    /// run_eval_nocandi.py of the MedTrinity-25M repository.
    LlavaMed,
    /// VQA.evaluate of multimedeval 1.0.0.
    Multimedeval,
}

/// `mt download --repo-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepoTypeArg {
    /// A model repository.
    Model,
    /// A dataset repository.
    Dataset,
}

impl From<RepoTypeArg> for RepoKind {
    fn from(r: RepoTypeArg) -> RepoKind {
        match r {
            RepoTypeArg::Model => RepoKind::Model,
            RepoTypeArg::Dataset => RepoKind::Dataset,
        }
    }
}

/// `--conv-mode NAME`: a known conversation template.
pub(crate) fn parse_conv_mode(name: &str) -> std::result::Result<String, String> {
    Conversation::new(name)
        .map(|_| name.to_string())
        .map_err(|e| format!("{e:#}"))
}

/// `--chunk K/N` (0 <= K < N).
pub(crate) fn parse_chunk(text: &str) -> std::result::Result<Chunk, String> {
    Chunk::parse(text).map_err(|e| format!("{e:#}"))
}

/// A chunk as run.json records it and a worker's argv gives it: `K/N`.
pub(crate) fn chunk_text<S: serde::Serializer>(
    chunk: &Option<Chunk>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    chunk.map(|c| c.to_string()).serialize(s)
}

/// `mt roi --connectivity`: which neighbours join a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum ConnectivityArg {
    /// Edge neighbours only.
    #[value(name = "4")]
    #[serde(rename = "4")]
    Four,
    /// Edge and corner neighbours.
    #[value(name = "8")]
    #[serde(rename = "8")]
    Eight,
}

impl ConnectivityArg {
    /// The neighbour count.
    pub(crate) fn neighbours(self) -> u8 {
        match self {
            Self::Four => 4,
            Self::Eight => 8,
        }
    }
}

/// `mt completions SHELL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

impl ShellArg {
    /// The shell's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Zsh => "zsh",
            Self::Fish => "fish",
        }
    }
}

/// The command line that parses back to `args`: each of `A`'s flags with the value run.json
/// records for it (`--flag` for a set switch, `--flag V` once per value, nothing for an
/// unset option). Used to start workers with the settings of the run that starts them.
pub(crate) fn to_argv<A: clap::Args + Serialize>(args: &A) -> Result<Vec<String>> {
    use serde_json::Value;
    let command = A::augment_args(clap::Command::new("args"));
    let values = serde_json::to_value(args)?;
    let mut argv = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            bail!("to_argv: `{id}` is positional");
        };
        let flag = format!("--{long}");
        let Some(value) = values.get(id) else {
            bail!("to_argv: `{id}` is not serialized");
        };
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let items = match value {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            Value::Bool(on) if switch => {
                if *on {
                    argv.push(flag);
                }
                continue;
            }
            other => vec![other.clone()],
        };
        for item in items {
            let text = match item {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => bail!("to_argv: `{id}` holds {other}"),
            };
            argv.push(flag.clone());
            argv.push(text);
        }
    }
    Ok(argv)
}

/// `500MB`, `64KB`, `1GB`, `1000` (bytes; binary multiples), at least 1.
pub(crate) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = [
        ("GB", 1u64 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    match num.parse::<f64>() {
        Ok(v) if v * mult as f64 >= 1.0 => Ok((v * mult as f64) as u64),
        _ => Err(format!("`{s}` is not a size (like 500MB, 64KB or 1000)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Each choice is recorded (serde) under the name clap parses.
    fn names_agree<E: ValueEnum + Serialize>() {
        for v in E::value_variants() {
            let name = v.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_value(v).unwrap(), name);
        }
    }

    #[test]
    fn recorded_names_are_the_flag_values() {
        names_agree::<DTypeArg>();
        names_agree::<BenchArg>();
        names_agree::<StageArg>();
        names_agree::<PipelineArg>();
        names_agree::<OrientationArg>();
        names_agree::<AutoOrientationArg>();
        names_agree::<AspectArg>();
        names_agree::<ScorerArg>();
        names_agree::<RepoTypeArg>();
        names_agree::<ShellArg>();
        names_agree::<ConnectivityArg>();
        for shell in ShellArg::value_variants() {
            assert_eq!(serde_json::to_value(shell).unwrap(), shell.name());
        }
    }

    #[test]
    fn dtype_keeps_the_long_spellings() {
        assert_eq!(DTypeArg::from_str("bfloat16", false), Ok(DTypeArg::Bf16));
        assert_eq!(DTypeArg::from_str("float32", false), Ok(DTypeArg::F32));
        assert_eq!(DTypeArg::from_str("float16", false), Ok(DTypeArg::F16));
    }
}
