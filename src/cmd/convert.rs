//! `mt convert`: between dataset, benchmark, medical-image and checkpoint formats.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt convert vqa --bench slake --input data/slake --split test -o slake_test.json
  mt convert llava data/25M_demo -o medtrinity_demo.jsonl --images-out images/
  mt convert dicom scans/ -o pngs/
  mt convert nifti ct.nii.gz -o slices/
  mt convert merge-lora --model base/ --adapter runs/finetune-x/adapter -o merged/
  mt convert knowledge-index corpus.jsonl -o knowledge.idx";

/// Convert between dataset, benchmark, medical-image and checkpoint formats.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// What to convert.
    #[arg(value_parser = ["vqa", "llava", "shards", "dicom", "nifti", "merge-lora", "knowledge-index"])]
    pub what: String,
    /// Input files or folders.
    pub inputs: Vec<PathBuf>,
    /// Benchmark for `vqa`: vqa-rad, slake or pathvqa.
    #[arg(long)]
    pub bench: Option<String>,
    /// Benchmark split.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Output file or folder (`-` = stdout where it makes sense).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Extract embedded images into this folder.
    #[arg(long, value_name = "DIR")]
    pub images_out: Option<PathBuf>,
}
