//! The command line: global flags, the subcommand list, and the run-directory lifecycle
//! around each command. Each subcommand lives in its own file and holds no algorithm.

pub(crate) mod args;
pub(crate) mod caption;
pub(crate) mod chat;
pub mod completions;
pub(crate) mod convert;
pub(crate) mod convert_image;
pub(crate) mod convert_merge;
pub(crate) mod download;
pub(crate) mod eval;
pub(crate) mod eval_bench;
pub(crate) mod finetune;
pub(crate) mod inspect;
pub(crate) mod replay;
pub(crate) mod roi;
pub(crate) mod serve;
pub(crate) mod train;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;

use self::eval::EvalCommand;
use crate::core::error::{Failure, exit_code};
use crate::core::logging::LogSink;
use crate::core::run::{DEFAULT_RUNS_DIR, Outcome, RunDir};

const ABOUT: &str = "One fast, reproducible binary for the MedTrinity-25M workflow: data, ROIs, captions, \
training and evaluation of LLaVA-Med++ models.";

const EXAMPLES: &str = "\
Examples:
  mt inspect testdata/medtrinity-demo            statistics of the bundled demo shards
  mt inspect 'data/25M_demo/*.parquet' --plots figs
  mt download UCSC-VLAA/MedTrinity-25M --repo-type dataset --config 25M_demo
  mt eval slake --model ckpts/llava-med-pp-slake --data data/slake
  mt completions bash > ~/.local/share/bash-completion/completions/mt
  mt replay runs/inspect-20261127T190000Z-3fa2c1  run a recorded command again

Every command that does work writes a run directory (runs/<cmd>-<time>-<id>/ with
run.json, log.jsonl and its outputs) unless --no-run-dir is given.
Exit codes: 0 success, 1 error, 2 usage error, 3 finished but some inputs failed.";

/// `mt`: the MedTrinity-25M toolkit.
#[derive(Debug, Parser)]
#[command(name = "mt", version, about = ABOUT, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// The global flags.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes, listed under their own heading in every `--help`.
#[derive(Debug, Clone, clap::Args, Serialize)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only) and no progress bars.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Write the run directory here instead of `runs/<cmd>-<time>-<id>/`.
    #[arg(long, value_name = "DIR", global = true)]
    pub run_dir: Option<PathBuf>,
    /// Do not write a run directory.
    #[arg(long, global = true, conflicts_with = "run_dir")]
    pub no_run_dir: bool,
    /// Seed for every random choice (sampling, shuffling, initialisation).
    #[arg(long, default_value_t = 0, global = true)]
    pub seed: u64,
}

/// The subcommands, one variant each, named as typed (`Download` is `mt download`).
/// The variants have no doc comments on purpose: clap would take them as the
/// subcommands' help in place of the doc comments and `long_about` of their `Args`.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum Command {
    Download(download::Args),
    Inspect(inspect::Args),
    Convert(convert::Args),
    Roi(roi::Args),
    Caption(caption::Args),
    Chat(chat::Args),
    Serve(serve::Args),
    Train(train::Args),
    Finetune(finetune::Args),
    Eval(eval::Args),
    Completions(completions::Args),
    Replay(replay::Args),
}

/// What a running command can use besides its own arguments.
pub(crate) struct Context {
    pub json: bool,
    /// `-q`: no summaries on stderr, warnings and errors only.
    pub quiet: bool,
    pub seed: u64,
    pub run: Option<RunDir>,
    /// Whether the run directory was named with `--run-dir` (not a fresh one).
    pub explicit_run_dir: bool,
}

/// Runs the parsed command line. `argv` is recorded in run.json.
pub fn execute(cli: Cli, argv: Vec<String>, log: &LogSink) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Completions(a) => completions::run(&a),
        Command::Replay(a) => replay::run(&a, g.json, log),
        Command::Inspect(a) => {
            with_run_dir("inspect", &a, g, argv, log, |ctx| inspect::run(&a, ctx))
        }
        Command::Download(a) => {
            with_run_dir("download", &a, g, argv, log, |ctx| download::run(&a, ctx))
        }
        Command::Convert(a) => {
            with_run_dir("convert", &a, g, argv, log, |ctx| convert::run(&a, ctx))
        }
        Command::Roi(a) => with_run_dir("roi", &a, g, argv, log, |ctx| roi::run(&a, ctx)),
        Command::Caption(mut a) => {
            if !a.dry_run {
                a.model.resolve_hub()?;
            }
            with_run_dir("caption", &a, g, argv, log, |ctx| caption::run(&a, ctx))
        }
        Command::Chat(mut a) => {
            a.answering.model.resolve_hub()?;
            with_run_dir("chat", &a, g, argv, log, |ctx| chat::run(&a, ctx))
        }
        Command::Serve(mut a) => {
            a.answering.model.resolve_hub()?;
            with_run_dir("serve", &a, g, argv, log, |ctx| serve::run(&a, ctx))
        }
        Command::Train(mut a) => {
            a.training.model.resolve_hub()?;
            let g = &train::rank_global_args(g, a.training.plan)?;
            with_run_dir("train", &a, g, argv, log, |ctx| train::run(&a, ctx))
        }
        Command::Finetune(mut a) => {
            a.training.model.resolve_hub()?;
            let g = &train::rank_global_args(g, a.training.plan)?;
            with_run_dir("finetune", &a, g, argv, log, |ctx| finetune::run(&a, ctx))
        }
        Command::Eval(mut a) => {
            if let EvalCommand::Slake(r) | EvalCommand::VqaRad(r) | EvalCommand::Pathvqa(r) =
                &mut a.command
            {
                r.model.resolve_hub()?;
            }
            let g = &eval::chunk_global_args(g, &a)?;
            with_run_dir("eval", &a, g, argv, log, |ctx| eval::run(&a, ctx))
        }
    }
}

