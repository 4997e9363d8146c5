//! Row-wise f32 CPU kernels for inference ([`fused::inference`] only): Llama's
//! RMSNorm, and the split of projected rows into attention heads with the rotary
//! embedding applied in the same pass. candle's RMSNorm sums each row serially and
//! its rotary op needs the heads already transposed (one more copy of q and k).

use anyhow::{Result, ensure};
use candle_core::{Device, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::fused::{self, view};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension, or `None` where this
/// kernel does not apply.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !fused::inference_applies(&[x, weight]) {
        return Ok(None);
    }
    let width = weight.elem_count();
    ensure!(
        x.dims().last() == Some(&width),
        "RMSNorm of width {width} given {:?}",
        x.dims()
    );
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let (xv, wv) = (view(&xs, xl)?, view(&ws, wl)?);
    let (n, w) = (x.elem_count(), &wv.data[..width]);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(ROWS_PER_TASK * width)
        .zip(xv.data[..n].par_chunks(ROWS_PER_TASK * width))
        .for_each(|(out, x)| {
            for (out, x) in out.chunks_mut(width).zip(x.chunks(width)) {
                let inv = 1.0 / (sum_of_squares(x) / width as f32 + eps as f32).sqrt();
                scale_into(out, x, w, inv);
            }
        });
    Ok(Some(Tensor::from_vec(out, x.shape(), &Device::Cpu)?))
}

/// `Σ x²`, in sixteen lanes (vectorised) and then across them.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>()
}

/// `out = x * inv * w` elementwise.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn scale_into(out: &mut [f32], x: &[f32], w: &[f32], inv: f32) {
    for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
        *o = x * inv * w;
    }
}

/// Projected rows `y` `(B, L, heads · D)` as heads `(B, heads, L, D)`, each rotated by
/// `rotary` (`cos`, `sin` of shape `(B, L, D/2)`, the "rotate half" convention) when
/// given, or `None` where this kernel does not apply. The same arithmetic as candle's
/// rotary op, element for element.
pub(crate) fn split_heads(
    y: &Tensor,
    heads: usize,
    rotary: Option<(&Tensor, &Tensor)>,
) -> Result<Option<Tensor>> {
    let mut all = vec![y];
    all.extend(rotary.iter().flat_map(|(c, s)| [*c, *s]));
    if !fused::inference_applies(&all) {
        return Ok(None);
    }
    let (b, l, width) = y.dims3()?;
    ensure!(
        width.is_multiple_of(heads),
        "{width} columns over {heads} heads"
    );
    let d = width / heads;
    let y = y.contiguous()?;
    let rotary = match rotary {
        Some((cos, sin)) => {
            ensure!(
                d.is_multiple_of(2) && cos.dims() == [b, l, d / 2] && sin.dims() == [b, l, d / 2],
                "rotary tables {:?} for {b}x{l} rows of head width {d}",
                cos.dims()
            );
            Some((cos.contiguous()?, sin.contiguous()?))
        }
        None => None,
    };
    let (ys, yl) = y.storage_and_layout();
    let yv = view(&ys, yl)?;
    let tables = rotary
        .as_ref()
        .map(|(c, s)| (c.storage_and_layout(), s.storage_and_layout()));
    let tables = match &tables {
        Some(((cs, cl), (ss, sl))) => Some((view(cs, cl)?.data, view(ss, sl)?.data)),
        None => None,
    };
    let mut out = vec![0f32; b * l * width];
    out.par_chunks_mut(l * d)
        .enumerate()
        .for_each(|(task, out)| {
            let (row, head) = (task / heads, task % heads);
            for (t, dst) in out.chunks_mut(d).enumerate() {
                let src = &yv.data[(row * l + t) * width + head * d..][..d];
                match tables {
                    Some((cos, sin)) => {
                        let at = (row * l + t) * (d / 2);
                        rotate_into(dst, src, &cos[at..][..d / 2], &sin[at..][..d / 2]);
                    }
                    None => dst.copy_from_slice(src),
                }
            }
        });
    Ok(Some(Tensor::from_vec(out, (b, heads, l, d), &Device::Cpu)?))
}

/// One head's row rotated: `(x1 cos - x2 sin, x1 sin + x2 cos)` for its two halves.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn rotate_into(dst: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (d1, d2) = dst.split_at_mut(half);
    for i in 0..half {
        d1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        d2[i] = x1[i] * sin[i] + x2[i] * cos[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::max_abs_diff;
    use crate::core::model::ops::rope;

    #[test]
    fn kernels_match_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 7, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., 40, &dev).unwrap();
        let want = candle_nn::ops::rms_norm(&x, &w, 1e-5).unwrap();
        assert!(
            rms_norm(&x, &w, 1e-5).unwrap().is_none(),
            "outside inference"
        );
        let got = fused::inference(&dev, || rms_norm(&x, &w, 1e-5))
            .unwrap()
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);

        let angles = Tensor::randn(0f32, 3., (2, 7, 4), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let heads = x.reshape((2, 7, 5, 8)).unwrap().transpose(1, 2).unwrap();
        for rotary in [None, Some((&cos, &sin))] {
            let want = match rotary {
                Some((c, s)) => rope(&heads.contiguous().unwrap(), c, s).unwrap(),
                None => heads.clone(),
            };
            let got = fused::inference(&dev, || split_heads(&x, 5, rotary))
                .unwrap()
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(max_abs_diff(&got, &want), 0.0, "bit for bit");
        }
    }
}
