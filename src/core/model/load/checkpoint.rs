//! A checkpoint folder resolved: the checked config, the vision tower (inside the
//! checkpoint, `--vision-tower DIR`, the `mm_vision_tower` path, or the Hugging Face
//! cache) and the weights. Its tokenizer, image preprocessing and stop tokens are the
//! engine's ([`TextCodec::for_checkpoint`](crate::core::model::engine::prompt::TextCodec),
//! `ImageProcessor::for_checkpoint`): loading never reaches into the engine.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device};
use sha2::{Digest, Sha256};

use crate::core::model::arch::llava::Llava;
use crate::core::model::load::config::{ClipConfig, Layout, LlavaConfig};
use crate::core::model::load::gguf;
use crate::core::model::load::weights::{NameMap, Weights};
use crate::core::model::quant::QuantKind;

/// Canonical name that tells whether a checkpoint carries its own CLIP weights.
const TOWER_PROBE: &str = "vision.embeddings.class_embedding";

/// A resolved checkpoint whose tensors are mapped but not loaded yet.
pub struct Checkpoint {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// Its `config.json`, completed with the vision tower's config.
    pub config: LlavaConfig,
    /// The separate CLIP folder in use, if any.
    pub tower_dir: Option<PathBuf>,
    weights: Weights,
}

impl Checkpoint {
    /// Reads the config, finds the vision tower and maps the weight files.
    pub fn open(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: no such checkpoint folder", dir.display());
        }
        let config = LlavaConfig::from_dir(dir)?;
        let mut weights = Weights::new(device, dtype);
        let gguf = gguf::Sources::of(dir)?;
        match &gguf {
            Some(files) => {
                weights.add_gguf(&files.model)?;
                weights.add_gguf(&files.mmproj)?;
            }
            None => weights.add_dir(dir, stored_names(config.layout))?,
        }
        let hub_cache = hub_cache_dir();
        let tower = match vision_tower {
            Some(d) => Tower::Folder(d.to_path_buf()),
            None => Tower::of(dir, &config, &weights, &hub_cache),
        };
        let tower_dir = match &tower {
            Tower::Folder(d) => Some(d.clone()),
            _ => None,
        };
        if let Some(tower) = tower_dir.as_ref().filter(|_| gguf.is_none()) {
            weights
                .add_dir(tower, NameMap::ClipTower)
                .with_context(|| format!("vision tower {}", tower.display()))?;
        }
        let config = match tower {
            // A llava-hf config describes its tower, whatever folder --vision-tower names.
            _ if config.vision.is_some() => config,
            Tower::InConfig => config,
            Tower::Folder(folder) => {
                let vision = ClipConfig::from_file(&folder.join("config.json"))?;
                config
                    .with_vision(vision)
                    .with_context(|| format!("{}", dir.join("config.json").display()))?
            }
            Tower::Stored(vision) => config
                .with_vision(vision)
                .with_context(|| format!("{}", dir.join("config.json").display()))?,
            Tower::Missing(name) => bail!(
                "{}: the vision tower `{name}` was not found (looked for it as a folder next to the \
                 checkpoint and in the Hugging Face cache {}); pass --vision-tower DIR or run \
                 `mt download {name}`",
                dir.display(),
                hub_cache.display()
            ),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tower_dir,
            weights,
        })
    }

    /// Loads the language model's matrices quantized to `kind` (see
    /// [`Weights::quantize`]).
    pub fn quantize(&mut self, kind: QuantKind) {
        self.weights.quantize(kind);
    }

    /// Loads every tensor and builds the model; lists all missing or mis-shaped tensors.
    pub fn load(self) -> Result<Llava> {
        let model = Llava::load(self.config.clone(), &self.weights)?;
        self.weights
            .finish()
            .with_context(|| format!("{}", self.dir.display()))?;
        Ok(model)
    }

    /// A short model name for outputs (see [`model_name`]).
    pub(crate) fn name(&self) -> String {
        model_name(&self.dir)
    }
}

/// A checkpoint folder's short name, as LLaVA's `get_model_name_from_path` gives it: the
/// folder name, or `<parent>_checkpoint-N` for a trainer checkpoint folder; a snapshot in
/// the Hugging Face cache (`models--ORG--NAME/snapshots/REV`) is NAME, as for `ORG/NAME`;
/// the folder describing a GGUF file is that file's stem.
pub(crate) fn model_name(dir: &Path) -> String {
    if let Ok(Some(files)) = gguf::Sources::of(dir)
        && let Some(stem) = files.model.file_stem()
    {
        return stem.to_string_lossy().into_owned();
    }
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let snapshots = canonical
        .parent()
        .filter(|p| name(p).as_deref() == Some("snapshots"));
    if let Some(repo) = snapshots.and_then(Path::parent).and_then(name)
        && let Some(id) = repo.strip_prefix("models--")
        && let Some((_, model)) = id.rsplit_once("--")
    {
        return model.to_string();
    }
    match name(&canonical) {
        Some(last) if last.starts_with("checkpoint-") => match canonical.parent().and_then(name) {
            Some(parent) => format!("{parent}_{last}"),
            None => last,
        },
        Some(last) => last,
        None => "model".to_string(),
    }
}