/// Creates the run directory (unless `--no-run-dir`), attaches the log file, runs `f`
/// and records how it ended.
fn with_run_dir<A: Serialize>(
    name: &str,
    args: &A,
    global: &GlobalArgs,
    argv: Vec<String>,
    log: &LogSink,
    f: impl FnOnce(&mut Context) -> Result<()>,
) -> Result<()> {
    let run = if global.no_run_dir {
        None
    } else {
        let base = std::env::var_os("MT_RUNS_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_RUNS_DIR), PathBuf::from);
        let config = serde_json::json!({ "global": global, "args": args });
        let run = RunDir::create(
            global.run_dir.as_deref(),
            &base,
            name,
            redact_secrets(argv),
            config,
            global.seed,
        )?;
        log.attach(&run.path().join("log.jsonl"))?;
        tracing::info!("run directory: {}", run.path().display());
        Some(run)
    };
    let mut ctx = Context {
        json: global.json,
        quiet: global.quiet > 0,
        seed: global.seed,
        run,
        explicit_run_dir: global.run_dir.is_some(),
    };
    let result = f(&mut ctx);
    if let Some(run) = ctx.run.take() {
        let code = result.as_ref().map_or_else(exit_code, |_| 0);
        if let Err(e) = &result {
            tracing::error!("{e:#}");
        }
        run.finish(Outcome {
            exit_code: code,
            error: result.as_ref().err(),
        })?;
    }
    log.detach();
    result
}

/// Flags whose values are secrets: run.json records [`REDACTED`] in their place, and
/// `mt replay` drops them (the replay reads the secret from the environment again).
pub(crate) const SECRET_FLAGS: [&str; 2] = ["--token", "--api-key"];

/// What run.json holds in place of a secret flag's value.
pub(crate) const REDACTED: &str = "***";

/// The secret flag `arg` is (`--token`) or sets (`--token=...`), if any.
pub(crate) fn secret_flag(arg: &str) -> Option<&str> {
    let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
    SECRET_FLAGS.contains(&flag).then_some(flag)
}

/// `argv` with the values of [`SECRET_FLAGS`] replaced by [`REDACTED`], for run.json.
fn redact_secrets(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for arg in argv {
        if hide_next {
            out.push(REDACTED.to_string());
            hide_next = false;
        } else if SECRET_FLAGS.contains(&arg.as_str()) {
            hide_next = true;
            out.push(arg);
        } else if let Some(flag) = secret_flag(&arg) {
            out.push(format!("{flag}={REDACTED}"));
        } else {
            out.push(arg);
        }
    }
    out
}

/// The GPU a model command runs on: `--gpu N`; none with `--cpu`; with neither, GPU 0
/// when this is a CUDA build and a GPU is visible, else none (the CPU).
pub(crate) fn pick_gpu(gpu: Option<usize>, cpu: bool) -> Option<usize> {
    match (gpu, cpu) {
        (Some(i), _) => Some(i),
        (None, true) => None,
        (None, false) => gpu_visible().then_some(0),
    }
}

/// Whether CUDA can open GPU 0 (always false without the `cuda` feature).
fn gpu_visible() -> bool {
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(0).is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Failures as `[{input, error}]`: the form of failures.json and of `--json` summaries.
pub(crate) fn failure_list(failures: &[(String, String)]) -> Vec<serde_json::Value> {
    failures
        .iter()
        .map(|(input, error)| serde_json::json!({"input": input, "error": error}))
        .collect()
}

/// Prints a command's end-of-run summary: with `--json`, `json` as one line on stdout,
/// or on stderr when the command's records themselves went to stdout (`-o -`), so stdout
/// stays one record per line; otherwise `text()` on stderr unless `--quiet`.
pub(crate) fn summary(
    ctx: &Context,
    records_on_stdout: bool,
    json: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> Result<()> {
    match (ctx.json, records_on_stdout) {
        (true, false) => print(&format!("{json}\n")),
        (true, true) => {
            eprintln!("{json}");
            Ok(())
        }
        (false, _) if !ctx.quiet => {
            eprintln!("{}", text());
            Ok(())
        }
        (false, _) => Ok(()),
    }
}

/// Writes `text` to stdout; a closed pipe (`mt ... | head`) is not an error.
pub(crate) fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Where a run's file will be, for messages (`runs/x/failures.json`).
pub(crate) fn run_file(ctx: &Context, name: &str) -> Option<PathBuf> {
    ctx.run.as_ref().map(|r| r.path().join(name))
}

/// Logs each failure (input, error), lists them in the run directory and turns
/// `failed` failed inputs into exit code 3.
pub(crate) fn finish_failures(
    ctx: &mut Context,
    failures: Vec<(String, String)>,
    failed: usize,
    total: usize,
) -> Result<()> {
    if failed == 0 {
        return Ok(());
    }
    for (_, e) in &failures {
        tracing::warn!("{e}");
    }
    let list = failure_list(&failures);
    let where_ = match (&ctx.run, run_file(ctx, "failures.json")) {
        (Some(run), Some(path)) => {
            run.write_json("failures.json", &list)?;
            format!(" and in {}", path.display())
        }
        _ => String::new(),
    };
    Err(Failure::PartialInputs {
        failed,
        total,
        where_,
    }
    .into())
}
