//! `mt train`: the LLaVA-Med++ pre-training stages, and the flags that `mt finetune`
//! shares. The presets (`core::train::presets`) reproduce the reference scripts; every
//! value can be overridden by a flag.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::args::{
    AspectArg, BenchArg, DeviceArgs, ModelArgs, QuantArg, StageArg, parse_conv_mode, parse_size,
};
use super::{Context, GlobalArgs, finish_failures, print};
use crate::core::error::usage;
use crate::core::model::load::checkpoint::{Checkpoint, device};
use crate::core::train::adamw::AdamWConfig;
use crate::core::train::memory::{device_capacity, remedies_text};
use crate::core::train::parallel::{Alone, Reducer, World, rendezvous_file};
use crate::core::train::params::LearningRates;
use crate::core::train::plot::plot_metrics;
use crate::core::train::presets::{self, Preset};
use crate::core::train::trainer::{Control, Paths, Plan, Summary, train};
use crate::core::train::zero::ZeroStage;

const EXAMPLES: &str = "\
Examples:
  mt train --stage 1 --model ckpts/LLaVA-Meta-Llama-3-8B-Instruct-FT-S2 --data stage1.json --image-folder images/ --gpu 0
  mt train --stage 2 --model runs/stage1/model --data stage2.json --image-folder images/ --gpu 0 --run-dir runs/stage2
  mt train --stage 2 --model testdata/models/tiny-llava --data testdata/llava/medtrinity_instruct.jsonl --cpu --max-steps 10";

/// `mt train --help`'s epilogue: the examples, then the presets as `core::train::presets`
/// holds them.
fn train_help() -> String {
    format!(
        "{EXAMPLES}

Presets (flags override them):
  --stage 1: the projector
    {}
  --stage 2: the language model and the projector
    {}
  --lora-r R: LoRA adapters (alpha 2 x r, dropout {}) on every decoder Linear, and the projector
    {}
All: a cosine schedule after --warmup-ratio, AdamW with --weight-decay, clipping at
--max-grad-norm, a checkpoint every --save-steps (the last --save-total-limit kept). The
global batch is batch x accum x processes.

The run directory gets metrics.jsonl (step, loss, lr, grad_norm, tokens/s, samples/s,
memory), checkpoint-N/ folders, and model/ (or adapter/ for LoRA) at the end. Interrupted
runs continue with the same flags plus --resume --run-dir DIR.",
        Preset::Stage1.defaults(false).describe(),
        Preset::Stage2.defaults(false).describe(),
        presets::LORA_DROPOUT,
        Preset::Stage2.defaults(true).describe(),
    )
}

