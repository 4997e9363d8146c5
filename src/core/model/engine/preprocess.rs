//! Image preprocessing exactly as LLaVA does it: `convert('RGB')`, `expand2square`
//! with the CLIP mean colour (aspect `pad`), then `CLIPImageProcessor`: resize the
//! shortest side with PIL's bicubic filter (a bit-exact port of Pillow's
//! `ImagingResample` for 8-bit images), centre crop, rescale by 1/255, normalise.
//!
//! One deliberate difference: images with 16 bits per channel are scaled to 8 bits
//! (`v / 257`) where PIL's `convert('RGB')` would clip them at 255.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

use crate::core::budget;
use crate::core::model::load::checkpoint::Checkpoint;
use crate::core::model::load::config::AspectMode;

/// OpenAI CLIP's normalisation constants, digit for digit as published.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Turns decoded images into the pixel tensor the vision tower expects.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    /// Output side (the shortest-edge resize target and the crop size).
    pub size: usize,
    /// How a non-square image is made square.
    pub aspect: AspectMode,
    /// Per-channel RGB mean on the 0-1 scale, subtracted (`image_mean`); also the pad colour.
    pub mean: [f32; 3],
    /// Per-channel RGB standard deviation, divided by (`image_std`).
    pub std: [f32; 3],
}

impl ImageProcessor {
    /// CLIP's constants at `size`.
    pub fn new(size: usize, aspect: AspectMode) -> Self {
        Self {
            size,
            aspect,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Image preprocessing for a checkpoint: its input size and aspect mode, and
    /// `image_mean` / `image_std` from the vision tower's `preprocessor_config.json`
    /// (else the checkpoint's; else CLIP's).
    pub fn for_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        let dir = ckpt
            .tower_dir
            .as_deref()
            .filter(|d| d.join("preprocessor_config.json").exists());
        Self::from_dir(
            dir.unwrap_or(&ckpt.dir),
            ckpt.config.input_size(),
            ckpt.config.aspect,
        )
    }

    /// Takes `image_mean` / `image_std` from a `preprocessor_config.json` in `dir`
    /// when there is one (the size always follows the model: S2 needs its largest scale).
    fn from_dir(dir: &Path, size: usize, aspect: AspectMode) -> Result<Self> {
        let mut p = Self::new(size, aspect);
        let path = dir.join("preprocessor_config.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            for (key, slot) in [("image_mean", &mut p.mean), ("image_std", &mut p.std)] {
                if let Some(v) = json.get(key) {
                    *slot = triple(v).ok_or_else(|| {
                        anyhow!("{}: field `{key}` must be 3 numbers", path.display())
                    })?;
                }
            }
        }
        Ok(p)
    }

    /// The `size` x `size` RGB image after padding, resizing and cropping (before rescaling).
    /// Every buffer is checked against `budget::PICTURE_BYTES` before it is made: a
    /// 100000 x 1 PNG of a few hundred bytes would otherwise ask for a 30 GB canvas.
    pub fn square_pixels(&self, image: &DynamicImage) -> Result<RgbImage> {
        let (w, h) = (u64::from(image.width()), u64::from(image.height()));
        budget::picture("the image in RGB", w, h, 3)?;
        let (w, h) = match self.aspect {
            AspectMode::Pad => {
                let side = w.max(h);
                budget::picture("the image padded to a square", side, side, 3)?;
                (side, side)
            }
            AspectMode::Crop => (w, h),
        };
        let (nw, nh) = self.resized_size(w as usize, h as usize);
        // Each resampling pass keeps one side and makes the other: no buffer is larger.
        budget::picture("the resized image", w.max(nw as u64), h.max(nh as u64), 3)?;
        let rgb = image.to_rgb8();
        let rgb = match self.aspect {
            AspectMode::Pad => self.expand_to_square(rgb),
            AspectMode::Crop => rgb,
        };
        let s = self.size;
        let resized = resize(&rgb, nw, nh)?;
        let (top, left) = ((nh - s) / 2, (nw - s) / 2);
        Ok(
            image::imageops::crop_imm(&resized, left as u32, top as u32, s as u32, s as u32)
                .to_image(),
        )
    }

