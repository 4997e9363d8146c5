//! `mt download --extract`: after the download, every `.tar.zst` image shard of the
//! selection is extracted into one folder (shards in parallel, each resumable), and the
//! parquet manifests with a `file_name` column (MedTrinity-25M `25M_full`) are checked
//! against what the shards held: missing and extra files counted and listed.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::extract::{ManifestCheck, check_manifest, extract_shard};
use super::in_parallel;
use crate::core::data::parquet::ParquetShard;
use crate::core::progress;

/// The manifest column naming each image.
pub(crate) const FILE_NAME_COLUMN: &str = "file_name";

/// How many names of each list the report carries (the run directory gets them all).
const SAMPLE: usize = 20;

/// What the extraction did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Unpacked {
    pub dest: PathBuf,
    pub shards: usize,
    pub extracted: usize,
    /// Shards a previous run had finished.
    pub skipped: usize,
    pub entries: u64,
    pub bytes: u64,
    /// Links, devices and other members that are not regular files.
    pub ignored: u64,
    /// `(shard, error)` of truncated, corrupt or unwritable shards.
    #[serde(skip)]
    pub failed: Vec<(String, String)>,
    pub manifest: Option<ManifestSummary>,
}

/// The manifest check in numbers, with the first names of each list.
#[derive(Debug, Serialize)]
pub(crate) struct ManifestSummary {
    pub manifests: usize,
    pub expected: u64,
    pub present: u64,
    pub missing: usize,
    pub extra: usize,
    pub missing_sample: Vec<String>,
    pub extra_sample: Vec<String>,
}

/// Whether `path` names a tar image shard.
pub(crate) fn is_shard(path: &str) -> bool {
    [".tar.zst", ".tzst", ".tar"]
        .iter()
        .any(|e| path.ends_with(e))
}

/// Extracts the shards among `files` into `dest` on up to `workers` threads, then
/// checks the manifests among them; the full manifest check comes back beside the
/// summary.
pub(crate) fn unpack(
    files: &[PathBuf],
    dest: &Path,
    workers: usize,
) -> Result<(Unpacked, Option<ManifestCheck>)> {
    let shards: Vec<&PathBuf> = files
        .iter()
        .filter(|p| is_shard(&p.to_string_lossy()))
        .collect();
    let mut done = Unpacked {
        dest: dest.to_path_buf(),
        shards: shards.len(),
        ..Unpacked::default()
    };
    let bar = progress::bar(Some(shards.len() as u64), "shards", "extracting");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = in_parallel(&shards, workers.min(threads), |shard| {
        let r = extract_shard(shard, dest);
        bar.inc(1);
        (shard.to_path_buf(), r)
    });
    bar.finish_and_clear();
    for (shard, result) in results {
        match result {
            Ok(r) => {
                if r.skipped {
                    done.skipped += 1;
                } else {
                    done.extracted += 1;
                }
                done.entries += r.entries;
                done.bytes += r.bytes;
                done.ignored += r.ignored;
            }
            Err(e) => done
                .failed
                .push((shard.display().to_string(), format!("{e:#}"))),
        }
    }
    let manifests = manifests(files);
    if manifests.is_empty() || done.shards == 0 {
        return Ok((done, None));
    }
    let check = check_manifest(&manifests, dest, FILE_NAME_COLUMN)?;
    done.manifest = Some(ManifestSummary {
        manifests: manifests.len(),
        expected: check.expected,
        present: check.present,
        missing: check.missing.len(),
        extra: check.extra.len(),
        missing_sample: check.missing.iter().take(SAMPLE).cloned().collect(),
        extra_sample: check.extra.iter().take(SAMPLE).cloned().collect(),
    });
    Ok((done, Some(check)))
}

/// The parquet files among `files` that have a `file_name` column.
fn manifests(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| {
            ParquetShard::open(p).is_ok_and(|s| {
                s.schema()
                    .fields()
                    .iter()
                    .any(|f| f.name() == FILE_NAME_COLUMN)
            })
        })
        .cloned()
        .collect()
}
