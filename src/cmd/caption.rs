//! `mt caption`: captions for images with a LLaVA-style model, optionally through the
//! MedTrinity pipeline (coarse caption + ROI + knowledge -> multigranular description).
//! Pick this shard's records, skip what the output already has, assemble prompts, batch
//! decoded images, generate, append lines, mark the shard done, report bad images
//! (exit 3).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::args::{AutoOrientationArg, DecodingArgs, DeviceArgs, ModelArgs, PipelineArg};
use super::{Context, failure_list, finish_failures};
use crate::core::data::{Batch, Dataset, Flow, ImageRef, ReadOptions, inputs};
use crate::core::error::usage;
use crate::core::knowledge::KnowledgeIndex;
use crate::core::model::engine::captioner::{Caption, CaptionInput, Captioner};
use crate::core::model::engine::generate::GenerationConfig;
use crate::core::model::load::checkpoint::{Checkpoint, device};
use crate::core::pipeline::coarse::Templates;
use crate::core::pipeline::rois::RoiTable;
use crate::core::pipeline::{Audit, Pipeline, draw_rois};
use crate::core::progress;
use crate::core::records::{RecordOutput, for_each_record, staging_path};
use crate::core::shard::{self, Shard};

const EXAMPLES: &str = "\
Examples:
  mt caption testdata/images --model testdata/models/tiny-llava     (random weights: a demo)
  mt caption scans/ --model ckpts/LLaVA-Med-Captioner --gpu 0 -o captions.jsonl
  mt caption cases.jsonl --model ckpts/LLaVA-Med-pp --prompt 'Which organ is shown?' --max-new-tokens 64
  mt caption data/25M_demo --model ckpts/LLaVA-Med-Captioner --temperature 0.2 --top-p 0.9 --seed 7

The MedTrinity pipeline (coarse caption from metadata + ROI as a green box + retrieved
knowledge -> a description in five parts):
  mt roi masks/ -o rois.jsonl
  mt caption cases.jsonl --pipeline medtrinity --rois rois.jsonl --knowledge passages.jsonl --dry-run
  mt caption cases.jsonl --pipeline medtrinity --rois rois.jsonl --knowledge passages.jsonl \\
      --model ckpts/LLaVA-Med-Captioner --gpu 0 -o captions.parquet

Records give the coarse caption through `coarse_caption`, or fields (modality, organ,
label(s)/disease, report; `source` picks a template, see --coarse-templates). ROIs come
from --rois (joined by id) or the record's `bbox` ([x0, y0, x1, y1] pixels). Each output
line carries the caption and what went into it: coarse_caption, rois, roi_source,
knowledge_query, passages (ids), prompt.

Scale-out: --shard I/N takes the records whose id hashes to shard I (0 <= I < N), writes
-o out.jsonl as out-0000I-of-0000N.jsonl and, when every input was read, the marker
out-0000I-of-0000N.jsonl.done; join the shards with
`mt convert merge out-*-of-0000N.jsonl -o out.jsonl`. In a Slurm array
(--array=0-15), --shard slurm/16 takes I from SLURM_ARRAY_TASK_ID (resubmitted tasks keep
their shard); --shard slurm takes I and N from the array's own variables.

Rerunning with the same -o skips ids already captioned. Bad images are reported and
skipped (exit 3 at the end). -o *.parquet writes parquet (staged as JSONL while running).";

/// The default instruction: a detailed, structured description.
pub const DEFAULT_PROMPT: &str = "Describe the image in detail: the imaging modality, the organ and tissue shown, \
the location and size of any region of interest, its texture, and its relation to the surrounding structures.";

