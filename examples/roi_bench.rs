//! Times `medtrinity::core::roi::measure::measure` on one thread over the bit-packed
//! 512x512 binary masks that `bench/roi_baseline.py make` writes (bench/roi.sh):
//!
//! ```text
//! cargo run --release --example roi_bench -- MASKS.bin
//! ```
//!
//! Per mask: unpack the bits into a reused `LabelMap`, then `measure` (8-connected, one
//! ROI per label: box, area, centroid, components, position words, anatomical). The
//! timed loop starts after the file is read. Prints `masks_per_s N checksum`, the
//! checksum being FNV-1a 64 over one line per mask with an ROI,
//! `index area x0 y0 x1 y1 components sx2 sy2 position` (sx2 / sy2: twice the centroid
//! times the area), exactly as `roi_baseline.py run` computes it.

use std::time::Instant;

use medtrinity::core::roi::measure::{MeasureOptions, measure};
use medtrinity::core::roi::{LabelMap, Orientation, Roi};

const SIZE: usize = 512;
const MASK_BYTES: usize = SIZE * SIZE / 8;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: roi_bench MASKS.bin"))?;
    let data = std::fs::read(&path)?;
    anyhow::ensure!(
        data.len() % MASK_BYTES == 0,
        "{path}: {} bytes is not a whole number of {SIZE}x{SIZE} bit-packed masks",
        data.len()
    );
    let n = data.len() / MASK_BYTES;
    let opts = MeasureOptions {
        orientation: Orientation::Anatomical,
        ..MeasureOptions::default()
    };
    let mut map = LabelMap {
        width: SIZE,
        height: SIZE,
        labels: vec![0; SIZE * SIZE],
    };
    let mut results: Vec<Vec<Roi>> = Vec::with_capacity(n);
    let start = Instant::now();
    for packed in data.chunks_exact(MASK_BYTES) {
        for (out, &byte) in map.labels.chunks_exact_mut(8).zip(packed) {
            for (k, v) in out.iter_mut().enumerate() {
                *v = u32::from((byte >> (7 - k)) & 1);
            }
        }
        results.push(measure(&map, &opts));
    }
    let secs = start.elapsed().as_secs_f64();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, rois) in results.iter().enumerate() {
        for r in rois {
            let area2 = 2.0 * r.area as f64;
            let [x0, y0, x1, y1] = r.bbox;
            let line = format!(
                "{i} {} {x0} {y0} {x1} {y1} {} {} {} {}\n",
                r.area,
                r.components,
                (r.centroid[0] * area2).round() as u64,
                (r.centroid[1] * area2).round() as u64,
                r.position
            );
            for b in line.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    println!("{:.1} {n} {h:016x}", n as f64 / secs);
    Ok(())
}
