//! `mt convert merge-lora`: folds a PEFT LoRA adapter into its base checkpoint
//! (`W += scale * B A` for every adapted Linear, `scale = alpha / r`, or
//! `alpha / sqrt(r)` with rsLoRA), takes the projector from `non_lora_trainables` when
//! the adapter carries one, and writes a plain original-layout LLaVA checkpoint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::Value;

use super::export::{
    MAX_SHARD_BYTES, Staged, first_existing, fuse_projections, read_tensors, split_fused_lora,
    stored_vision_tensors, write_side_files, write_weights,
};
use super::params::overwrite_tensors;
use crate::core::model::arch::linear::Matrix;
use crate::core::model::load::checkpoint::Checkpoint;
use crate::core::model::load::config::TextFamily;
use crate::core::model::load::weights::{NameMap, Naming, StoredNames};

/// What a merge did.
#[derive(Debug, Serialize)]
pub(crate) struct MergeSummary {
    pub merged_layers: usize,
    pub replaced_tensors: usize,
    pub scale: f64,
    pub dtype: String,
}

/// Merges `adapter` into `base` and writes the result to `out` in `dtype`.
pub(crate) fn merge_lora(
    base: &Path,
    vision_tower: Option<&Path>,
    adapter: &Path,
    out: &Path,
    dtype: Option<DType>,
) -> Result<MergeSummary> {
    let config_path = adapter.join("adapter_config.json");
    let config: Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
    let field = |k: &str| config.get(k).and_then(Value::as_f64);
    let (Some(r), Some(alpha)) = (field("r"), field("lora_alpha")) else {
        bail!(
            "{}: fields `r` and `lora_alpha` must be numbers",
            config_path.display()
        );
    };
    if config.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        bail!(
            "{}: fan_in_fan_out adapters are not supported",
            config_path.display()
        );
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if config
            .get(pattern)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            bail!(
                "{}: per-layer `{pattern}` adapters are not supported",
                config_path.display()
            );
        }
    }
    let rslora = config.get("use_rslora").and_then(Value::as_bool) == Some(true);
    let scale = if rslora { alpha / r.sqrt() } else { alpha / r };

    let dev = Device::Cpu;
    let ckpt = Checkpoint::open(base, vision_tower, &dev, DType::F32)?;
    let names = StoredNames::of(base)?;
    let mut model = ckpt.load()?;
    let Some(weights) =
        first_existing(adapter, &["adapter_model.safetensors", "adapter_model.bin"])
    else {
        bail!(
            "{}: no adapter_model.safetensors or adapter_model.bin",
            adapter.display()
        );
    };
    let mut lora = by_canonical(&read_tensors(&weights)?, adapter, names.name_map())?;
    if model.cfg.text.family == TextFamily::Phi3 {
        let out_dims = model
            .llm
            .linears_mut()
            .into_iter()
            .map(|(name, l)| (name, l.out_dim()))
            .collect();
        lora = split_fused_lora(lora, &out_dims)?;
    }
    let mut used = 0;
    let mut merged_layers = 0;
    for (name, linear) in model.llm.linears_mut() {
        let (a, b) = (
            lora.get(&format!("{name}.lora_A.weight")),
            lora.get(&format!("{name}.lora_B.weight")),
        );
        match (a, b) {
            (Some(a), Some(b)) => {
                let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * scale)?;
                let weight = linear.weight.dense()?;
                if delta.dims() != weight.dims() {
                    bail!(
                        "{}: the adapter of {name} gives {:?}, the layer is {:?}",
                        adapter.display(),
                        delta.dims(),
                        weight.dims()
                    );
                }
                linear.weight = Matrix::Dense((weight + delta)?);
                used += 2;
                merged_layers += 1;
            }
            (None, None) => {}
            _ => bail!(
                "{}: {name} has only one of lora_A / lora_B",
                adapter.display()
            ),
        }
    }
    if used != lora.len() {
        let mut unknown: Vec<&String> = lora
            .keys()
            .filter(|k| !k.starts_with("llm.layers.") || !k.contains(".lora_"))
            .collect();
        unknown.sort();
        bail!(
            "{}: {} adapter tensors match no layer of the base model (e.g. {:?})",
            adapter.display(),
            lora.len() - used,
            unknown.first()
        );
    }
    let extra = first_existing(
        adapter,
        &["non_lora_trainables.safetensors", "non_lora_trainables.bin"],
    );
    let replaced_tensors = match &extra {
        Some(file) => overwrite_tensors(
            &mut model,
            by_canonical(&read_tensors(file)?, adapter, names.name_map())?,
            file,
        )?,
        None => 0,
    };
    model.llm.retie();
    let dtype = dtype.unwrap_or_else(|| config_dtype(base));
    let mut tensors: Vec<(String, Tensor)> = model
        .tensors_mut()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    if model.cfg.text.family == TextFamily::Phi3 {
        tensors = fuse_projections(tensors)?;
    }
    let mut tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (names.stored(&n), t))
        .collect();
    tensors.extend(stored_vision_tensors(base, names)?);
    let staged = Staged::begin(out)?;
    write_weights(&staged.tmp, tensors, MAX_SHARD_BYTES)?;
    let side = if adapter.join("config.json").is_file() {
        adapter
    } else {
        base
    };
    let mut updates = serde_json::Map::new();
    updates.insert(
        "torch_dtype".into(),
        Value::String(dtype_name(dtype).into()),
    );
    write_side_files(side, &staged.tmp, &updates)?;
    staged.commit()?;
    Ok(MergeSummary {
        merged_layers,
        replaced_tensors,
        scale,
        dtype: dtype_name(dtype).into(),
    })
}

/// PEFT-named tensors (`base_model.model.<stored name>`) by canonical name.
fn by_canonical(
    tensors: &HashMap<String, Tensor>,
    adapter: &Path,
    map: NameMap,
) -> Result<HashMap<String, Tensor>> {
    tensors
        .iter()
        .map(|(stored, t)| {
            let original = stored.strip_prefix("base_model.model.").unwrap_or(stored);
            match map.canonical(original) {
                Naming::Canonical(name) => Ok((name, t.clone())),
                _ => bail!("{}: unexpected tensor `{stored}`", adapter.display()),
            }
        })
        .collect()
}

/// The dtype a checkpoint's config declares (`torch_dtype` / `dtype`), else f32.
fn config_dtype(dir: &Path) -> DType {
    let declared = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            ["torch_dtype", "dtype"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
        });
    match declared.as_deref() {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}
