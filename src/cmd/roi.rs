//! `mt roi`: regions of interest from masks and boxes.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt roi masks/ -o rois.jsonl
  mt roi cases.jsonl --overlay overlays/ --orientation radiological
  mt roi seg.nii.gz --min-size 20 -o rois.parquet";

/// Regions of interest from masks or boxes: boxes, area %, position words, overlays.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Mask images, NIfTI masks, COCO JSON or a JSONL of {id, image, mask|bbox}.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output JSONL or parquet (`-` = stdout).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// Write images with the ROI drawn as a green box into DIR.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,
    /// Left/right convention for position words.
    #[arg(long, value_parser = ["radiological", "anatomical"], default_value = "radiological")]
    pub orientation: String,
    /// Smallest connected component kept, in pixels.
    #[arg(long, default_value_t = 1)]
    pub min_size: u64,
}
