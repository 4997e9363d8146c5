//! The S2 multi-scale wrapper (`s2wrapper.forward` from bfshi/scaling_on_scales, as
//! LLaVA's `CLIPVisionTowerS2` calls it): the largest-scale image is resized to every
//! scale with PyTorch's bicubic interpolation, split into tiles of the smallest
//! scale, encoded tile by tile, the tiles' feature maps merged back, area-pooled to
//! the smallest scale's grid, and the scales concatenated along channels.

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};

/// Scales (ascending image sizes; the first is the tile size).
#[derive(Debug, Clone)]
pub struct S2 {
    pub scales: Vec<usize>,
}

impl S2 {
    /// Runs `encode` (pixels `(n, 3, s, s)` -> features `(n, g*g, C)`) over every scale
    /// of `pixels` `(B, 3, S, S)`; returns `(B, g*g, C * scales)`.
    pub(crate) fn forward(
        &self,
        pixels: &Tensor,
        encode: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (b, c, size, _) = pixels.dims4()?;
        let tile = self.scales[0];
        let mut per_scale = Vec::with_capacity(self.scales.len());
        let mut grid = 0;
        for &scale in &self.scales {
            let n = scale.div_ceil(tile);
            ensure!(
                n * tile == scale,
                "S2 scale {scale} is not a multiple of the tile size {tile}"
            );
            let x = if scale == size {
                pixels.clone()
            } else {
                resize_bicubic(pixels, scale)?
            };
            // split_chessboard: 'b c (nh h) (nw w) -> (nh nw b) c h w'
            let tiles = x
                .reshape((b, c, n, tile, n, tile))?
                .permute((2, 4, 0, 1, 3, 5))?
                .contiguous()?
                .reshape((n * n * b, c, tile, tile))?;
            let feats = encode(&tiles)?;
            let (_, tokens, ch) = feats.dims3()?;
            let g = (tokens as f64).sqrt() as usize;
            ensure!(
                g * g == tokens,
                "S2 needs a square token grid, got {tokens} tokens"
            );
            if grid == 0 {
                grid = g;
            }
            // merge_chessboard: '(nh nw b) (h w) c -> b (nh h) (nw w) c', then area-pool
            // the (n g) x (n g) map down to the first scale's g x g grid.
            let side = n * g;
            let k = side / grid;
            let merged = feats
                .reshape((n, n, b, g, g, ch))?
                .permute((2, 0, 3, 1, 4, 5))?
                .contiguous()?
                .reshape((b, grid, k, grid, k, ch))?;
            let pooled = merged
                .to_dtype(DType::F32)?
                .sum(4)?
                .sum(2)?
                .affine(1.0 / (k * k) as f64, 0.0)?
                .to_dtype(feats.dtype())?
                .reshape((b, grid * grid, ch))?;
            per_scale.push(pooled);
        }
        Ok(Tensor::cat(&per_scale, 2)?)
    }
}

/// `F.interpolate(x, size, mode='bicubic', align_corners=False)` for square `(B, C, S, S)`
/// input: cubic convolution with a = -0.75, borders clamped, no anti-aliasing, in f32.
pub(crate) fn resize_bicubic(x: &Tensor, size: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let dtype = x.dtype();
    let mh = bicubic_matrix(h, size, x.device())?;
    let mw = bicubic_matrix(w, size, x.device())?;
    let planes = x.to_dtype(DType::F32)?.reshape((b * c, h, w))?;
    let rows = mh.broadcast_left(b * c)?.matmul(&planes)?; // (bc, size, w)
    let out = rows.matmul(&mw.t()?.broadcast_left(b * c)?)?; // (bc, size, size)
    Ok(out.reshape((b, c, size, size))?.to_dtype(dtype)?)
}

/// The `(out, in)` matrix of PyTorch's 1-D bicubic resampling.
fn bicubic_matrix(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let floor = real.floor();
        let t = real - floor;
        let weights = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
        for (k, wgt) in weights.iter().enumerate() {
            let idx = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            m[i * input + idx] += wgt;
        }
    }
    Ok(Tensor::from_vec(m, (output, input), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_is_the_identity_at_the_same_size_and_keeps_constants() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 2, 8, 8), &dev).unwrap();
        let same = resize_bicubic(&x, 8).unwrap();
        assert!(crate::core::model::max_abs_diff(&same, &x) < 1e-6);
        let flat = Tensor::full(3.5f32, (1, 1, 12, 12), &dev).unwrap();
        let small = resize_bicubic(&flat, 8)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(small.iter().all(|v| (v - 3.5).abs() < 1e-5));
    }

    #[test]
    fn tiles_are_merged_back_in_place() {
        // An identity "encoder" (one token per pixel) shows where every tile lands:
        // the 4x4 scale is split into four 2x2 tiles, merged, and area-pooled to 2x2,
        // so each output cell must be the mean of its own quadrant.
        let dev = Device::Cpu;
        let data: Vec<f32> = (0..16)
            .map(|i| ((i / 4) / 2 * 2 + (i % 4) / 2) as f32 * 10.0 + (i % 2) as f32)
            .collect();
        let x = Tensor::from_vec(data, (1, 1, 4, 4), &dev).unwrap();
        let s2 = S2 { scales: vec![2, 4] };
        let encode = |t: &Tensor| -> Result<Tensor> {
            let (n, _, s, _) = t.dims4()?;
            Ok(t.reshape((n, s * s, 1))?)
        };
        let out = s2.forward(&x, encode).unwrap();
        assert_eq!(out.dims(), &[1, 4, 2]);
        let v = out.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let pooled: Vec<f32> = v.iter().map(|r| r[1]).collect();
        assert_eq!(pooled, vec![0.5, 10.5, 20.5, 30.5]);
    }
}
