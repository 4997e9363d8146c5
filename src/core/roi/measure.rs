//! Measuring regions of a label map or box.
//!
//! [`measure`] turns a [`LabelMap`] into one [`Roi`] per label value (or per connected
//! component with [`MeasureOptions::split_components`]); `measure_box` describes a
//! region known only by its box (COCO boxes, JSONL `bbox`); `position_words` is the
//! MedTrinity 3x3 grid on the centroid.
//!
//! # Connected components
//!
//! All labels are labelled in one pass over the map: each row is cut into runs of equal
//! non-zero labels, and a run joins the runs of the row above that touch it (share a
//! column with 4-connectivity, or a column or a corner with 8-connectivity) and carry the
//! same label, through a union-find over runs. Different labels never join, even when
//! they touch. Per component the pass keeps its label, pixel count, box and the integer
//! sums of its pixel centres, so the centroid is exact (no floating-point accumulation).
//!
//! # Minimum size and merging
//!
//! Components are processed in this order:
//! 1. components of fewer than [`MeasureOptions::min_size`] pixels are dropped (a speck
//!    dropped here never causes a merge);
//! 2. with [`MeasureOptions::merge_distance`] `d >= 1`, two kept components **of the
//!    same label** are merged when the Chebyshev distance between their bounding boxes
//!    is at most `d`, that distance counted between the boxes' nearest pixels: 0 for
//!    overlapping boxes, 1 for boxes that touch (side by side or only at a corner), `k`
//!    for boxes with `k - 1` empty rows or columns between them. In integers, for boxes
//!    `[x0, x1) x [y0, y1)`: `a.x0 < b.x1 + d && b.x0 < a.x1 + d && a.y0 < b.y1 + d &&
//!    b.y0 < a.y1 + d`. Merging is transitive (single linkage on the components' own
//!    boxes: a merged group's box is not re-tested against the others). `d = 0` (the
//!    default) merges nothing: components are exactly the connected components.
//!
//! A label's ROI is then made of the pixels of its kept components; `components` counts
//! the kept groups after merging. A label with no component left yields no ROI.

use super::{LabelMap, Orientation, PixelBox, Roi};

/// Options for turning a label map into ROIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureOptions {
    /// How image left/right map to the words "left"/"right" (see `position_words`).
    pub orientation: Orientation,
    /// 4 (pixels sharing a side) or 8 (a side or a corner; the default). Any value
    /// other than 4 is taken as 8.
    pub connectivity: u8,
    /// Components of fewer pixels than this are dropped before merging (default 1 =
    /// keep all; 0 keeps all too).
    pub min_size: u64,
    /// Kept components of the same label whose boxes are within this many pixels
    /// (Chebyshev distance between the boxes' nearest pixels: overlapping = 0, touching
    /// = 1) are merged into one, transitively. 0 (default) merges nothing. The exact
    /// rule is in the module documentation.
    pub merge_distance: u32,
    /// One ROI per (kept, merged) component instead of one per label.
    pub split_components: bool,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            orientation: Orientation::Radiological,
            connectivity: 8,
            min_size: 1,
            merge_distance: 0,
            split_components: false,
        }
    }
}

/// Measures every label of `map`: one [`Roi`] per label value other than 0, sorted by
/// label value (the label is the value in decimal), or with `split_components` one per
/// component, sorted by label and then by the component's first pixel in raster order
/// (each with `components = 1`).
///
/// Per ROI: `bbox` is the box of the kept pixels (`x1`, `y1` exclusive), `area` the
/// number of kept pixels, `area_pct = 100 * area / (width * height)`, `centroid` the
/// mean of the kept pixels' centres `(x + 0.5, y + 0.5)`, `bbox_norm` the box divided by
/// `(width, height, width, height)`, `components` the number of kept components after
/// `min_size` and merging, and `position` the `position_words` of the centroid.
/// A label whose components are all smaller than `min_size` yields no ROI; a map with
/// no label (or no pixel) yields none.
///
/// Reuse a `Measurer` to keep its buffers between maps.
///
/// # Panics
/// When `map.labels.len() != map.width * map.height`.
pub fn measure(map: &LabelMap, opts: &MeasureOptions) -> Vec<Roi> {
    Measurer::new().measure(map, opts)
}

