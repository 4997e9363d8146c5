//! `mt convert`: between dataset, benchmark, medical-image and checkpoint formats.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::args::{BenchArg, ModelArgs, QuantArg, parse_size};
use super::{Context, finish_failures, print};
use crate::core::convert::llava_out::{self as llava, LlavaOptions, LlavaSink};
use crate::core::convert::parquet_out::{ShardOptions, ShardWriter};
use crate::core::convert::select::{self, SelectOptions, Selection, SplitSpec, Stratum};
use crate::core::convert::wds::{WdsOptions, WdsWriter};
use crate::core::convert::{RecordSink, Stats, write_records};
use crate::core::data::filter::Filter;
use crate::core::data::{Dataset, ReadOptions, inputs};
use crate::core::error::usage;
use crate::core::knowledge::{self, BuildOptions};
use crate::core::progress;
use crate::core::vqa::Bench;
use crate::core::vqa::export::{self as vqa_export, ExportOptions};
use crate::core::vqa::questions::{self as vqa, LoadOptions};

const EXAMPLES: &str = "\
Examples:
  mt convert vqa --bench slake --data data/Slake1.0 --split test -o slake_test.json
  mt convert vqa --bench pathvqa --data data/path-vqa --images-out pvqa_images -o pvqa_test.json
  mt convert llava data/25M_demo -o medtrinity_demo.jsonl --images-out images/
  mt convert image scans/ -o pngs/
  mt convert merge-lora --model base/ --adapter runs/finetune-x/adapter -o merged/
  mt convert knowledge-index knowledge/passages.jsonl";

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
    /// MedTrinity shards, LLaVA files or image folders -> LLaVA conversation JSON/JSONL + image files.
    Llava(LlavaArgs),
    /// Image folders, LLaVA files or MedTrinity shards -> HF-style parquet shards.
    Parquet(ParquetArgs),
    /// Image folders, LLaVA files or MedTrinity shards -> WebDataset tar shards.
    Wds(WdsArgs),
    /// DICOM / NIfTI -> PNG/JPEG with metadata.
    Image(super::convert_image::ImageArgs),
    /// Join the shard outputs of `mt caption --shard I/N` into one file.
    Merge(super::convert_merge::MergeArgs),
    /// Merge a LoRA adapter into its base checkpoint.
    MergeLora(MergeLoraArgs),
    /// A checkpoint's language model -> a llama.cpp GGUF file (f32, f16 or quantized).
    Gguf(GgufArgs),
    /// Build the BM25 index of a knowledge corpus.
    KnowledgeIndex(KnowledgeIndexArgs),
}

const VQA_HELP: &str = "\
Layouts read (found from what --data holds):
  vqa-rad   `VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/` (test = phrase_type
            test_freeform/test_para, train = the rest), or the hub parquet copy
            (flaviagiammarino/vqa-rad: data/{train,test}-*.parquet)
  slake     train.json / validate.json (or validation.json) / test.json + imgs/
            (English questions unless --all-languages)
  pathvqa   qas/{train,val,test}/<split>_qa.pkl + images/<split>/ (pvqa/ inside --data
            works too), or the hub parquet copy (flaviagiammarino/path-vqa)
