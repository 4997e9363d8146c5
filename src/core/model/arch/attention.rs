//! Scaled dot-product attention with grouped key/value heads and an additive mask,
//! shared by CLIP (no mask) and Llama (causal + padding), from candle ops: plain
//! matmuls and a softmax in f32, differentiable on any device. [`crate::core::model::ops::attend`]
//! takes the fused CPU kernel instead where it applies (f32 on the CPU, with its own
//! backward pass). Either way the same code serves inference and training.

use anyhow::Result;
use candle_core::{DType, Tensor};

use crate::core::model::ops::softmax_last;

/// Query rows per block of causal attention: each block only reads the keys it can
/// see, which skips most of the masked upper triangle (its matmuls and its exps).
const QUERY_BLOCK: usize = 128;

/// [`ops::attend`](crate::core::model::ops::attend) from candle ops (differentiable, any device),
/// causal queries in blocks.
pub(crate) fn attend_unfused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    causal: bool,
) -> Result<Tensor> {
    let l = q.dim(2)?;
    if !causal || l <= QUERY_BLOCK {
        return attend_composite(q, k, v, mask, scale);
    }
    let past = k.dim(2)? - l;
    let mut blocks = Vec::with_capacity(l.div_ceil(QUERY_BLOCK));
    for start in (0..l).step_by(QUERY_BLOCK) {
        let len = QUERY_BLOCK.min(l - start);
        let keys = past + start + len;
        let block_mask = match mask {
            Some(m) => Some(m.narrow(2, start, len)?.narrow(3, 0, keys)?),
            None => None,
        };
        blocks.push(attend_composite(
            &q.narrow(2, start, len)?,
            &k.narrow(2, 0, keys)?,
            &v.narrow(2, 0, keys)?,
            block_mask.as_ref(),
            scale,
        )?);
    }
    Ok(Tensor::cat(&blocks, 2)?)
}

/// Attention from candle ops: all keys for every query.
fn attend_composite(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, heads, l, d) = q.dims4()?;
    let (_, kv_heads, t, _) = k.dims4()?;
    let rep = heads / kv_heads;
    // (B, Hkv, rep * L, D): the `rep` query heads of a group share one key matrix.
    let qg = q.contiguous()?.reshape((b, kv_heads, rep * l, d))?;
    let mut scores = (qg.matmul(&k.t()?)? * scale)?;
    if let Some(mask) = mask {
        let m = mask.to_dtype(scores.dtype())?.unsqueeze(2)?; // (B, 1, 1, L, T)
        scores = scores
            .reshape((b, kv_heads, rep, l, t))?
            .broadcast_add(&m)?
            .reshape((b, kv_heads, rep * l, t))?;
    }
    let probs = softmax_last(&scores)?;
    let out = probs.matmul(v)?;
    Ok(out.reshape((b, heads, l, d))?)
}

/// The additive mask for a left-padded batch: query `i` (at absolute slot
/// `past + i`) may see key `j` when `j <= past + i` and key `j` is not padding, and with
/// a sliding `window` (Mistral's) only when fewer than `window` real tokens separate
/// them. The window counts real tokens, not slots, so a row sees what it would alone
/// (transformers counts padding slots too: its left-padded rows differ from the same
/// rows alone). `valid[b][j]` says whether slot `j` of
/// row `b` holds a real token. Masked entries get the dtype's lowest finite value (never
/// `-inf`, so fully masked padding rows stay finite). Returns `None` when nothing needs
/// masking.
pub(crate) fn causal_padding_mask(
    valid: &[Vec<bool>],
    past: usize,
    len: usize,
    window: Option<usize>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Option<Tensor>> {
    let total = past + len;
    let padded = valid.iter().any(|row| row[..total].iter().any(|v| !v));
    let windowed = window.is_some_and(|w| total > w);
    if !padded && !windowed && len == 1 {
        return Ok(None);
    }
    let low = lowest(dtype);
    let mut data = Vec::with_capacity(valid.len() * len * total);
    // Each slot's position among its row's real tokens (only a window needs them).
    let mut position = Vec::with_capacity(if window.is_some() { total } else { 0 });
    for row in valid {
        if window.is_some() {
            position.clear();
            position.extend(row[..total].iter().scan(0, |real, &ok| {
                let here = *real;
                *real += usize::from(ok);
                Some(here)
            }));
        }
        for i in 0..len {
            for (j, &ok) in row[..total].iter().enumerate() {
                let seen =
                    j <= past + i && window.is_none_or(|w| position[j] + w > position[past + i]);
                data.push(if ok && seen { 0.0 } else { low });
            }
        }
    }
    let mask = Tensor::from_vec(data, (valid.len(), 1, len, total), device)?;
    Ok(Some(mask))
}

/// What a mask adds to hide a key: the lowest finite value of `dtype`.
pub(crate) fn lowest(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half_min_bf16(),
        DType::F16 => -65504.0,
        _ => f32::MIN,
    }
}