/// A region known only by its box (`x1`, `y1` exclusive) in an image of
/// `width x height`: the box is clipped to the image, `area` is the clipped box's
/// area, the centroid its centre, `components` is 1. With `width` or `height` 0 (image
/// size unknown) the box is kept as given and `bbox_norm` and `area_pct` are 0.
pub(crate) fn measure_box(
    b: PixelBox,
    label: &str,
    width: usize,
    height: usize,
    orientation: Orientation,
) -> Roi {
    let (mut x0, mut y0, mut x1, mut y1) = (b.x0, b.y0, b.x1.max(b.x0), b.y1.max(b.y0));
    if width > 0 && height > 0 {
        let (w, h) = (clamp_u32(width), clamp_u32(height));
        (x0, x1) = (x0.min(w), x1.min(w));
        (y0, y1) = (y0.min(h), y1.min(h));
    }
    // Below 2^32 a side, the area fits u64 and the centre is exact in f64; an empty
    // box still has a centre.
    let area = u64::from(x1 - x0) * u64::from(y1 - y0);
    let centre = |a: u32, b: u32| (f64::from(a) + f64::from(b)) / 2.0;
    make_roi(
        label.to_string(),
        [x0, y0, x1, y1],
        area,
        [centre(x0, x1), centre(y0, y1)],
        1,
        width,
        height,
        orientation,
    )
}

/// MedTrinity-style position words for a point (a centroid) in a `width x height`
/// image, from a 3x3 grid: columns `left | center | right` at thirds of the width,
/// rows `upper | center | lower` at thirds of the height. The words are
/// `"<column> <row>"`, except that both in the centre give just `"center"`, so the nine
/// answers are:
///
/// | | left | center | right |
/// |---|---|---|---|
/// | upper | `left upper` | `center upper` | `right upper` |
/// | center | `left center` | `center` | `right center` |
/// | lower | `left lower` | `center lower` | `right lower` |
///
/// A point exactly on a third boundary (`cx == width / 3` or `2 * width / 3`, likewise
/// for rows) belongs to the centre cell. With [`Orientation::Radiological`] the columns
/// swap (the patient's right is on the image's left, so a point on the image's left is
/// "right"); [`Orientation::Anatomical`] follows the image. With `width` or `height` 0
/// that axis counts as centre.
pub(crate) fn position_words(
    cx: f64,
    cy: f64,
    width: usize,
    height: usize,
    orientation: Orientation,
) -> String {
    // -1: low third, 0: centre, 1: high third.
    fn third(v: f64, size: usize) -> i8 {
        if size == 0 {
            return 0;
        }
        let (v3, s) = (3.0 * v, size as f64);
        if v3 < s {
            -1
        } else if v3 > 2.0 * s {
            1
        } else {
            0
        }
    }
    let mut col = third(cx, width);
    if orientation == Orientation::Radiological {
        col = -col;
    }
    let row = third(cy, height);
    let col_word = ["left", "center", "right"][(col + 1) as usize];
    let row_word = ["upper", "center", "lower"][(row + 1) as usize];
    if col == 0 && row == 0 {
        "center".to_string()
    } else {
        format!("{col_word} {row_word}")
    }
}

/// A horizontal run of one label in one row: `[x0, x1)` at `y`.
#[derive(Debug, Clone, Copy)]
struct Run {
    x0: u32,
    x1: u32,
    y: u32,
    label: u32,
}

