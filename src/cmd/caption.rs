//! `mt caption`: captions for images with a LLaVA-style model.
//! Open inputs, skip what the output already has, batch decoded images, generate,
//! append lines, report bad images at the end (exit 3).

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::{Context, run_file};
use crate::core::data::{Dataset, Flow, ImageRef, ReadOptions, inputs};
use crate::core::error::Failure;
use crate::core::model::captioner::{CaptionInput, Captioner};
use crate::core::model::checkpoint::{Checkpoint, device, dtype};
use crate::core::model::generate::GenerationConfig;
use crate::core::progress;
use crate::core::resume::JsonlOutput;

const EXAMPLES: &str = "\
Examples:
  mt caption testdata/images --model testdata/models/tiny-llava     (random weights: a demo)
  mt caption scans/ --model ckpts/LLaVA-Med-Captioner --gpu 0 -o captions.jsonl
  mt caption cases.jsonl --model ckpts/LLaVA-Med-pp --prompt 'Which organ is shown?' --max-new-tokens 64
  mt caption data/25M_demo --model ckpts/LLaVA-Med-Captioner --temperature 0.2 --top-p 0.9 --seed 7

Rerunning with the same -o skips ids already captioned. Bad images are reported and
skipped (exit 3 at the end).";

/// The default instruction: a detailed, structured description.
pub const DEFAULT_PROMPT: &str = "Describe the image in detail: the imaging modality, the organ and tissue shown, \
the location and size of any region of interest, its texture, and its relation to the surrounding structures.";

/// Generate captions with a LLaVA-style model (the MedTrinity captioner or LLaVA-Med++).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Images, image folders, JSONL/JSON records ({id, image, ...}) or parquet shards.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Checkpoint folder (original LLaVA or llava-hf layout).
    #[arg(long)]
    pub model: PathBuf,
    /// CLIP tower folder when the checkpoint does not include one.
    #[arg(long, value_name = "DIR")]
    pub vision_tower: Option<PathBuf>,
    /// Output JSONL (`-` = stdout); ids already in the file are skipped.
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// The instruction given with every image.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// Most tokens generated per caption.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sample among the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Text that ends a caption (repeatable); the caption is cut before it.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks: a fixed token count).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// GPU index (needs a CUDA build); the CPU otherwise.
    #[arg(long, conflicts_with = "cpu")]
    pub gpu: Option<usize>,
    /// Run on the CPU (the default without --gpu).
    #[arg(long)]
    pub cpu: bool,
    /// Compute dtype: f32, bf16 or f16 (default bf16 on GPU, f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
}

#[derive(Serialize)]
struct BadImage {
    id: String,
    error: String,
}