Output: a JSON array in the LLaVA eval layout, {id, image, conversations: [human
\"<image>\\nQ\", gpt \"A\"], answer_type} plus the dataset's own fields (SLAKE modality,
location, content_type; VQA-RAD image_organ, question_type), one record per line.
Closed/open is the dataset's answer_type; without one (PathVQA, hub parquet) a question
is CLOSED iff its answer is yes or no. Questions without ids are numbered 0, 1, ...
in file order. Images embedded in parquet need --images-out (written once each, named
by content hash); with files, --images-out copies them beside the JSON.

Example:
  mt convert vqa --bench vqa-rad --data data/vqa_rad --split test -o vqa_rad_test.json";

/// `mt convert vqa`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = VQA_HELP)]
pub struct VqaArgs {
    /// Benchmark.
    #[arg(long, value_enum)]
    pub bench: BenchArg,
    /// Dataset folder (or file) in a released or hub layout.
    #[arg(long, visible_alias = "input")]
    pub data: PathBuf,
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

const LLAVA_HELP: &str = "\
Reads anything `mt inspect` reads: 25M_demo parquet (images embedded), 25M_full
manifests with their .tar.zst image shards (members written under their own names),
LLaVA JSON/JSONL, image folders. Each record becomes {id, image, conversations: [human
\"<image>\\n<instruction>\", gpt <caption>], source, ...other fields}. Images are written
under --images-out (their own file name when they have a safe one, else <id>.<ext>);
without it, records keep the paths they had, and embedded images are an error.
-o *.jsonl (or -) resumes: ids already there are skipped, a line cut by a crash is
dropped. -o *.json writes a JSON array, renamed into place when complete. Records
without a caption or image are listed and skipped (exit 3).

Selection (llava, parquet, wds): --filter keeps what a SQL clause keeps, --exclude-matches
drops the training ids of `mt inspect --against`'s contamination.jsonl, --limit keeps the
first N left. --split sends each record to a split by a hash of its id alone (FNV-1a then
splitmix64, over 2^64, against the cumulative fractions), so a rerun or a grown dataset
keeps every record in its split; one file per split (demo.jsonl -> demo.train.jsonl),
one set of shards per split for parquet and wds (train-00000-of-00002.parquet). With
--stratify the cuts are each modality's (organ's) own hash quantiles, so each group is
split in the fractions exactly; a grown dataset then moves only records near a cut.

Examples:
  mt convert llava data/25M_demo -o demo.jsonl --images-out demo_images
  mt convert llava data/25M_demo -o ct.jsonl --images-out img --filter \"modality = 'CT'\" \\
      --split train:0.95,val:0.05 --stratify organ --parts
  mt --seed 7 convert llava data/25M_full -o stage1.jsonl --images-out img --instructions brief.txt";

/// Inputs, output and image folder of the dataset converters.
#[derive(Debug, clap::Args, Serialize)]
pub struct DataIo {
    /// Shards, folders, globs, LLaVA files, image folders.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output: a .jsonl (resumable, `-` = stdout) or .json file for `llava`, a folder
    /// for `parquet` and `wds`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where image names in manifests / LLaVA records resolve (folder or .tar.zst shards).
    #[arg(
        long = "image-folder",
        visible_alias = "images",
        value_name = "DIR|ARCHIVES"
    )]
    pub images: Option<PathBuf>,
}

/// Which records the dataset converters write, and into which splits.
#[derive(Debug, clap::Args, Serialize)]
pub struct SelectArgs {
    /// Only the records this SQL WHERE clause keeps (as `mt inspect --filter`; the caption
    /// parts modality, organ, roi_location, roi_area, texture, relations can be used too).
    #[arg(long, value_name = "SQL")]
    pub filter: Option<String>,
    /// Split the records by a hash of their id: NAME:FRACTION,... (train:0.9,test:0.1);
    /// fractions summing under 1 leave the rest out (a deterministic sample). A NAME alone
    /// puts every record in that split (parquet's file prefix is `train` without).
    #[arg(long, value_name = "NAME:FRACTION,...")]
    pub split: Option<SplitSpec>,
    /// Cut each modality (or organ) group in the --split fractions exactly.
    #[arg(long, requires = "split")]
    pub stratify: Option<Stratum>,
    /// Write at most this many records (after --filter, --exclude-matches and --split, in
    /// input order).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Leave out the training records a contamination report lists
    /// (contamination.jsonl of `mt inspect --against`).
    #[arg(long, value_name = "FILE")]
    pub exclude_matches: Option<PathBuf>,
    /// Write the six MedTrinity caption parts as fields (columns in parquet): modality,
    /// organ, roi_location, roi_area, texture, relations.
    #[arg(long)]
    pub parts: bool,
}

impl SelectArgs {
    /// The selection these options ask for.
    fn options(&self) -> Result<SelectOptions> {
        Ok(SelectOptions {
            filter: self.filter.as_deref().map(Filter::parse).transpose()?,
            exclude: match &self.exclude_matches {
                Some(path) => select::read_exclusions(path)?,
                None => Default::default(),
            },
            limit: self.limit,
            split: self.split.clone(),
            stratify: self.stratify,
        })
    }

    /// The split names outputs are made for (one unnamed output without --split).
    fn names(&self) -> Vec<Option<String>> {
        match &self.split {
            Some(spec) => spec.names.iter().cloned().map(Some).collect(),
            None => vec![None],
        }
    }
}

/// `mt convert llava`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = LLAVA_HELP)]
pub struct LlavaArgs {
    #[command(flatten)]
    pub io: DataIo,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Write the images here.
    #[arg(long, value_name = "DIR")]
    pub images_out: Option<PathBuf>,
    /// The human turn after `<image>\n`.
    #[arg(long, default_value = "Describe the image in detail.")]
    pub instruction: String,
    /// A pool of human turns, one drawn per record (by the global --seed and the record's
    /// id): a text file of one instruction a line, or a JSON array of strings.
    #[arg(long, value_name = "FILE", conflicts_with = "instruction")]
    pub instructions: Option<PathBuf>,
}

const PARQUET_HELP: &str = "\
Writes <split>-NNNNN-of-MMMMM.parquet shards in the MedTrinity 25M_demo / HF layout: id,
image (struct of bytes and path: the `datasets` Image feature), caption, source, with
the `huggingface` schema metadata. Row groups close at ~--row-group-size, shards at
~--shard-size. Resumable: complete shards survive a crash and their ids are skipped on
rerun. LLaVA records give their gpt turns as the caption (the way back from `mt convert
llava`). Records without caption or image bytes are listed and skipped (exit 3).

Example:
  mt convert parquet demo.jsonl --image-folder demo_images -o demo_parquet/";

/// `mt convert parquet`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = PARQUET_HELP)]
pub struct ParquetArgs {
    #[command(flatten)]
    pub io: DataIo,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Target row group size (bytes, or with KB/MB/GB).
    #[arg(long, default_value = "100MB", value_parser = parse_size)]
    pub row_group_size: u64,
    /// Target shard size (bytes, or with KB/MB/GB).
    #[arg(long, default_value = "500MB", value_parser = parse_size)]
    pub shard_size: u64,
}

const WDS_HELP: &str = "\
Writes <prefix>-NNNNNN.tar (or .tar.zst with --zstd) shards: per record <key>.<ext> (the
image bytes unchanged), <key>.txt (caption) and <key>.json ({id, source, image_name,
...other fields}). Keys are the ids with characters other than [A-Za-z0-9_-] replaced
and, when that changed anything, a short hash of the id appended (WebDataset splits keys
at the first dot). Shards close at --shard-records records or --shard-size bytes.
Resumable: complete shards survive a crash and their ids are skipped on rerun. mt reads
these shards back (mt inspect, mt convert llava/parquet) with the original ids.

