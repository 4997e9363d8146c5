//! `mt convert`: between dataset, benchmark, medical-image and checkpoint formats.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{Context, finish_failures, print};
use crate::core::error::{Failure, usage};
use crate::core::eval::Bench;
use crate::core::eval::vqa::{self, LoadOptions};
use crate::core::eval::vqa_export::{self, ExportOptions};

const EXAMPLES: &str = "\
Examples:
  mt convert vqa --bench slake --input data/Slake1.0 --split test -o slake_test.json
  mt convert vqa --bench pathvqa --input data/path-vqa --images-out pvqa_images -o pvqa_test.json
  mt convert llava data/25M_demo -o medtrinity_demo.jsonl --images-out images/
  mt convert image scans/ -o pngs/
  mt convert merge-lora --model base/ --adapter runs/finetune-x/adapter -o merged/";

/// Convert between dataset, benchmark, medical-image and checkpoint formats.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: ConvertCommand,
}

#[derive(Debug, clap::Subcommand, Serialize)]
pub enum ConvertCommand {
    /// VQA-RAD, SLAKE or PathVQA (released files or hub parquet) -> LLaVA eval JSON.
    Vqa(VqaArgs),
    /// MedTrinity shards <-> LLaVA conversation JSON/JSONL + image files.
    Llava(PlannedArgs),
    /// Image folders / LLaVA JSON -> HF-style parquet shards.
    Parquet(PlannedArgs),
    /// Datasets -> webdataset tar shards.
    Wds(PlannedArgs),
    /// DICOM / NIfTI -> PNG/JPEG with metadata.
    Image(PlannedArgs),
    /// Merge a LoRA adapter into its base checkpoint.
    MergeLora(PlannedArgs),
    /// Build the BM25 index of a knowledge corpus.
    KnowledgeIndex(PlannedArgs),
}

const VQA_HELP: &str = "\
Layouts read (found from what --input holds):
  vqa-rad   `VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/` (test = phrase_type
            test_freeform/test_para, train = the rest), or the hub parquet copy
            (flaviagiammarino/vqa-rad: data/{train,test}-*.parquet)
  slake     train.json / validate.json (or validation.json) / test.json + imgs/
            (English questions unless --all-languages)
  pathvqa   qas/{train,val,test}/<split>_qa.pkl + images/<split>/ (pvqa/ inside --input
            works too), or the hub parquet copy (flaviagiammarino/path-vqa)
Output: a JSON array in the LLaVA eval layout, {id, image, conversations: [human
\"<image>\\nQ\", gpt \"A\"], answer_type} plus the dataset's own fields (SLAKE modality,
location, content_type; VQA-RAD image_organ, question_type), one record per line.
Closed/open is the dataset's answer_type; without one (PathVQA, hub parquet) a question
is CLOSED iff its answer is yes or no. Questions without ids are numbered 0, 1, ...
in file order. Images embedded in parquet need --images-out (written once each, named
by content hash); with files, --images-out copies them beside the JSON.

Example:
  mt convert vqa --bench vqa-rad --input data/vqa_rad --split test -o vqa_rad_test.json";

/// `mt convert vqa`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = VQA_HELP)]
pub struct VqaArgs {
    /// Benchmark.
    #[arg(long, value_parser = ["vqa-rad", "slake", "pathvqa"])]
    pub bench: String,
    /// Dataset folder (or file) in a released or hub layout.
    #[arg(long)]
    pub input: PathBuf,
    /// Split: train, validation or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Output JSON (`-` = stdout).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Write the images here (needed for parquet copies; copies files otherwise).
    #[arg(long, value_name = "DIR")]
    pub images_out: Option<PathBuf>,
    /// SLAKE: keep the Chinese questions too.
    #[arg(long)]
    pub all_languages: bool,
}

/// Arguments of converters still to be built.
#[derive(Debug, clap::Args, Serialize)]
pub struct PlannedArgs {
    /// Inputs.
    pub inputs: Vec<PathBuf>,
    /// Output file or folder.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Fails with exit 2 for the converters not built yet (before a run dir is made).
pub fn is_implemented(args: &Args) -> Result<()> {
    let name = match args.command {
        ConvertCommand::Vqa(_) => return Ok(()),
        ConvertCommand::Llava(_) => "convert llava",
        ConvertCommand::Parquet(_) => "convert parquet",
        ConvertCommand::Wds(_) => "convert wds",
        ConvertCommand::Image(_) => "convert image",
        ConvertCommand::MergeLora(_) => "convert merge-lora",
        ConvertCommand::KnowledgeIndex(_) => "convert knowledge-index",
    };
    Err(Failure::NotImplemented(name).into())
}

/// Runs `mt convert`.
pub fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    is_implemented(args)?;
    match &args.command {
        ConvertCommand::Vqa(a) => convert_vqa(a, ctx),
        _ => unreachable!("checked above"),
    }
}

fn convert_vqa(a: &VqaArgs, ctx: &mut Context) -> Result<()> {
    let bench: Bench = a.bench.parse()?;
    let opts = LoadOptions {
        all_languages: a.all_languages,
        image_folder: None,
    };
    let loaded = vqa::load(bench, &a.input, &a.split, &opts)?;
    if loaded.questions.is_empty() {
        return Err(usage(format!(
            "{}: no {} {} questions found ({})",
            a.input.display(),
            bench.name(),
            a.split,
            loaded.layout
        )));
    }
    let export = ExportOptions {
        images_out: a.images_out.as_deref(),
    };
    let result = vqa_export::export(&loaded.questions, &export)?;
    let json = vqa_export::to_json_lines(&result.records)?;
    if a.output == Path::new("-") {
        print(&json)?;
    } else {
        crate::core::run::write_atomic(&a.output, json.as_bytes())
            .with_context(|| format!("{}: cannot write", a.output.display()))?;
    }
    let closed = loaded
        .questions
        .iter()
        .filter(|q| q.answer_type == vqa::AnswerType::Closed)
        .count();
    tracing::info!(
        layout = loaded.layout,
        questions = loaded.questions.len(),
        open = loaded.questions.len() - closed,
        closed,
        images_written = result.images_written,
        "{} {}: {} questions from the {}{}",
        bench.name(),
        a.split,
        loaded.questions.len(),
        loaded.layout,
        match (&result.image_root, a.output == Path::new("-")) {
            (Some(root), _) => format!("; images relative to {} (--image-folder)", root.display()),
            _ => String::new(),
        }
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("questions", loaded.questions.len());
        run.set_count("closed", closed);
        run.set_count("images_written", result.images_written);
        run.set_count("rejected_rows", loaded.rejected.len());
        run.set_count("missing_images", result.missing.len());
    }
    let mut failures: Vec<(String, String)> = loaded
        .rejected
        .iter()
        .map(|r| (format!("{}: {}", r.file, r.at), r.to_string()))
        .collect();
    failures.extend(result.missing.iter().map(|(id, path)| {
        (
            format!("question {id}"),
            format!("question {id}: image {} does not exist", path.display()),
        )
    }));
    let failed = failures.len();
    finish_failures(
        ctx,
        failures,
        failed,
        loaded.questions.len() + loaded.rejected.len(),
    )
}