/// Flags shared by `mt train` and `mt finetune`.
#[derive(Debug, clap::Args, Serialize)]
#[command(
    mut_arg("model", |a| a.help("Checkpoint to start from (original LLaVA layout)")),
    mut_arg("dtype", |a| a.help(
        "Parameter dtype (default: bf16 on a GPU, f32 on the CPU; f16 is refused: it needs loss scaling)"
    )),
    mut_arg("cpu", |a| a.help("Train on the CPU even when a GPU is visible (tiny configs)")),
)]
pub struct TrainingArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Start the projector from these weights (a stage-1 run's `mm_projector.safetensors`;
    /// LLaVA's --pretrain_mm_mlp_adapter).
    #[arg(long, value_name = "FILE")]
    pub projector: Option<PathBuf>,
    /// LLaVA conversation JSON or JSONL ({id, image, conversations}); with --bench, the
    /// benchmark's folder or file in any layout `mt convert vqa` reads.
    #[arg(long)]
    pub data: PathBuf,
    /// Read --data as VQA-RAD, SLAKE or PathVQA (one `<image>\nQ` / `A` exchange per question).
    #[arg(long, value_enum)]
    pub bench: Option<BenchArg>,
    /// The benchmark split to train on.
    #[arg(long, default_value = "train", requires = "bench")]
    pub split: String,
    /// Where image paths in --data resolve (default: the data file's folder).
    #[arg(long, visible_alias = "images", value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
    /// Conversation template the records are trained in (LLaVA's `--version`: llama3,
    /// v1 / vicuna_v1, llava_v1, llama_2, llava_llama_2, mistral_instruct, mpt,
    /// chatml_direct, phi3_instruct, plain for stage-1 captions). Default: the checkpoint
    /// family's, as inference picks it (llama3 for LLaVA-Med++).
    #[arg(long, value_name = "NAME", value_parser = parse_conv_mode)]
    pub conv_mode: Option<String>,
    /// Stop after N optimizer steps (the schedule spans N steps).
    #[arg(long, conflicts_with = "epochs")]
    pub max_steps: Option<u64>,
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Peak learning rate of the projector (default: --lr, or the LoRA preset's).
    #[arg(long)]
    pub projector_lr: Option<f64>,
    /// Samples per device per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Warmup steps as a fraction of all steps.
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay (not applied to biases and norms).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Longest sequence in tokens, image rows included.
    #[arg(long)]
    pub model_max_length: Option<usize>,
    /// Recompute each decoder layer in the backward pass instead of keeping its
    /// activations (default: on for a GPU, as the reference scripts; off on the CPU).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub gradient_checkpointing: Option<bool>,
    /// `pad` images to square with the mean colour, or `square` (resize + centre crop).
    #[arg(long, value_enum)]
    pub image_aspect_ratio: Option<AspectArg>,
    /// Group samples by modality and length (LLaVA's group_by_modality_length).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub group_by_modality_length: Option<bool>,
    /// LoRA rank: train LoRA adapters on every language-model Linear layer.
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA alpha (scale alpha / r; default 2 x r).
    #[arg(long, requires = "lora_r")]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout on the adapters' inputs (default: the reference's, see the presets).
    #[arg(long, requires = "lora_r")]
    pub lora_dropout: Option<f64>,
    /// Save a checkpoint every N steps (0 = only at the end).
    #[arg(long, default_value_t = 500)]
    pub save_steps: u64,
    /// Checkpoints to keep (0 = all).
    #[arg(long, default_value_t = 3)]
    pub save_total_limit: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
    /// Continue from the last checkpoint in --run-dir (same flags).
    #[arg(long)]
    pub resume: bool,
    /// Save and stop after N steps in this process (time-limited jobs; continue with --resume).
    #[arg(long, value_name = "N")]
    pub stop_after_steps: Option<u64>,
    /// Also write loss / learning-rate curves to curves.png in the run directory.
    #[arg(long)]
    pub plot: bool,
    /// Print what one device will hold (weights, gradients, master weights, optimizer
    /// moments, activations, workspace) for these flags and exit; reads the config only.
    /// Every run prints this plan first and refuses one that does not fit the device.
    #[arg(long)]
    pub plan: bool,
    /// Ranks to plan for (default: the launcher's WORLD_SIZE, else 1).
    #[arg(long, value_name = "N", requires = "plan")]
    pub world_size: Option<usize>,
    /// The memory of one device that the plan must fit, like 80GB (default: the GPU's
    /// free memory, or the host's available memory on the CPU).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub device_memory: Option<u64>,
    /// ZeRO stage over the data-parallel ranks: 1 shards the f32 master weights and AdamW
    /// moments, 2 also the accumulated gradients (reduce-scattered); weights are
    /// all-gathered after each update. 0: every rank holds everything.
    #[arg(long, value_name = "STAGE", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub zero: u8,
    /// Keep the optimizer (f32 master weights and moments) in host memory and run AdamW on
    /// the CPU; the device holds the weights, gradients and activations.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub offload: Option<OffloadArg>,
    /// QLoRA: load the frozen language model quantized (q8_0, q6k, q4k; see `mt caption
    /// --help`) and train LoRA adapters (or, with --stage 1, the projector) on it; the
    /// backward pass goes through the dequantized weights.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub quantize: Option<QuantArg>,
}

/// `--offload`: what moves to host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum OffloadArg {
    /// f32 master weights and AdamW moments, updated on the CPU.
    Optimizer,
}

/// Pre-training stages: projector alignment (1) and instruction tuning (2).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = train_help())]
pub struct Args {
    /// 1: projector alignment (the projector only); 2: instruction tuning (the language
    /// model and the projector); CLIP stays frozen.
    #[arg(long, value_enum)]
    pub stage: StageArg,
    #[command(flatten)]
    pub training: TrainingArgs,
}

/// Runs `mt train`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    run_training(args.stage.into(), &args.training, ctx)
}

/// The global flags for this process of a data-parallel job: ranks other than 0 keep
/// their run record and log in `<run-dir>/rank-N/` (rank 0 owns the run directory).
/// `--plan` writes nothing: no run directory.
pub(crate) fn rank_global_args(global: &GlobalArgs, plan: bool) -> Result<GlobalArgs> {
    let mut g = global.clone();
    if plan {
        g.no_run_dir = true;
        return Ok(g);
    }
    let world = World::from_env(&|k| std::env::var(k).ok()).map_err(|e| usage(format!("{e:#}")))?;
    if world.size > 1 {
        let Some(dir) = &global.run_dir else {
            return Err(usage(
                "multi-process training needs --run-dir, the same shared folder for every rank",
            ));
        };
        if !world.is_main() {
            g.run_dir = Some(dir.join(format!("rank-{}", world.rank)));
        }
    }
    Ok(g)
}

