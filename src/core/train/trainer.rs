//! The training loop shared by `mt train` and `mt finetune`: micro-batches from a
//! seeded per-epoch order, gradient accumulation, clipping, AdamW on the cosine
//! schedule, per-step metrics, checkpoints (keep the last K) that `--resume` restores
//! exactly, and the final export.
//!
//! Step `s` (0-based) always trains on micro-batches `s * accum .. (s + 1) * accum` of
//! the stream that concatenates the epochs' orders, so where a run resumes is a pure
//! function of the step count: model, optimiser, schedule and data order come back as
//! they were, and a resumed run reproduces the uninterrupted one bit for bit on the CPU.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::adamw::{AdamW, AdamWConfig, Param, clip_factor, keep_local, squared_norm};
pub use super::backward::GradTarget;
use super::backward::{GradSums, accumulate_grads};
use super::batch::{Collator, Example, prepare};
use super::conversation::{ConversationEncoder, SpecialTokens, TrainTemplate};
use super::data::{Record, epoch_order, load_bench, load_records};
use super::export::{
    MAX_SHARD_BYTES, Staged, fuse_projections, read_tensors, stored_vision_tensors, write_adapter,
    write_safetensors, write_side_files, write_weights,
};
use super::memory::{MemoryPlan, Setup, device_capacity, remedies_text};
use super::parallel::{Reducer, World, shard_range, sum_f64};
use super::params::{LearningRates, Tune, make_trainable, overwrite_tensors};
use super::schedule::CosineSchedule;
use super::torch_save::write_torch_bin;
use super::zero::{SavedState, ZeroStage, state_file};
use crate::core::display::binary_bytes;
use crate::core::files::{JsonLines, write_atomic};
use crate::core::hash::{fnv1a, keyed};
use crate::core::model::arch::llava::Llava;
use crate::core::model::engine::preprocess::ImageProcessor;
use crate::core::model::engine::prompt::TextCodec;
use crate::core::model::load::checkpoint::Checkpoint;
use crate::core::model::load::config::{AspectMode, LlavaConfig, TextFamily};
use crate::core::model::load::weights::{StoredNames, original_name};
use crate::core::model::quant::QuantKind;
use crate::core::progress;
use crate::core::vqa::Bench;

/// Every setting that shapes the run (recorded in run.json and each checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub tune: Tune,
    pub lrs: LearningRates,
    pub adamw: AdamWConfig,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: f64,
    pub max_steps: Option<u64>,
    /// Samples per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub warmup_ratio: f64,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    pub model_max_length: usize,
    /// Recompute activations in the backward pass (less memory, one more forward).
    pub gradient_checkpointing: bool,
    /// Group samples by modality and length (LLaVA's `group_by_modality_length`) instead
    /// of a plain shuffle.
    pub group_by_modality: bool,
    pub image_aspect_ratio: String,
    pub seed: u64,
    /// The conversation template (`--conv-mode`; none: the checkpoint family's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_mode: Option<String>,
    /// The frozen language model loaded quantized (QLoRA: adapters or the projector
    /// train on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<QuantKind>,
    /// Save a checkpoint every N steps (0 = only at the end).
    pub save_steps: u64,
    /// Checkpoints kept (older ones are deleted; 0 = keep all).
    pub save_total_limit: usize,
}

/// Where things are.
pub(crate) struct Paths {
    pub model: PathBuf,
    pub vision_tower: Option<PathBuf>,
    /// Projector weights to start from (a stage-1 `mm_projector.safetensors` or `.bin`), LLaVA's
    /// `--pretrain_mm_mlp_adapter`.
    pub projector: Option<PathBuf>,
    pub data: PathBuf,
    pub image_folder: Option<PathBuf>,
    /// Read `data` as this benchmark's split (through its loader) instead of a LLaVA file.
    pub bench: Option<(Bench, String)>,
    /// The run directory: metrics, checkpoints and the final model go here.
    pub run_dir: PathBuf,
}

/// How the process should run.
pub(crate) struct Control {
    pub device: Device,
    pub dtype: DType,
    /// Continue from the run directory's last checkpoint.
    pub resume: bool,
    /// Stop (after saving) once this process has made this many steps.
    pub stop_after: Option<u64>,
    /// How the optimiser state is spread over the ranks.
    pub zero: ZeroStage,
    /// Keep the f32 master weights and moments in host memory and update them there.
    pub offload: bool,
    /// The memory one device offers (`--device-memory`; `None`: what the device reports).
    pub device_memory: Option<u64>,
}