Example:
  mt convert wds data/25M_demo -o demo_wds/ --shard-records 5000 --zstd";

/// `mt convert wds`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = WDS_HELP)]
pub struct WdsArgs {
    #[command(flatten)]
    pub io: DataIo,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Shard file name prefix (with --split, each split's name).
    #[arg(long, default_value = "train", conflicts_with = "split")]
    pub prefix: String,
    /// Records per shard at most.
    #[arg(long, default_value_t = 10_000)]
    pub shard_records: usize,
    /// Shard size at most (bytes, or with KB/MB/GB).
    #[arg(long, default_value = "1GB", value_parser = parse_size)]
    pub shard_size: u64,
    /// zstd-compress the shards (.tar.zst).
    #[arg(long)]
    pub zstd: bool,
}

const KNOWLEDGE_HELP: &str = "\
The corpus: JSON Lines, one passage a line: {\"id\": string or integer, \"text\": string,
\"title\": string, \"source\": string} (title and source optional, other fields ignored,
blank lines skipped). Ids must be unique across the files. A bad line or a repeated id
stops the build with FILE:LINE and the field at fault.
The index: a tantivy folder (BM25 over title and text, title words count twice; English
analysis: lower case, accents folded, stop words removed, stems) with mt-knowledge.json
recording the corpus files (path, size, modification time), the passage count and the
versions. It is built in a temporary folder beside the output and renamed into place
when complete, so a killed build never leaves a half index. Rerunning with unchanged
corpus files does nothing; a changed file (size or time) rebuilds. `mt caption
--knowledge CORPUS.jsonl` builds the default index itself when it is missing or stale.

