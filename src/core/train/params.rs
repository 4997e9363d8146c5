//! What a training stage updates: the projector (stage 1), the language model and the
//! projector (stage 2, fine-tuning), or LoRA adapters on every decoder Linear plus
//! the projector. The chosen tensors become candle `Var`s inside the model, so the
//! forward pass records their gradients; everything else stays a plain tensor.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Result, bail};
use candle_core::{DType, Tensor, TensorId, Var};
use serde::{Deserialize, Serialize};

use super::adamw::Param;
use crate::core::hash::keyed;
use crate::core::model::arch::llama::fused_layer;
use crate::core::model::arch::llava::Llava;
use crate::core::model::arch::lora::{LoraAdapter, LoraDropout};
use crate::core::model::load::config::TextFamily;

/// LoRA settings (PEFT's `LoraConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// `r`: the adapters' rank.
    pub r: usize,
    /// `lora_alpha`: the adapters' output is scaled by `alpha / r`.
    pub alpha: f64,
    /// `lora_dropout`: probability of dropping an adapter input element while training.
    pub dropout: f64,
}

impl LoraSpec {
    /// `alpha / r`, PEFT's scaling.
    pub(crate) fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// Which tensors are trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Tune {
    /// Only the multimodal projector (`tune_mm_mlp_adapter`).
    Projector,
    /// Language model and projector; the vision tower stays frozen.
    Full,
    /// LoRA on the decoder's Linear layers, plus the projector.
    Lora(LoraSpec),
}

/// Peak learning rates: the main one, and the projector's when it differs
/// (`mm_projector_lr`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearningRates {
    /// `learning_rate`: every trained tensor's, unless `projector` is set.
    pub main: f64,
    /// `mm_projector_lr`: the projector's (`None`: `main`).
    pub projector: Option<f64>,
}

/// What training updates, and the switch of LoRA dropout.
pub struct Trainable {
    /// Optimiser parameters, in model order.
    pub params: Vec<Param>,
    /// The adapters' dropout key (0 = off), when LoRA dropout is on.
    pub dropout_key: Option<Arc<AtomicU64>>,
}

/// Attaches LoRA adapters (when `tune` asks for them, A drawn from `seed` as PEFT's
/// Kaiming-uniform init, B zero), turns the trained tensors into `Var`s of `dtype`
/// inside `model` and returns them as optimiser parameters.
pub fn make_trainable(
    model: &mut Llava,
    tune: Tune,
    lrs: LearningRates,
    dtype: DType,
    seed: u64,
) -> Result<Trainable> {
    let dropout_key = match tune {
        Tune::Lora(spec) => attach_lora(model, spec, dtype, seed)?,
        _ => None,
    };
    let mut params = Vec::new();
    // A tensor several layers share (Phi-3's fused LoRA A) becomes one parameter.
    let mut vars: HashMap<TensorId, Var> = HashMap::new();
    for (name, tensor) in model.tensors_mut() {
        if let Some(var) = vars.get(&tensor.id()) {
            *tensor = var.as_tensor().clone();
            continue;
        }
        let is_projector = name.starts_with("projector.");
        let trained = match tune {
            Tune::Projector => is_projector,
            Tune::Full => true,
            Tune::Lora(_) => is_projector || name.contains(".lora_"),
        };
        if !trained {
            continue;
        }
        let var = Var::from_tensor(&tensor.to_dtype(dtype)?)?;
        vars.insert(tensor.id(), var.clone());
        *tensor = var.as_tensor().clone();
        let lr = match (is_projector, lrs.projector) {
            (true, Some(lr)) => lr,
            _ => lrs.main,
        };
        params.push(Param::new(name.clone(), var, lr, decays(&name)));
    }
    model.llm.retie();
    if params.is_empty() {
        bail!("nothing to train: the model has no tensors for {tune:?}");
    }
    Ok(Trainable {
        params,
        dropout_key,
    })
}