/// Files up to this size are hashed whole by [`content_identity`].
const WHOLE_FILE_LIMIT: u64 = 32 << 20;
/// How much of the start and of the end of a larger file is hashed.
const END_BYTES: u64 = 1 << 20;
/// Evenly spaced samples hashed in between, and their size.
const SAMPLES: u64 = 16;
const SAMPLE_BYTES: u64 = 4096;
/// The most of a safetensors header that is hashed (the format allows 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// What a checkpoint folder holds, cheaply: for every file at its top level (links
/// followed, dot files left out), its name and a SHA-256 (first 16 hex digits) of its
/// size and content. Files up to 32 MiB (configs, tokenizers, weight indexes, small
/// weights) are hashed whole; of a larger one, its safetensors header, its first and
/// last MiB (a PyTorch zip's directory, with every member's CRC-32) and 16 samples of
/// 4 KiB between: a multi-GB shard costs a few reads, and fine-tuned weights at the same
/// path differ in every sample.
pub(crate) fn content_identity(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let digest =
            file_identity(&path).with_context(|| format!("cannot read {}", path.display()))?;
        out.insert(name, digest);
    }
    Ok(out)
}

/// One file's part of [`content_identity`].
fn file_identity(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut hash_range = |file: &mut File, start: u64, len: u64| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    };
    if size <= WHOLE_FILE_LIMIT {
        hash_range(&mut file, 0, size)?;
    } else {
        if path.extension().is_some_and(|e| e == "safetensors") {
            let mut len = [0u8; 8];
            file.read_exact(&mut len)?;
            let header = u64::from_le_bytes(len).min(MAX_HEADER);
            hash_range(&mut file, 0, 8 + header)?;
        }
        hash_range(&mut file, 0, END_BYTES)?;
        for k in 1..SAMPLES {
            hash_range(&mut file, (size - SAMPLE_BYTES) / SAMPLES * k, SAMPLE_BYTES)?;
        }
        hash_range(&mut file, size - END_BYTES, END_BYTES)?;
    }
    Ok(crate::core::hash::hex(&h.finalize())[..16].to_string())
}

/// mt's own cache: `$MT_CACHE_DIR`, else `~/.cache/mt` (the chat history, the checkpoint
/// folders GGUF files are described by).
pub(crate) fn mt_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/mt")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub(crate) fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/huggingface/hub")
}

/// How a layout's tensors are named.
fn stored_names(layout: Layout) -> NameMap {
    match layout {
        Layout::Original => NameMap::Original,
        Layout::Hf => NameMap::Hf,
    }
}

/// Where a checkpoint's CLIP tower comes from.
enum Tower {
    /// llava-hf: the config describes it and the checkpoint holds it.
    InConfig,
    /// A CLIP folder (`--vision-tower`, or `mm_vision_tower` found on disk or in the cache).
    Folder(PathBuf),
    /// The checkpoint holds the weights of a tower mt knows by name.
    Stored(ClipConfig),
    /// Nowhere: the `mm_vision_tower` name.
    Missing(String),
}

impl Tower {
    /// The tower of the checkpoint in `dir` (config read, weights mapped) without
    /// `--vision-tower`.
    fn of(dir: &Path, config: &LlavaConfig, weights: &Weights, hub_cache: &Path) -> Self {
        if config.vision.is_some() {
            return Self::InConfig;
        }
        let name = config.vision_tower.clone().unwrap_or_default();
        if config.layout == Layout::Original
            && let Some(folder) = find_tower(dir, &name, hub_cache)
        {
            return Self::Folder(folder);
        }
        match ClipConfig::known(&name) {
            Some(known) if weights.contains(TOWER_PROBE) => Self::Stored(known),
            _ => Self::Missing(name),
        }
    }
}