Examples:
  mt convert knowledge-index knowledge/passages.jsonl          -> knowledge/passages.jsonl.bm25/
  mt convert knowledge-index pubmed.jsonl textbooks.jsonl -o kb.bm25 --memory 1GB
  mt --json convert knowledge-index passages.jsonl --force";

/// `mt convert knowledge-index`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = KNOWLEDGE_HELP)]
pub struct KnowledgeIndexArgs {
    /// Passage files (JSONL of {id, text, title?, source?}), indexed in this order.
    #[arg(required = true, value_name = "CORPUS.jsonl")]
    pub corpus: Vec<PathBuf>,
    /// Index folder [default: <first corpus>.bm25].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Indexing memory, all threads together (bytes, or with KB/MB/GB; at least 15MB).
    #[arg(long, default_value = "256MB", value_parser = parse_size)]
    pub memory: u64,
    /// Rebuild even when the index is up to date.
    #[arg(long)]
    pub force: bool,
}

/// `mt convert merge-lora`.
#[derive(Debug, clap::Args, Serialize)]
#[command(
    mut_arg("model", |a| a.help("The base checkpoint the adapter was trained on (original LLaVA layout)")),
    mut_arg("vision_tower", |a| a.help("CLIP tower folder when the base checkpoint does not carry or find one")),
    mut_arg("dtype", |a| a.help("Weights dtype of the output (default: the base config's)")),
)]
pub struct MergeLoraArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// The adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Output checkpoint folder.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `mt convert`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    match &args.command {
        ConvertCommand::Vqa(a) => convert_vqa(a, ctx),
        ConvertCommand::Llava(a) => convert_llava(a, ctx),
        ConvertCommand::Parquet(a) => convert_parquet(a, ctx),
        ConvertCommand::Image(a) => super::convert_image::run(a, ctx),
        ConvertCommand::Merge(a) => super::convert_merge::run(a, ctx),
        ConvertCommand::Wds(a) => convert_wds(a, ctx),
        ConvertCommand::KnowledgeIndex(a) => knowledge_index(a, ctx),
        ConvertCommand::MergeLora(a) => merge_lora(a, ctx),
        ConvertCommand::Gguf(a) => gguf(a, ctx),
    }
}

