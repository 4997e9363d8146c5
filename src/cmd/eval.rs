//! `mt eval`: score answers against ground truth (`mt eval score`), or run and score a
//! checkpoint on VQA-RAD / SLAKE / PathVQA.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use super::args::{
    BenchArg, DecodingArgs, GpusArgs, ModelArgs, QuantizeArgs, ScorerArg, chunk_text, parse_chunk,
};
use super::{Context, GlobalArgs, eval_bench, finish_failures, print};
use crate::core::error::usage;
use crate::core::eval::answers::{align, read_answers};
use crate::core::eval::chunks::Chunk;
use crate::core::eval::{llava_med, multimedeval, report};
use crate::core::files::write_atomic;
use crate::core::vqa::Bench;
use crate::core::vqa::Rejected;
use crate::core::vqa::truth::read_truth;

const EXAMPLES: &str = "\
Examples:
  mt eval score --gt slake_test.json --pred answers.jsonl --bench slake
  mt eval score --gt test.json --pred answers.jsonl --scorer multimedeval --json
  mt eval slake --model ckpts/llava-med-pp-slake --data data/slake --gpu 0,1
  mt eval vqa-rad --model ckpts/llava-med-pp-vqarad --data data/vqa-rad --reference-decoding";

const RUN_HELP: &str = "\
Answers every question of the split with the checkpoint as the reference's eval script
does (the llama3 template, \"<image>\\n\" + question; greedy unless asked, see
--reference-decoding), then scores with both scorers. The run directory gets:
  questions.json  the split as ground truth in the LLaVA eval layout
  answers.jsonl   LLaVA answer lines (question order), readable by the Python scorers
  scores.json     both scorers' numbers, the paper's, and the breakdowns
  rows.jsonl      every question with its answer and scores
  report.md       overall vs the paper, by answer type / modality / organ / content
                  type where the benchmark has them, and the 20 worst open answers
  chunks/         each chunk's answer file and, for workers, its run record

Several GPUs (--gpu 0,1,2,3) or --chunks N: one worker process per contiguous chunk,
merged at the end. Rerunning the same command with --run-dir DIR resumes: only the
questions without an answer are generated (after kill -9 too); a different checkpoint
(path, or files changed at the same path), data, edited questions, split, decoding or
chunk count is refused. For Slurm arrays or several machines,
each task runs --chunk $SLURM_ARRAY_TASK_ID/N --run-dir SHARED; one more run without
--chunk in SHARED merges and scores. Questions whose image cannot be read are listed and
skipped (exit 3 at the end).

Examples:
  mt eval slake --model ckpts/llava-med-pp-slake --data data/slake --gpu 0 --run-dir runs/slake
  mt eval pathvqa --model ckpts/pp-pathvqa --data data/path-vqa --gpu 0,1,2,3,4,5,6,7
  mt eval vqa-rad --model testdata/models/tiny-llava --data testdata/vqa/vqa-rad --cpu --max-new-tokens 8";

const SCORE_HELP: &str = "\
Scorers:
  llava-med     run_eval_nocandi.py of the MedTrinity-25M repository, quirk for quirk: OPEN
                rows get exact match, F1/precision/recall on normalised words and NLTK BLEU;
                CLOSED rows get F1/precision/recall and yes/no accuracy (`gt in pred` on the
                lower-cased strings). The paper's Open is recall, its Closed is yes/no
                accuracy. Rows without answer_type count as OPEN.
  multimedeval  VQA.evaluate of multimedeval 1.0.0: word sets, unigram BLEU, closed when the
                answer is yes/no (right at recall >= 0.4, `not` counts for `no`), open
                accuracy at recall >= 0.75.
Rows are paired on the ids both files have, in id order. Bad or duplicate rows are
reported and skipped (exit 3 at the end); the rest is scored. The run directory gets
scores.json and rows.jsonl (every question's scores).

Example:
  mt eval score --gt slake_test.json --pred answers.jsonl --bench slake";

/// Score answers, or run and score a checkpoint on a benchmark.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, clap::Subcommand, Serialize)]
pub enum EvalCommand {
    /// Score a LLaVA answer JSONL against ground truth in the LLaVA eval layout.
    Score(ScoreArgs),
    /// Generate answers on SLAKE with a checkpoint and score them.
    Slake(RunArgs),
    /// Generate answers on VQA-RAD with a checkpoint and score them.
    #[command(name = "vqa-rad")]
    VqaRad(RunArgs),
    /// Generate answers on PathVQA with a checkpoint and score them.
    Pathvqa(RunArgs),
}

/// `mt eval score`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = SCORE_HELP)]
pub struct ScoreArgs {
    /// Ground truth: JSON array (or JSONL) of {id, conversations: [human, gpt], answer_type}.
    #[arg(long)]
    pub gt: PathBuf,
    /// Answers: LLaVA answer JSONL (question_id, text, ...).
    #[arg(long)]
    pub pred: PathBuf,
    /// Which reference scoring to reproduce.
    #[arg(long, value_enum, default_value = "llava-med")]
    pub scorer: ScorerArg,
    /// Show the paper's LLaVA-Med++ numbers for this benchmark beside ours.
    #[arg(long, value_enum)]
    pub bench: Option<BenchArg>,
}

/// `mt eval <bench>`.
#[derive(Debug, Clone, clap::Args, Serialize)]
#[command(
    after_help = RUN_HELP,
    mut_arg("max_new_tokens", |a| a
        .default_value("1024")
        .help("Most tokens generated per answer (the reference's 1024)")),
)]
pub struct RunArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub quantize: QuantizeArgs,
    /// Benchmark data: a folder in the released layout or the hub parquet copy, or a
    /// JSON file in the LLaVA eval layout.
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Folder the images of a LLaVA eval JSON are relative to (default: the file's).
    #[arg(long, visible_alias = "images", value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
    /// SLAKE: the Chinese questions too (the paper used the English ones).
    #[arg(long)]
    pub all_languages: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: GpusArgs,
    /// Questions per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub decoding: DecodingArgs,
    /// Decode as the reference's eval script does: sampling at temperature 0.1, top-k
    /// from the checkpoint's generation_config.json (else 50), no top-p.
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub reference_decoding: bool,
    /// Evaluate only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Split the questions into N contiguous chunks, one worker process each (default:
    /// one per --gpu; GPUs are dealt out in turn).
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// Answer only chunk K of N into --run-dir (Slurm arrays, several machines); a
    /// later run without --chunk in the same --run-dir merges and scores.
    #[arg(long, value_name = "K/N", conflicts_with = "chunks", value_parser = parse_chunk)]
    #[serde(serialize_with = "chunk_text")]
    pub chunk: Option<Chunk>,
}

