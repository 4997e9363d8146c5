//! `mt caption`: multigranular captions with a LLaVA-style model.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt caption images/ --model ckpts/LLaVA-Med-Captioner -o captions.jsonl
  mt caption data/25M_demo --model ckpts/LLaVA-Med-Captioner --rois rois.jsonl --gpu 0
  mt caption cases.jsonl --model ckpts/LLaVA-Med-Captioner --knowledge knowledge.idx";

/// Generate multigranular captions with a LLaVA-style model (the MedTrinity pipeline).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Images, image folders or dataset shards to caption.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Checkpoint folder (original LLaVA or llava-hf layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Output JSONL (resumable: ids already written are skipped).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// ROIs from `mt roi`, drawn and described in the prompt.
    #[arg(long)]
    pub rois: Option<PathBuf>,
    /// Knowledge index from `mt convert knowledge-index`.
    #[arg(long)]
    pub knowledge: Option<PathBuf>,
    /// GPU index (default: CPU).
    #[arg(long)]
    pub gpu: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Most tokens generated per caption.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
}