/// Resolves the plan from the preset and flags, trains, reports.
pub(crate) fn run_training(preset: Preset, args: &TrainingArgs, ctx: &mut Context) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let world = World::from_env(&env)?;
    if args.resume && !ctx.explicit_run_dir {
        return Err(usage(
            "--resume needs --run-dir: the run directory to continue",
        ));
    }
    if args.plan {
        return print_plan(preset, args, world, ctx);
    }
    let gpu = gpu_index(world, args, &env)?;
    let device = device(gpu)?;
    let dtype = args.model.dtype(&device)?;
    if dtype == candle_core::DType::F16 {
        return Err(usage(
            "--dtype f16: training in f16 needs loss scaling, which mt does not do; use bf16",
        ));
    }
    let plan = plan(preset, args, ctx.seed, gpu.is_some())?;
    let Some(run) = &mut ctx.run else {
        return Err(usage("training needs a run directory (drop --no-run-dir)"));
    };
    let run_dir = if world.is_main() {
        run.path().to_path_buf()
    } else {
        run.path().parent().unwrap_or(run.path()).to_path_buf()
    };
    run.set_device(super::args::device_text(gpu, dtype));
    run.set_count("rank", world.rank);
    run.set_count("world_size", world.size);
    run.write_json("plan.json", &plan)?;
    let paths = Paths {
        model: args.model.path().to_path_buf(),
        vision_tower: args.model.vision_tower.clone(),
        projector: args.projector.clone(),
        data: args.data.clone(),
        image_folder: args.image_folder.clone(),
        bench: args.bench.map(|b| (b.into(), args.split.clone())),
        run_dir,
    };
    let control = control(args, device, dtype);
    let reducer = connect(world, &control.device, &paths.run_dir)?;
    let result = train(&paths, &plan, &control, reducer.as_ref());
    if args.plot && world.is_main() {
        let out = paths.run_dir.join("curves.png");
        match plot_metrics(&paths.run_dir.join("metrics.jsonl"), &out) {
            Ok(()) => tracing::info!("wrote {}", out.display()),
            Err(e) => tracing::warn!("--plot: {e:#}"),
        }
    }
    let summary = result?;
    report(&summary, ctx)?;
    let skipped = summary.skipped.len();
    finish_failures(ctx, summary.skipped, skipped, summary.records)
}

/// How the process runs, from the flags.
fn control(args: &TrainingArgs, device: candle_core::Device, dtype: candle_core::DType) -> Control {
    Control {
        device,
        dtype,
        resume: args.resume,
        stop_after: args.stop_after_steps,
        zero: ZeroStage::from_level(args.zero).expect("clap keeps --zero in 0..=2"),
        offload: args.offload.is_some(),
        device_memory: args.device_memory,
    }
}

/// `--plan`: the memory plan of these flags from the checkpoint's config, printed (a
/// table, or with `--json` an object with `per_device`); no device is opened and no
/// weight read, so a GPU run can be planned anywhere.
fn print_plan(preset: Preset, args: &TrainingArgs, launched: World, ctx: &Context) -> Result<()> {
    let world = args.world_size.unwrap_or(launched.size);
    if world == 0 {
        return Err(usage("--world-size must be at least 1"));
    }
    let on_gpu = args.device.gpu().is_some();
    let dtype = match args.model.dtype {
        Some(d) => d.into(),
        None if on_gpu => candle_core::DType::BF16,
        None => candle_core::DType::F32,
    };
    let plan = plan(preset, args, ctx.seed, on_gpu)?;
    let ckpt = Checkpoint::open(
        args.model.path(),
        args.model.vision_tower.as_deref(),
        &candle_core::Device::Cpu,
        dtype,
    )?;
    let setup = control(args, candle_core::Device::Cpu, dtype).memory_setup(&plan, world, on_gpu);
    let memory = setup.plan(&ckpt.config);
    let capacity = args.device_memory.or_else(|| match on_gpu {
        true => None,
        false => device_capacity(&candle_core::Device::Cpu),
    });
    let fits = capacity.map(|c| memory.per_device.total_bytes <= c);
    let remedies = match capacity {
        Some(c) if fits == Some(false) => setup.remedies(&ckpt.config, c),
        _ => Vec::new(),
    };
    if ctx.json {
        let value = serde_json::json!({
            "setup": setup.describe(),
            "world_size": world,
            "zero": setup.zero.level(),
            "offload": setup.offload,
            "dtype": format!("{dtype:?}").to_lowercase(),
            "parameters": memory.parameters,
            "per_device": memory.per_device,
            "host_bytes": memory.host_bytes,
            "device_memory_bytes": capacity,
            "fits": fits,
            "would_fit_with": remedies
                .iter()
                .map(|(what, total)| serde_json::json!({"change": what, "total_bytes": total}))
                .collect::<Vec<_>>(),
        });
        return print(&format!("{value}\n"));
    }
    let mut text = memory.render(&setup, capacity);
    if fits == Some(false) {
        text.push_str(&format!("does not fit; {}\n", remedies_text(&remedies)));
    }
    print(&text)
}

