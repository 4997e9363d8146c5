//! `mt train`: the LLaVA-Med++ pre-training stages.

use std::path::PathBuf;

use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  mt train --stage 1 --model ckpts/LLaVA-Meta-Llama-3-8B-Instruct-FT-S2 --data stage1.json --image-folder images/
  mt train --stage 2 --model runs/train-stage1/checkpoint --data stage2.json --image-folder images/ --gpu 0
  mt train --stage 2 --model tiny/ --data tiny.jsonl --cpu --max-steps 10";

/// Flags shared by `mt train` and `mt finetune`.
#[derive(Debug, clap::Args, Serialize)]
pub struct TrainingArgs {
    /// Checkpoint to start from.
    #[arg(long)]
    pub model: PathBuf,
    /// LLaVA conversation JSON/JSONL, parquet shards or a benchmark's train split.
    #[arg(long)]
    pub data: PathBuf,
    /// Where image paths in --data resolve.
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// Stop after N optimizer steps.
    #[arg(long, conflicts_with = "epochs")]
    pub max_steps: Option<u64>,
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Peak learning rate (default: the stage preset).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Samples per device per step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Gradient accumulation steps.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// LoRA rank (enables LoRA on every LLM linear layer).
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// GPU indices (comma-separated for several).
    #[arg(long, value_delimiter = ',')]
    pub gpu: Vec<usize>,
    /// Train on the CPU (tiny configs).
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
    /// Continue from the run directory's last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

/// Pre-training stages: projector alignment (1) and instruction tuning (2).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// 1: projector only (lr 2e-3); 2: LLM + projector (lr 2e-5), CLIP frozen.
    #[arg(long, value_parser = ["1", "2"])]
    pub stage: String,
    #[command(flatten)]
    pub training: TrainingArgs,
}
