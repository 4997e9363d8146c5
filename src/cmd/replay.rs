//! `mt replay`: run a command again from its run directory's `run.json`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use serde::Serialize;

use super::{Cli, SECRET_FLAGS, execute, secret_flag};
use crate::core::error::usage;
use crate::core::logging::LogSink;
use crate::core::run::RunRecord;

/// Run a command again with the arguments recorded in a run directory.
#[derive(Debug, clap::Args, Serialize)]
#[command(
    after_help = "Examples:\n  mt replay runs/inspect-20261127T190000Z-3fa2c1\n  \
mt replay runs/inspect-20261127T190000Z-3fa2c1/run.json --dry-run"
)]
pub struct Args {
    /// A run directory or its run.json.
    pub run: PathBuf,
    /// Print the command line instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

/// The recorded argv without `--run-dir` (a replay gets a run directory of its own) and
/// without the secret flags run.json redacted (their `***` is no secret: the replay
/// takes the token from `HF_TOKEN`, `HF_TOKEN_PATH` or `$HF_HOME/token`, as a run
/// without `--token` does).
pub(crate) fn replay_argv(record: &RunRecord) -> Vec<String> {
    let dropped = |flag: &str| flag == "--run-dir" || SECRET_FLAGS.contains(&flag);
    let mut out = Vec::with_capacity(record.argv.len());
    let mut args = record.argv.iter();
    while let Some(a) = args.next() {
        if dropped(a) {
            args.next();
        } else if !a.split_once('=').is_some_and(|(flag, _)| dropped(flag)) {
            out.push(a.clone());
        }
    }
    out
}

/// Replays the run; `json`: `--dry-run` prints `{"argv": [...]}`.
pub(crate) fn run(args: &Args, json: bool, log: &LogSink) -> Result<()> {
    let path = if args.run.is_dir() {
        args.run.join("run.json")
    } else {
        args.run.clone()
    };
    let text = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let record: RunRecord = serde_json::from_slice(&text)
        .map_err(|e| usage(format!("{}: not a run.json: {e}", path.display())))?;
    let argv = replay_argv(&record);
    if args.dry_run {
        return match json {
            true => super::print(&format!("{}\n", serde_json::json!({ "argv": argv }))),
            false => super::print(&(argv.join(" ") + "\n")),
        };
    }
    let cli = Cli::try_parse_from(&argv).map_err(|e| {
        usage(format!(
            "{}: recorded arguments no longer parse: {e}",
            path.display()
        ))
    })?;
    if matches!(cli.command, super::Command::Replay(_)) {
        return Err(usage(format!(
            "{}: records a replay; replay the original run instead",
            path.display()
        )));
    }
    if record.argv.iter().any(|a| secret_flag(a).is_some()) {
        tracing::warn!(
            "{}: the recorded {} was not kept; the replay reads it from the environment \
             (HF_TOKEN, HF_TOKEN_PATH or $HF_HOME/token)",
            path.display(),
            SECRET_FLAGS.join("/")
        );
    }
    tracing::info!("replaying {}", path.display());
    execute(cli, argv, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_flags_are_dropped() {
        let record = RunRecord {
            command: "inspect".into(),
            argv: [
                "mt",
                "--run-dir",
                "x",
                "--seed",
                "3",
                "inspect",
                "--run-dir=y",
                "--token",
                "***",
                "--token=***",
                "data",
            ]
            .map(String::from)
            .to_vec(),
            config: serde_json::Value::Null,
            version: String::new(),
            git_revision: None,
            seed: 3,
            host: String::new(),
            device: String::new(),
            started: String::new(),
            ended: None,
            status: String::new(),
            exit_code: None,
            error: None,
            counts: Default::default(),
        };
        assert_eq!(
            replay_argv(&record),
            ["mt", "--seed", "3", "inspect", "data"]
        );
    }
}