/// The GPU this process trains on: alone, as `--gpu` / `--cpu` pick it; under a multi-process launch the
/// rank's `LOCAL_RANK`, or GPU 0 when the launcher shows each rank one GPU
/// (`CUDA_VISIBLE_DEVICES` with one entry, as `srun --gpus-per-task 1` does).
fn gpu_index(
    world: World,
    args: &TrainingArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<usize>> {
    if world.size == 1 {
        return Ok(args.device.gpu());
    }
    if args.device.cpu || args.device.gpu.is_some() {
        return Err(usage(
            "under a multi-process launch every rank uses GPU LOCAL_RANK: drop --gpu / --cpu",
        ));
    }
    let visible =
        env("CUDA_VISIBLE_DEVICES").map(|v| v.split(',').filter(|s| !s.trim().is_empty()).count());
    Ok(Some(if visible == Some(1) {
        0
    } else {
        world.local_rank
    }))
}

/// The gradient reducer of this process: itself alone, or NCCL across the job's GPUs.
fn connect(
    world: World,
    device: &candle_core::Device,
    run_dir: &std::path::Path,
) -> Result<Box<dyn Reducer>> {
    if world.size == 1 {
        return Ok(Box::new(Alone));
    }
    let id_file = rendezvous_file(run_dir, &|k| std::env::var(k).ok())?;
    #[cfg(feature = "nccl")]
    {
        Ok(Box::new(
            crate::core::train::parallel::NcclReducer::connect(world, device, &id_file)?,
        ))
    }
    #[cfg(not(feature = "nccl"))]
    {
        let _ = (device, id_file);
        Err(usage(format!(
            "WORLD_SIZE={}: this mt was built without NCCL; rebuild with `--features nccl` for multi-GPU training",
            world.size
        )))
    }
}

fn report(summary: &Summary, ctx: &mut Context) -> Result<()> {
    if let Some(run) = &mut ctx.run {
        run.set_count("steps", summary.steps_done);
        run.set_count("total_steps", summary.total_steps);
        run.set_count("trainable_parameters", summary.trainable_parameters);
        run.set_count("skipped_samples", summary.skipped.len());
        run.set_count("masked_samples", summary.masked_samples);
        run.write_json("summary.json", summary)?;
    }
    if ctx.json {
        return print(&format!("{}\n", serde_json::to_string(summary)?));
    }
    if !ctx.quiet {
        let loss = summary.last_loss.map_or("-".into(), |l| format!("{l:.4}"));
        let place = match &summary.exported {
            Some(p) => format!("; saved {}", p.display()),
            None => format!(
                "; stopped at step {} of {} (continue with --resume)",
                summary.steps_done, summary.total_steps
            ),
        };
        eprintln!(
            "trained {} steps (of {}), last loss {loss}{place}",
            summary.steps_done, summary.total_steps
        );
    }
    Ok(())
}

/// The preset, overridden by the flags.
pub(crate) fn plan(preset: Preset, args: &TrainingArgs, seed: u64, on_gpu: bool) -> Result<Plan> {
    let lora = args
        .lora_r
        .map(|r| presets::lora(r, args.lora_alpha, args.lora_dropout));
    let preset_values = preset.defaults(lora.is_some());
    Ok(Plan {
        tune: preset.tune(lora),
        lrs: LearningRates {
            main: args.lr.unwrap_or(preset_values.lr),
            projector: args.projector_lr.or(preset_values.projector_lr),
        },
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        epochs: args.epochs.unwrap_or(preset_values.epochs),
        max_steps: args.max_steps,
        batch_size: args.batch_size.unwrap_or(preset_values.batch_size),
        grad_accum: args.grad_accum.unwrap_or(preset_values.grad_accum),
        warmup_ratio: args.warmup_ratio,
        max_grad_norm: args.max_grad_norm,
        model_max_length: args
            .model_max_length
            .unwrap_or(preset_values.model_max_length),
        gradient_checkpointing: args.gradient_checkpointing.unwrap_or(on_gpu),
        group_by_modality: args
            .group_by_modality_length
            .unwrap_or(preset_values.group_by_modality),
        image_aspect_ratio: args
            .image_aspect_ratio
            .map_or(preset_values.image_aspect_ratio, AspectArg::name)
            .to_string(),
        seed,
        conv_mode: args.conv_mode.clone(),
        quantize: args.quantize.map(Into::into),
        save_steps: args.save_steps,
        save_total_limit: args.save_total_limit,
    })
}
