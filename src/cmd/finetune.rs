//! `mt finetune`: fine-tuning on VQA-RAD / SLAKE / PathVQA.

use serde::Serialize;

use super::train::TrainingArgs;

const EXAMPLES: &str = "\
Examples:
  mt finetune --model runs/train-stage2/checkpoint --data slake_train.json --image-folder slake/imgs --gpu 0
  mt finetune --model ckpts/base --data vqa_rad_train.json --image-folder vqa_rad/ --lora-r 128 --lora-alpha 256";

/// Fine-tune on VQA-RAD, SLAKE or PathVQA, fully or with LoRA.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub training: TrainingArgs,
}
