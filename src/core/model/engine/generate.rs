//! Batched generation: one prefill over the left-padded prompts (image rows
//! included), then token-by-token decoding with a preallocated KV cache. Greedy,
//! or sampling with temperature, top-k and top-p (applied in that order, as
//! transformers' logits warpers do), from a per-row seeded generator so a sample's
//! output does not depend on the batch it ran in.

use anyhow::{Result, ensure};
use candle_core::{D, Tensor};
use serde::Serialize;

use crate::core::model::arch::attention::causal_padding_mask;
use crate::core::model::arch::llama::{KvCache, Step};
use crate::core::model::arch::llava::{Llava, PaddedBatch};
use crate::core::model::kernels;

/// Decoding settings.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationConfig {
    /// Most tokens generated per row.
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 1.0 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    /// Token ids that end a sequence (not included in the output).
    pub stop_tokens: Vec<u32>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A stop token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

/// One row's output.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated token ids (a stop token left out; a stop string's tokens kept).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: Finish,
}

/// Generates continuations for a padded batch, which continues `prefix` (the cache of
/// the prompt tokens every row shares) when its `past` says so. `seeds` gives every row
/// its own sampling stream; `stop_text(row, tokens)` may end a row early (stop strings);
/// `on_step(n)` reports `n` new tokens after each step.
pub fn generate(
    model: &Llava,
    batch: &PaddedBatch,
    prefix: Option<&KvCache>,
    cfg: &GenerationConfig,
    seeds: &[u64],
    stop_text: &(dyn Fn(usize, &[u32]) -> bool + Sync),
    on_step: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Generation>> {
    kernels::inference(batch.embeds.device(), || {
        let rows = batch.lengths.len();
        let device = batch.embeds.device().clone();
        let (mut cache, mut logits) = prefill(model, batch, prefix, cfg.max_new_tokens)?;
        let mut valid = batch.valid.clone();
        let mut samplers: Vec<Sampler> = seeds.iter().map(|&s| Sampler::new(cfg, s)).collect();
        let mut out: Vec<Generation> = (0..rows)
            .map(|_| Generation {
                tokens: Vec::new(),
                finish: Finish::Length,
            })
            .collect();
        let mut done = vec![false; rows];
        let window = model.cfg.text.sliding_window;
        let started = std::time::Instant::now();

        for n in 0..cfg.max_new_tokens {
            let next = pick(&logits, &mut samplers, cfg.temperature)?;
            let mut produced = 0;
            for (row, &token) in next.iter().enumerate() {
                if done[row] {
                    continue;
                }
                produced += 1;
                if cfg.stop_tokens.contains(&token) {
                    done[row] = true;
                    out[row].finish = Finish::Stop;
                    continue;
                }
                out[row].tokens.push(token);
                if stop_text(row, &out[row].tokens) {
                    done[row] = true;
                    out[row].finish = Finish::Stop;
                }
            }
            on_step(produced);
            if done.iter().all(|d| *d) || n + 1 == cfg.max_new_tokens {
                break;
            }
            let ids = Tensor::from_vec(next, (rows, 1), &device)?;
            let x = model.llm.embed_ids(&ids)?;
            let positions: Vec<u32> = batch.lengths.iter().map(|&l| (l + n) as u32).collect();
            let positions = Tensor::from_vec(positions, (rows, 1), &device)?;
            for row in &mut valid {
                row.push(true);
            }
            let past = cache.len();
            let mask = causal_padding_mask(&valid, past, 1, window, model.dtype(), &device)?;
            let step = Step {
                positions: &positions,
                mask: mask.as_ref(),
                last_only: true,
            };
            let hidden = model.llm.forward(&x, &step, Some(&mut cache))?;
            logits = model.llm.logits(&hidden.squeeze(1)?)?;
        }
        tracing::debug!(rows, seconds = started.elapsed().as_secs_f64(), "decode");
        Ok(out)
    })
}

/// Where the first of `stops` begins in `text`, if any does.
pub(crate) fn stop_at(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Runs a padded batch's prompt (after the first `past` tokens of `prefix`, the cache of
/// the tokens every row shares, when the batch's `past` says so) into a new cache with room for `room` more tokens a
/// row. Returns the cache and the next-token logits `(B, vocab)`.
pub(crate) fn prefill(
    model: &Llava,
    batch: &PaddedBatch,
    prefix: Option<&KvCache>,
    room: usize,
) -> Result<(KvCache, Tensor)> {
    let rows = batch.lengths.len();
    let prompt = batch.embeds.dim(1)?;
    let device = batch.embeds.device();
    let past = batch.past;
    ensure!(
        prefix.map_or(0, KvCache::len) >= past,
        "the batch continues {past} shared tokens, the prefix cache holds {}",
        prefix.map_or(0, KvCache::len)
    );
    let mut cache = KvCache::new(
        &model.cfg.text,
        rows,
        past + prompt + room,
        model.dtype(),
        device,
    )?;
    if let Some(prefix) = prefix {
        cache.start_with(prefix, past)?;
    }
    let started = std::time::Instant::now();
    let window = model.cfg.text.sliding_window;
    let mask = causal_padding_mask(&batch.valid, past, prompt, window, model.dtype(), device)?;
    let step = Step {
        positions: &batch.positions,
        mask: mask.as_ref(),
        last_only: true,
    };
    let hidden = model.llm.forward(&batch.embeds, &step, Some(&mut cache))?;
    let logits = model.llm.logits(&hidden.squeeze(1)?)?;
    tracing::debug!(
        rows,
        tokens = prompt,
        seconds = started.elapsed().as_secs_f64(),
        "prefill"
    );
    Ok((cache, logits))
}

/// Next token of every row from logits `(B, vocab)`.
fn pick(logits: &Tensor, samplers: &mut [Sampler], temperature: f64) -> Result<Vec<u32>> {
    if temperature <= 0.0 {
        return Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    let rows = logits.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(samplers.iter_mut())
        .map(|(row, s)| s.sample(row))
        .collect())
}

/// Temperature / top-k / top-p sampling from one seeded stream.
pub(crate) struct Sampler {
    state: u64,
    temperature: f64,
    top_k: usize,
    top_p: f64,
}

impl Sampler {
    /// A stream for `cfg`'s temperature, top-k and top-p, from `seed`.
    pub(crate) fn new(cfg: &GenerationConfig, seed: u64) -> Self {
        Self {
            state: seed,
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
        }
    }

    /// SplitMix64, mapped to [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token from one row of logits: the first most likely one at temperature
    /// 0 (as `argmax`), else a draw.
    pub(crate) fn next(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            let best =
                logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv { (i, v) } else { (bi, bv) }
                    });
            return best.0 as u32;
        }
        self.sample(logits)
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let scaled: Vec<f64> = order
            .iter()
            .map(|&i| f64::from(logits[i]) / self.temperature)
            .collect();
        // top-k keeps ties with the k-th value, as transformers does.
        let mut keep = scaled.len();
        if self.top_k > 0 && self.top_k < keep {
            let kth = scaled[self.top_k - 1];
            keep = scaled.iter().take_while(|v| **v >= kth).count();
        }
        let max = scaled[0];
        let weights: Vec<f64> = scaled[..keep].iter().map(|v| (v - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        if self.top_p < 1.0 {
            // The smallest prefix of most likely tokens whose mass reaches top_p.
            let mut mass = 0.0;
            let mut n = 0;
            for w in &weights {
                mass += w / total;
                n += 1;
                if mass >= self.top_p {
                    break;
                }
            }
            keep = n.max(1);
        }
        let total: f64 = weights[..keep].iter().sum();
        let mut r = self.uniform() * total;
        for (i, w) in weights[..keep].iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return order[i] as u32;
            }
        }
        order[keep - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f64, top_k: usize, top_p: f64) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: 1,
            temperature,
            top_p,
            top_k,
            stop_tokens: vec![],
        }
    }

    #[test]
    fn sampling_respects_top_k_and_top_p_and_is_seeded() {
        let logits = [0.0f32, 5.0, 4.9, -3.0, 4.8];
        let mut s = Sampler::new(&cfg(1.0, 2, 1.0), 7);
        for _ in 0..200 {
            assert!([1, 2].contains(&s.sample(&logits)));
        }
        let mut s = Sampler::new(&cfg(1.0, 0, 0.3), 7);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 1);
        }
        let draws = |seed| {
            let mut s = Sampler::new(&cfg(1.5, 0, 1.0), seed);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        // All five tokens appear at a high temperature.
        let mut s = Sampler::new(&cfg(100.0, 0, 1.0), 1);
        let seen: std::collections::BTreeSet<u32> = (0..500).map(|_| s.sample(&logits)).collect();
        assert_eq!(seen.len(), 5);
    }
}
