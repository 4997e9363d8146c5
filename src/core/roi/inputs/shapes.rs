//! Boxes and polygons rasterised into label maps, with the pixel rules of the module.

use super::*;

/// The pixels a box with corners `(x0, y0)`-`(x1, y1)` (any reals) covers:
/// `floor(x0)..ceil(x1)` by `floor(y0)..ceil(y1)`, clamped to the image. `None` when that
/// is empty or a coordinate is not finite.
pub(crate) fn pixel_box(corners: [f64; 4], width: usize, height: usize) -> Option<PixelBox> {
    if corners.iter().any(|c| !c.is_finite()) {
        return None;
    }
    let clamp = |v: f64, max: usize| v.clamp(0.0, max as f64) as u32;
    let b = PixelBox {
        x0: clamp(corners[0].floor(), width),
        y0: clamp(corners[1].floor(), height),
        x1: clamp(corners[2].ceil(), width),
        y1: clamp(corners[3].ceil(), height),
    };
    (b.x1 > b.x0 && b.y1 > b.y0).then_some(b)
}

/// Paints `label` into `map` where pixel centres `(x + 0.5, y + 0.5)` lie inside the
/// polygon `points` (`[x1, y1, x2, y2, ...]`, pixel coordinates, closed implicitly), by
/// the even-odd rule. A centre exactly on a left or top edge is inside, on a right or
/// bottom edge outside, so an axis-aligned rectangle with integer corners `(x0, y0)`,
/// `(x1, y1)` fills exactly `(x1 - x0) * (y1 - y0)` pixels, and polygons sharing an edge
/// never paint the same pixel twice. Parts outside the map are clipped.
pub(crate) fn fill_polygon(map: &mut LabelMap, points: &[f64], label: u32) {
    let n = points.len() / 2;
    if n < 3 || map.width == 0 {
        return;
    }
    let pt = |i: usize| (points[2 * (i % n)], points[2 * (i % n) + 1]);
    let (lo, hi) = (0..n)
        .map(|i| pt(i).1)
        .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let first = ((lo - 0.5).ceil().max(0.0)) as usize;
    let last = ((hi - 0.5).ceil().clamp(0.0, map.height as f64)) as usize;
    let mut xs = Vec::new();
    for y in first..last {
        let yc = y as f64 + 0.5;
        xs.clear();
        for i in 0..n {
            let ((xa, ya), (xb, yb)) = (pt(i), pt(i + 1));
            if (ya <= yc && yc < yb) || (yb <= yc && yc < ya) {
                xs.push(xa + (yc - ya) * (xb - xa) / (yb - ya));
            }
        }
        xs.sort_by(f64::total_cmp);
        let row = &mut map.labels[y * map.width..(y + 1) * map.width];
        for pair in xs.chunks_exact(2) {
            let from = (pair[0] - 0.5).ceil().clamp(0.0, map.width as f64) as usize;
            let to = (pair[1] - 0.5).ceil().clamp(0.0, map.width as f64) as usize;
            if from < to {
                row[from..to].fill(label);
            }
        }
    }
}

pub(super) fn fill_box(map: &mut LabelMap, b: PixelBox, label: u32) {
    for y in b.y0 as usize..b.y1 as usize {
        map.labels[y * map.width + b.x0 as usize..y * map.width + b.x1 as usize].fill(label);
    }
}
