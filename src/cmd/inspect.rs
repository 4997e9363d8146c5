//! `mt inspect`: statistics, samples and plots of dataset shards.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::{Context, finish_failures, print};
use crate::core::data::filter::Filter;
use crate::core::data::{Dataset, ReadOptions, inputs};
use crate::core::inspect::contamination::{self, AgainstSpec};
use crate::core::inspect::{self, InspectOptions, TallyOptions, plots, records, render, report};

const HELP: &str = "\
One streaming pass over parquet shards (MedTrinity-25M 25M_demo and 25M_full layouts),
LLaVA JSON/JSONL, image folders or .tar/.tar.zst image shards. Memory stays flat in the
number of rows: row groups are read one at a time, and id / image-hash sets spill to
temporary files.

Reports: shards, rows, row groups, bytes, schema (with the Hugging Face features),
null counts, id uniqueness; caption length in characters and words with a histogram;
which MedTrinity parts each caption mentions (modality, organ, ROI location, ROI area %,
texture, relations: whole-word keyword rules listed in src/core/caption_parts.rs);
value counts of source and of the modality / organ named first in each caption; image
width / height / aspect / bytes, format and colour mode (headers only unless --decode),
undecodable and missing images with their ids, exact duplicates by sha256; for
25M_full manifests with .tar.zst image shards, rows whose image is in no shard and
shard members no row refers to.

--filter takes a SQL WHERE clause evaluated by polars over the columns id, caption,
source, image (path or file name), row (row number in its input) and every other column
of the input, e.g. \"source = 'slake'\", \"caption ILIKE '%mri%' AND row < 1000\".

Inputs that fail (truncated parquet, corrupt archives, bad JSON lines) are reported with
the file, row group or line; the other inputs are still inspected and mt exits with 3.

--against finds benchmark images in the inputs: exact copies (the same decoded pixels,
whatever the file bytes) and near copies (re-encoded, resized, cropped by about 5%: a DCT
perceptual hash of a 32x32 thumbnail within 8 of 64 bits of the benchmark image or of its
cropped views, confirmed by the thumbnails' detail correlating at 0.9 or more; flat
pictures match only exactly). Pairs go to contamination.jsonl in the run directory, counts to the summary
and to --json under `contamination`; `mt convert llava|parquet|wds --exclude-matches`
drops them.";

const EXAMPLES: &str = "\
Examples:
  mt inspect testdata/medtrinity-demo
  mt inspect 'data/25M_demo/train-*.parquet' --plots figs/ --json > stats.json
  mt inspect data/25M_full --image-folder data/25M_accessible --columns caption,source,file_name
  mt inspect data/llava_med_instruct.jsonl --image-folder data/images --head 5
  mt inspect testdata/medtrinity-demo --sample 3 --seed 7 --filter \"caption ILIKE '%ct%'\"
  mt inspect data/25M_full --against vqa-rad=data/VQA_RAD slake=data/Slake1.0    benchmark copies";

/// Statistics, samples and plots of dataset shards.
#[derive(Debug, clap::Args, Serialize)]
#[command(long_about = HELP, after_help = EXAMPLES)]
pub struct Args {
    /// Parquet files, folders, globs, LLaVA .json/.jsonl (`-` = JSONL on stdin), image
    /// folders or .tar.zst shards.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Where image file names resolve: a folder, or .tar.zst shards (file, folder, glob).
    #[arg(
        long = "image-folder",
        visible_alias = "images",
        value_name = "DIR|ARCHIVES"
    )]
    pub images: Option<PathBuf>,
    /// Print the first N records (after --filter) instead of statistics.
    #[arg(long, value_name = "N", conflicts_with = "sample")]
    pub head: Option<usize>,
    /// Print N records drawn at random (reproducible with --seed) instead of statistics.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Only records matching this SQL WHERE clause.
    #[arg(long, value_name = "SQL")]
    pub filter: Option<String>,
    /// Read only these columns (comma-separated; names, or the roles id, caption,
    /// source, image). Image statistics need the image column.
    #[arg(long, value_delimiter = ',', value_name = "COLS")]
    pub columns: Option<Vec<String>>,
    /// Skip image statistics (image bytes are not read).
    #[arg(long)]
    pub no_images: bool,
    /// Decode every image fully: slower, but finds corrupt pixel data a header misses.
    #[arg(long)]
    pub decode: bool,
    /// Write PNG histograms, bar charts and a contact sheet of sample images into DIR.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Images on the --plots contact sheet.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub contact_sheet: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Memory for id and image-hash sets before they spill to temporary files, in MB.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub spill_mb: usize,
    /// Find these benchmark images in the inputs: any path mt reads, or
    /// BENCH[:SPLIT]=PATH for VQA-RAD / SLAKE / PathVQA in a released or hub layout
    /// (split test unless named). Exact copies (same pixels) and near copies
    /// (re-encoded, resized, cropped) go to contamination.jsonl in the run directory.
    #[arg(long, value_name = "BENCH", num_args = 1..)]
    pub against: Vec<AgainstSpec>,
}