/// `mt convert gguf`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = "\
Writes the language model as llama.cpp's convert_hf_to_gguf.py does (architecture `llama`,
its tokenizer and chat template, query/key rows in GGML's order), for llama.cpp, Ollama and
LM Studio. Llama-family checkpoints with a byte-level BPE tokenizer (Llama 3's).

Example:
  mt convert gguf --model checkpoints/llava-med-pp -o llava-med-pp-q4k.gguf --type q4k")]
pub struct GgufArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Output .gguf file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Format of the matrices (norms stay f32): f32, f16, or a --quantize type (the
    /// token embeddings and LM head too).
    #[arg(long = "type", value_name = "TYPE", default_value = "f16", value_parser = parse_gguf_type)]
    #[serde(serialize_with = "gguf_type_text")]
    pub kind: GgufType,
}

/// `--type` of `mt convert gguf`.
#[derive(Debug, Clone, Copy)]
pub enum GgufType {
    /// Dense matrices of this GGML float type.
    Dense(candle_core::quantized::GgmlDType),
    /// Matrices quantized as `--quantize` does.
    Quantized(QuantArg),
}

fn parse_gguf_type(text: &str) -> Result<GgufType, String> {
    use candle_core::quantized::GgmlDType;
    match text {
        "f32" => Ok(GgufType::Dense(GgmlDType::F32)),
        "f16" => Ok(GgufType::Dense(GgmlDType::F16)),
        other => <QuantArg as clap::ValueEnum>::from_str(other, true)
            .map(GgufType::Quantized)
            .map_err(|_| format!("`{other}`: expected f32, f16, q8_0, q6k or q4k")),
    }
}

fn gguf_type_text<S: serde::Serializer>(kind: &GgufType, s: S) -> Result<S::Ok, S::Error> {
    match kind {
        GgufType::Dense(d) => s.serialize_str(&format!("{d:?}").to_lowercase()),
        GgufType::Quantized(q) => q.serialize(s),
    }
}

fn gguf(a: &GgufArgs, ctx: &mut Context) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let dtype = candle_core::DType::F32;
    let mut ckpt = a.model.open(&device, dtype)?;
    let dense = match a.kind {
        GgufType::Dense(d) => d,
        GgufType::Quantized(q) => {
            ckpt.quantize(q.into());
            candle_core::quantized::GgmlDType::F16
        }
    };
    let name = ckpt.name();
    let dir = ckpt.dir.clone();
    let model = ckpt.load()?;
    let tensors =
        crate::core::model::gguf::write_text_model(&model.llm, &dir, &name, dense, &a.output)?;
    let bytes = std::fs::metadata(&a.output)?.len();
    if let Some(run) = &mut ctx.run {
        run.set_count("tensors", tensors);
        run.set_count("bytes", bytes);
    }
    if ctx.json {
        let summary = serde_json::json!({"output": a.output, "tensors": tensors, "bytes": bytes});
        return super::print(&format!("{summary}\n"));
    }
    if !ctx.quiet {
        eprintln!(
            "wrote {} ({tensors} tensors, {:.1} MiB)",
            a.output.display(),
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn merge_lora(a: &MergeLoraArgs, ctx: &mut Context) -> Result<()> {
    let summary = crate::core::train::merge::merge_lora(
        a.model.path(),
        a.model.vision_tower.as_deref(),
        &a.adapter,
        &a.output,
        a.model.dtype.map(candle_core::DType::from),
    )?;
    if let Some(run) = &mut ctx.run {
        run.set_count("merged_layers", summary.merged_layers);
        run.write_json("merge.json", &summary)?;
    }
    if ctx.json {
        return super::print(&format!("{}\n", serde_json::to_string(&summary)?));
    }
    if !ctx.quiet {
        eprintln!(
            "merged {} LoRA layers (scale {}) and {} other tensors into {} ({})",
            summary.merged_layers,
            summary.scale,
            summary.replaced_tensors,
            a.output.display(),
            summary.dtype
        );
    }
    Ok(())
}

fn convert_vqa(a: &VqaArgs, ctx: &mut Context) -> Result<()> {
    let bench = Bench::from(a.bench);
    let opts = LoadOptions {
        all_languages: a.all_languages,
        image_folder: None,
    };
    let loaded = vqa::load(bench, &a.data, &a.split, &opts)?;
    if loaded.questions.is_empty() {
        return Err(usage(format!(
            "{}: no {} {} questions found ({})",
            a.data.display(),
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
        crate::core::files::write_atomic(&a.output, json.as_bytes())
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
        run.set_count("image_problems", result.problems.len());
    }
    let mut failures: Vec<(String, String)> = loaded
        .rejected
        .iter()
        .map(|r| (format!("{}: {}", r.file, r.at), r.to_string()))
        .collect();
    failures.extend(
        result
            .problems
            .iter()
            .map(|(id, why)| (format!("question {id}"), format!("question {id}: {why}"))),
    );
    if ctx.json {
        let json = serde_json::json!({
            "output": a.output,
            "questions": loaded.questions.len(),
            "closed": closed,
            "open": loaded.questions.len() - closed,
            "images_written": result.images_written,
            "failed": failures.len(),
            "failures": super::failure_list(&failures),
        });
        super::summary(ctx, a.output == Path::new("-"), &json, String::new)?;
    }
    let failed = failures.len();
    finish_failures(
        ctx,
        failures,
        failed,
        loaded.questions.len() + loaded.rejected.len(),
    )
}

fn convert_llava(a: &LlavaArgs, ctx: &mut Context) -> Result<()> {
    llava::check_output(&a.io.output)?;
    if a.select.split.is_some() && a.io.output == Path::new("-") {
        return Err(usage(
            "--split writes one file per split: give -o a file name, not -",
        ));
    }
    let instructions = match &a.instructions {
        Some(path) => llava::read_instructions(path)?,
        None => vec![a.instruction.clone()],
    };
    let (dataset, read, open_failures) = open_inputs(&a.io.inputs, a.io.images.as_deref())?;
    let outputs: Vec<PathBuf> = a
        .select
        .names()
        .iter()
        .map(|name| llava::split_path(&a.io.output, name.as_deref()))
        .collect();
    let mut sinks = outputs
        .iter()
        .map(|path| LlavaSink::open(path))
        .collect::<Result<Vec<_>>>()?;
    let mut selection = Selection::new(a.select.options()?, &dataset, &read)?;
    let opts = LlavaOptions {
        instructions,
        seed: ctx.seed,
        parts: a.select.parts,
        images_out: a.images_out.clone(),
    };
    let resumed = sinks.iter().map(LlavaSink::resumed).sum();
    let started = std::time::Instant::now();
    let bar = progress::bar(
        dataset.known_rows(&dataset.units(&[], 1)),
        "rows",
        "converting",
    );
    let stats = llava::convert(&dataset, &read, &mut sinks, &mut selection, &opts, &|n| {
        bar.inc(n)
    })?;
    for sink in sinks {
        sink.finish()?;
    }
    bar.finish_and_clear();
    let run = Finished {
        started,
        resumed,
        output: &a.io.output,
        splits: a.select.names(),
    };
    report(ctx, stats, &dataset, open_failures, run)
}

/// Largest row group: arrow's binary arrays index their bytes with i32 offsets.
const MAX_ROW_GROUP_BYTES: u64 = 1 << 30;

fn convert_parquet(a: &ParquetArgs, ctx: &mut Context) -> Result<()> {
    if a.row_group_size > MAX_ROW_GROUP_BYTES {
        return Err(usage(
            "--row-group-size can be at most 1GB (image bytes of a row group are one arrow array)",
        ));
    }
    let open = |name: Option<&str>| {
        ShardWriter::open(ShardOptions {
            dir: a.io.output.clone(),
            split: name.unwrap_or("train").to_string(),
            row_group_bytes: a.row_group_size as usize,
            shard_bytes: a.shard_size,
            parts: a.select.parts,
        })
    };
    write_shards(ctx, &a.io, &a.select, open)
}

fn convert_wds(a: &WdsArgs, ctx: &mut Context) -> Result<()> {
    if a.shard_records == 0 {
        return Err(usage("--shard-records must be at least 1"));
    }
    let open = |name: Option<&str>| {
        WdsWriter::open(WdsOptions {
            dir: a.io.output.clone(),
            prefix: name.unwrap_or(&a.prefix).to_string(),
            max_records: a.shard_records,
            max_bytes: a.shard_size,
            zstd: a.zstd,
        })
    };
    write_shards(ctx, &a.io, &a.select, open)
}

/// Streams the inputs' records into the shard writers `open` makes (one per split),
/// then reports.
fn write_shards<W: RecordSink>(
    ctx: &mut Context,
    io: &DataIo,
    select: &SelectArgs,
    open: impl Fn(Option<&str>) -> Result<W>,
) -> Result<()> {
    let (dataset, read, open_failures) = open_inputs(&io.inputs, io.images.as_deref())?;
    let names = select.names();
    let mut writers = names
        .iter()
        .map(|name| open(name.as_deref()))
        .collect::<Result<Vec<W>>>()?;
    let mut selection = Selection::new(select.options()?, &dataset, &read)?;
    let resumed = writers.iter().map(RecordSink::resumed).sum();
    let started = std::time::Instant::now();
    let bar = progress::bar(
        dataset.known_rows(&dataset.units(&[], 1)),
        "rows",
        "converting",
    );
    let mut sinks: Vec<&mut dyn RecordSink> = writers
        .iter_mut()
        .map(|w| w as &mut dyn RecordSink)
        .collect();
    let stats = write_records(
        &dataset,
        &read,
        &mut sinks,
        &mut selection,
        select.parts,
        &|n| bar.inc(n),
    )?;
    let mut shards = 0;
    for writer in writers {
        shards += writer.finish()?;
    }
    bar.finish_and_clear();
    tracing::info!("{shards} shards in {}", io.output.display());
    let run = Finished {
        started,
        resumed,
        output: &io.output,
        splits: names,
    };
    report(ctx, stats, &dataset, open_failures, run)
}

type OpenFailures = Vec<(usize, anyhow::Error)>;

fn open_inputs(
    paths: &[String],
    images: Option<&Path>,
) -> Result<(Dataset, ReadOptions, OpenFailures)> {
    let inputs = inputs::resolve(paths, images)?;
    let read = ReadOptions {
        columns: None,
        batch_rows: 1024,
    };
    let (dataset, failures) = Dataset::open(inputs, &read);
    Ok((dataset, read, failures))
}

/// Logs what a dataset conversion did, records it in the run dir, and turns failed
/// records or inputs into exit 3.
/// What a finished record conversion reports besides its stats.
struct Finished<'a> {
    started: std::time::Instant,
    /// Records the output held before this run.
    resumed: usize,
    output: &'a Path,
    /// The `--split` names (one None without).
    splits: Vec<Option<String>>,
}

fn report(
    ctx: &mut Context,
    mut stats: Stats,
    dataset: &Dataset,
    open_failures: OpenFailures,
    Finished {
        started,
        resumed,
        output,
        splits,
    }: Finished<'_>,
) -> Result<()> {
    let secs = started.elapsed().as_secs_f64();
    let per_split: serde_json::Map<String, serde_json::Value> = splits
        .iter()
        .zip(&stats.per_split)
        .filter_map(|(name, n)| Some((name.clone()?, serde_json::json!(n))))
        .collect();
    if !per_split.is_empty() || stats.filtered_out + stats.excluded > 0 {
        tracing::info!(
            filtered_out = stats.filtered_out,
            excluded = stats.excluded,
            "splits {}; {} records left out by --filter, {} by --exclude-matches{}",
            serde_json::Value::Object(per_split.clone()),
            stats.filtered_out,
            stats.excluded,
            if stats.unsplit > 0 {
                format!(", {} past the last split", stats.unsplit)
            } else {
                String::new()
            }
        );
    }
    tracing::info!(
        records = stats.records,
        skipped_existing = stats.skipped_existing,
        images_written = stats.images_written,
        "converted {} records ({:.0} records/s), {} images written{}",
        stats.records,
        stats.records as f64 / secs.max(1e-9),
        stats.images_written,
        if resumed > 0 {
            format!(", {resumed} already there")
        } else {
            String::new()
        }
    );
    stats.failures.extend(
        open_failures
            .iter()
            .map(|(i, e)| (dataset.inputs[*i].display(), format!("{e:#}"))),
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("records", stats.records);
        run.set_count("skipped_existing", stats.skipped_existing);
        run.set_count("images_written", stats.images_written);
        run.set_count("archive_members", stats.archive_members);
        run.set_count("filtered_out", stats.filtered_out);
        run.set_count("excluded", stats.excluded);
        run.set_count("failed", stats.failures.len());
    }
    if ctx.json {
        let json = serde_json::json!({
            "output": output,
            "records": stats.records,
            "skipped_existing": stats.skipped_existing,
            "images_written": stats.images_written,
            "archive_members": stats.archive_members,
            "splits": per_split,
            "filtered_out": stats.filtered_out,
            "excluded": stats.excluded,
            "unsplit": stats.unsplit,
            "seconds": secs,
            "failed": stats.failures.len(),
            "failures": super::failure_list(&stats.failures),
        });
        super::summary(ctx, output == Path::new("-"), &json, String::new)?;
    }
    let failed = stats.failures.len();
    let total = stats.records + stats.skipped_existing + failed;
    finish_failures(ctx, stats.failures, failed, total)
}

fn knowledge_index(a: &KnowledgeIndexArgs, ctx: &mut Context) -> Result<()> {
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| knowledge::default_index_dir(&a.corpus[0]));
    let opts = BuildOptions {
        memory_bytes: usize::try_from(a.memory).unwrap_or(usize::MAX),
        force: a.force,
    };
    let report = knowledge::build(&a.corpus, &out, &opts)?;
    if let Some(run) = &mut ctx.run {
        run.set_count("passages", report.passages);
        run.set_count("built", u64::from(report.built));
        run.set_count("segments", report.segments);
        run.set_count("index_bytes", report.bytes);
    }
    if ctx.json {
        print(&format!("{}\n", serde_json::to_string(&report)?))?;
    } else if !ctx.quiet {
        let size = format!("{:.1} MB", report.bytes as f64 / 1e6);
        if report.built {
            eprintln!(
                "knowledge-index: {} passages in {:.1} s ({:.0} passages/s), {size} index at {}",
                report.passages,
                report.seconds,
                report.passages as f64 / report.seconds.max(1e-9),
                out.display()
            );
        } else {
            eprintln!(
                "knowledge-index: {} is up to date ({} passages, {size}); --force rebuilds it",
                out.display(),
                report.passages
            );
        }
    }
    Ok(())
}