/// Generate captions with a LLaVA-style model (the MedTrinity captioner or LLaVA-Med++).
#[derive(Debug, clap::Args, Serialize)]
#[command(
    after_help = EXAMPLES,
    mut_arg("model", |a| a.required(false)),
    mut_arg("max_new_tokens", |a| a.help("Most tokens generated per caption")),
)]
pub struct Args {
    /// Images, image folders, JSONL/JSON records ({id, image, ...}) or parquet shards.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Output JSONL or parquet (`-` = stdout); ids already in the file are skipped.
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// The instruction given with every image.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    #[command(flatten)]
    #[serde(flatten)]
    pub decoding: DecodingArgs,
    /// Text that ends a caption (repeatable); the caption is cut before it.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks: a fixed token count).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
    /// Caption through a pipeline: `medtrinity` (coarse caption + ROI + knowledge).
    #[arg(long, value_enum)]
    pub pipeline: Option<PipelineArg>,
    /// `mt roi` output (JSONL or parquet) whose regions are joined to the records by id.
    #[arg(long, value_name = "FILE", requires = "pipeline")]
    pub rois: Option<PathBuf>,
    /// Knowledge passages: a JSONL corpus ({id, title, text, source}; indexed once,
    /// beside it) or an index built by `mt convert knowledge-index`.
    #[arg(long, value_name = "CORPUS", requires = "pipeline")]
    pub knowledge: Option<PathBuf>,
    /// Passages retrieved per record.
    #[arg(long, default_value_t = 3, requires = "knowledge")]
    pub knowledge_k: usize,
    /// JSON of source name -> coarse caption template (`*` = all other sources).
    #[arg(long, value_name = "FILE", requires = "pipeline")]
    pub coarse_templates: Option<PathBuf>,
    /// Left/right convention of position words for boxes from `bbox` fields in the
    /// pipeline (default `auto`: radiological for CT, MRI, X-ray, PET; as shown otherwise).
    #[arg(long, value_enum, requires = "pipeline")]
    pub orientation: Option<AutoOrientationArg>,
    /// Print (or write to -o) the prompts and what went into them; load no model.
    #[arg(long)]
    pub dry_run: bool,
    /// Caption only shard I of N (ids by hash), `slurm/N` or `slurm` in a Slurm array;
    /// output to <stem>-0000I-of-0000N.<ext>.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
}

/// Runs `mt caption`.
pub fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    check(args)?;
    let shard = match &args.shard {
        Some(text) => Some(
            Shard::resolve(text, &|k| std::env::var(k).ok())
                .map_err(|e| usage(format!("--shard: {e:#}")))?,
        ),
        None => None,
    };
    let output = match shard {
        Some(_) if args.output == Path::new("-") => {
            return Err(usage(
                "--shard needs -o FILE: each shard writes its own file",
            ));
        }
        Some(s) => s.output(&args.output),
        None => args.output.clone(),
    };
    if let Some(s) = shard {
        shard::check_siblings(&output, s)?;
    }
    let inputs = inputs::resolve(&args.inputs, None)?;
    let read = ReadOptions {
        columns: None,
        batch_rows: args.batch_size.max(64),
    };
    let (dataset, open_failures) = Dataset::open(inputs, &read);
    // Inputs that could not be read at all keep the shard unfinished (no marker); bad
    // records are listed and counted in the marker.
    let mut input_failures = open_failures.len();
    let mut failures: Vec<(String, String)> = open_failures
        .iter()
        .map(|(i, e)| (dataset.inputs[*i].display(), format!("{e:#}")))
        .collect();
    if shard.is_some() {
        shard::clear_marker(&output)?;
    }
    if !args.dry_run {
        refuse_dry_run_output(&output)?;
    }
    let mut out = RecordOutput::open(&output, "id")?;
    let pipeline = match &args.pipeline {
        Some(_) => Some(open_pipeline(args, shard, ctx)?),
        None => None,
    };
    let captioner = match args.dry_run {
        true => None,
        false => Some(load_captioner(args, ctx)?),
    };
    if let (Some(run), Some(s)) = (&mut ctx.run, shard) {
        run.write_json(
            "shard.json",
            &serde_json::json!({"shard": s, "output": output}),
        )?;
    }
    let shard_note = shard.map_or(String::new(), |s| format!(" (shard {s})"));
    tracing::info!(
        "writing {}{shard_note}: {} records already there",
        output.display(),
        out.len()
    );

    let total = dataset.known_rows(&dataset.units(&[], 1));
    let unit_name = if args.dry_run { "prompts" } else { "images" };
    let bar = progress::bar(total, unit_name, "captioning");
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    let mut pending: Vec<(CaptionInput, Option<Audit>)> = Vec::new();
    let flush = |pending: &mut Vec<(CaptionInput, Option<Audit>)>,
                 out: &mut RecordOutput,
                 tally: &mut Tally,
                 failures: &mut Vec<(String, String)>|
     -> Result<()> {
        let records = pending.len();
        let lines = match &captioner {
            Some(c) => caption_lines(c, pending, failures, &mut |n| tally.tokens += n)?,
            None => pending
                .drain(..)
                .map(|(item, audit)| dry_run_line(item, audit, args))
                .collect(),
        };
        pending.clear();
        out.write_all(&lines)?;
        tally.written += lines.len();
        bar.inc(records as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "captioning, {:.1} tokens/s",
            tally.tokens as f64 / secs
        ));
        Ok(())
    };
    for unit in dataset.units(&[], 1) {
        let mut failed: Option<anyhow::Error> = None;
        let result = dataset.read(&unit, &read, &mut |batch| {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    input_failures += 1;
                    failures.push((dataset.inputs[unit.input].display(), format!("{e:#}")));
                    return Flow::Continue;
                }
            };
            for i in 0..batch.len() {
                let id = batch.id(i).into_owned();
                if shard.is_some_and(|s| !s.owns(&id)) {
                    tally.other_shards += 1;
                    bar.inc(1);
                    continue;
                }
                if out.contains(&id) || pending.iter().any(|(p, _)| p.id == id) {
                    bar.inc(1);
                    continue;
                }
                match prepare(&batch, i, id.clone(), pipeline.as_ref()) {
                    Ok(Ok(item)) => pending.push(item),
                    Ok(Err(e)) => {
                        tracing::warn!("{id}: {e:#}");
                        bar.inc(1);
                        failures.push((id, format!("{e:#}")));
                    }
                    Err(e) => {
                        failed = Some(e);
                        return Flow::Stop;
                    }
                }
                if pending.len() == args.batch_size
                    && let Err(e) = flush(&mut pending, &mut out, &mut tally, &mut failures)
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
            input_failures += 1;
            failures.push((dataset.inputs[unit.input].display(), format!("{e:#}")));
        }
    }
    flush(&mut pending, &mut out, &mut tally, &mut failures)?;
    bar.finish_and_clear();
    let in_output = out.len();
    out.finish()?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        written = tally.written,
        tokens = tally.tokens,
        seconds = secs,
        "{} {} ({:.2}/s, {:.1} tokens/s)",
        if args.dry_run {
            "prompts for"
        } else {
            "captioned"
        },
        tally.written,
        tally.written as f64 / secs.max(1e-9),
        tally.tokens as f64 / secs.max(1e-9)
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("captioned", tally.written);
        run.set_count("skipped_existing", in_output.saturating_sub(tally.written));
        run.set_count("other_shards", tally.other_shards);
        run.set_count("new_tokens", tally.tokens);
        run.set_count("bad_images", failures.len());
    }
    match shard {
        Some(s) if input_failures == 0 => {
            shard::sync_output(&output)?;
            let summary = serde_json::json!({
                "shard": s, "records": in_output, "failed": failures.len(),
                "finished": jiff::Timestamp::now().to_string(),
            });
            shard::write_marker(&output, &summary)?;
        }
        Some(s) => tracing::warn!(
            "shard {s} is not marked done: {input_failures} inputs could not be read; rerun it"
        ),
        None => {}
    }
    let json = serde_json::json!({
        "output": output,
        "captioned": tally.written,
        "skipped_existing": in_output.saturating_sub(tally.written),
        "other_shards": tally.other_shards,
        "new_tokens": tally.tokens,
        "seconds": secs,
        "failed": failures.len(),
        "failures": failure_list(&failures),
    });
    if ctx.json {
        super::summary(ctx, output == Path::new("-"), &json, String::new)?;
    } else {
        for (id, e) in &failures {
            eprintln!("error: {id}: {e}");
        }
    }
    let failed = failures.len();
    finish_failures(ctx, failures, failed, tally.written + failed)
}