/// Column names that hold images.
const IMAGE_COLUMNS: &[&str] = &["image", "file_name", "image_path"];

pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    let filter = args.filter.as_deref().map(Filter::parse).transpose()?;
    let images = !args.no_images
        && args
            .columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|c| IMAGE_COLUMNS.contains(&c.as_str())));
    let read = ReadOptions {
        columns: args.columns.clone(),
        batch_rows: if images { 1024 } else { 8192 },
    };
    let inputs = inputs::resolve(&args.paths, args.images.as_deref())?;
    let total_inputs = inputs.len();
    let (dataset, mut open_failures) = Dataset::open(inputs, &read);
    if images {
        open_failures.extend(inspect::shards_without_images(&dataset));
    }

    if let Some(n) = args.head {
        let (samples, errors) = inspect::head(&dataset, open_failures, &read, filter.as_ref(), n)?;
        print_records(&samples, ctx)?;
        let failed = errors
            .iter()
            .map(|(i, _)| *i)
            .collect::<BTreeSet<_>>()
            .len();
        let failures = errors
            .into_iter()
            .map(|(i, e)| (dataset.inputs[i].display(), e))
            .collect();
        return finish_failures(ctx, failures, failed, total_inputs);
    }

    let sheet = if args.plots.is_some() {
        args.contact_sheet
    } else {
        0
    };
    let spill_budget = args.spill_mb.max(1) << 20;
    let opts = InspectOptions {
        read,
        tally: TallyOptions {
            images,
            decode: args.decode,
            seed: ctx.seed,
            sample: args.sample.unwrap_or(0),
            sheet,
            spill_budget: spill_budget / 4,
        },
        filter,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let started = std::time::Instant::now();
    let mut tally = inspect::inspect(&dataset, open_failures, &opts)?;
    let elapsed = started.elapsed().as_secs_f64();
    let picked = tally.sample.take();
    let sheet = tally.sheet.take();
    let mut report = report::build(&dataset, tally, args.filter.as_deref(), images)?;
    if !args.against.is_empty() {
        let pairs = ctx
            .run
            .as_ref()
            .map(|r| r.path().join("contamination.jsonl"));
        let started = std::time::Instant::now();
        let found = contamination::scan(&dataset, &args.against, pairs.as_deref())?;
        tracing::info!(
            "contamination: {} exact and {} near copies of {} benchmark images ({} found) \
             among {} training images in {:.1}s",
            found.exact,
            found.near,
            found.bench_images,
            found.bench_images_found,
            found.train_images,
            started.elapsed().as_secs_f64()
        );
        if let Some(run) = &mut ctx.run {
            run.set_count("contamination_exact", found.exact);
            run.set_count("contamination_near", found.near);
        }
        report.contamination = Some(found);
    }
    tracing::info!(
        "inspected {} rows in {elapsed:.2}s ({:.0} rows/s)",
        report.totals.rows,
        report.totals.rows as f64 / elapsed.max(1e-9)
    );

    if let Some(run) = &mut ctx.run {
        run.write_json("report.json", &report)?;
        run.set_count("inputs", report.totals.inputs);
        run.set_count("failed_inputs", report.totals.failed_inputs);
        run.set_count("rows", report.totals.rows);
        run.set_count("matched_rows", report.totals.matched_rows);
        run.set_count("images", report.images.as_ref().map_or(0, |i| i.count));
        run.set_count("seconds", (elapsed * 1000.0).round() / 1000.0);
    }
    if let Some(dir) = &args.plots {
        let written = plots::write_all(dir, &report, &sheet, ctx.seed)?;
        tracing::info!("wrote {} plots to {}", written.len(), dir.display());
    }
    match args.sample {
        Some(_) => print_records(&picked, ctx)?,
        None if ctx.json => print(&(serde_json::to_string_pretty(&report)? + "\n"))?,
        None => print(&render::table(&report))?,
    }
    let failures = report
        .failures
        .iter()
        .map(|f| (f.input.clone(), f.error.clone()))
        .collect();
    finish_failures(ctx, failures, report.totals.failed_inputs, total_inputs)
}

fn print_records(samples: &[crate::core::data::Sample], ctx: &Context) -> Result<()> {
    let mut out = String::new();
    for (n, s) in samples.iter().enumerate() {
        if ctx.json {
            out.push_str(&serde_json::to_string(&records::record_json(s))?);
            out.push('\n');
        } else {
            out.push_str(&records::render_record(n + 1, samples.len(), s, 100));
            out.push('\n');
        }
    }
    print(&out)
}
