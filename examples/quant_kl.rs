//! The accuracy half of `bench/quantize.sh`: next-token distributions of a checkpoint
//! loaded with each `--quantize` type against the same checkpoint in f32, on one fixed
//! token sequence, as llama.cpp's `--kl-divergence` reports them (the mean over positions
//! of KL(p_f32 || p_quantized), and how often the most likely token is the same).
//!
//! ```text
//! cargo run --release --example quant_kl -- MODEL_DIR IDS [TYPE ...]
//! ```
//!
//! IDS is a comma-separated list of token ids (the bench tokenises its text with
//! llama.cpp); TYPE is q8_0, q6k or q4k (default: all three). Prints one JSON line per
//! type.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device, Tensor};
use medtrinity::core::model::arch::llava::{Llava, Piece};
use medtrinity::core::model::load::checkpoint::Checkpoint;
use medtrinity::core::model::quant::QuantKind;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, ids, types @ ..] = args.as_slice() else {
        bail!("usage: quant_kl MODEL_DIR IDS [q8_0|q6k|q4k ...]");
    };
    let ids: Vec<u32> = ids
        .split(',')
        .map(|t| t.trim().parse().context("IDS: comma-separated token ids"))
        .collect::<Result<_>>()?;
    let kinds: Vec<QuantKind> = match types.is_empty() {
        true => vec![QuantKind::Q8_0, QuantKind::Q6K, QuantKind::Q4K],
        false => types.iter().map(|t| kind(t)).collect::<Result<_>>()?,
    };
    let base = log_probs(&load(Path::new(model), None)?, &ids)?;
    for k in kinds {
        let q = log_probs(&load(Path::new(model), Some(k))?, &ids)?;
        let kl = (base.exp()? * (&base - &q)?)?.sum(1)?;
        let same = base.argmax(1)?.eq(&q.argmax(1)?)?.to_dtype(DType::F32)?;
        println!(
            "{}",
            serde_json::json!({
                "type": k.name(),
                "tokens": ids.len(),
                "kl_mean": kl.mean_all()?.to_scalar::<f32>()?,
                "kl_max": kl.max(0)?.to_scalar::<f32>()?,
                "top1_same": same.mean_all()?.to_scalar::<f32>()?,
            })
        );
    }
    Ok(())
}

fn kind(name: &str) -> Result<QuantKind> {
    Ok(match name {
        "q8_0" => QuantKind::Q8_0,
        "q6k" => QuantKind::Q6K,
        "q4k" => QuantKind::Q4K,
        other => bail!("unknown type {other}"),
    })
}

/// The checkpoint on the CPU in f32, its language model quantized to `kind`.
fn load(dir: &Path, kind: Option<QuantKind>) -> Result<Llava> {
    let mut ckpt = Checkpoint::open(dir, None, &Device::Cpu, DType::F32)?;
    if let Some(kind) = kind {
        ckpt.quantize(kind);
    }
    ckpt.load()
}

/// Log-softmax of the next-token logits at every position of `ids` `(T, vocab)`.
fn log_probs(model: &Llava, ids: &[u32]) -> Result<Tensor> {
    let row = model.embed_prompt(&[Piece::Text(ids.to_vec())], &[])?;
    let batch = model.left_pad(&[row])?;
    let hidden = model.forward_batch(&batch)?.get(0)?;
    let logits = model.llm.logits(&hidden)?;
    Ok(candle_nn::ops::log_softmax(&logits, 1)?)
}
