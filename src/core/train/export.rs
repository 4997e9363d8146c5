//! Writing what training produces, in formats the Python side loads: full models in
//! the original LLaVA layout (`model.*`, `lm_head.*`, `model.mm_projector.*` in
//! safetensors shards with an index, `{"format": "pt"}` metadata, the checkpoint's
//! config, tokenizer and generation files), the stage-1 projector
//! (`mm_projector.safetensors`, and `mm_projector.bin` for LLaVA's `torch.load`), and
//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`, the projector
//! in `non_lora_trainables.safetensors` and `.bin`).
//! Every folder is built under `<name>.partial` and renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use candle_core::Tensor;
use candle_core::safetensors::MmapedSafetensors;
use serde_json::{Value, json};

use super::params::LoraSpec;
use super::torch_save::write_torch_bin;
use crate::core::model::arch::llama::{FUSED, fused_layer};
use crate::core::model::load::weights::{Naming, StoredNames, weight_files};

/// Largest shard `save_pretrained` writes by default (5 GB).
pub(crate) const MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Files copied from the source checkpoint next to new weights.
const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
];

/// Writes `tensors` to one safetensors file with `{"format": "pt"}` metadata.
pub(crate) fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(data, Some(metadata), path)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// Reads a tensor file into named tensors on the CPU: safetensors, or a PyTorch `.bin`
/// / `.pt` zip archive (the pickle is interpreted, never executed).
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let is_pickle = path
        .extension()
        .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
    if !is_pickle {
        return read_safetensors(path);
    }
    let reader = format!("{}: the PyTorch file reader", path.display());
    crate::core::error::contain_panic(&reader, || {
        crate::core::pickle::allow_list::check(path)?;
        Ok(candle_core::pickle::read_all(path)
            .with_context(|| format!("cannot read PyTorch file {}", path.display()))?
            .into_iter()
            .collect())
    })
}

/// The first of `names` (safetensors before `.bin`) that exists in `dir`.
pub(crate) fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads a safetensors file into named tensors on the CPU.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(
        candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into_iter()
            .collect(),
    )
}

/// A folder being written: `<dir>.partial` until [`Staged::commit`] renames it.
pub(crate) struct Staged {
    pub tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    /// The folder `dest` is staged in (`dest.partial`).
    pub(crate) fn partial(dest: &Path) -> PathBuf {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        dest.with_file_name(name)
    }

    /// Starts `dest` afresh (a stale `.partial` from a killed run is removed).
    pub(crate) fn begin(dest: &Path) -> Result<Self> {
        let tmp = Self::partial(dest);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Syncs the finished folder to disk and puts it in place of `dest` (a crash
    /// leaves either the old state or the complete new folder, never a cut one).
    pub(crate) fn commit(self) -> Result<PathBuf> {
        let sync = |path: &Path| -> Result<()> {
            fs::File::open(path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", path.display()))
        };
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if path.is_file() {
                sync(&path)?;
            }
        }
        sync(&self.tmp)?;
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest)
                .with_context(|| format!("cannot replace {}", self.dest.display()))?;
        }
        fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("cannot rename {}", self.tmp.display()))?;
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync(parent)?;
        }
        Ok(self.dest)
    }
}

