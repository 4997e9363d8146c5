//! `mt-knowledge.json`, written into an index folder last: what the index was built from
//! and how, so that `open` can tell an `mt` index from anything else and a build can tell
//! a fresh index from a stale one.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::schema::ANALYZER;
use crate::core::error::usage;

/// The file's name inside the index folder.
pub(crate) const MANIFEST: &str = "mt-knowledge.json";

/// The layout version of the index folder; a change makes older indexes stale.
pub(crate) const FORMAT: u32 = 1;

/// A corpus file as it was when the index was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CorpusFile {
    /// Absolute, symbolic links resolved.
    pub path: PathBuf,
    pub bytes: u64,
    /// Modification time (RFC 3339, UTC, nanoseconds where the file system keeps them).
    pub modified: String,
}

impl CorpusFile {
    /// The file at `path` as it is now; a usage error when it is missing or a folder.
    pub(super) fn stat(path: &Path) -> Result<Self> {
        let missing = || usage(format!("{}: no such file", path.display()));
        let abs = std::fs::canonicalize(path).map_err(|_| missing())?;
        let meta = std::fs::metadata(&abs).map_err(|_| missing())?;
        if !meta.is_file() {
            return Err(usage(format!(
                "{}: is not a file (expected a JSONL corpus)",
                path.display()
            )));
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        Ok(CorpusFile {
            path: abs,
            bytes: meta.len(),
            modified,
        })
    }
}

/// The contents of `mt-knowledge.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub format: u32,
    /// The corpus files, in indexing order, as they were when the build started.
    pub corpus: Vec<CorpusFile>,
    pub passages: u64,
    /// The analyzer of `title` and `text` (see [`ANALYZER`]).
    pub analyzer: String,
    /// `tantivy::version_string()` of the build.
    pub tantivy: String,
    /// The `mt` version of the build.
    pub mt: String,
    /// When the build finished (RFC 3339, UTC).
    pub built_at: String,
}

impl Manifest {
    /// A manifest for an index of `passages` passages built now from `corpus`.
    pub(super) fn new(corpus: Vec<CorpusFile>, passages: u64) -> Self {
        Manifest {
            format: FORMAT,
            corpus,
            passages,
            analyzer: ANALYZER.to_string(),
            tantivy: tantivy::version_string().to_string(),
            mt: env!("CARGO_PKG_VERSION").to_string(),
            built_at: jiff::Timestamp::now().to_string(),
        }
    }

    /// Reads the manifest of the index folder `dir`: an error when `dir` is missing,
    /// holds no manifest (not an `mt` index, or a build that did not finish) or one of
    /// another format.
    pub(super) fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(usage(format!(
                "{}: no such knowledge index folder",
                dir.display()
            )));
        }
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|_| {
            anyhow!(
                "{}: not a knowledge index made by `mt convert knowledge-index` (no {MANIFEST})",
                dir.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(FORMAT)) {
            bail!(
                "{}: knowledge index format {}, this mt reads format {FORMAT}; rebuild it \
                 with `mt convert knowledge-index --force`",
                dir.display(),
                format.map_or_else(|| "unknown".to_string(), |f| f.to_string())
            );
        }
        serde_json::from_value(value)
            .with_context(|| format!("{}: unexpected content", path.display()))
    }

    /// Writes `mt-knowledge.json` into `dir` (atomically).
    pub(super) fn write(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::core::files::write_atomic(&dir.join(MANIFEST), &bytes)
    }

    /// Why this index does not match the corpus files `now` (None when it does).
    pub(super) fn stale_reason(&self, now: &[CorpusFile]) -> Option<String> {
        if self.analyzer != ANALYZER {
            return Some(format!(
                "built with analyzer {}, this mt uses {ANALYZER}",
                self.analyzer
            ));
        }
        let paths = |files: &[CorpusFile]| {
            files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.corpus.len() != now.len()
            || self.corpus.iter().zip(now).any(|(a, b)| a.path != b.path)
        {
            return Some(format!(
                "built from {}, not {}",
                paths(&self.corpus),
                paths(now)
            ));
        }
        self.corpus.iter().zip(now).find_map(|(then, now)| {
            if then.bytes != now.bytes {
                Some(format!(
                    "{} changed size ({} -> {} bytes)",
                    now.path.display(),
                    then.bytes,
                    now.bytes
                ))
            } else if then.modified != now.modified {
                Some(format!(
                    "{} was modified ({} -> {})",
                    now.path.display(),
                    then.modified,
                    now.modified
                ))
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_size_time_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "{}\n").unwrap();
        let m = Manifest::new(vec![CorpusFile::stat(&a).unwrap()], 1);
        assert_eq!(m.stale_reason(&[CorpusFile::stat(&a).unwrap()]), None);

        let file = std::fs::File::options().write(true).open(&a).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        file.set_modified(later).unwrap();
        let why = m.stale_reason(&[CorpusFile::stat(&a).unwrap()]).unwrap();
        assert!(why.contains("was modified"), "{why}");

        std::fs::write(&a, "{}\n{}\n").unwrap();
        let why = m.stale_reason(&[CorpusFile::stat(&a).unwrap()]).unwrap();
        assert!(why.contains("changed size (3 -> 6 bytes)"), "{why}");

        let b = dir.path().join("b.jsonl");
        std::fs::write(&b, "{}\n").unwrap();
        let why = m.stale_reason(&[CorpusFile::stat(&b).unwrap()]).unwrap();
        assert!(why.starts_with("built from"), "{why}");
    }

    #[test]
    fn read_tells_foreign_folders_and_other_formats_apart() {
        let dir = tempfile::tempdir().unwrap();
        let e = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a knowledge index made by"), "{e}");
        let e = Manifest::read(&dir.path().join("nope")).unwrap_err();
        assert_eq!(crate::core::error::exit_code(&e), 2);

        let m = Manifest::new(Vec::new(), 0);
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        std::fs::write(dir.path().join(MANIFEST), r#"{"format": 99}"#).unwrap();
        let e = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format 99, this mt reads format 1"), "{e}");
    }

    #[test]
    fn missing_corpus_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = CorpusFile::stat(&dir.path().join("x.jsonl")).unwrap_err();
        assert_eq!(crate::core::error::exit_code(&e), 2);
        let e = CorpusFile::stat(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is not a file"), "{e}");
    }
}