/// One connected component (or a merged group of them).
#[derive(Debug, Clone, Copy)]
struct Component {
    label: u32,
    area: u64,
    /// Sum of `2x + 1` over the pixels (twice the sum of the pixel centres' x).
    sx2: u64,
    /// Sum of `2y + 1` over the pixels.
    sy2: u64,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Component {
    fn absorb(&mut self, o: &Component) {
        self.area += o.area;
        self.sx2 += o.sx2;
        self.sy2 += o.sy2;
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
    }
}

/// [`measure`] with its scratch buffers kept between calls (no allocation per map once
/// they have grown, except the returned ROIs).
#[derive(Debug, Default)]
pub(crate) struct Measurer {
    runs: Vec<Run>,
    /// Union-find parent per run; after labelling, the run's component index.
    parent: Vec<u32>,
    comps: Vec<Component>,
    /// Kept component indices, later sorted for output.
    kept: Vec<u32>,
    /// Union-find parent per component, for merging.
    group: Vec<u32>,
}

impl Measurer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// See [`measure`].
    pub(crate) fn measure(&mut self, map: &LabelMap, opts: &MeasureOptions) -> Vec<Roi> {
        let (w, h) = (map.width, map.height);
        assert_eq!(
            map.labels.len(),
            w * h,
            "label map of {w}x{h} has {} labels",
            map.labels.len()
        );
        self.label_components(map, opts.connectivity != 4);
        self.kept.clear();
        let min_size = opts.min_size.max(1);
        self.kept.extend(
            (0..self.comps.len() as u32).filter(|&i| self.comps[i as usize].area >= min_size),
        );
        if opts.merge_distance > 0 && self.kept.len() > 1 {
            self.merge(opts.merge_distance);
        }
        // Kept indices are in raster order of first pixels; a stable sort by label keeps
        // that order within each label.
        let comps = &self.comps;
        self.kept.sort_by_key(|&i| comps[i as usize].label);
        let mut out = Vec::new();
        let roi = |c: &Component, n: usize| {
            make_roi(
                c.label.to_string(),
                [c.x0, c.y0, c.x1, c.y1],
                c.area,
                centroid(c.area, c.sx2, c.sy2),
                n,
                w,
                h,
                opts.orientation,
            )
        };
        if opts.split_components {
            out.extend(self.kept.iter().map(|&i| roi(&comps[i as usize], 1)));
        } else {
            let mut i = 0;
            while i < self.kept.len() {
                let mut acc = comps[self.kept[i] as usize];
                let mut j = i + 1;
                while j < self.kept.len() && comps[self.kept[j] as usize].label == acc.label {
                    acc.absorb(&comps[self.kept[j] as usize]);
                    j += 1;
                }
                out.push(roi(&acc, j - i));
                i = j;
            }
        }
        out
    }

    /// Fills `self.comps` with the connected components of `map` (all labels at once),
    /// in raster order of their first pixels.
    fn label_components(&mut self, map: &LabelMap, eight: bool) {
        let (w, h) = (map.width, map.height);
        let runs = &mut self.runs;
        let parent = &mut self.parent;
        runs.clear();
        parent.clear();
        self.comps.clear();
        if w == 0 || h == 0 {
            return;
        }
        // Column slack when testing overlap with the row above: a corner counts with 8.
        let k = u32::from(eight);
        let mut prev_start = 0usize;
        for (y, row) in map.labels.chunks_exact(w).enumerate() {
            let cur_start = runs.len();
            let mut x = 0usize;
            loop {
                x = run_end(row, x, 0);
                if x >= w {
                    break;
                }
                let v = row[x];
                let e = run_end(row, x + 1, v);
                runs.push(Run {
                    x0: x as u32,
                    x1: e as u32,
                    y: y as u32,
                    label: v,
                });
                x = e;
            }
            let cur_end = runs.len();
            parent.extend(cur_start as u32..cur_end as u32);
            // Join with the row above (runs [prev_start, cur_start)).
            if y > 0 && prev_start < cur_start {
                let mut p = prev_start;
                for r in cur_start..cur_end {
                    let Run { x0, x1, label, .. } = runs[r];
                    // Runs above that end before this one starts (with slack) cannot touch
                    // this run or any later one.
                    while p < cur_start && runs[p].x1 + k <= x0 {
                        p += 1;
                    }
                    let mut q = p;
                    while q < cur_start && runs[q].x0 < x1 + k {
                        if runs[q].label == label {
                            union(parent, q as u32, r as u32);
                        }
                        q += 1;
                    }
                }
            }
            prev_start = cur_start;
        }
        // Parents always point to smaller indices and roots are the smallest run of their
        // set, so one forward pass turns parents into component indices.
        for i in 0..runs.len() {
            let p = parent[i] as usize;
            let Run { x0, x1, y, label } = runs[i];
            let len = u64::from(x1 - x0);
            let c = if p == i {
                self.comps.push(Component {
                    label,
                    area: 0,
                    sx2: 0,
                    sy2: 0,
                    x0,
                    y0: y,
                    x1,
                    y1: y + 1,
                });
                self.comps.len() - 1
            } else {
                parent[p] as usize
            };
            parent[i] = c as u32;
            let comp = &mut self.comps[c];
            comp.area += len;
            comp.sx2 += sq(x1) - sq(x0);
            comp.sy2 += len * (2 * u64::from(y) + 1);
            comp.x0 = comp.x0.min(x0);
            comp.x1 = comp.x1.max(x1);
            comp.y1 = y + 1;
        }
    }