impl Control {
    /// What the run's memory plan depends on, for `world` ranks on a GPU or the CPU.
    pub(crate) fn memory_setup(&self, plan: &Plan, world: usize, gpu: bool) -> Setup {
        Setup {
            tune: plan.tune,
            dtype_bytes: self.dtype.size_in_bytes() as u64,
            world,
            zero: self.zero,
            offload: self.offload,
            batch_size: plan.batch_size,
            max_len: plan.model_max_length,
            grad_accum: plan.grad_accum,
            checkpointing: plan.gradient_checkpointing,
            gpu,
            quantize: plan.quantize,
        }
    }
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub steps_done: u64,
    pub total_steps: u64,
    pub resumed_from: Option<u64>,
    pub last_loss: Option<f64>,
    pub trainable_parameters: usize,
    /// Where the final model / adapter / projector went (None when stopped early).
    pub exported: Option<PathBuf>,
    /// Samples skipped because they could not be read (`id`, error).
    pub skipped: Vec<(String, String)>,
    /// Samples whose labels the reference's length check masked entirely.
    pub masked_samples: usize,
    /// Training records read.
    pub records: usize,
}

/// `trainer_state.json` of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    /// What must not change for a run to be resumed.
    run: RunIdentity,
}

/// The settings, data and processes a run's steps depend on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunIdentity {
    plan: Plan,
    total_steps: u64,
    world_size: usize,
    dtype: String,
    /// Number of training records and a hash of their ids in file order.
    records: usize,
    records_hash: String,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Serialize)]
struct StepMetrics {
    step: u64,
    epoch: f64,
    /// Mean loss of the step's micro-batches (null when none had supervised tokens).
    loss: Option<f64>,
    lr: f64,
    grad_norm: Option<f64>,
    /// Supervised tokens in the step.
    tokens: usize,
    samples: usize,
    tokens_per_s: f64,
    samples_per_s: f64,
    seconds: f64,
    rss_mb: f64,
    /// Memory in use on the GPU (all processes on it), when training on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_mem_mb: Option<f64>,
}

