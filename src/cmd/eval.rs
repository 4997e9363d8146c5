//! `mt eval`: score answers against ground truth (`mt eval score`), or run and score a
//! checkpoint on VQA-RAD / SLAKE / PathVQA.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use super::{Context, finish_failures, print};
use crate::core::error::{Failure, usage};
use crate::core::eval::answers::{align, read_answers, read_truth};
use crate::core::eval::{Bench, llava_med, multimedeval, report};
use crate::core::run::write_atomic;

const EXAMPLES: &str = "\
Examples:
  mt eval score --gt slake_test.json --pred answers.jsonl --bench slake
  mt eval score --gt test.json --pred answers.jsonl --scorer multimedeval --json
  mt eval slake --ckpt ckpts/llava-med-pp-slake --data data/slake --gpu 0,1";

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
    #[arg(long, value_parser = ["llava-med", "multimedeval"], default_value = "llava-med")]
    pub scorer: String,
    /// Show the paper's LLaVA-Med++ numbers for this benchmark beside ours.
    #[arg(long, value_parser = ["vqa-rad", "slake", "pathvqa"])]
    pub bench: Option<String>,
}

/// `mt eval <bench>`.
#[derive(Debug, clap::Args, Serialize)]
pub struct RunArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    /// Benchmark data folder (released layout or hub parquet).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// GPU indices, one worker process each.
    #[arg(long, value_delimiter = ',')]
    pub gpu: Vec<usize>,
    /// Run on the CPU.
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
    /// Questions per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Evaluate only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Whether this invocation does work worth a run directory (`score`), or is a
/// benchmark run that does not exist yet.
pub fn is_implemented(args: &Args) -> Result<()> {
    match args.command {
        EvalCommand::Score(_) => Ok(()),
        _ => Err(Failure::NotImplemented(
            "eval <bench> (generate + score); generate answers with `mt caption` and score them with `mt eval score`",
        )
        .into()),
    }
}

/// Runs `mt eval`.
pub fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    is_implemented(args)?;
    let EvalCommand::Score(a) = &args.command else {
        unreachable!("checked above")
    };
    score(a, ctx)
}

fn score(a: &ScoreArgs, ctx: &mut Context) -> Result<()> {
    let bench: Option<Bench> = a.bench.as_deref().map(str::parse).transpose()?;
    let mut rejected = Vec::new();
    let truth = read_truth(&a.gt, &mut rejected)?;
    let answers = read_answers(&a.pred, &mut rejected)?;
    let rows_read = truth.len() + answers.len() + rejected.len();
    let aligned = align(truth, answers);
    if aligned.pairs.is_empty() && aligned.unmatched_truth == 0 && !rejected.is_empty() {
        return Err(usage(format!(
            "{}: none of its records could be read ({} rejected; first: {}); is it in the LLaVA eval layout? (mt convert vqa writes it)",
            a.gt.display(),
            rejected
                .iter()
                .filter(|r| r.file == a.gt.display().to_string())
                .count(),
            rejected[0]
        )));
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
    let (text, scores, rows) = match a.scorer.as_str() {
        "multimedeval" => {
            let (s, rows) = multimedeval::score(&aligned);
            (
                report::multimedeval_table(&s),
                to_json(&s)?,
                to_lines(&rows)?,
            )
        }
        _ => {
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
