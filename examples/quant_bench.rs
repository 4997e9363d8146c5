//! mt's side of `bench/quantize.sh`, through the library as llama.cpp's side goes
//! through llama-cpp-python:
//!
//! ```text
//! cargo run --release --example quant_bench -- kl MODEL_DIR IDS [TYPE ...]
//! cargo run --release --example quant_bench -- decode MODEL_DIR TOWER_DIR|- TYPE|f32 PROMPT NEW REPS
//! ```
//!
//! `kl`: next-token distributions of the checkpoint loaded with each `--quantize` type
//! against the same checkpoint in f32, on one token sequence (IDS, comma-separated; the
//! bench tokenises its text with llama.cpp), as llama.cpp's `--kl-divergence` reports
//! them: the mean over positions of KL(p_f32 || p_quantized), and how often the most
//! likely token is the same. TYPE is q8_0, q6k or q4k (default: all three).
//!
//! `decode`: batch-1 greedy decoding tokens/s after a PROMPT-token text prompt (the ids
//! llama.cpp's side feeds), the model loaded once: the time of NEW + 1 tokens minus that
//! of 1, median of REPS. One JSON line each.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device, Tensor};
use medtrinity::core::model::arch::llava::{Llava, Piece};
use medtrinity::core::model::engine::generate::{GenerationConfig, generate};
use medtrinity::core::model::load::checkpoint::Checkpoint;
use medtrinity::core::model::quant::QuantKind;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("kl") => kl(&args[1..]),
        Some("decode") => decode(&args[1..]),
        _ => bail!("usage: quant_bench kl|decode ... (see the file's doc comment)"),
    }
}

fn decode(args: &[String]) -> Result<()> {
    let [model, tower, kind, prompt, new, reps] = args else {
        bail!("usage: quant_bench decode MODEL_DIR TOWER_DIR|- TYPE|f32 PROMPT NEW REPS");
    };
    let tower = (tower != "-").then(|| Path::new(tower.as_str()));
    let kind = (kind != "f32").then(|| self::kind(kind)).transpose()?;
    let (prompt, new, reps): (usize, usize, usize) = (prompt.parse()?, new.parse()?, reps.parse()?);
    let model = load(Path::new(model), tower, kind)?;
    let ids: Vec<u32> = (0..prompt).map(|i| ((i * 7919) % 300 + 5) as u32).collect();
    let row = model.embed_prompt(&[Piece::Text(ids)], &[])?;
    let batch = model.left_pad(&[row])?;
    let seconds = |tokens: usize| -> Result<f64> {
        let cfg = GenerationConfig {
            max_new_tokens: tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            stop_tokens: Vec::new(),
        };
        let start = Instant::now();
        generate(&model, &batch, None, &cfg, &[0], &|_, _| false, &mut |_| {})?;
        Ok(start.elapsed().as_secs_f64())
    };
    let mut rates = Vec::new();
    for _ in 0..reps {
        let one = seconds(1)?;
        rates.push(new as f64 / (seconds(new + 1)? - one));
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({"decode_tokens_per_s": rates[rates.len() / 2], "runs": rates})
    );
    Ok(())
}

fn kl(args: &[String]) -> Result<()> {
    let [model, ids, types @ ..] = args else {
        bail!("usage: quant_bench kl MODEL_DIR IDS [q8_0|q6k|q4k ...]");
    };
    let ids: Vec<u32> = ids
        .split(',')
        .map(|t| t.trim().parse().context("IDS: comma-separated token ids"))
        .collect::<Result<_>>()?;
    let kinds: Vec<QuantKind> = match types.is_empty() {
        true => vec![QuantKind::Q8_0, QuantKind::Q6K, QuantKind::Q4K],
        false => types.iter().map(|t| kind(t)).collect::<Result<_>>()?,
    };
    let base = log_probs(&load(Path::new(model), None, None)?, &ids)?;
    for k in kinds {
        let q = log_probs(&load(Path::new(model), None, Some(k))?, &ids)?;
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
fn load(dir: &Path, tower: Option<&Path>, kind: Option<QuantKind>) -> Result<Llava> {
    let mut ckpt = Checkpoint::open(dir, tower, &Device::Cpu, DType::F32)?;
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