/// Rejects option values that make no sense.
fn check(args: &Args) -> Result<()> {
    args.decoding.check()?;
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1"));
    }
    if args.model.model.is_none() && !args.dry_run {
        return Err(usage(
            "--model DIR is needed (or --dry-run to print the prompts only)",
        ));
    }
    Ok(())
}

/// The checkpoint, ready to caption; its config and decoding settings go to the run dir.
fn load_captioner(args: &Args, ctx: &mut Context) -> Result<Captioner> {
    let model = &args.model;
    let gpu = args.device.gpu();
    let device = device(gpu)?;
    let dtype = model.dtype(&device)?;
    let ckpt = Checkpoint::open(model.path(), model.vision_tower.as_deref(), &device, dtype)?;
    let decoding = GenerationConfig {
        max_new_tokens: args.decoding.max_new_tokens,
        temperature: args.decoding.temperature(),
        top_p: args.decoding.top_p(),
        top_k: args.decoding.top_k(),
        stop_tokens: Vec::new(),
    };
    if let Some(run) = &mut ctx.run {
        let place = gpu.map_or_else(|| "cpu".to_string(), |i| format!("cuda:{i}"));
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
    tracing::info!("model {} loaded", captioner.model_name);
    Ok(captioner)
}

/// The MedTrinity pipeline's inputs: templates, the shard's ROIs, the knowledge index.
fn open_pipeline(args: &Args, shard: Option<Shard>, ctx: &mut Context) -> Result<Pipeline> {
    let templates = match &args.coarse_templates {
        Some(path) => Templates::load(path)?,
        None => Templates::default(),
    };
    let rois = match &args.rois {
        Some(path) => {
            let table = RoiTable::load(path, &|id| shard.is_none_or(|s| s.owns(id)))?;
            tracing::info!("{}: regions for {} ids", path.display(), table.len());
            Some(table)
        }
        None => None,
    };
    let knowledge = match &args.knowledge {
        Some(path) => {
            let index = KnowledgeIndex::open_or_build(path)?;
            if let Some(run) = &ctx.run {
                run.write_json("knowledge.json", &index.describe())?;
            }
            Some(index)
        }
        None => None,
    };
    let orientation = args.orientation.and_then(AutoOrientationArg::orientation);
    Ok(Pipeline {
        templates,
        rois,
        knowledge,
        top_k: args.knowledge_k,
        orientation,
    })
}

/// One record made ready: its image decoded and, in the pipeline, its prompt assembled
/// and its ROIs drawn on the image. The inner error is the record's (skip it), the
/// outer one the run's (retrieval failed: stop).
fn prepare(
    batch: &Batch,
    i: usize,
    id: String,
    pipeline: Option<&Pipeline>,
) -> Result<Result<(CaptionInput, Option<Audit>)>> {
    let (image, pixels) = match load_image(batch.image(i)) {
        Ok(loaded) => loaded,
        Err(e) => return Ok(Err(e)),
    };
    let Some(pipeline) = pipeline else {
        let item = CaptionInput {
            id,
            image,
            pixels,
            question: None,
        };
        return Ok(Ok((item, None)));
    };
    let mut record = batch.extra(i);
    if let Some(caption) = batch.caption(i) {
        record.insert("caption".into(), caption.into());
    }
    let size = (pixels.width() as usize, pixels.height() as usize);
    let case = match pipeline.case(&id, &record, batch.source(i).unwrap_or(""), size) {
        Ok(case) => case,
        Err(e) => return Ok(Err(e)),
    };
    let audit = pipeline.audit(case)?;
    let item = CaptionInput {
        id,
        image,
        pixels: draw_rois(&pixels, &audit.rois),
        question: Some(audit.prompt.clone()),
    };
    Ok(Ok((item, Some(audit))))
}

/// Stops a captioning run from resuming into a `--dry-run` output (its ids would all be
/// skipped): the first record of an existing output must carry a caption.
fn refuse_dry_run_output(output: &Path) -> Result<()> {
    let staged = staging_path(output);
    let existing = [staged.as_deref(), Some(output)]
        .into_iter()
        .flatten()
        .find(|p| p != &Path::new("-") && p.metadata().is_ok_and(|m| m.len() > 0));
    let Some(path) = existing else {
        return Ok(());
    };
    let mut dry = false;
    let first = for_each_record(path, &mut |_, record| {
        dry = record.get("caption").is_none();
        anyhow::bail!("first record read")
    });
    if first.is_err() && dry {
        return Err(usage(format!(
            "{} holds --dry-run prompts, not captions: write the captions to another -o",
            path.display()
        )));
    }
    Ok(())
}

/// Captions a batch into output lines; images that could not be prepared go to
/// `failures` as (id, message).
fn caption_lines(
    captioner: &Captioner,
    pending: &mut Vec<(CaptionInput, Option<Audit>)>,
    failures: &mut Vec<(String, String)>,
    on_tokens: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<(String, Line)>> {
    let (items, audits): (Vec<_>, Vec<_>) = std::mem::take(pending).into_iter().unzip();
    let captions = captioner.caption(&items, on_tokens)?;
    let mut lines = Vec::with_capacity(items.len());
    for ((item, caption), audit) in items.iter().zip(captions).zip(audits) {
        match caption {
            Ok(caption) => {
                let head = Head::Caption(caption);
                let line = Line {
                    head,
                    prompt: None,
                    audit,
                };
                lines.push((item.id.clone(), line));
            }
            Err(e) => {
                tracing::warn!("{}: {e:#}", item.id);
                failures.push((item.id.clone(), format!("{e:#}")));
            }
        }
    }
    Ok(lines)
}

/// The `--dry-run` line of one record: the prompt and what went into it.
fn dry_run_line(item: CaptionInput, audit: Option<Audit>, args: &Args) -> (String, Line) {
    let line = Line {
        head: Head::Input {
            id: item.id.clone(),
            image: item.image,
        },
        prompt: audit.is_none().then(|| args.prompt.clone()),
        audit,
    };
    (item.id, line)
}

/// One output line: the caption (with --dry-run, the record) and, in the pipeline,
/// everything that went into its prompt.
#[derive(Serialize)]
struct Line {
    #[serde(flatten)]
    head: Head,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(flatten)]
    audit: Option<Audit>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Head {
    Caption(Caption),
    Input { id: String, image: String },
}

#[derive(Default)]
struct Tally {
    written: usize,
    tokens: usize,
    other_shards: usize,
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
