//! Measuring regions of a label map or box.
//!
//! [`measure`] turns a [`LabelMap`] into one [`Roi`] per label value (or per connected
//! component with [`MeasureOptions::split_components`]); [`measure_box`] describes a
//! region known only by its box (COCO boxes, JSONL `bbox`); [`position_words`] is the
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
    /// How image left/right map to the words "left"/"right" (see [`position_words`]).
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
/// `min_size` and merging, and `position` the [`position_words`] of the centroid.
/// A label whose components are all smaller than `min_size` yields no ROI; a map with
/// no label (or no pixel) yields none.
///
/// Reuse a [`Measurer`] to keep its buffers between maps.
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
pub fn measure_box(
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
pub fn position_words(
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
pub struct Measurer {
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
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`measure`].
    pub fn measure(&mut self, map: &LabelMap, opts: &MeasureOptions) -> Vec<Roi> {
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
mod tests {
    use super::*;

    /// A label map from rows of digits ('.' = 0).
    fn map(rows: &[&str]) -> LabelMap {
        let width = rows.first().map_or(0, |r| r.len());
        let labels = rows
            .iter()
            .flat_map(|r| {
                assert_eq!(r.len(), width);
                r.chars().map(|c| c.to_digit(10).unwrap_or(0))
            })
            .collect();
        LabelMap {
            width,
            height: rows.len(),
            labels,
        }
    }

    fn opts(connectivity: u8, min_size: u64, merge_distance: u32) -> MeasureOptions {
        MeasureOptions {
            orientation: Orientation::Anatomical,
            connectivity,
            min_size,
            merge_distance,
            split_components: false,
        }
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// 10x8: label 1 = a 2x2 blob A, a 3x2 blob B and a 1-pixel speck; label 2 = two
    /// pixels touching only at a corner.
    const TEN_BY_EIGHT: [&str; 8] = [
        "11......2.",
        "11.....2..",
        "..........",
        "...111....",
        "...111....",
        "..........",
        "..........",
        ".........1",
    ];

    #[test]
    fn two_labels_eight_connectivity() {
        let rois = measure(&map(&TEN_BY_EIGHT), &opts(8, 1, 0));
        assert_eq!(rois.len(), 2);
        let one = &rois[0];
        assert_eq!(one.label, "1");
        assert_eq!(one.bbox, [0, 0, 10, 8]);
        assert_eq!(one.bbox_norm, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(one.area, 11);
        assert!(approx(one.area_pct, 100.0 * 11.0 / 80.0));
        // x centres: A 2*(0.5+1.5) = 4, B 2*(3.5+4.5+5.5) = 27, speck 9.5 -> 40.5;
        // y centres: A 2*0.5+2*1.5 = 4, B 3*3.5+3*4.5 = 24, speck 7.5 -> 35.5.
        assert!(approx(one.centroid[0], 40.5 / 11.0));
        assert!(approx(one.centroid[1], 35.5 / 11.0));
        assert_eq!(one.components, 3);
        assert_eq!(one.position, "center");
        let two = &rois[1];
        assert_eq!(two.label, "2");
        assert_eq!(two.bbox, [7, 0, 9, 2]);
        assert_eq!(two.bbox_norm, [0.7, 0.0, 0.9, 0.25]);
        assert_eq!(two.area, 2);
        assert!(approx(two.area_pct, 2.5));
        assert_eq!(two.centroid, [8.0, 1.0]);
        assert_eq!(two.components, 1);
        assert_eq!(two.position, "right upper");
    }

    #[test]
    fn four_connectivity_splits_the_diagonal_pair() {
        let rois = measure(&map(&TEN_BY_EIGHT), &opts(4, 1, 0));
        assert_eq!(rois[0].components, 3);
        assert_eq!(rois[1].components, 2);
        assert_eq!(rois[1].area, 2);
        // Merging boxes that touch (distance 1) joins the corner-to-corner pair again.
        let rois = measure(&map(&TEN_BY_EIGHT), &opts(4, 1, 1));
        assert_eq!(rois[1].components, 1);
    }

    #[test]
    fn min_size_drops_the_speck() {
        let rois = measure(&map(&TEN_BY_EIGHT), &opts(8, 2, 0));
        let one = &rois[0];
        assert_eq!(one.bbox, [0, 0, 6, 5]);
        assert_eq!(one.area, 10);
        assert!(approx(one.area_pct, 12.5));
        assert!(approx(one.centroid[0], 3.1));
        assert!(approx(one.centroid[1], 2.8));
        assert_eq!(one.components, 2);
        assert_eq!(one.position, "left center");
        // Label 2 (2 pixels) survives min_size 2, not 3.
        assert_eq!(rois[1].label, "2");
        let rois = measure(&map(&TEN_BY_EIGHT), &opts(8, 3, 0));
        assert_eq!(rois.len(), 1);
        assert_eq!(rois[0].label, "1");
        // Nothing left at all.
        assert!(measure(&map(&TEN_BY_EIGHT), &opts(8, 7, 0)).is_empty());
    }

    #[test]
    fn merge_distance_merges_nearby_blobs() {
        // A [0,2)x[0,2) and B [3,6)x[3,5): one empty column and row between them, so
        // their distance is 2; B and the speck [9,10)x[7,8): distance max(4, 3) = 4.
        let comps = |min_size, d| {
            let rois = measure(&map(&TEN_BY_EIGHT), &opts(8, min_size, d));
            rois[0].components
        };
        assert_eq!(comps(2, 0), 2);
        assert_eq!(comps(2, 1), 2);
        assert_eq!(comps(2, 2), 1);
        assert_eq!(comps(1, 2), 2);
        assert_eq!(comps(1, 3), 2);
        assert_eq!(comps(1, 4), 1);
        // The speck is dropped before merging: it never joins anything.
        assert_eq!(comps(2, 100), 1);
        // Merging changes the count, not the pixels.
        let merged = measure(&map(&TEN_BY_EIGHT), &opts(8, 2, 2));
        let plain = measure(&map(&TEN_BY_EIGHT), &opts(8, 2, 0));
        assert_eq!(merged[0].area, plain[0].area);
        assert_eq!(merged[0].bbox, plain[0].bbox);
        // Different labels never merge, however close.
        let rois = measure(&map(&["1.2", "..."]), &opts(8, 1, 5));
        assert_eq!(
            (rois.len(), rois[0].components, rois[1].components),
            (2, 1, 1)
        );
    }

    #[test]
    fn merge_is_transitive_on_the_components_own_boxes() {
        // a-b distance 2, b-c distance 2, a-c distance 5: d = 2 joins all three.
        let rois = measure(&map(&["1.1.1.", "......"]), &opts(8, 1, 2));
        assert_eq!(rois[0].components, 1);
        let rois = measure(&map(&["1..1..1"]), &opts(8, 1, 2));
        assert_eq!(rois[0].components, 3);
        let rois = measure(&map(&["1..1..1"]), &opts(8, 1, 3));
        assert_eq!(rois[0].components, 1);
    }

    #[test]
    fn split_components_one_roi_per_component() {
        let mut o = opts(8, 1, 0);
        o.split_components = true;
        let rois = measure(&map(&TEN_BY_EIGHT), &o);
        let got: Vec<_> = rois
            .iter()
            .map(|r| {
                (
                    r.label.as_str(),
                    r.bbox,
                    r.area,
                    r.centroid,
                    r.components,
                    r.position.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("1", [0, 0, 2, 2], 4, [1.0, 1.0], 1, "left upper"),
                ("1", [3, 3, 6, 5], 6, [4.5, 4.0], 1, "center"),
                ("1", [9, 7, 10, 8], 1, [9.5, 7.5], 1, "right lower"),
                ("2", [7, 0, 9, 2], 2, [8.0, 1.0], 1, "right upper"),
            ]
        );
        assert!(approx(rois[0].area_pct, 5.0));
        assert!(approx(rois[2].area_pct, 1.25));
        // Split after merging: the merged group is one ROI with the group's pixels.
        o.merge_distance = 2;
        o.min_size = 2;
        let rois = measure(&map(&TEN_BY_EIGHT), &o);
        assert_eq!(rois.len(), 2);
        assert_eq!((rois[0].bbox, rois[0].area), ([0, 0, 6, 5], 10));
        // 4-connectivity splits the diagonal pair, in raster order.
        let mut o = opts(4, 1, 0);
        o.split_components = true;
        let rois = measure(&map(&TEN_BY_EIGHT), &o);
        let twos: Vec<_> = rois
            .iter()
            .filter(|r| r.label == "2")
            .map(|r| r.bbox)
            .collect();
        assert_eq!(twos, vec![[8, 0, 9, 1], [7, 1, 8, 2]]);
    }

    #[test]
    fn all_nine_position_words_and_boundaries() {
        let a = Orientation::Anatomical;
        let words = |cx, cy| position_words(cx, cy, 9, 9, a);
        assert_eq!(words(1.0, 1.0), "left upper");
        assert_eq!(words(4.5, 1.0), "center upper");
        assert_eq!(words(8.0, 1.0), "right upper");
        assert_eq!(words(1.0, 4.5), "left center");
        assert_eq!(words(4.5, 4.5), "center");
        assert_eq!(words(8.0, 4.5), "right center");
        assert_eq!(words(1.0, 8.0), "left lower");
        assert_eq!(words(4.5, 8.0), "center lower");
        assert_eq!(words(8.0, 8.0), "right lower");
        // Thirds of 9 are at 3 and 6: points on them are in the centre cell.
        assert_eq!(words(3.0, 3.0), "center");
        assert_eq!(words(6.0, 6.0), "center");
        assert_eq!(words(3.0, 0.0), "center upper");
        assert_eq!(words(2.999, 0.0), "left upper");
        assert_eq!(words(6.001, 6.0), "right center");
        assert_eq!(words(0.0, 9.0), "left lower");
        // Thirds that are not whole pixels: 10 / 3 = 3.33.., 20 / 3 = 6.66..
        assert_eq!(position_words(3.3, 6.7, 10, 10, a), "left lower");
        assert_eq!(position_words(3.34, 6.66, 10, 10, a), "center");
        // Radiological: the image's left is the patient's right.
        let r = Orientation::Radiological;
        assert_eq!(position_words(1.0, 1.0, 9, 9, r), "right upper");
        assert_eq!(position_words(8.0, 4.5, 9, 9, r), "left center");
        assert_eq!(position_words(4.5, 8.0, 9, 9, r), "center lower");
        assert_eq!(position_words(4.5, 4.5, 9, 9, r), "center");
        assert_eq!(position_words(8.0, 8.0, 9, 9, r), "left lower");
        // Unknown size: that axis is centre.
        assert_eq!(position_words(1.0, 1.0, 0, 9, a), "center upper");
    }

    #[test]
    fn orientation_flows_into_measure() {
        let mut o = opts(8, 1, 0);
        o.orientation = Orientation::Radiological;
        let rois = measure(&map(&TEN_BY_EIGHT), &o);
        assert_eq!(rois[1].position, "left upper");
    }

    #[test]
    fn empty_maps_yield_nothing() {
        let o = MeasureOptions::default();
        assert!(measure(&map(&["....", "...."]), &o).is_empty());
        let none = LabelMap {
            width: 0,
            height: 0,
            labels: vec![],
        };
        assert!(measure(&none, &o).is_empty());
        let no_rows = LabelMap {
            width: 5,
            height: 0,
            labels: vec![],
        };
        assert!(measure(&no_rows, &o).is_empty());
    }

    #[test]
    fn full_image_label() {
        let rois = measure(&map(&["5555", "5555", "5555"]), &MeasureOptions::default());
        assert_eq!(rois.len(), 1);
        let r = &rois[0];
        assert_eq!(r.label, "5");
        assert_eq!(r.bbox, [0, 0, 4, 3]);
        assert_eq!(r.bbox_norm, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(r.area, 12);
        assert_eq!(r.area_pct, 100.0);
        assert_eq!(r.centroid, [2.0, 1.5]);
        assert_eq!(r.components, 1);
        assert_eq!(r.position, "center");
    }

    #[test]
    fn labels_sorted_and_touching_labels_kept_apart() {
        let rois = measure(&map(&["7733", "7733"]), &opts(8, 1, 0));
        let got: Vec<_> = rois
            .iter()
            .map(|r| (r.label.as_str(), r.bbox, r.area))
            .collect();
        assert_eq!(got, vec![("3", [2, 0, 4, 2], 4), ("7", [0, 0, 2, 2], 4)]);
        // Runs of different labels ending in the same column, crossing diagonally:
        // 1 at (0..2, 0) and (2..4, 1); 2 at (2..4, 0) and (0..2, 1).
        let rois = measure(&map(&["1122", "2211"]), &opts(8, 1, 0));
        assert_eq!((rois[0].components, rois[1].components), (1, 1));
        let rois = measure(&map(&["1122", "2211"]), &opts(4, 1, 0));
        assert_eq!((rois[0].components, rois[1].components), (2, 2));
    }

    #[test]
    fn u_shape_joins_two_roots() {
        let rois = measure(
            &map(&[
                "1...1.1", "1...1.1", "1...1.1", "11111.1", "1.....1", "1111111",
            ]),
            &opts(4, 1, 0),
        );
        assert_eq!(rois[0].components, 1);
        assert_eq!(rois[0].area, 3 + 3 + 3 + 6 + 2 + 7);
        // Wide rows take the 16-at-a-time path of the run scanner.
        let wide = format!("{}1{}", ".".repeat(40), "2".repeat(37));
        let rois = measure(&map(&[&wide, &wide]), &opts(8, 1, 0));
        assert_eq!(rois[0].bbox, [40, 0, 41, 2]);
        assert_eq!(rois[1].bbox, [41, 0, 78, 2]);
        assert_eq!(rois[1].area, 74);
    }

    #[test]
    fn measure_box_describes_a_box() {
        let b = PixelBox {
            x0: 2,
            y0: 4,
            x1: 6,
            y1: 8,
        };
        let r = measure_box(b, "tumor", 10, 8, Orientation::Anatomical);
        assert_eq!(r.label, "tumor");
        assert_eq!(r.bbox, [2, 4, 6, 8]);
        assert_eq!(r.bbox_norm, [0.2, 0.5, 0.6, 1.0]);
        assert_eq!(r.area, 16);
        assert_eq!(r.area_pct, 20.0);
        assert_eq!(r.centroid, [4.0, 6.0]);
        assert_eq!(r.components, 1);
        assert_eq!(r.position, "center lower");
        // The same box as a mask measures the same.
        let mut m = LabelMap {
            width: 10,
            height: 8,
            labels: vec![0; 80],
        };
        for y in 4..8 {
            for x in 2..6 {
                m.labels[y * 10 + x] = 1;
            }
        }
        let mut from_mask = measure(&m, &opts(8, 1, 0)).remove(0);
        from_mask.label = "tumor".into();
        assert_eq!(from_mask, r);
        // Clipped to the image; no NaN for an unknown size or an empty box.
        let big = PixelBox {
            x0: 8,
            y0: 6,
            x1: 20,
            y1: 20,
        };
        let r = measure_box(big, "x", 10, 8, Orientation::Radiological);
        assert_eq!((r.bbox, r.area), ([8, 6, 10, 8], 4));
        assert_eq!(r.position, "left lower");
        let r = measure_box(big, "x", 0, 0, Orientation::Anatomical);
        assert_eq!(
            (r.bbox, r.area, r.area_pct, r.bbox_norm),
            ([8, 6, 20, 20], 168, 0.0, [0.0; 4])
        );
        let empty = PixelBox {
            x0: 3,
            y0: 3,
            x1: 3,
            y1: 5,
        };
        let r = measure_box(empty, "x", 10, 8, Orientation::Anatomical);
        assert_eq!((r.area, r.centroid), (0, [3.0, 4.0]));
    }

    #[test]
    fn measure_box_is_exact_for_boxes_near_two_to_the_32() {
        let top = u32::MAX;
        let b = PixelBox {
            x0: top - 4,
            y0: 0,
            x1: top,
            y1: top,
        };
        // Image size unknown: the box is kept as given.
        let r = measure_box(b, "x", 0, 0, Orientation::Anatomical);
        assert_eq!(r.area, 4 * u64::from(top));
        assert_eq!(r.centroid, [f64::from(top) - 2.0, f64::from(top) / 2.0]);
        // In an image that large, it sits on the right edge, half way down.
        let side = top as usize;
        let r = measure_box(b, "x", side, side, Orientation::Anatomical);
        assert_eq!(r.position, "right center");
        let r = measure_box(b, "x", side, side, Orientation::Radiological);
        assert_eq!(r.position, "left center");
    }

    /// Flood-fill reference: components per label with areas, boxes and centre sums.
    fn reference(m: &LabelMap, eight: bool) -> Vec<(u32, u64, [u32; 4], u64, u64)> {
        let (w, h) = (m.width as i64, m.height as i64);
        let mut seen = vec![false; m.labels.len()];
        let mut out = Vec::new();
        for start in 0..m.labels.len() {
            let label = m.labels[start];
            if label == 0 || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let (mut area, mut sx2, mut sy2) = (0u64, 0u64, 0u64);
            let mut b = [u32::MAX, u32::MAX, 0, 0];
            while let Some(i) = stack.pop() {
                let (x, y) = ((i as i64) % w, (i as i64) / w);
                area += 1;
                sx2 += 2 * x as u64 + 1;
                sy2 += 2 * y as u64 + 1;
                b = [
                    b[0].min(x as u32),
                    b[1].min(y as u32),
                    b[2].max(x as u32 + 1),
                    b[3].max(y as u32 + 1),
                ];
                for dy in -1..=1i64 {
                    for dx in -1..=1i64 {
                        if (dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0) {
                            continue;
                        }
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= w || ny >= h {
                            continue;
                        }
                        let j = (ny * w + nx) as usize;
                        if !seen[j] && m.labels[j] == label {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push((label, area, b, sx2, sy2));
        }
        out.sort_by_key(|c| c.0);
        out
    }

    #[test]
    fn random_maps_match_a_flood_fill() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..300 {
            let width = 1 + (next() % 40) as usize;
            let height = 1 + (next() % 30) as usize;
            let labels_n = 1 + (next() % 4) as u32;
            let density = next() % 100;
            let labels = (0..width * height)
                .map(|_| {
                    if next() % 100 < density {
                        1 + (next() % u64::from(labels_n)) as u32
                    } else {
                        0
                    }
                })
                .collect();
            let m = LabelMap {
                width,
                height,
                labels,
            };
            for eight in [false, true] {
                let want = reference(&m, eight);
                let mut o = opts(if eight { 8 } else { 4 }, 1, 0);
                o.split_components = true;
                let got: Vec<_> = measure(&m, &o)
                    .into_iter()
                    .map(|r| {
                        let area2 = 2.0 * r.area as f64;
                        (
                            r.label.parse::<u32>().unwrap(),
                            r.area,
                            r.bbox,
                            (r.centroid[0] * area2).round() as u64,
                            (r.centroid[1] * area2).round() as u64,
                        )
                    })
                    .collect();
                assert_eq!(got, want, "case {case}, eight {eight}");
                // Per label: totals of the components, and min_size drops small ones.
                let min_size = 1 + next() % 4;
                o = opts(if eight { 8 } else { 4 }, min_size, 0);
                let per_label = measure(&m, &o);
                let mut expect: Vec<(String, u64, usize)> = Vec::new();
                for c in want.iter().filter(|c| c.1 >= min_size) {
                    match expect.last_mut() {
                        Some(e) if e.0 == c.0.to_string() => {
                            e.1 += c.1;
                            e.2 += 1;
                        }
                        _ => expect.push((c.0.to_string(), c.1, 1)),
                    }
                }
                let got: Vec<_> = per_label
                    .into_iter()
                    .map(|r| (r.label, r.area, r.components))
                    .collect();
                assert_eq!(
                    got, expect,
                    "case {case}, eight {eight}, min_size {min_size}"
                );
            }
        }
    }
}