fn half_min_bf16() -> f32 {
    // bf16's lowest finite value; adding it to any finite score stays finite.
    -3.389_531_4e38
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::ops::attend;
    use candle_core::Device;

    #[test]
    fn grouped_heads_read_their_own_key_value_head() {
        let dev = Device::Cpu;
        // 2 query heads share 1 kv head; with one key, each output is that value.
        let q = Tensor::randn(0f32, 1., (1, 2, 3, 4), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (1, 1, 1, 4), &dev).unwrap();
        let v = Tensor::new(&[[[[1f32, 2., 3., 4.]]]], &dev).unwrap();
        let out = attend(&q, &k, &v, None, 0.5, false).unwrap();
        let rows = out.flatten_to(2).unwrap().to_vec2::<f32>().unwrap();
        assert!(rows.iter().all(|r| r == &[1., 2., 3., 4.]));
    }

    #[test]
    fn causal_blocks_give_the_same_result_as_one_pass() {
        let dev = Device::Cpu;
        let (l, past) = (300, 20);
        let q = Tensor::randn(0f32, 1., (2, 4, l, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (2, 2, past + l, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (2, 2, past + l, 8), &dev).unwrap();
        let mut valid = vec![vec![true; past + l]; 2];
        valid[1][..7].iter_mut().for_each(|x| *x = false);
        let mask = causal_padding_mask(&valid, past, l, None, DType::F32, &dev)
            .unwrap()
            .unwrap();
        let blocked = attend_unfused(&q, &k, &v, Some(&mask), 0.3, true).unwrap();
        let whole = attend_composite(&q, &k, &v, Some(&mask), 0.3).unwrap();
        assert!(crate::core::model::max_abs_diff(&blocked, &whole) < 1e-5);
    }

    #[test]
    fn mask_hides_padding_and_the_future() {
        let valid = vec![vec![false, true, true], vec![true, true, true]];
        let mask = causal_padding_mask(&valid, 0, 3, None, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(mask.dims(), &[2, 1, 3, 3]);
        let flat = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let seen: Vec<u8> = flat.iter().map(|v| u8::from(*v == 0.0)).collect();
        assert_eq!(
            seen,
            vec![
                0, 0, 0, 0, 1, 0, 0, 1, 1, /* row 2 */ 1, 0, 0, 1, 1, 0, 1, 1, 1
            ]
        );
        // Decoding one token without padding needs no mask at all.
        let none =
            causal_padding_mask(&[vec![true; 4]], 3, 1, None, DType::F32, &Device::Cpu).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_sliding_window_counts_real_tokens() {
        let seen = |valid: &[Vec<bool>], past: usize, len: usize| -> Vec<u8> {
            let mask = causal_padding_mask(valid, past, len, Some(2), DType::F32, &Device::Cpu)
                .unwrap()
                .unwrap();
            let flat = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            flat.iter().map(|v| u8::from(*v == 0.0)).collect()
        };
        // Each token sees itself and the one real token before it, padding or not.
        let alone = seen(&[vec![true; 3]], 0, 3);
        assert_eq!(alone, vec![1, 0, 0, 1, 1, 0, 0, 1, 1]);
        let padded = seen(&[vec![false, true, true, true]], 0, 4);
        assert_eq!(padded, vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1]);
        // Decoding past the window needs a mask even without padding.
        assert_eq!(seen(&[vec![true; 4]], 3, 1), vec![0, 0, 1, 1]);
    }
}
