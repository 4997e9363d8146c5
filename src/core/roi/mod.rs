//! Regions of interest (`mt roi`): label maps and boxes from masks, NIfTI slices, COCO
//! JSON or a JSONL of cases, measured the way the MedTrinity captioner was told about
//! them: box, area and share of the image, centroid, connected components, and position
//! words from a 3x3 grid on the centroid.

pub mod inputs;
pub mod measure;
pub(crate) mod overlay;

use serde::{Deserialize, Serialize};

/// A label image: `labels[y * width + x]`, 0 = background, any other value one label
/// (a class of a label map, or one instance of an instance mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// Image width, in pixels.
    pub width: usize,
    /// Image height, in pixels.
    pub height: usize,
    /// One label per pixel, row-major (`width * height` values).
    pub labels: Vec<u32>,
}

/// An axis-aligned box in pixels: `x0, y0` inclusive, `x1, y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelBox {
    /// Left column (inclusive).
    pub x0: u32,
    /// Top row (inclusive).
    pub y0: u32,
    /// Right column (exclusive).
    pub x1: u32,
    /// Bottom row (exclusive).
    pub y1: u32,
}

/// How the image's left and right relate to the patient's, for position words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// Radiological convention (CT, MR, X-ray): the patient's right is on the image's
    /// left, so "left" in the words means the image's right.
    Radiological,
    /// The image shows the patient as seen from behind / as is: words follow the image.
    Anatomical,
}

/// One region as `mt roi` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roi {
    /// The class or instance: a label value, or a COCO category / JSONL label name.
    pub label: String,
    /// `[x0, y0, x1, y1]` in pixels (`x1`, `y1` exclusive).
    pub bbox: [u32; 4],
    /// The box divided by width / height.
    pub bbox_norm: [f64; 4],
    /// Pixels in the region (a box's own area when only a box is known).
    pub area: u64,
    /// `area` as a percentage of the image.
    pub area_pct: f64,
    /// Mean `[x, y]` of the region's pixels (pixel centres at `+0.5`).
    pub centroid: [f64; 2],
    /// Connected components kept (after the minimum size and merging).
    pub components: usize,
    /// MedTrinity-style position words ("left upper", "center", "right lower", ...).
    pub position: String,
}