/// Replaces model tensors (canonical names, see [`Llava::tensors_mut`]) with `tensors`,
/// keeping each slot's dtype and device; every given tensor must be a model tensor of
/// the same shape (`source` names the file in errors). Returns how many were replaced.
pub(crate) fn overwrite_tensors(
    model: &mut Llava,
    mut tensors: std::collections::HashMap<String, Tensor>,
    source: &std::path::Path,
) -> Result<usize> {
    let mut replaced = 0;
    for (name, slot) in model.tensors_mut() {
        if let Some(t) = tensors.remove(&name) {
            if t.dims() != slot.dims() {
                bail!(
                    "{}: {name} has shape {:?}, the model {:?}",
                    source.display(),
                    t.dims(),
                    slot.dims()
                );
            }
            *slot = t.to_dtype(slot.dtype())?.to_device(slot.device())?;
            replaced += 1;
        }
    }
    if let Some(name) = tensors.keys().next() {
        bail!(
            "{}: `{name}` is not a tensor of this model",
            source.display()
        );
    }
    model.llm.retie();
    Ok(replaced)
}

/// Whether weight decay applies: not to biases and norm weights (transformers'
/// Trainer groups; LayerNorm and LlamaRMSNorm count as norms).
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.ends_with("norm.weight"))
}

/// Attaches the adapters; returns the dropout key they share when dropout is on.
fn attach_lora(
    model: &mut Llava,
    spec: LoraSpec,
    dtype: DType,
    seed: u64,
) -> Result<Option<Arc<AtomicU64>>> {
    if spec.r == 0 {
        bail!("--lora-r must be at least 1");
    }
    if !(0.0..1.0).contains(&spec.dropout) {
        bail!("--lora-dropout must be in [0, 1)");
    }
    let key = (spec.dropout > 0.0).then(|| Arc::new(AtomicU64::new(0)));
    // Phi-3 stores q/k/v and gate/up as one layer each: one adapter per stored layer, as
    // PEFT puts it there, i.e. one A (and one dropout mask) shared by the split parts.
    let fused = model.cfg.text.family == TextFamily::Phi3;
    let mut shared: HashMap<String, (Tensor, u64)> = HashMap::new();
    for (index, (name, linear)) in model.llm.linears_mut().into_iter().enumerate() {
        let (in_dim, out_dim) = (linear.in_dim(), linear.out_dim());
        let device = linear.weight.device().clone();
        let group = fused.then(|| fused_layer(&name)).flatten().map(|g| g.0);
        let (a, index) = match group.as_ref().and_then(|g| shared.get(g)) {
            Some((a, index)) => (a.clone(), *index),
            None => {
                // kaiming_uniform_(a = sqrt(5)) on an (r, in) matrix: U(±1/sqrt(in)).
                let bound = 1.0 / (in_dim as f64).sqrt();
                let values: Vec<f32> = (0..spec.r * in_dim)
                    .map(|k| {
                        (bound * (2.0 * unit(keyed(seed, index as u64, k as u64)) - 1.0)) as f32
                    })
                    .collect();
                let a = Tensor::from_vec(values, (spec.r, in_dim), &device)?.to_dtype(dtype)?;
                if let Some(group) = group {
                    shared.insert(group, (a.clone(), index as u64));
                }
                (a, index as u64)
            }
        };
        let b = Tensor::zeros((out_dim, spec.r), dtype, &device)?;
        let mut adapter = LoraAdapter::new(a, b, spec.scale(), in_dim, out_dim)?;
        adapter.dropout = key.as_ref().map(|key| LoraDropout {
            p: spec.dropout,
            index,
            key: key.clone(),
        });
        linear.lora = Some(adapter);
    }
    Ok(key)
}

/// A 64-bit key as a uniform number in [0, 1).
fn unit(key: u64) -> f64 {
    (key >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_and_norms_are_not_decayed() {
        assert!(decays("llm.layers.0.self_attn.q_proj.weight"));
        assert!(decays("llm.embed_tokens.weight"));
        assert!(decays("llm.layers.0.mlp.up_proj.lora_A.weight"));
        assert!(!decays("projector.0.bias"));
        assert!(!decays("llm.layers.1.post_attention_layernorm.weight"));
        assert!(!decays("llm.norm.weight"));
    }
}
