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
  mt finetune --model testdata/models/tiny-llava --data testdata/llava/medtrinity_instruct.jsonl --cpu --max-steps 20";

/// `mt finetune --help`'s epilogue: the examples, then the preset from
/// `core::train::presets`.
fn finetune_help() -> String {
    format!(
        "{EXAMPLES}

Preset (flags override it):
  the language model and the projector
    {}
  --lora-r R: LoRA adapters and the projector
    {}
`mt train --help` lists everything else.",
        Preset::Finetune.defaults(false).describe(),
        Preset::Finetune.defaults(true).describe(),
    )
}

/// Fine-tune on VQA-RAD, SLAKE or PathVQA, fully or with LoRA.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = finetune_help())]
pub struct Args {
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// Runs `mt finetune`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    run_training(Preset::Finetune, &args.training, ctx)
}
