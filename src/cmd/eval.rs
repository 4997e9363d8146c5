//! `mt eval`: run and score a checkpoint on VQA-RAD / SLAKE / PathVQA.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt eval slake --ckpt ckpts/llava-med-pp-slake --data data/slake --gpu 0,1
  mt eval vqa-rad --ckpt ckpts/llava-med-pp-vqarad --data data/vqa_rad --limit 50 --cpu
  mt eval score --gt slake_test.json --pred answers.jsonl --scorer llava-med";

/// Run and score a checkpoint on VQA-RAD, SLAKE or PathVQA, or score existing answers.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Benchmark to run, or `score` to score an answers file.
    #[arg(value_parser = ["slake", "vqa-rad", "pathvqa", "score"])]
    pub bench: String,
    /// Checkpoint folder.
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    /// Benchmark data folder (released layout or hub parquet).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Ground truth in the LLaVA eval layout (for `score`).
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// LLaVA answer JSONL (for `score`).
    #[arg(long)]
    pub pred: Option<PathBuf>,
    /// Scorer: llava-med (the MedTrinity scripts) or multimedeval.
    #[arg(long, value_parser = ["llava-med", "multimedeval"], default_value = "llava-med")]
    pub scorer: String,
    /// GPU indices, one worker process each.
    #[arg(long, value_delimiter = ',')]
    pub gpu: Vec<usize>,
    /// Run on the CPU.
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
    /// Questions per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Evaluate only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
}
