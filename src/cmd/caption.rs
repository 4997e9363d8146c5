//! `mt caption`: captions for images with a LLaVA-style model, optionally through the
//! MedTrinity pipeline (coarse caption + ROI + knowledge -> multigranular description).
//! Pick this shard's records, skip what the output already has, assemble prompts, batch
//! decoded images, generate, append lines, mark the shard done, report bad images
//! (exit 3).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::args::{
    AutoOrientationArg, DecodingArgs, DeviceArgs, ModelArgs, PipelineArg, QuantizeArgs,
};
use super::{Context, failure_list, finish_failures};
use crate::core::data::{Dataset, ReadOptions, inputs};
use crate::core::error::usage;
use crate::core::knowledge::KnowledgeIndex;
use crate::core::model::engine::caption_run::CaptionRun;
use crate::core::model::engine::captioner::Captioner;
use crate::core::model::load::checkpoint::device;
use crate::core::pipeline::Pipeline;
use crate::core::pipeline::coarse::Templates;
use crate::core::pipeline::rois::RoiTable;
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
pub(crate) const DEFAULT_PROMPT: &str = "Describe the image in detail: the imaging modality, the organ and tissue shown, \
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
    #[command(flatten)]
    #[serde(flatten)]
    pub quantize: QuantizeArgs,
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
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
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
    let job = CaptionRun {
        dataset: &dataset,
        read: &read,
        shard,
        pipeline: pipeline.as_ref(),
        captioner: captioner.as_ref(),
        prompt: &args.prompt,
        batch_size: args.batch_size,
    };
    let done = job.run(&mut out)?;
    // Inputs that could not be read at all keep the shard unfinished (no marker); bad
    // records are listed and counted in the marker.
    let input_failures = open_failures.len() + done.input_failures;
    let mut failures: Vec<(String, String)> = open_failures
        .iter()
        .map(|(i, e)| (dataset.inputs[*i].display(), format!("{e:#}")))
        .collect();
    failures.extend(done.failures);
    let in_output = out.len();
    out.finish()?;
    let secs = done.seconds;
    tracing::info!(
        written = done.written,
        tokens = done.tokens,
        seconds = secs,
        "{} {} ({:.2}/s, {:.1} tokens/s)",
        if args.dry_run {
            "prompts for"
        } else {
            "captioned"
        },
        done.written,
        done.written as f64 / secs.max(1e-9),
        done.tokens as f64 / secs.max(1e-9)
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("captioned", done.written);
        run.set_count("skipped_existing", in_output.saturating_sub(done.written));
        run.set_count("other_shards", done.other_shards);
        run.set_count("new_tokens", done.tokens);
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
        "captioned": done.written,
        "skipped_existing": in_output.saturating_sub(done.written),
        "other_shards": done.other_shards,
        "new_tokens": done.tokens,
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
    finish_failures(ctx, failures, failed, done.written + failed)
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
    let mut ckpt = model.open(&device, dtype)?;
    args.quantize.apply(&mut ckpt);
    let decoding = args.decoding.generation();
    if let Some(run) = &mut ctx.run {
        run.set_device(args.quantize.describe(gpu, dtype));
        run.write_json("model.json", &ckpt.config)?;
    }
    let captioner = Captioner::new(
        ckpt,
        &args.prompt,
        decoding,
        args.stop.clone(),
        !args.ignore_eos,
        ctx.seed,
        args.decoding.conv_mode.as_deref(),
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