/// Writes model weights (`(stored name, tensor)`) into `dir`: `model.safetensors`, or
/// shards of at most `max_shard` bytes as `model-0000I-of-0000N.safetensors` with
/// `model.safetensors.index.json`.
pub fn write_weights(dir: &Path, named: Vec<(String, Tensor)>, max_shard: usize) -> Result<()> {
    let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut size = 0;
    for (name, t) in named {
        if size > 0 && size + bytes(&t) > max_shard {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes(&t);
        shards.last_mut().expect("one shard").push((name, t));
    }
    if shards.len() == 1 {
        return write_safetensors(&dir.join("model.safetensors"), &shards[0]);
    }
    let mut weight_map = BTreeMap::new();
    let mut total = 0;
    let n = shards.len();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        for (name, t) in shard {
            weight_map.insert(name.clone(), Value::String(file.clone()));
            total += bytes(t);
        }
        write_safetensors(&dir.join(&file), shard)?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    Ok(())
}

/// The tensor kinds of a Linear layer that a fused layer stores: a LoRA adapter's A
/// (shared by the parts) and B (stacked like the weight), and the weight.
const FUSABLE: [&str; 3] = [".lora_A.weight", ".lora_B.weight", ".weight"];

/// Phi-3's checkpoints store q, k, v and gate, up fused: the decoder layers mt split at
/// load are joined back (rows in order) under their fused canonical names
/// (`llm.layers.N.self_attn.qkv_proj.weight`, `...qkv_proj.lora_B.weight`, ...); a LoRA
/// A the parts share is stored once.
pub(crate) fn fuse_projections(tensors: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let mut groups: BTreeMap<(String, &str), Vec<Option<Tensor>>> = BTreeMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let split = FUSABLE.iter().find_map(|kind| {
            let path = name.strip_suffix(kind)?;
            Some((fused_layer(path)?, *kind))
        });
        match split {
            Some(((fused, i, n), kind)) => {
                groups.entry((fused, kind)).or_insert_with(|| vec![None; n])[i] = Some(t)
            }
            None => out.push((name, t)),
        }
    }
    for ((fused, kind), parts) in groups {
        let parts = parts
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("{fused}{kind}: a part is missing, cannot store it fused"))?;
        let t = match kind {
            ".lora_A.weight" => parts[0].clone(),
            _ => Tensor::cat(&parts, 0)?,
        };
        out.push((format!("{fused}{kind}"), t));
    }
    Ok(out)
}

/// The inverse of [`fuse_projections`] for a LoRA adapter (PEFT's on Phi-3 targets the
/// fused layers): each part gets the shared A and its rows of B; `out_dims` are the split
/// layers' widths by canonical path.
pub(crate) fn split_fused_lora(
    tensors: HashMap<String, Tensor>,
    out_dims: &HashMap<String, usize>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let fused = FUSED.iter().find_map(|(fused, parts)| {
            ["lora_A", "lora_B"].iter().find_map(|kind| {
                let prefix = name.strip_suffix(&format!("{fused}.{kind}.weight"))?;
                Some((prefix.to_string(), *parts, *kind))
            })
        });
        let Some((prefix, parts, kind)) = fused else {
            out.insert(name, t);
            continue;
        };
        let mut row = 0;
        for part in parts {
            let path = format!("{prefix}{part}");
            let rows = *out_dims
                .get(&path)
                .ok_or_else(|| anyhow!("{name}: the model has no layer {path}"))?;
            let piece = match kind {
                "lora_A" => t.clone(),
                _ => t.narrow(0, row, rows)?,
            };
            row += rows;
            out.insert(format!("{path}.{kind}.weight"), piece);
        }
    }
    Ok(out)
}

/// The vision-tower tensors a source checkpoint stores itself (the original layout's
/// `model.vision_tower.*`, llava-hf's `vision_tower.*`), under their stored names,
/// unchanged (the tower is frozen).
pub(crate) fn stored_vision_tensors(
    source: &Path,
    names: StoredNames,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for file in weight_files(source)? {
        if file.extension().is_none_or(|e| e != "safetensors") {
            continue;
        }
        // SAFETY: read-only map of a checkpoint nobody is expected to truncate meanwhile.
        let st = unsafe { MmapedSafetensors::new(&file) }
            .with_context(|| format!("cannot read {}", file.display()))?;
        for (name, _) in st.tensors() {
            if let Naming::Canonical(canonical) = names.name_map().canonical(&name)
                && canonical.starts_with("vision.")
            {
                let t = st.load(&name, &candle_core::Device::Cpu)?;
                out.push((name, t));
            }
        }
    }
    Ok(out)
}