    /// The size the shortest side's resize to `size` gives (transformers'
    /// `get_resize_output_image_size(default_to_square=False)`).
    fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        let s = self.size;
        let (short, long) = (w.min(h), w.max(h));
        let new_long = ((s * long) as f64 / short as f64) as usize;
        if w <= h { (s, new_long) } else { (new_long, s) }
    }

    /// `expand2square`: centre the image on a square of the mean colour.
    fn expand_to_square(&self, rgb: RgbImage) -> RgbImage {
        let (w, h) = rgb.dimensions();
        if w == h {
            return rgb;
        }
        let side = w.max(h);
        let fill = image::Rgb(self.mean.map(|m| (m * 255.0) as u8));
        let mut canvas = RgbImage::from_pixel(side, side, fill);
        let (x, y) = if w > h {
            (0, (w - h) / 2)
        } else {
            ((h - w) / 2, 0)
        };
        image::imageops::replace(&mut canvas, &rgb, x as i64, y as i64);
        canvas
    }

    /// Normalised `(3, size, size)` values of an already square image.
    pub fn normalize(&self, square: &RgbImage) -> Vec<f32> {
        let plane = square.width() as usize * square.height() as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in square.pixels().enumerate() {
            for c in 0..3 {
                let v = (f64::from(px[c]) * (1.0 / 255.0)) as f32;
                out[c * plane + i] = (v - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Each image's normalised `(3, size, size)` values, or why it cannot be prepared
    /// (over a memory budget), prepared in parallel.
    pub(crate) fn planes(&self, images: &[&DynamicImage]) -> Vec<Result<Vec<f32>>> {
        images
            .par_iter()
            .map(|image| Ok(self.normalize(&self.square_pixels(image)?)))
            .collect()
    }

    /// The `(N, 3, size, size)` f32 pixel tensor of planes from [`Self::planes`].
    pub(crate) fn tensor(&self, planes: Vec<Vec<f32>>, device: &Device) -> Result<Tensor> {
        let n = planes.len();
        Ok(Tensor::from_vec(
            planes.concat(),
            (n, 3, self.size, self.size),
            device,
        )?)
    }

    /// The `(N, 3, size, size)` f32 pixel tensor for a batch of images; fails if any
    /// image fails.
    pub fn batch(&self, images: &[&DynamicImage], device: &Device) -> Result<Tensor> {
        let planes = self.planes(images).into_iter().collect::<Result<_>>()?;
        self.tensor(planes, device)
    }
}

fn triple(v: &serde_json::Value) -> Option<[f32; 3]> {
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    Some([
        a[0].as_f64()? as f32,
        a[1].as_f64()? as f32,
        a[2].as_f64()? as f32,
    ])
}

/// `Image.resize((width, height), BICUBIC)` of Pillow (>= 13) on RGB, bit for bit: two
/// separable convolution passes (Keys cubic, a = -0.5, support scaled when shrinking)
/// in 22-bit fixed point with a u8 image between them; a pass whose size does not
/// change is skipped; the vertical pass runs first when the height shrinks by more
/// than twice as many pixels as the width.
fn resize(rgb: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut data = rgb.as_raw().clone();
    let (mut cw, mut ch) = (w, h);
    let vertical_first = h > height && (h - height) > 2 * w.saturating_sub(width);
    let order: [bool; 2] = if vertical_first {
        [false, true]
    } else {
        [true, false]
    };
    for horizontal in order {
        if horizontal && cw != width {
            data = resample_pass(&data, cw, ch, width, true);
            cw = width;
        } else if !horizontal && ch != height {
            data = resample_pass(&data, cw, ch, height, false);
            ch = height;
        }
    }
    RgbImage::from_raw(width as u32, height as u32, data)
        .ok_or_else(|| anyhow!("resized buffer has the wrong size"))
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 22;

/// Keys' cubic convolution kernel with a = -0.5 (PIL's BICUBIC).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: for every output sample, the
/// first input index and the fixed-point weights of its taps.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * (1.0 / filterscale)))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = raw
                .iter()
                .map(|w| if total != 0.0 { w / total } else { *w })
                .map(|w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i64
                    } else {
                        (0.5 + w * one) as i64
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// One horizontal or vertical pass over an RGB buffer of `w` x `h`.
fn resample_pass(src: &[u8], w: usize, h: usize, out: usize, horizontal: bool) -> Vec<u8> {
    let (in_size, other) = if horizontal { (w, h) } else { (h, w) };
    let coeffs = coefficients(in_size, out);
    let (ow, oh) = if horizontal { (out, h) } else { (w, out) };
    let mut dst = vec![0u8; ow * oh * 3];
    let at = |along: usize, across: usize| {
        if horizontal {
            across * w + along
        } else {
            along * w + across
        }
    };
    for across in 0..other {
        for (o, (start, weights)) in coeffs.iter().enumerate() {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (k, weight) in weights.iter().enumerate() {
                let px = 3 * at(start + k, across);
                for c in 0..3 {
                    acc[c] += i64::from(src[px + c]) * weight;
                }
            }
            let target = 3 * if horizontal {
                across * ow + o
            } else {
                o * ow + across
            };
            for c in 0..3 {
                dst[target + c] = (acc[c] >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_with_the_mean_colour_and_keeps_the_image_centred() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 0])));
        let p = ImageProcessor::new(4, AspectMode::Pad);
        let sq = p.square_pixels(&img).unwrap();
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [122, 116, 104]);
        assert_eq!(sq.get_pixel(0, 1).0, [255, 0, 0]);
        assert_eq!(sq.get_pixel(3, 2).0, [255, 0, 0]);
        assert_eq!(sq.get_pixel(3, 3).0, [122, 116, 104]);
        let v = p.normalize(&sq);
        assert!((v[0] - (122.0 / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0]).abs() < 1e-6);
    }

    #[test]
    fn extreme_aspect_ratios_are_refused_before_the_canvas_is_made() {
        // Decoded, 100000 x 1 is 300 kB; its square canvas would be 30 GB, and its
        // crop-mode resize (shortest side to 336) 33.6M x 336 pixels.
        let wide = DynamicImage::ImageRgb8(RgbImage::new(100_000, 1));
        let started = std::time::Instant::now();
        let pad = ImageProcessor::new(336, AspectMode::Pad);
        let e = pad.square_pixels(&wide).unwrap_err().to_string();
        assert!(
            e.starts_with("the image padded to a square (100000x100000)"),
            "{e}"
        );
        let crop = ImageProcessor::new(336, AspectMode::Crop);
        let e = crop.square_pixels(&wide).unwrap_err().to_string();
        assert!(e.starts_with("the resized image (33600000x336)"), "{e}");
        assert!(started.elapsed().as_secs() < 2);
        // One bad image fails alone in a batch's planes.
        let fine = DynamicImage::ImageRgb8(RgbImage::new(40, 30));
        let planes = pad.planes(&[&fine, &wide]);
        assert_eq!(planes[0].as_ref().unwrap().len(), 3 * 336 * 336);
        assert!(planes[1].is_err());
    }

    #[test]
    fn crop_mode_resizes_the_short_side_then_centre_crops() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(20, 10, |x, _| {
            image::Luma([(x * 10) as u8])
        }));
        let p = ImageProcessor::new(5, AspectMode::Crop);
        let sq = p.square_pixels(&img).unwrap();
        assert_eq!(sq.dimensions(), (5, 5));
        // 20x10 -> 10x5, then columns 2..7 are kept: crop column 2 is resized column 4,
        // centred on source x = 8.5, where the ramp is 85.
        let mid = sq.get_pixel(2, 2).0[0];
        assert!((83..=87).contains(&mid), "{mid}");
    }
}