pub fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    if !(0.0..=1.0).contains(&args.top_p)
        || args.top_p == 0.0
        || args.temperature < 0.0
        || args.batch_size == 0
    {
        return Err(crate::core::error::usage(
            "--top-p must be in (0, 1], --temperature >= 0 and --batch-size >= 1",
        ));
    }
    let inputs = inputs::resolve(&args.inputs, None)?;
    let read = ReadOptions {
        columns: None,
        batch_rows: args.batch_size.max(64),
    };
    let (dataset, open_failures) = Dataset::open(inputs, &read);
    let mut bad: Vec<BadImage> = open_failures
        .iter()
        .map(|(i, e)| BadImage {
            id: dataset.inputs[*i].display(),
            error: format!("{e:#}"),
        })
        .collect();
    let mut out = JsonlOutput::open(&args.output, "id")?;

    let device = device(args.gpu)?;
    let dtype = dtype(args.dtype.as_deref(), &device)?;
    let ckpt = Checkpoint::open(&args.model, args.vision_tower.as_deref(), &device, dtype)?;
    let decoding = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        stop_tokens: Vec::new(),
    };
    if let Some(run) = &mut ctx.run {
        let place = args
            .gpu
            .map_or_else(|| "cpu".to_string(), |i| format!("cuda:{i}"));
        run.set_device(format!("{place} {dtype:?}").to_lowercase());
        run.write_json("model.json", &ckpt.config)?;
    }
    let captioner = Captioner::new(
        ckpt,
        &args.prompt,
        decoding,
        args.stop.clone(),
        !args.ignore_eos,
        ctx.seed,
    )?;
    if let Some(run) = &ctx.run {
        run.write_json("generation.json", captioner.generation())?;
    }
    tracing::info!(resumed = out.len(), "model {} loaded", captioner.model_name);

    let total = dataset.known_rows(&dataset.units(&[], 1));
    let images_bar = progress::bar(total, "images", "captioning");
    let (mut written, mut tokens) = (0usize, 0usize);
    let started = std::time::Instant::now();
    let mut pending: Vec<CaptionInput> = Vec::new();
    let mut flush = |pending: &mut Vec<CaptionInput>, out: &mut JsonlOutput| -> Result<()> {
        let captions = captioner.caption(pending, &mut |n| tokens += n)?;
        let lines: Vec<_> = captions.into_iter().map(|c| (c.id.clone(), c)).collect();
        out.write_all(&lines)?;
        written += lines.len();
        images_bar.inc(lines.len() as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        images_bar.set_message(format!("captioning, {:.1} tokens/s", tokens as f64 / secs));
        pending.clear();
        Ok(())
    };
    for unit in dataset.units(&[], 1) {
        let mut failed: Option<anyhow::Error> = None;
        let result = dataset.read(&unit, &read, &mut |batch| {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    bad.push(BadImage {
                        id: dataset.inputs[unit.input].display(),
                        error: format!("{e:#}"),
                    });
                    return Flow::Continue;
                }
            };
            for i in 0..batch.len() {
                let id = batch.id(i).into_owned();
                if out.contains(&id) {
                    images_bar.inc(1);
                    continue;
                }
                match load_image(batch.image(i)) {
                    Ok((image, pixels)) => pending.push(CaptionInput { id, image, pixels }),
                    Err(e) => {
                        tracing::warn!("{id}: {e:#}");
                        images_bar.inc(1);
                        bad.push(BadImage {
                            id,
                            error: format!("{e:#}"),
                        });
                    }
                }
                if pending.len() == args.batch_size
                    && let Err(e) = flush(&mut pending, &mut out)
                {
                    failed = Some(e);
                    return Flow::Stop;
                }
            }
            Flow::Continue
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = result {
            bad.push(BadImage {
                id: dataset.inputs[unit.input].display(),
                error: format!("{e:#}"),
            });
        }
    }
    flush(&mut pending, &mut out)?;
    images_bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        written,
        tokens,
        seconds = secs,
        "captioned {written} images ({:.2} images/s, {:.1} tokens/s)",
        written as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9)
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("captioned", written);
        run.set_count("skipped_existing", out.len() - written);
        run.set_count("new_tokens", tokens);
        run.set_count("bad_images", bad.len());
    }
    if bad.is_empty() {
        return Ok(());
    }
    let where_ = match (&ctx.run, run_file(ctx, "failures.json")) {
        (Some(run), Some(_)) => format!(
            " and in {}",
            run.write_json("failures.json", &bad)?.display()
        ),
        _ => String::new(),
    };
    for b in &bad {
        eprintln!("error: {}: {}", b.id, b.error);
    }
    Err(Failure::PartialInputs {
        failed: bad.len(),
        total: written + bad.len(),
        where_,
    }
    .into())
}

/// Decodes a record's image; returns its label for the output and the pixels.
fn load_image(image: ImageRef<'_>) -> Result<(String, image::DynamicImage)> {
    let label = match &image {
        ImageRef::Archived(name) => anyhow::bail!(
            "image {name} is inside a .tar.zst shard; caption the shards themselves (mt caption shard.tar.zst ...)"
        ),
        ImageRef::Bytes { path, .. } => path.unwrap_or("").to_string(),
        ImageRef::File(path) => path.to_string_lossy().into_owned(),
        ImageRef::None => String::new(),
    };
    let bytes = image.bytes()?;
    let pixels = crate::core::image::decode(&bytes)?;
    Ok((label, pixels))
}
