//! `mt roi --overlay`: the image with each ROI drawn as a green box, as the MedTrinity
//! captioner saw it, and optionally the mask's outline.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use image::{Rgb, RgbImage};

use super::{LabelMap, Roi};
use crate::core::budget;

/// The box colour (pure green, as in the MedTrinity prompts).
const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
/// The outline colour, told apart from the box.
const YELLOW: Rgb<u8> = Rgb([255, 255, 0]);

/// The overlay of `rois` on `image` (or, when there is none, on the mask itself shown in
/// grey), with the outline of `mask`'s regions when `outline` is set. The image and the
/// mask must have one size.
pub(crate) fn draw(
    image: Option<&Path>,
    mask: Option<&LabelMap>,
    size: (usize, usize),
    rois: &[Roi],
    outline: bool,
) -> Result<RgbImage> {
    let (w, h) = size;
    let mut canvas = match image {
        Some(path) => {
            let img = crate::core::image::decode_file(path)
                .context("cannot read the image")?
                .to_rgb8();
            if (img.width() as usize, img.height() as usize) != (w, h) {
                bail!(
                    "{}: image is {}x{} but the regions are for {w}x{h}",
                    path.display(),
                    img.width(),
                    img.height()
                );
            }
            img
        }
        None => {
            budget::picture("the overlay", w as u64, h as u64, 3)?;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let on = mask.is_some_and(|m| m.labels[y as usize * w + x as usize] != 0);
                if on {
                    Rgb([160, 160, 160])
                } else {
                    Rgb([0, 0, 0])
                }
            })
        }
    };
    if outline && let Some(mask) = mask {
        draw_outline(&mut canvas, mask);
    }
    draw_boxes(&mut canvas, rois);
    Ok(canvas)
}

/// Draws each ROI's box in green, 2 pixels wide or 1/256 of the shorter side.
pub(crate) fn draw_boxes(canvas: &mut RgbImage, rois: &[Roi]) {
    let thickness = (canvas.width().min(canvas.height()) / 256).max(2);
    for roi in rois {
        draw_box(canvas, roi.bbox, thickness);
    }
}

/// A `thickness`-pixel rectangle just inside `[x0, y0, x1, y1)`.
fn draw_box(img: &mut RgbImage, [x0, y0, x1, y1]: [u32; 4], thickness: u32) {
    let (w, h) = img.dimensions();
    let (x1, y1) = (x1.min(w), y1.min(h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let t = thickness
        .min((x1 - x0).div_ceil(2))
        .min((y1 - y0).div_ceil(2))
        .max(1);
    for y in y0..y1 {
        for x in x0..x1 {
            let edge = x < x0 + t || x + t >= x1 || y < y0 + t || y + t >= y1;
            if edge {
                img.put_pixel(x, y, GREEN);
            }
        }
    }
}

/// Marks every labelled pixel with a 4-neighbour of another label (or the image edge).
fn draw_outline(img: &mut RgbImage, mask: &LabelMap) {
    let (w, h) = (mask.width, mask.height);
    let at = |x: usize, y: usize| mask.labels[y * w + x];
    for y in 0..h {
        for x in 0..w {
            let v = at(x, y);
            if v == 0 {
                continue;
            }
            let border = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || at(x - 1, y) != v
                || at(x + 1, y) != v
                || at(x, y - 1) != v
                || at(x, y + 1) != v;
            if border {
                img.put_pixel(x as u32, y as u32, YELLOW);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_read_by_its_bytes_not_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("scan.jpg");
        RgbImage::from_pixel(8, 6, Rgb([9, 9, 9]))
            .write_to(
                &mut std::io::BufWriter::new(std::fs::File::create(&png).unwrap()),
                image::ImageFormat::Png,
            )
            .unwrap();
        let out = draw(Some(&png), None, (8, 6), &[], false).unwrap();
        assert_eq!(out.get_pixel(0, 0), &Rgb([9, 9, 9]));
    }

    #[test]
    fn an_overlay_without_an_image_is_sized_within_the_budget() {
        let e = draw(None, None, (100_000, 100_000), &[], false).unwrap_err();
        assert!(e.to_string().contains("the overlay (100000x100000)"), "{e}");
    }

    fn roi(bbox: [u32; 4]) -> Roi {
        Roi {
            label: "1".into(),
            bbox,
            bbox_norm: [0.0; 4],
            area: 0,
            area_pct: 0.0,
            centroid: [0.0; 2],
            components: 1,
            position: "center".into(),
        }
    }

    #[test]
    fn boxes_are_green_frames_inside_the_box() {
        let img = draw(None, None, (20, 10), &[roi([2, 2, 12, 8])], false).unwrap();
        let green = |x, y| *img.get_pixel(x, y) == GREEN;
        // Thickness 2: the frame covers x 2..4 and 10..12, y 2..4 and 6..8.
        assert!(green(2, 2) && green(3, 5) && green(11, 7) && green(6, 3));
        assert!(!green(4, 4) && !green(1, 1) && !green(12, 5) && !green(6, 8));
    }

    #[test]
    fn outlines_follow_label_borders() {
        let mut labels = vec![0u32; 7 * 7];
        for y in 1..6 {
            for x in 1..6 {
                labels[y * 7 + x] = 1;
            }
        }
        let mask = LabelMap {
            width: 7,
            height: 7,
            labels,
        };
        let img = draw(None, Some(&mask), (7, 7), &[], true).unwrap();
        assert_eq!(*img.get_pixel(1, 3), YELLOW);
        assert_eq!(*img.get_pixel(3, 3), Rgb([160, 160, 160]));
        assert_eq!(*img.get_pixel(0, 0), Rgb([0, 0, 0]));
    }

    #[test]
    fn a_mismatched_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.png");
        RgbImage::new(4, 4).save(&path).unwrap();
        let err = draw(Some(&path), None, (5, 4), &[], false).unwrap_err();
        assert!(err.to_string().contains("4x4"), "{err}");
    }
}