/// Copies the source checkpoint's `config.json` with `updates` applied, and its
/// tokenizer / generation / preprocessor files. A `mm_vision_tower` that named a
/// local folder relative to the source becomes absolute, so the copy still finds it.
pub fn write_side_files(
    source: &Path,
    dest: &Path,
    updates: &serde_json::Map<String, Value>,
) -> Result<()> {
    let config_path = source.join("config.json");
    let text = fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let mut config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
    if let Some(obj) = config.as_object_mut() {
        if let Some(Value::String(tower)) = obj.get("mm_vision_tower") {
            let local = source.join(tower);
            if Path::new(tower).is_relative() && local.join("config.json").is_file() {
                let absolute = local.canonicalize().unwrap_or(local);
                obj.insert(
                    "mm_vision_tower".into(),
                    Value::String(absolute.display().to_string()),
                );
            }
        }
        for (k, v) in updates {
            obj.insert(k.clone(), v.clone());
        }
    }
    fs::write(
        dest.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    for name in SIDE_FILES {
        let from = source.join(name);
        if from.is_file() {
            fs::copy(&from, dest.join(name))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// PEFT's module names for the LoRA targets.
pub(crate) const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// PEFT's stored name of a canonical LoRA tensor:
/// `llm.layers.0.self_attn.q_proj.lora_A.weight` -> `base_model.model.model.layers.0...`,
/// or on a llava-hf base `base_model.model.model.language_model.layers.0...`: PEFT names
/// the module paths the model has at run time, which are transformers' current ones
/// whatever names the base's files use.
pub(crate) fn peft_name(canonical: &str, names: StoredNames) -> String {
    let runtime = match names {
        StoredNames::Original => StoredNames::Original,
        StoredNames::Hf | StoredNames::HfLegacy => StoredNames::Hf,
    };
    format!("base_model.model.{}", runtime.stored(canonical))
}

/// PEFT's module names for the LoRA targets of Phi-3, whose projections are fused.
const FUSED_LORA_TARGETS: [&str; 4] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"];

/// `target_modules` of an adapter: the projection names for an original-layout base
/// (whose vision tower PEFT never sees, as LLaVA loads it later), a pattern that keeps to
/// the language model for a llava-hf base (its CLIP tower has `q_proj` too).
fn target_modules(names: StoredNames, fused: bool) -> Value {
    let targets: &[&str] = match fused {
        true => &FUSED_LORA_TARGETS,
        false => &LORA_TARGETS,
    };
    match names {
        StoredNames::Original => json!(targets),
        StoredNames::Hf | StoredNames::HfLegacy => {
            json!(format!(r".*language_model.*\.({})", targets.join("|")))
        }
    }
}

/// Writes a PEFT adapter: `adapter_config.json`, `adapter_model.safetensors` (the
/// `lora_*` tensors) and `non_lora_trainables.{safetensors,bin}` (the other trained tensors,
/// LLaVA's name for them, PEFT-style keys).
pub(crate) fn write_adapter(
    dir: &Path,
    base_model: &Path,
    spec: LoraSpec,
    tensors: &[(String, Tensor)],
    names: StoredNames,
    fused: bool,
) -> Result<()> {
    let (lora, other): (Vec<_>, Vec<_>) = tensors
        .iter()
        .cloned()
        .partition(|(n, _)| n.contains(".lora_"));
    let rename = |v: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
        v.into_iter()
            .map(|(n, t)| (peft_name(&n, names), t))
            .collect()
    };
    write_safetensors(&dir.join("adapter_model.safetensors"), &rename(lora))?;
    if !other.is_empty() {
        let other = rename(other);
        write_safetensors(&dir.join("non_lora_trainables.safetensors"), &other)?;
        write_torch_bin(&dir.join("non_lora_trainables.bin"), &other)?;
    }
    let config = json!({
        "base_model_name_or_path": base_model.canonicalize().unwrap_or_else(|_| base_model.to_path_buf()),
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": target_modules(names, fused),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    });
    fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_bin_files_are_read_like_safetensors() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/models");
        let bin = read_tensors(&root.join("tiny-clip/pytorch_model.bin")).unwrap();
        let t = &bin["vision_model.embeddings.class_embedding"];
        assert_eq!(t.dims(), &[32]);
        let st = read_tensors(&root.join("tiny-llava/model-00001-of-00002.safetensors")).unwrap();
        assert!(st.contains_key("model.embed_tokens.weight"));
        assert!(read_tensors(&root.join("tiny-llava/config.json")).is_err());
    }
}