    /// Merges the kept components of the same label whose boxes are within `d` pixels
    /// (see the module documentation), leaving in `self.kept` one index per group (its
    /// smallest, i.e. first in raster order) whose component holds the group's totals.
    fn merge(&mut self, d: u32) {
        let comps = &mut self.comps;
        let group = &mut self.group;
        group.clear();
        group.extend(0..comps.len() as u32);
        // Sweep in (label, x0) order: for a before b, b.x0 >= a.x0, so the x test reduces
        // to b.x0 < a.x1 + d and the scan over b stops at the first that fails it.
        let mut order = self.kept.clone();
        order.sort_by_key(|&i| (comps[i as usize].label, comps[i as usize].x0));
        let d = u64::from(d);
        for (n, &a) in order.iter().enumerate() {
            let ca = comps[a as usize];
            for &b in &order[n + 1..] {
                let cb = &comps[b as usize];
                if cb.label != ca.label || u64::from(cb.x0) >= u64::from(ca.x1) + d {
                    break;
                }
                if u64::from(ca.y0) < u64::from(cb.y1) + d
                    && u64::from(cb.y0) < u64::from(ca.y1) + d
                {
                    union(group, a, b);
                }
            }
        }
        // Fold each group into its root (the smallest index, first in raster order).
        let mut roots = 0;
        for n in 0..self.kept.len() {
            let i = self.kept[n];
            let r = find(group, i);
            if r == i {
                self.kept[roots] = i;
                roots += 1;
            } else {
                let c = comps[i as usize];
                comps[r as usize].absorb(&c);
            }
        }
        self.kept.truncate(roots);
    }
}

/// The first index `>= i` where `row` differs from `v` (or `row.len()`), skipping
/// 16 equal values at a time.
#[inline]
fn run_end(row: &[u32], mut i: usize, v: u32) -> usize {
    while let Some(chunk) = row.get(i..i + 16) {
        let diff = chunk.iter().fold(0u32, |acc, &x| acc | (x ^ v));
        if diff != 0 {
            break;
        }
        i += 16;
    }
    while i < row.len() && row[i] == v {
        i += 1;
    }
    i
}

/// Root of `x`, halving the path on the way.
#[inline]
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let g = parent[parent[x as usize] as usize];
        parent[x as usize] = g;
        x = g;
    }
    x
}

/// Joins the sets of `a` and `b`; the smaller root becomes the root, so a parent always
/// has a smaller index than its child.
#[inline]
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

fn sq(v: u32) -> u64 {
    u64::from(v) * u64::from(v)
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The mean pixel centre of `area` pixels from their doubled centre sums (`[0, 0]`
/// for no pixels, never NaN).
fn centroid(area: u64, sx2: u64, sy2: u64) -> [f64; 2] {
    let mean = |sum: u64| {
        if area > 0 {
            sum as f64 / (2.0 * area as f64)
        } else {
            0.0
        }
    };
    [mean(sx2), mean(sy2)]
}

/// Builds a [`Roi`] from a box, an area and the centroid; sizes of 0 give 0 (never NaN)
/// for the normalised values.
#[allow(clippy::too_many_arguments)]
fn make_roi(
    label: String,
    bbox: [u32; 4],
    area: u64,
    [cx, cy]: [f64; 2],
    components: usize,
    width: usize,
    height: usize,
    orientation: Orientation,
) -> Roi {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (wf, hf) = (width as f64, height as f64);
    Roi {
        label,
        bbox,
        bbox_norm: [
            ratio(f64::from(bbox[0]), wf),
            ratio(f64::from(bbox[1]), hf),
            ratio(f64::from(bbox[2]), wf),
            ratio(f64::from(bbox[3]), hf),
        ],
        area,
        area_pct: ratio(100.0 * area as f64, wf * hf),
        centroid: [cx, cy],
        components,
        position: position_words(cx, cy, width, height, orientation),
    }
}

#[cfg(test)]
mod tests;