/// Runs training to the end (or to `stop_after`) and exports the result. With several
/// processes (`reducer`), every rank trains on its own micro-batches, gradients are
/// averaged over the ranks, and only rank 0 writes files.
pub(crate) fn train(
    paths: &Paths,
    plan: &Plan,
    control: &Control,
    reducer: &dyn Reducer,
) -> Result<Summary> {
    let world = reducer.world();
    check_plan(plan)?;
    let records = match &paths.bench {
        Some((bench, split)) => load_bench(*bench, &paths.data, split)?,
        None => load_records(&paths.data, paths.image_folder.as_deref())?,
    };
    let mut ckpt = Checkpoint::open(
        &paths.model,
        paths.vision_tower.as_deref(),
        &control.device,
        control.dtype,
    )?;
    ckpt.config.aspect = match plan.image_aspect_ratio.as_str() {
        "pad" => AspectMode::Pad,
        _ => AspectMode::Crop,
    };
    let codec = TextCodec::for_checkpoint(&ckpt)?;
    let specials = SpecialTokens::load(&paths.model, &codec)?;
    let template = TrainTemplate::for_checkpoint(plan.conv_mode.as_deref(), &ckpt, &codec)?;
    tracing::info!("conversation template: {}", template.name());
    let processor = ImageProcessor::for_checkpoint(&ckpt)?;
    if let Some(kind) = plan.quantize {
        ckpt.quantize(kind);
    }
    let setup = control.memory_setup(plan, world.size, control.device.is_cuda());
    let memory = setup.plan(&ckpt.config);
    let capacity = control
        .device_memory
        .or_else(|| device_capacity(&control.device));
    tracing::info!("{}", memory.render(&setup, capacity).trim_end());
    if let Some(capacity) = capacity.filter(|&c| memory.per_device.total_bytes > c) {
        bail!("{}", refusal(&setup, &ckpt.config, &memory, capacity));
    }
    let mut model = ckpt.load()?;
    if let Some(file) = &paths.projector {
        load_projector(&mut model, file)?;
    }
    let trainable = make_trainable(&mut model, plan.tune, plan.lrs, control.dtype, plan.seed)?;
    let trainable_parameters = trainable.params.iter().map(|p| p.var.elem_count()).sum();
    tracing::info!(
        tensors = trainable.params.len(),
        parameters = trainable_parameters,
        "trainable: {:?}",
        plan.tune
    );
    // ZeRO needs ranks to shard over.
    let zero = match world.size {
        1 => ZeroStage::Off,
        _ => control.zero,
    };
    let sharded = zero.shards();
    let owned = |n: usize| shard_range(n, world.size, world.rank);
    // The optimiser state is made once, where it lives (never whole on the device first).
    let mut opt = AdamW::placed(
        plan.adamw,
        trainable.params,
        sharded.then_some(&owned as &dyn Fn(usize) -> std::ops::Range<usize>),
        control.offload,
    )?;
    // Offloaded, one process accumulating sums in host memory (several reduce theirs on
    // the devices first; a single micro-batch's gradients wait on the device).
    let gradients = match (zero, control.offload) {
        (ZeroStage::Gradients, _) if sharded => GradTarget::Scattered(reducer),
        (_, true) if world.size == 1 && plan.grad_accum > 1 => GradTarget::Host,
        _ => GradTarget::Device,
    };
    if control.zero.shards() && world.size == 1 {
        tracing::warn!(
            "--zero {}: one process holds everything anyway",
            control.zero.level()
        );
    }

    // Micro-batches of the global stream (all ranks) per epoch, and per optimiser step.
    let micro_per_epoch = records.len().div_ceil(plan.batch_size) as u64;
    let micro_per_step = (plan.grad_accum * world.size) as u64;
    let steps_per_epoch = (micro_per_epoch / micro_per_step).max(1);
    let grouping = plan
        .group_by_modality
        .then_some(plan.batch_size * micro_per_step as usize);
    let total_steps = plan
        .max_steps
        .unwrap_or_else(|| (plan.epochs * steps_per_epoch as f64).ceil() as u64);
    let schedule = CosineSchedule::new(total_steps, plan.warmup_ratio);

    let identity = TrainerState {
        step: 0,
        run: RunIdentity {
            plan: plan.clone(),
            total_steps,
            world_size: world.size,
            dtype: format!("{:?}", control.dtype).to_lowercase(),
            records: records.len(),
            records_hash: format!(
                "{:016x}",
                records.iter().fold(0u64, |h, r| keyed(h, fnv1a(&r.id), 0))
            ),
        },
    };
    let collator = Collator {
        encoder: ConversationEncoder {
            codec: &codec,
            specials,
            max_len: plan.model_max_length,
            template,
        },
        processor: &processor,
        device: &control.device,
    };
    preflight(&collator, &records)?;
    fs::create_dir_all(&paths.run_dir)?;
    if world.is_main() {
        write_atomic(
            &paths.run_dir.join("memory_plan.json"),
            &serde_json::to_vec_pretty(&memory)?,
        )?;
    }
    let resumed_from = if control.resume {
        resume(&paths.run_dir, &mut opt, &identity)?
    } else {
        refuse_existing_checkpoints(&paths.run_dir)?;
        None
    };
    let start = resumed_from.unwrap_or(0);
    let mut metrics = if world.is_main() {
        let path = paths.run_dir.join("metrics.jsonl");
        keep_metrics_up_to(&path, start)?;
        Some(JsonLines::append(&path)?)
    } else {
        None
    };

    let mut orders: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut reported = Reported::default();
    let mut summary = Summary {
        steps_done: start,
        total_steps,
        resumed_from,
        last_loss: None,
        trainable_parameters,
        exported: None,
        skipped: Vec::new(),
        masked_samples: 0,
        records: records.len(),
    };
    let bar = progress::bar(Some(total_steps), "steps", "training");
    bar.set_position(start);
    for step in start..total_steps {
        if control.stop_after.is_some_and(|n| step - start >= n) {
            break;
        }
        let started = Instant::now();
        let shape = StepShape {
            accum: plan.grad_accum,
            max_len: plan.model_max_length,
            checkpoint: plan.gradient_checkpointing,
            world,
            dropout: trainable.dropout_key.as_ref().map(|key| (key, plan.seed)),
            gradients,
        };
        let acc = accumulate(&model, &opt.params, shape, step, |k| {
            let epoch = k / micro_per_epoch;
            let order = orders
                .entry(epoch)
                .or_insert_with(|| epoch_order(&records, plan.seed, epoch, grouping));
            let within = (k % micro_per_epoch) as usize;
            let picked = &order
                [within * plan.batch_size..((within + 1) * plan.batch_size).min(records.len())];
            collate(&collator, &records, picked, &mut summary, &mut reported)
        })?;
        let reduced = reduce(reducer, acc, step, zero)?;
        let factor = schedule.factor(step);
        let loss = reduced.loss;
        let grad_norm = match loss {
            Some(_) => Some(update(
                &mut opt,
                reduced.grads,
                plan.max_grad_norm,
                factor,
                step,
                reducer,
                sharded,
            )?),
            None => {
                tracing::warn!(
                    step = step + 1,
                    "no supervised tokens in this step: no update"
                );
                None
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(metrics) = &mut metrics {
            metrics.write(&StepMetrics {
                step: step + 1,
                epoch: ((step + 1) * micro_per_step) as f64 / micro_per_epoch as f64,
                loss,
                lr: plan.lrs.main * factor,
                grad_norm,
                tokens: reduced.tokens,
                samples: reduced.samples,
                tokens_per_s: reduced.tokens as f64 / seconds,
                samples_per_s: reduced.samples as f64 / seconds,
                seconds,
                rss_mb: rss_mb(),
                gpu_mem_mb: gpu_mem_mb(&control.device),
            })?;
        }
        summary.last_loss = loss.or(summary.last_loss);
        summary.steps_done = step + 1;
        bar.set_position(step + 1);
        if let Some(loss) = loss {
            bar.set_message(format!("loss {loss:.4}"));
        }
        let due = plan.save_steps > 0 && (step + 1) % plan.save_steps == 0;
        let stopping = control.stop_after.is_some_and(|n| step + 1 - start >= n);
        if (due || stopping) && step + 1 < total_steps {
            let state = TrainerState {
                step: step + 1,
                run: identity.run.clone(),
            };
            save_checkpoint(paths, plan, &mut model, &opt, &state, reducer, sharded)?;
        }
    }
    bar.finish_and_clear();
    if summary.steps_done == total_steps && world.is_main() {
        let dest = paths.run_dir.join(export_folder(plan));
        summary.exported = Some(export(paths, plan, &mut model, &dest, total_steps)?);
    }
    Ok(summary)
}

/// Why a plan that needs more than `capacity` bytes is refused, and what would fit.
pub(crate) fn refusal(
    setup: &Setup,
    cfg: &LlavaConfig,
    memory: &MemoryPlan,
    capacity: u64,
) -> String {
    let gib = |n: u64| binary_bytes(n as f64);
    format!(
        "the run needs {} on one device but it has {} (see the plan above, or --plan); {}",
        gib(memory.per_device.total_bytes),
        gib(capacity),
        remedies_text(&setup.remedies(cfg, capacity))
    )
}

/// How a step's micro-batches are run.
#[derive(Clone, Copy)]
pub struct StepShape<'a> {
    /// Micro-batches per optimiser step on each rank.
    pub accum: usize,
    /// Longest sequence (image rows included).
    pub max_len: usize,
    /// Recompute each decoder layer in the backward pass instead of keeping activations.
    pub checkpoint: bool,
    /// This process's place in the job.
    pub world: World,
    /// LoRA dropout's key and the run's seed: each micro-batch gets its own key (from
    /// the seed and its global index), cleared again after the step.
    pub dropout: Option<(&'a Arc<AtomicU64>, u64)>,
    /// Where the gradients are summed.
    pub gradients: GradTarget<'a>,
}

impl StepShape<'_> {
    /// The global index of micro-batch `i` of `step` on this rank: every rank and step
    /// reads its own slice of one stream of micro-batches.
    pub(crate) fn global_micro(&self, step: u64, i: u64) -> u64 {
        (step * self.accum as u64 + i) * self.world.size as u64 + self.world.rank as u64
    }
}

/// The losses and summed gradients of one optimiser step's micro-batches.
pub struct Accumulated {
    /// Gradient of every parameter (f32, zeros where none flowed).
    pub grads: Vec<Tensor>,
    /// Mean loss of each micro-batch that had supervised tokens.
    pub losses: Vec<f64>,
    /// Supervised (label) positions in those micro-batches.
    pub tokens: usize,
    /// Samples in those micro-batches.
    pub samples: usize,
    /// The ids of a micro-batch whose loss was not finite (its backward was skipped).
    pub bad_batch: Option<Vec<String>>,
}

/// Runs the step's micro-batches (`micro(k)` builds global micro-batch `k`) forward and
/// backward, each loss divided by `accum` as transformers' Trainer does, and sums the
/// gradients. A non-finite loss is recorded with the batch's ids and ends the step
/// (the caller stops the run, on every rank at once).
pub fn accumulate(
    model: &Llava,
    params: &[Param],
    shape: StepShape,
    step: u64,
    mut micro: impl FnMut(u64) -> Result<Vec<Example>>,
) -> Result<Accumulated> {
    let mut sums = GradSums::new(shape.gradients, params.len());
    let mut acc = Accumulated {
        grads: Vec::new(),
        losses: Vec::new(),
        tokens: 0,
        samples: 0,
        bad_batch: None,
    };
    let scale = 1.0 / shape.accum as f64;
    for i in 0..shape.accum as u64 {
        // Every micro-batch ends on every rank, even after a bad one: ZeRO 2's
        // reduce-scatter after each must meet the other ranks'.
        if acc.bad_batch.is_none() {
            let k = shape.global_micro(step, i);
            if let Some((key, seed)) = shape.dropout {
                key.store(keyed(seed, k, 0) | 1, Ordering::Relaxed);
            }
            let examples = micro(k)?;
            let prepared = match examples.is_empty() {
                true => None,
                false => prepare(model, &examples, shape.max_len)?,
            };
            match prepared {
                None if !examples.is_empty() => tracing::warn!(
                    step = step + 1,
                    "a micro-batch without supervised tokens was skipped"
                ),
                None => {}
                Some(prepared) => {
                    let value = accumulate_grads(
                        model,
                        &prepared,
                        scale,
                        params,
                        &mut sums,
                        shape.checkpoint,
                    )?;
                    acc.losses.push(value);
                    if value.is_finite() {
                        acc.tokens += prepared.tokens;
                        acc.samples += examples.len();
                    } else {
                        acc.bad_batch = Some(examples.iter().map(|e| e.id.clone()).collect());
                    }
                }
            }
        }
        sums.end_micro_batch(params)?;
    }
    if let Some((key, _)) = shape.dropout {
        key.store(0, Ordering::Relaxed);
    }
    acc.grads = sums.finish(params)?;
    Ok(acc)
}

/// One step's gradients and figures over all ranks.
pub(crate) struct Reduced {
    /// Gradients averaged over the ranks.
    pub grads: Vec<Tensor>,
    /// Mean loss of the micro-batches that had supervised tokens (`None`: none had).
    pub loss: Option<f64>,
    pub tokens: usize,
    pub samples: usize,
}

/// Sums a step's figures over the ranks and averages the gradients (DDP's mean; under
/// ZeRO each rank keeps its piece: reduce-scattered here for stage 1, already for stage
/// 2); a non-finite loss anywhere stops every rank, naming the batch where it happened.
pub(crate) fn reduce(
    reducer: &dyn Reducer,
    acc: Accumulated,
    step: u64,
    zero: ZeroStage,
) -> Result<Reduced> {
    let world = reducer.world();
    let mut figures = [
        acc.losses.iter().sum::<f64>(),
        acc.losses.len() as f64,
        acc.tokens as f64,
        acc.samples as f64,
    ];
    if world.size > 1 {
        let device = acc
            .grads
            .first()
            .map_or(Device::Cpu, |g| g.device().clone());
        let local = Tensor::new(&figures.map(|v| v as f32), &device)?;
        let summed = reducer.sum(&local)?.to_vec1::<f32>()?;
        figures = [0, 1, 2, 3].map(|i| f64::from(summed[i]));
    }
    let [loss_sum, batches, tokens, samples] = figures;
    if !loss_sum.is_finite() {
        let (value, place) = match (&acc.bad_batch, acc.losses.last()) {
            (Some(ids), Some(value)) => (*value, format!("batch ids: {}", ids.join(", "))),
            _ => (loss_sum, "on another rank".to_string()),
        };
        bail!("step {}: the loss is {value} ({place})", step + 1);
    }
    let mut grads = acc.grads;
    if world.size > 1 {
        let mean = |g: Tensor| -> Result<Tensor> { Ok((g / world.size as f64)?) };
        grads = grads
            .into_iter()
            .map(|g| match zero {
                ZeroStage::Off => mean(reducer.sum(&g)?),
                ZeroStage::Optimizer => mean(reducer.reduce_scatter(&g)?),
                ZeroStage::Gradients => mean(g),
            })
            .collect::<Result<_>>()?;
    }
    Ok(Reduced {
        grads,
        loss: (batches > 0.0).then(|| loss_sum / batches),
        tokens: tokens as usize,
        samples: samples as usize,
    })
}

/// Clips the gradients to `max_grad_norm` and applies one AdamW update at
/// `lr_factor`; returns the norm before clipping (a non-finite norm stops the run).
/// With `sharded` (ZeRO) the gradients are this rank's pieces: the norm sums the ranks'
/// parts and the updated pieces are all-gathered.
pub fn update(
    opt: &mut AdamW,
    grads: Vec<Tensor>,
    max_grad_norm: f64,
    lr_factor: f64,
    step: u64,
    reducer: &dyn Reducer,
    sharded: bool,
) -> Result<f64> {
    let mut squares = squared_norm(&grads)?;
    if sharded {
        squares = sum_f64(reducer, squares)?;
    }
    let grad_norm = squares.sqrt();
    if !grad_norm.is_finite() {
        bail!("step {}: the gradient norm is {grad_norm}", step + 1);
    }
    let scale = clip_factor(grad_norm, max_grad_norm);
    let gather = |p: &Param, updated: Tensor| -> Result<Tensor> {
        if !sharded {
            return keep_local(p, updated);
        }
        let t = p.var.as_tensor();
        let piece = updated.to_dtype(t.dtype())?.to_device(t.device())?;
        Ok(reducer
            .all_gather(&piece, t.elem_count())?
            .reshape(t.shape())?)
    };
    opt.step(&grads, scale, lr_factor, &gather)?;
    Ok(grad_norm)
}

fn check_plan(plan: &Plan) -> Result<()> {
    if plan.batch_size == 0 || plan.grad_accum == 0 {
        bail!("--batch-size and --grad-accum must be at least 1");
    }
    if plan.max_steps == Some(0) || (plan.max_steps.is_none() && plan.epochs <= 0.0) {
        bail!("nothing to do: --max-steps / --epochs must be positive");
    }
    if plan.quantize.is_some() && plan.tune == Tune::Full {
        bail!(
            "--quantize trains LoRA adapters (--lora-r) or the projector (stage 1); full \
             training needs the unquantized weights"
        );
    }
    Ok(())
}

/// Replaces the projector's tensors with those in `file` (keys `model.mm_projector.*`,
/// as stage 1 writes them, or `mm_projector.*`); every projector tensor must be there.
fn load_projector(model: &mut Llava, file: &Path) -> Result<()> {
    let mut tensors = HashMap::new();
    for (name, t) in read_tensors(file)? {
        let Some(rest) = ["model.mm_projector.", "mm_projector."]
            .iter()
            .find_map(|p| name.strip_prefix(p))
        else {
            bail!("{}: `{name}` is not a projector tensor", file.display());
        };
        tensors.insert(format!("projector.{rest}"), t);
    }
    let wanted = model
        .tensors_mut()
        .iter()
        .filter(|(n, _)| n.starts_with("projector."))
        .count();
    let found = tensors.len();
    if found != wanted {
        bail!(
            "{}: {found} projector tensors, the model has {wanted}",
            file.display()
        );
    }
    overwrite_tensors(model, tensors, file)?;
    Ok(())
}

/// Fails early when none of the first samples can be read (a wrong `--image-folder`,
/// a tokenizer that does not fit) instead of training on nothing.
fn preflight(collator: &Collator, records: &[Record]) -> Result<()> {
    let probe = &records[..records.len().min(8)];
    let mut first_error = None;
    for record in probe {
        match collator.example(record) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let e = first_error.expect("at least one record");
    Err(e.context(format!(
        "none of the first {} training samples can be used",
        probe.len()
    )))
}

/// Samples already reported, so a bad or masked sample is reported once, not every epoch.
#[derive(Default)]
struct Reported {
    skipped: HashSet<String>,
    masked: HashSet<String>,
}

fn collate(
    collator: &Collator,
    records: &[Record],
    picked: &[usize],
    summary: &mut Summary,
    reported: &mut Reported,
) -> Result<Vec<Example>> {
    let mut examples = Vec::with_capacity(picked.len());
    for &i in picked {
        match collator.example(&records[i]) {
            Ok(example) => {
                if example.mismatch && reported.masked.insert(example.id.clone()) {
                    summary.masked_samples += 1;
                    tracing::warn!(id = %example.id, "tokenization mismatch: the sample's labels are all masked (as the reference does)");
                }
                examples.push(example);
            }
            Err(e) => {
                if reported.skipped.insert(records[i].id.clone()) {
                    tracing::warn!("skipping a sample: {e:#}");
                    summary
                        .skipped
                        .push((records[i].id.clone(), format!("{e:#}")));
                }
            }
        }
    }
    Ok(examples)
}

/// Writes what the plan trains into `dest`: a full LLaVA checkpoint, a PEFT
/// adapter, or the stage-1 projector next to a full checkpoint.
fn export(
    paths: &Paths,
    plan: &Plan,
    model: &mut Llava,
    dest: &Path,
    step: u64,
) -> Result<PathBuf> {
    let staged = Staged::begin(dest)?;
    write_export(paths, plan, model, &staged.tmp, step)?;
    staged.commit()
}

/// Where a finished run's result goes: `adapter/` (LoRA), `projector/` (stage 1 on a
/// quantized base: the language model is not written back), else `model/`.
fn export_folder(plan: &Plan) -> &'static str {
    match plan.tune {
        Tune::Lora(_) => "adapter",
        Tune::Projector if plan.quantize.is_some() => "projector",
        _ => "model",
    }
}

fn write_export(
    paths: &Paths,
    plan: &Plan,
    model: &mut Llava,
    dir: &Path,
    step: u64,
) -> Result<()> {
    let names = StoredNames::of(&paths.model)?;
    let mut updates = serde_json::Map::new();
    updates.insert(
        "tokenizer_model_max_length".into(),
        json!(plan.model_max_length),
    );
    updates.insert("tokenizer_padding_side".into(), json!("right"));
    updates.insert("image_aspect_ratio".into(), json!(plan.image_aspect_ratio));
    updates.insert(
        "tune_mm_mlp_adapter".into(),
        json!(plan.tune == Tune::Projector),
    );
    updates.insert("mm_projector_lr".into(), json!(plan.lrs.projector));
    updates.insert("mt_step".into(), json!(step));
    match plan.tune {
        Tune::Lora(spec) => {
            let trained: Vec<(String, Tensor)> = model
                .tensors_mut()
                .into_iter()
                .filter(|(n, _)| n.contains(".lora_") || n.starts_with("projector."))
                .map(|(n, t)| (n, t.detach()))
                .collect();
            let fused = model.cfg.text.family == TextFamily::Phi3;
            let trained = match fused {
                true => fuse_projections(trained)?,
                false => trained,
            };
            write_adapter(dir, &paths.model, spec, &trained, names, fused)?;
            write_side_files(&paths.model, dir, &updates)?;
        }
        Tune::Projector | Tune::Full => {
            let trained: Vec<(String, Tensor)> = model
                .tensors_mut()
                .into_iter()
                .map(|(n, t)| (n, t.detach()))
                .collect();
            if plan.tune == Tune::Projector {
                let projector: Vec<(String, Tensor)> = trained
                    .iter()
                    .filter(|(n, _)| n.starts_with("projector."))
                    .map(|(n, t)| (original_name(n), t.clone()))
                    .collect();
                write_safetensors(&dir.join("mm_projector.safetensors"), &projector)?;
                write_torch_bin(&dir.join("mm_projector.bin"), &projector)?;
                if plan.quantize.is_some() {
                    // The quantized language model is not written back.
                    return Ok(());
                }
            }
            let trained = match model.cfg.text.family {
                TextFamily::Phi3 => fuse_projections(trained)?,
                _ => trained,
            };
            let mut tensors: Vec<(String, Tensor)> = trained
                .into_iter()
                .map(|(n, t)| (names.stored(&n), t))
                .collect();
            tensors.extend(stored_vision_tensors(&paths.model, names)?);
            write_weights(dir, tensors, MAX_SHARD_BYTES)?;
            write_side_files(&paths.model, dir, &updates)?;
        }
    }
    Ok(())
}

/// `checkpoint-N/`: the export of the moment (as at the end: model, adapter or
/// projector), `optimizer.safetensors` (f32 masters and moments of every trained
/// tensor) and, written last, `trainer_state.json`; the folder is synced to disk before
/// it is renamed into place, and only then are older checkpoints pruned.
/// Saves checkpoint `state.step` (every rank calls this): rank 0 writes the model, the
/// trainer state and, unsharded, the optimizer state; under ZeRO every rank writes its
/// pieces into the folder rank 0 staged, between two barriers, and rank 0 then commits it.
fn save_checkpoint(
    paths: &Paths,
    plan: &Plan,
    model: &mut Llava,
    opt: &AdamW,
    state: &TrainerState,
    reducer: &dyn Reducer,
    sharded: bool,
) -> Result<()> {
    let world = reducer.world();
    let dest = paths.run_dir.join(format!("checkpoint-{}", state.step));
    let staged = world.is_main().then(|| Staged::begin(&dest)).transpose()?;
    if sharded {
        let device = opt
            .params
            .first()
            .map_or(Device::Cpu, |p| p.var.device().clone());
        barrier(reducer, &device)?;
        let file = state_file(&Staged::partial(&dest), Some((world.rank, world.size)));
        write_safetensors(&file, &opt.state_tensors()?)?;
        barrier(reducer, &device)?;
    }
    let Some(staged) = staged else {
        return Ok(());
    };
    write_export(paths, plan, model, &staged.tmp, state.step)?;
    if !sharded {
        write_safetensors(&state_file(&staged.tmp, None), &opt.state_tensors()?)?;
    }
    fs::write(
        staged.tmp.join("trainer_state.json"),
        serde_json::to_vec_pretty(state)?,
    )?;
    staged.commit()?;
    prune_checkpoints(&paths.run_dir, plan.save_total_limit)?;
    tracing::info!("saved {}", dest.display());
    Ok(())
}

/// Waits until every rank is here.
fn barrier(reducer: &dyn Reducer, device: &Device) -> Result<()> {
    reducer.sum(&Tensor::zeros(1, DType::F32, device)?)?;
    Ok(())
}

/// Finished checkpoints (`checkpoint-N` with a trainer state), oldest first.
fn checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(run_dir) else {
        return Ok(found);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|n| n.parse::<u64>().ok())
            && path.join("trainer_state.json").is_file()
        {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

fn prune_checkpoints(run_dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = checkpoints(run_dir)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

fn refuse_existing_checkpoints(run_dir: &Path) -> Result<()> {
    if let Some((n, _)) = checkpoints(run_dir)?.last() {
        bail!(
            "{} already has checkpoint-{n}: pass --resume to continue that run, or another --run-dir",
            run_dir.display()
        );
    }
    Ok(())
}

/// Restores the newest readable checkpoint's trained tensors, moments and step (an
/// unreadable newest one, e.g. cut by a crash, falls back to the one before); `None`
/// when the run directory has none yet. Refuses a checkpoint made with other settings,
/// data or dtype, or with another number of micro-batches a step (ranks x accumulation).
fn resume(run_dir: &Path, opt: &mut AdamW, expected: &TrainerState) -> Result<Option<u64>> {
    for done in [
        "model/config.json",
        "adapter/config.json",
        "projector/mm_projector.safetensors",
    ] {
        if run_dir.join(done).is_file() {
            bail!(
                "--resume: {} already finished ({done} is there)",
                run_dir.display()
            );
        }
    }
    let mut found = checkpoints(run_dir)?;
    if found.is_empty() {
        tracing::warn!(
            "--resume: {} has no checkpoint yet, starting from step 0",
            run_dir.display()
        );
        return Ok(None);
    }
    while let Some((step, dir)) = found.pop() {
        let state_path = dir.join("trainer_state.json");
        let state: TrainerState = serde_json::from_slice(&fs::read(&state_path)?)
            .with_context(|| format!("{}: invalid trainer state", state_path.display()))?;
        let (was, now) = (micro_batches(&state.run)?, micro_batches(&expected.run)?);
        if was != now {
            bail!(
                "--resume: {} was made with other settings ({}); resume with the same flags, data and processes",
                dir.display(),
                differing_keys(&was, &now).join(", ")
            );
        }
        match SavedState::open(&dir)
            .and_then(|saved| opt.load_state(&|key, n, range| saved.read(key, n, range), step))
        {
            Ok(()) => {
                tracing::info!("resumed from {} (step {step})", dir.display());
                return Ok(Some(step));
            }
            Err(e) if !found.is_empty() => {
                tracing::warn!("{}: {e:#}; trying the checkpoint before it", dir.display());
            }
            Err(e) => return Err(e.context(format!("cannot resume from {}", dir.display()))),
        }
    }
    unreachable!("the loop returns on the last checkpoint")
}

/// The dotted paths where two JSON objects differ (`plan.lrs`, `world_size`, ...).
fn differing_keys(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) if v.is_object() && w.is_object() => {
                out.extend(
                    differing_keys(v, w)
                        .into_iter()
                        .map(|sub| format!("{k}.{sub}")),
                );
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

/// Drops metric lines past `step` (written after the checkpoint a resume starts from).
/// A run's identity as resuming compares it: the ranks and the accumulation count only
/// through their product, the micro-batches of one step (which fixes every step's data),
/// so a checkpoint of N ranks resumes on M with accumulation scaled to match.
fn micro_batches(run: &RunIdentity) -> Result<Value> {
    let mut v = serde_json::to_value(run)?;
    let micro = run.world_size * run.plan.grad_accum;
    v["world_size"] = Value::Null;
    v["plan"]["grad_accum"] = json!(micro);
    Ok(v)
}

fn keep_metrics_up_to(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// Memory in use on `device`'s GPU in MB (the driver's total minus free), if it is one.
fn gpu_mem_mb(device: &Device) -> Option<f64> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use candle_core::cuda_backend::cudarc::driver::result::mem_get_info;
        return mem_get_info()
            .ok()
            .map(|(free, total)| (total - free) as f64 / (1024.0 * 1024.0));
    }
    let _ = device;
    None
}

/// Resident memory of this process in MB (0 where /proc is unavailable).
fn rss_mb() -> f64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests;
