//! A checkpoint folder resolved into everything generation needs: the checked
//! config, the vision tower (inside the checkpoint, `--vision-tower DIR`, the
//! `mm_vision_tower` path, or the Hugging Face cache), weights, tokenizer, image
//! preprocessing and stop tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device};

use super::config::{ClipConfig, Layout, LlavaConfig};
use super::llava::Llava;
use super::preprocess::ImageProcessor;
use super::prompt::TextCodec;
use super::weights::{NameMap, Weights};

/// Canonical name that tells whether a checkpoint carries its own CLIP weights.
const TOWER_PROBE: &str = "vision.embeddings.class_embedding";

/// A resolved checkpoint whose tensors are mapped but not loaded yet.
pub struct Checkpoint {
    pub dir: PathBuf,
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
        let names = match config.layout {
            Layout::Original => NameMap::Original,
            Layout::Hf => NameMap::Hf,
        };
        weights.add_dir(dir, names)?;
        let tower_dir = match vision_tower {
            Some(d) => Some(d.to_path_buf()),
            None if config.layout == Layout::Original => {
                find_tower(dir, config.vision_tower.as_deref().unwrap_or(""))
            }
            None => None,
        };
        if let Some(tower) = &tower_dir {
            weights
                .add_dir(tower, NameMap::ClipTower)
                .with_context(|| format!("vision tower {}", tower.display()))?;
        }
        let config = if config.vision.is_some() {
            config
        } else {
            let name = config.vision_tower.clone().unwrap_or_default();
            let vision = match &tower_dir {
                Some(tower) => ClipConfig::from_file(&tower.join("config.json"))?,
                None => match ClipConfig::known(&name) {
                    Some(known) if weights.contains(TOWER_PROBE) => known,
                    _ => bail!(
                        "{}: the vision tower `{name}` was not found (looked for it as a folder next to the \
                         checkpoint and in the Hugging Face cache {}); pass --vision-tower DIR or run \
                         `mt download {name}`",
                        dir.display(),
                        hub_cache_dir().display()
                    ),
                },
            };
            config
                .with_vision(vision)
                .with_context(|| format!("{}", dir.join("config.json").display()))?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tower_dir,
            weights,
        })
    }

    /// Loads every tensor and builds the model; lists all missing or mis-shaped tensors.
    pub fn load(self) -> Result<Llava> {
        let model = Llava::load(self.config.clone(), &self.weights)?;
        self.weights
            .finish()
            .with_context(|| format!("{}", self.dir.display()))?;
        Ok(model)
    }

    /// The checkpoint's tokenizer.
    pub fn codec(&self) -> Result<TextCodec> {
        TextCodec::load(&self.dir)
    }

    /// Image preprocessing for this model.
    pub fn processor(&self) -> Result<ImageProcessor> {
        let dir = self
            .tower_dir
            .as_deref()
            .filter(|d| d.join("preprocessor_config.json").exists());
        ImageProcessor::for_checkpoint(
            dir.unwrap_or(&self.dir),
            self.config.input_size(),
            self.config.aspect,
        )
    }

    /// Token ids that end generation: the config's and `generation_config.json`'s
    /// `eos_token_id`, plus `<|eot_id|>` and `<|end_of_text|>` when the tokenizer has them.
    pub fn stop_tokens(&self, codec: &TextCodec) -> Vec<u32> {
        let mut ids = self.config.text.eos_token_ids.clone();
        if let Ok(text) = std::fs::read_to_string(self.dir.join("generation_config.json"))
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
        {
            match json.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => {
                    ids.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                }
                Some(v) => ids.extend(v.as_u64().map(|v| v as u32)),
                None => {}
            }
        }
        ids.extend(
            ["<|eot_id|>", "<|end_of_text|>"]
                .iter()
                .filter_map(|t| codec.token_id(t)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A short model name for outputs (see [`model_name`]).
    pub fn name(&self) -> String {
        model_name(&self.dir)
    }
}

/// A checkpoint folder's short name, as LLaVA's `get_model_name_from_path` gives it: the
/// folder name, or `<parent>_checkpoint-N` for a trainer checkpoint folder.
pub fn model_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(&canonical) {
        Some(last) if last.starts_with("checkpoint-") => match canonical.parent().and_then(name) {
            Some(parent) => format!("{parent}_{last}"),
            None => last,
        },
        Some(last) => last,
        None => "model".to_string(),
    }
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/huggingface/hub")
}

/// Where `mm_vision_tower` lives: a folder (absolute, or relative to the checkpoint
/// or the working directory) or a snapshot in the hub cache.
fn find_tower(checkpoint: &Path, name: &str) -> Option<PathBuf> {
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
    let repo = hub_cache_dir().join(format!("models--{}", name.replace('/', "--")));
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
pub fn device(gpu: Option<usize>) -> Result<Device> {
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
pub fn dtype(name: Option<&str>, device: &Device) -> Result<DType> {
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
    fn finds_the_tower_next_to_the_checkpoint_or_in_the_hub_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("ckpt");
        let local = dir.path().join("clip");
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("config.json"), "{}").unwrap();
        assert_eq!(find_tower(&ckpt, "../clip"), Some(ckpt.join("../clip")));

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
        // SAFETY: tests in this module are the only readers of HF_HUB_CACHE.
        unsafe { std::env::set_var("HF_HUB_CACHE", dir.path().join("hub")) };
        let found = find_tower(&ckpt, "openai/clip-vit-large-patch14-336");
        unsafe { std::env::remove_var("HF_HUB_CACHE") };
        assert_eq!(found, Some(repo.join("snapshots/aaaa")));
        assert_eq!(find_tower(&ckpt, "org/unknown"), None);
    }
}