/// Runs `mt eval`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    match &args.command {
        EvalCommand::Score(a) => score(a, ctx),
        EvalCommand::Slake(a) => eval_bench::run(Bench::Slake, a, ctx),
        EvalCommand::VqaRad(a) => eval_bench::run(Bench::VqaRad, a, ctx),
        EvalCommand::Pathvqa(a) => eval_bench::run(Bench::Pathvqa, a, ctx),
    }
}

/// A chunk worker (`--chunk K/N`) keeps its own run record in the shared run directory's
/// `chunks/chunk-K-of-N/`; every other invocation is unchanged.
pub(crate) fn chunk_global_args(global: &GlobalArgs, args: &Args) -> Result<GlobalArgs> {
    let (EvalCommand::Slake(a) | EvalCommand::VqaRad(a) | EvalCommand::Pathvqa(a)) = &args.command
    else {
        return Ok(global.clone());
    };
    let Some(chunk) = a.chunk else {
        return Ok(global.clone());
    };
    let Some(root) = &global.run_dir else {
        return Err(usage(
            "--chunk needs --run-dir: the folder every chunk of this evaluation shares",
        ));
    };
    let mut g = global.clone();
    g.run_dir = Some(chunk.dir(root));
    Ok(g)
}

fn score(a: &ScoreArgs, ctx: &mut Context) -> Result<()> {
    let bench: Option<Bench> = a.bench.map(Bench::from);
    let mut rejected = Vec::new();
    let truth = read_truth(&a.gt, &mut rejected)?;
    let answers = read_answers(&a.pred, &mut rejected)?;
    let rows_read = truth.len() + answers.len() + rejected.len();
    let aligned = align(truth, answers);
    if aligned.pairs.is_empty() {
        // A file of which no record could be read is not in the layout mt expects.
        let files = [
            (
                &a.gt,
                aligned.unmatched_truth,
                "in the LLaVA eval layout? (mt convert vqa writes it)",
            ),
            (
                &a.pred,
                aligned.unmatched_answers,
                "a LLaVA answer JSONL (question_id, text)?",
            ),
        ];
        for (file, readable, layout) in files {
            let name = file.display().to_string();
            let bad: Vec<&Rejected> = rejected.iter().filter(|r| r.file == name).collect();
            if readable == 0 && !bad.is_empty() {
                return Err(usage(format!(
                    "{name}: none of its records could be read ({} rejected; first: {}); is it {layout}",
                    bad.len(),
                    bad[0]
                )));
            }
        }
    }
    if aligned.pairs.is_empty() {
        bail!(
            "no id is in both {} ({} ids) and {} ({} ids)",
            a.gt.display(),
            aligned.unmatched_truth,
            a.pred.display(),
            aligned.unmatched_answers
        );
    }
    let (text, scores, rows) = match a.scorer {
        ScorerArg::Multimedeval => {
            let (s, rows) = multimedeval::score(&aligned);
            (
                report::multimedeval_table(&s),
                to_json(&s)?,
                to_lines(&rows)?,
            )
        }
        ScorerArg::LlavaMed => {
            let (s, rows) = llava_med::score(&aligned);
            if s.n_other_type > 0 {
                tracing::warn!(
                    "{} rows have an answer_type other than OPEN/CLOSED and were skipped, as the reference does",
                    s.n_other_type
                );
            }
            (
                report::llava_med_table(&s, bench),
                to_json(&s)?,
                to_lines(&rows)?,
            )
        }
    };
    if let Some(run) = &mut ctx.run {
        run.write_json("scores.json", &scores)?;
        write_atomic(&run.path().join("rows.jsonl"), rows.as_bytes())?;
        run.set_count("scored", aligned.pairs.len());
        run.set_count("rejected_rows", rejected.len());
    }
    if ctx.json {
        print(&format!("{}\n", serde_json::to_string(&scores)?))?;
    } else {
        print(&text)?;
    }
    let failed = rejected.len();
    let failures = rejected
        .into_iter()
        .map(|r| (format!("{}: {}", r.file, r.at), r.to_string()))
        .collect();
    finish_failures(ctx, failures, failed, rows_read)
}

fn to_json(value: &impl Serialize) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(value)?)
}

fn to_lines<T: Serialize>(rows: &[T]) -> Result<String> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    Ok(out)
}
