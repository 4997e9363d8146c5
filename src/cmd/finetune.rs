//! `mt finetune`: fine-tuning on VQA-RAD / SLAKE / PathVQA (LLaVA conversation files),
//! fully or with LoRA.

use anyhow::Result;
use serde::Serialize;

use super::Context;
use super::train::{TrainingArgs, run_training};
use crate::core::train::presets::Preset;

const EXAMPLES: &str = "\
Examples:
  mt finetune --model runs/stage2/model --data data/Slake1.0 --bench slake --gpu 0
  mt finetune --model runs/stage2/model --data slake_train.json --image-folder slake/imgs --gpu 0
  mt finetune --model ckpts/base --data vqa_rad_train.json --image-folder vqa_rad/ --lora-r 128 --lora-alpha 256 --gpu 0
  mt finetune --model testdata/models/tiny-llava --data testdata/llava/medtrinity_instruct.jsonl --cpu --max-steps 20

Preset: the language model and the projector (lr 2e-5, batch 4 x accum 8, max length 4096,
padded images, 1 epoch); with --lora-r: LoRA adapters + projector (lr 2e-4, projector lr
2e-5, 3 epochs, batch 4 x accum 4). `mt train --help` lists everything else.";

/// Fine-tune on VQA-RAD, SLAKE or PathVQA, fully or with LoRA.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// Runs `mt finetune`.
pub fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    run_training(Preset::Finetune, &args.training, ctx)
}
