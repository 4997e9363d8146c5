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
