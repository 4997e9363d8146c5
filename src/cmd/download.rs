//! `mt download`: dataset shards and checkpoints from the Hugging Face Hub.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt download UCSC-VLAA/MedTrinity-25M --repo-type dataset --config 25M_demo
  mt download UCSC-VLAA/LLaVA-Med-pp --include 'slake/*'
  mt download openai/clip-vit-large-patch14-336 --local-dir ckpts/clip
  mt download hf://datasets/UCSC-VLAA/MedTrinity-25M@main/25M_accessible --dry-run
  mt download --verify UCSC-VLAA/LLaVA-Med-Captioner";

/// Download dataset shards and model checkpoints from the Hugging Face Hub (resumable,
/// verified, into the standard cache shared with huggingface_hub).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Repository (`org/name`, `datasets/org/name` or `hf://datasets/org/name@rev/path`).
    pub repo: String,
    /// Files to fetch (default: the whole repository, after --include / --exclude).
    pub files: Vec<String>,
    /// Repository type.
    #[arg(long, value_parser = ["model", "dataset"], default_value = "model")]
    pub repo_type: String,
    /// Branch, tag, commit, refs/pr/N or refs/convert/parquet.
    #[arg(long)]
    pub revision: Option<String>,
    /// Only files matching these globs (fnmatch; `*` matches `/`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files matching these globs.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// MedTrinity-25M file set: 25M_demo or 25M_full.
    #[arg(long)]
    pub config: Option<String>,
    /// Copy files into this folder instead of the shared cache.
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    /// List files, sizes and what is already present; download nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-check a finished download (sha256 / size) without downloading.
    #[arg(long)]
    pub verify: bool,
    /// Parallel downloads.
    #[arg(long, default_value_t = 8)]
    pub max_workers: usize,
}
