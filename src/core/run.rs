//! Run directories: `runs/<cmd>-<UTC time>-<short id>/` with `run.json`, `log.jsonl`,
//! `metrics.jsonl` and the command's outputs. Every file is written atomically.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::files::write_atomic;

/// Base folder for run directories when `--run-dir` is not given.
pub(crate) const DEFAULT_RUNS_DIR: &str = "runs";

/// What `run.json` holds: enough to understand and replay a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub command: String,
    pub argv: Vec<String>,
    /// The fully resolved configuration (every flag, defaults included).
    pub config: Value,
    pub version: String,
    /// The git revision `mt` was built from, `-dirty` when the tree had changes.
    pub git_revision: Option<String>,
    pub seed: u64,
    pub host: String,
    pub device: String,
    pub started: String,
    pub ended: Option<String>,
    /// `running`, `succeeded`, `partial` (some inputs failed) or `failed`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Command-specific counters (rows, inputs, failures, ...).
    pub counts: Map<String, Value>,
}

/// A live run directory.
#[derive(Debug)]
pub(crate) struct RunDir {
    dir: PathBuf,
    record: RunRecord,
}

/// How a run ended, for `run.json`.
pub(crate) struct Outcome<'a> {
    pub exit_code: i32,
    pub error: Option<&'a anyhow::Error>,
}

impl RunDir {
    /// Creates `dir` (or a fresh `<base>/<command>-<time>-<id>` when `dir` is None)
    /// and writes a first `run.json` with status `running`.
    pub(crate) fn create(
        dir: Option<&Path>,
        base: &Path,
        command: &str,
        argv: Vec<String>,
        config: Value,
        seed: u64,
    ) -> Result<Self> {
        let now = jiff::Timestamp::now();
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => base.join(format!(
                "{command}-{}-{}",
                now.strftime("%Y%m%dT%H%M%SZ"),
                short_id()
            )),
        };
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        let revision = env!("MT_GIT_REVISION");
        let record = RunRecord {
            command: command.to_string(),
            argv,
            config,
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: (!revision.is_empty()).then(|| revision.to_string()),
            seed,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            device: "cpu".to_string(),
            started: now.to_string(),
            ended: None,
            status: "running".to_string(),
            exit_code: None,
            error: None,
            counts: Map::new(),
        };
        let run = RunDir { dir, record };
        run.save()?;
        Ok(run)
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Records the device the command computes on (e.g. `cuda:0 bf16`).
    pub(crate) fn set_device(&mut self, device: impl Into<String>) {
        self.record.device = device.into();
    }

    /// Sets a counter in `run.json` (saved with the run record at the end).
    pub(crate) fn set_count(&mut self, key: &str, value: impl Into<Value>) {
        self.record.counts.insert(key.to_string(), value.into());
    }

    /// Writes `name` inside the run directory as pretty JSON, atomically.
    pub(crate) fn write_json(&self, name: &str, value: &impl Serialize) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Records the end time, exit status and error, and saves `run.json`.
    pub(crate) fn finish(mut self, outcome: Outcome<'_>) -> Result<()> {
        self.record.ended = Some(jiff::Timestamp::now().to_string());
        self.record.exit_code = Some(outcome.exit_code);
        self.record.status = match outcome.exit_code {
            0 => "succeeded",
            3 => "partial",
            _ => "failed",
        }
        .to_string();
        self.record.error = outcome.error.map(|e| format!("{e:#}"));
        self.save()
    }

    fn save(&self) -> Result<()> {
        self.write_json("run.json", &self.record).map(|_| ())
    }
}

/// Six hex digits that differ between runs started in the same second.
fn short_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = crate::core::hash::mix64(nanos ^ (u64::from(std::process::id()) << 32));
    format!("{:06x}", mixed & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_json_goes_from_running_to_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let argv = vec!["mt".into(), "inspect".into()];
        let config = serde_json::json!({"head": 3});
        let mut run = RunDir::create(None, tmp.path(), "inspect", argv, config, 7).unwrap();
        let name = run
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("inspect-"), "{name}");
        let read = |p: &Path| -> RunRecord {
            serde_json::from_slice(&fs::read(p.join("run.json")).unwrap()).unwrap()
        };
        let first = read(run.path());
        assert_eq!(first.status, "running");
        assert_eq!(first.seed, 7);
        assert!(first.ended.is_none());
        run.set_count("rows", 12);
        let dir = run.path().to_path_buf();
        run.finish(Outcome {
            exit_code: 3,
            error: None,
        })
        .unwrap();
        let last = read(&dir);
        assert_eq!(last.status, "partial");
        assert_eq!(last.counts["rows"], 12);
        assert!(last.ended.is_some());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run.json")]);
    }
}