/// The `mm_vision_tower` a checkpoint folder needs and cannot find (the error
/// [`Checkpoint::open`] would report), for callers that may fetch it. `None` for anything
/// unreadable.
pub(crate) fn missing_tower(dir: &Path) -> Option<String> {
    let config = LlavaConfig::from_dir(dir).ok()?;
    let mut weights = Weights::new(&Device::Cpu, DType::F32);
    weights.add_dir(dir, stored_names(config.layout)).ok()?;
    match Tower::of(dir, &config, &weights, &hub_cache_dir()) {
        Tower::Missing(name) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// Where `mm_vision_tower` lives: a folder (absolute, or relative to the checkpoint
/// or the working directory) or a snapshot in the hub cache rooted at `hub_cache`
/// (the caller reads the environment: [`hub_cache_dir`]).
fn find_tower(checkpoint: &Path, name: &str, hub_cache: &Path) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    let as_path = Path::new(name);
    let candidates = [checkpoint.join(as_path), as_path.to_path_buf()];
    if let Some(dir) = candidates
        .into_iter()
        .find(|d| d.join("config.json").is_file())
    {
        return Some(dir);
    }
    let repo = hub_cache.join(format!("models--{}", name.replace('/', "--")));
    let main = std::fs::read_to_string(repo.join("refs/main")).ok();
    let snapshots = repo.join("snapshots");
    if let Some(commit) = main {
        let dir = snapshots.join(commit.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The device for `--gpu N` (CUDA builds) or the CPU.
pub(crate) fn device(gpu: Option<usize>) -> Result<Device> {
    match gpu {
        None => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        Some(i) => Ok(Device::new_cuda(i)?),
        #[cfg(not(feature = "cuda"))]
        Some(_) => Err(crate::core::error::usage(
            "this mt was built without GPU support; rebuild with `--features cuda` or use --cpu",
        )),
    }
}

/// Parses `--dtype`; the default is bf16 on a GPU and f32 on the CPU.
pub(crate) fn dtype(name: Option<&str>, device: &Device) -> Result<DType> {
    Ok(match name {
        None if device.is_cpu() => DType::F32,
        None => DType::BF16,
        Some("f32" | "float32") => DType::F32,
        Some("bf16" | "bfloat16") => DType::BF16,
        Some("f16" | "float16") => DType::F16,
        Some(other) => {
            return Err(crate::core::error::usage(format!(
                "--dtype {other}: expected f32, bf16 or f16"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_named_as_llava_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let at = |rel: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(&p).unwrap();
            model_name(&p)
        };
        assert_eq!(at("LLaVA-Med-pp"), "LLaVA-Med-pp");
        assert_eq!(at("run/checkpoint-500"), "run_checkpoint-500");
        let snapshot = "hub/models--UCSC-VLAA--LLaVA-Med-pp/snapshots/0123abcd";
        assert_eq!(at(snapshot), "LLaVA-Med-pp");
    }

    #[test]
    fn finds_the_tower_next_to_the_checkpoint_or_in_the_hub_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("ckpt");
        let local = dir.path().join("clip");
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("config.json"), "{}").unwrap();
        let hub = dir.path().join("hub");
        assert_eq!(
            find_tower(&ckpt, "../clip", &hub),
            Some(ckpt.join("../clip"))
        );

        // The hub cache layout: refs/main names the snapshot to use.
        let repo = dir
            .path()
            .join("hub/models--openai--clip-vit-large-patch14-336");
        for commit in ["aaaa", "bbbb"] {
            std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
            std::fs::write(
                repo.join("snapshots").join(commit).join("config.json"),
                "{}",
            )
            .unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaaa\n").unwrap();
        assert_eq!(
            find_tower(&ckpt, "openai/clip-vit-large-patch14-336", &hub),
            Some(repo.join("snapshots/aaaa"))
        );
        // Without refs/main, the last snapshot with a config.
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        assert_eq!(
            find_tower(&ckpt, "openai/clip-vit-large-patch14-336", &hub),
            Some(repo.join("snapshots/bbbb"))
        );
        assert_eq!(find_tower(&ckpt, "org/unknown", &hub), None);
        // Another cache root does not have it.
        assert_eq!(
            find_tower(
                &ckpt,
                "openai/clip-vit-large-patch14-336",
                &dir.path().join("elsewhere")
            ),
            None
        );
    }

    #[test]
    fn content_identity_names_each_file_and_sees_changed_weights_without_reading_them_all() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"a": 1}"#).unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        // A big safetensors file: an 8-byte length, a JSON header, then data.
        let header = br#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
        let size = (WHOLE_FILE_LIMIT + 3 * END_BYTES) as usize;
        let mut big = (header.len() as u64).to_le_bytes().to_vec();
        big.extend_from_slice(header);
        big.resize(size, 7);
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, &big).unwrap();
        let first = content_identity(dir.path()).unwrap();
        let names: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(names, ["config.json", "model.safetensors"]);
        assert_eq!(content_identity(dir.path()).unwrap(), first);

        let changed = |at: usize| {
            let mut bytes = big.clone();
            bytes[at] ^= 1;
            std::fs::write(&weights, &bytes).unwrap();
            let now = content_identity(dir.path()).unwrap();
            std::fs::write(&weights, &big).unwrap();
            now["model.safetensors"] != first["model.safetensors"]
                && now["config.json"] == first["config.json"]
        };
        // The header, both ends, a sample; a byte between samples is not read.
        let step = (size as u64 - SAMPLE_BYTES) / SAMPLES;
        assert!(changed(10));
        assert!(changed(size - 1));
        assert!(changed((step * 5 + 100) as usize));
        assert!(!changed((step * 5 + SAMPLE_BYTES + 100) as usize));
        let mut longer = big.clone();
        longer.push(0);
        std::fs::write(&weights, &longer).unwrap();
        assert_ne!(content_identity(dir.path()).unwrap(), first);
        std::fs::write(&weights, &big).unwrap();

        std::fs::write(dir.path().join("config.json"), r#"{"a": 2}"#).unwrap();
        let now = content_identity(dir.path()).unwrap();
        assert_ne!(now["config.json"], first["config.json"]);
        assert_eq!(now["model.safetensors"], first["model.safetensors"]);
        assert!(content_identity(&dir.path().join("nowhere")).is_err());
    }
}
