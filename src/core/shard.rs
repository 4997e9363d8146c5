//! Scale-out: a deterministic partition of records by id hash, one output file per
//! shard with a completion marker, and the merge of shard outputs.
//!
//! Shard `i` of `n` owns the ids whose `mix64(fnv1a(id)) % n == i`: the same on every
//! machine, in every run and in every mt version, whatever order the inputs come in,
//! so `n` independent jobs (a Slurm array) cover every id exactly once. `-o out.jsonl`
//! with shard 3 of 8 writes `out-00003-of-00008.jsonl`; when the shard's work is done,
//! `out-00003-of-00008.jsonl.done` (JSON: counts, finish time) is written beside it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::core::hash::{fnv1a, mix64};

/// One part of a partition: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Shard {
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `I/N` with 0 <= I < N, as (I, N).
pub(crate) fn index_of_count(text: &str) -> Option<(usize, usize)> {
    let (i, n) = text.split_once('/')?;
    let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (index < count).then_some((index, count))
}

impl Shard {
    /// Parses `I/N` (`I` from 0 to `N - 1`).
    pub(crate) fn parse(text: &str) -> Result<Self> {
        match index_of_count(text) {
            Some((index, count)) => Ok(Self { index, count }),
            None => bail!("`{text}` is not a shard: expected I/N with 0 <= I < N, like 0/8"),
        }
    }

    /// The shard a `--shard` value names: `I/N`; `slurm/N` (I = `SLURM_ARRAY_TASK_ID`,
    /// so an array `--array=0-(N-1)` and any resubmitted task agree); or `slurm` (the
    /// task's place in its array, from `SLURM_ARRAY_TASK_ID`, `_MIN`, `_STEP` and
    /// `_COUNT`; resubmitting one task with `--array=K` changes these, use `slurm/N`).
    pub(crate) fn resolve(text: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let task_id = || -> Result<usize> {
            let id = var("SLURM_ARRAY_TASK_ID")
                .context("`slurm` needs SLURM_ARRAY_TASK_ID (run inside a Slurm array job)")?;
            id.trim()
                .parse()
                .with_context(|| format!("SLURM_ARRAY_TASK_ID={id} is not a number"))
        };
        match text.split_once('/') {
            None if text == "slurm" => Self::from_slurm(task_id()?, var),
            Some(("slurm", n)) => {
                let count: usize = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("`{text}`: N must be a number >= 1"))?;
                let index = task_id()?;
                if index >= count {
                    bail!(
                        "SLURM_ARRAY_TASK_ID={index} is not below {count}: use --array=0-{}",
                        count - 1
                    );
                }
                Ok(Self { index, count })
            }
            _ => Self::parse(text),
        }
    }

    /// The task's place in its array: `id` counted from `SLURM_ARRAY_TASK_MIN` in steps
    /// of `SLURM_ARRAY_TASK_STEP`, out of `SLURM_ARRAY_TASK_COUNT`.
    fn from_slurm(id: usize, var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str, default: Option<usize>| -> Result<usize> {
            match var(name) {
                Some(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}={v} is not a number")),
                None => {
                    default.with_context(|| format!("SLURM_ARRAY_TASK_ID is set but {name} is not"))
                }
            }
        };
        let count = number("SLURM_ARRAY_TASK_COUNT", None)?;
        let min = number("SLURM_ARRAY_TASK_MIN", Some(0))?;
        let step = number("SLURM_ARRAY_TASK_STEP", Some(1))?.max(1);
        let index = id.checked_sub(min).map(|d| d / step);
        match index {
            Some(index) if index < count && (id - min).is_multiple_of(step) => {
                Ok(Self { index, count })
            }
            _ => bail!(
                "SLURM_ARRAY_TASK_ID={id} is not one of {count} tasks from {min} in steps of {step}"
            ),
        }
    }

    /// Whether this shard owns `id`.
    pub(crate) fn owns(&self, id: &str) -> bool {
        owner(id, self.count) == self.index
    }

    /// This shard's output file for `-o path`: `stem-IIIII-of-NNNNN.ext`.
    pub(crate) fn output(&self, path: &Path) -> PathBuf {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let (stem, ext) = match name.split_once('.') {
            Some((stem, ext)) => (stem, format!(".{ext}")),
            None => (name.as_str(), String::new()),
        };
        path.with_file_name(format!(
            "{stem}-{:05}-of-{:05}{ext}",
            self.index, self.count
        ))
    }
}

/// The shard (of `count`) that owns `id`.
pub fn owner(id: &str, count: usize) -> usize {
    (mix64(fnv1a(id)) % count.max(1) as u64) as usize
}

/// Flushes an output file to disk (before its marker says it is complete).
pub(crate) fn sync_output(output: &Path) -> Result<()> {
    std::fs::File::open(output)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", output.display()))
}

/// What a completion marker adds to its output's name.
const MARKER_SUFFIX: &str = ".done";

/// Whether `path` is a completion marker (a glob over shard outputs catches them too).
fn is_marker(path: &Path) -> bool {
    path.to_string_lossy().ends_with(MARKER_SUFFIX)
}

/// The completion marker of an output file: `<output>.done`.
pub fn marker(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(MARKER_SUFFIX);
    PathBuf::from(name)
}

/// Removes a marker left by an earlier run (its work is being redone or extended).
pub(crate) fn clear_marker(output: &Path) -> Result<()> {
    match std::fs::remove_file(marker(output)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", marker(output).display()))
        }
        _ => Ok(()),
    }
}

/// Writes the completion marker (synced, then renamed into place) with `summary`; the
/// output itself must be durable first (see [`sync_output`]).
pub(crate) fn write_marker(output: &Path, summary: &impl Serialize) -> Result<()> {
    let path = marker(output);
    let tmp = path.with_extension("done.tmp");
    let text = serde_json::to_string_pretty(summary)? + "\n";
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The shard a shard output's file name names (`stem-00003-of-00008.ext`), with the
/// name it was made from (`stem.ext`).
pub(crate) fn shard_of_name(path: &Path) -> Option<(Shard, String)> {
    let name = path.file_name()?.to_str()?;
    let (stem, ext) = name.split_once('.').map_or((name, ""), |(s, e)| (s, e));
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (base, index) = rest.rsplit_once('-')?;
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    let base = if ext.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{ext}")
    };
    (index < count).then_some((Shard { index, count }, base))
}

/// Refuses to start shard `shard` of `output` when the folder already holds shard
/// outputs of the same name cut into a different number of shards (a changed N would
/// caption ids twice, or miss them).
pub(crate) fn check_siblings(output: &Path, shard: Shard) -> Result<()> {
    let Some((_, base)) = shard_of_name(output) else {
        return Ok(());
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some((other, other_base)) = shard_of_name(&path)
            && other_base == base
            && other.count != shard.count
            && !is_marker(&path)
        {
            bail!(
                "{} is a shard of {} but this run makes shards of {}: finish or move the other run's outputs (a different N puts ids in other shards)",
                path.display(),
                other.count,
                shard.count
            );
        }
    }
    Ok(())
}

/// One shard output given to a merge, and what its marker says (`None`: no marker).
#[derive(Debug)]
pub(crate) struct ShardFile {
    pub shard: Shard,
    pub marker: Option<serde_json::Value>,
}

/// What a set of shard outputs holds, checked before merging: one base name, every
/// shard `0..N` once, all of one `N`, each with its marker unless `allow_incomplete`.
/// `.done` files among the inputs (a glob catches them) are left out.
pub(crate) fn check_complete(
    files: &[PathBuf],
    allow_incomplete: bool,
) -> Result<Vec<(PathBuf, ShardFile)>> {
    let mut seen: HashMap<usize, &Path> = HashMap::new();
    let mut first: Option<(usize, String, &Path)> = None;
    let mut shards = Vec::new();
    for file in files.iter().filter(|f| !is_marker(f)) {
        let Some((shard, base)) = shard_of_name(file) else {
            bail!(
                "{}: not a shard output (expected a name like captions-00003-of-00008.jsonl)",
                file.display()
            );
        };
        let (count, first_base, first_file) =
            first.get_or_insert((shard.count, base.clone(), file));
        if *count != shard.count || *first_base != base {
            bail!(
                "{} and {} are not shards of one run (shard names and counts must match)",
                first_file.display(),
                file.display()
            );
        }
        if let Some(other) = seen.insert(shard.index, file) {
            bail!(
                "shard {shard} given twice: {} and {}",
                other.display(),
                file.display()
            );
        }
        let marker = match std::fs::read_to_string(marker(file)) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a shard marker", marker(file).display()))?,
            ),
            Err(_) => None,
        };
        shards.push((file.clone(), ShardFile { shard, marker }));
    }
    let count = first.map_or(0, |f| f.0);
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    let unfinished: Vec<String> = shards
        .iter()
        .filter(|(_, s)| s.marker.is_none())
        .map(|(_, s)| s.shard.index.to_string())
        .collect();
    if !allow_incomplete && !missing.is_empty() {
        bail!(
            "{} of {count} shards missing (indices {}); run them, or pass --allow-incomplete",
            missing.len(),
            missing.join(", ")
        );
    }
    if !allow_incomplete && !unfinished.is_empty() {
        bail!(
            "shards {} have no .done marker (still running or interrupted); rerun them, or pass --allow-incomplete",
            unfinished.join(", ")
        );
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_every_id_once() {
        assert_eq!(Shard::parse("3/8").unwrap(), Shard { index: 3, count: 8 });
        for bad in ["8/8", "1", "a/2", "-1/2", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for i in 0..4000 {
            let id = format!("img_{i}");
            let owners: Vec<usize> = shards
                .iter()
                .filter(|s| s.owns(&id))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..1100).contains(&n)), "{sizes:?}");
        // Pinned: a change of hash would split running jobs differently.
        let owners: Vec<usize> = (0..8).map(|i| owner(&format!("img_{i}"), 3)).collect();
        assert_eq!(owners, [1, 0, 2, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn slurm_array_variables_give_the_shard() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert!(
            Shard::resolve("slurm", &none)
                .unwrap_err()
                .to_string()
                .contains("Slurm array")
        );
        assert_eq!(
            Shard::resolve("1/4", &none).unwrap(),
            Shard { index: 1, count: 4 }
        );
        let from_one = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]);
        assert_eq!(
            Shard::resolve("slurm", &from_one).unwrap(),
            Shard { index: 4, count: 8 }
        );
        // slurm/N takes the task id as it is: a resubmitted task keeps its shard.
        assert_eq!(
            Shard::resolve("slurm/8", &from_one).unwrap(),
            Shard { index: 5, count: 8 }
        );
        let err = Shard::resolve("slurm/4", &from_one)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not below 4: use --array=0-3"), "{err}");
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "4"),
        ]);
        assert_eq!(
            Shard::resolve("slurm", &stepped).unwrap(),
            Shard { index: 3, count: 4 }
        );
        let outside = env(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        let err = Shard::resolve("slurm", &outside).unwrap_err().to_string();
        assert!(err.contains("not one of 4 tasks"), "{err}");
        let no_count = env(&[("SLURM_ARRAY_TASK_ID", "1")]);
        let err = Shard::resolve("slurm", &no_count).unwrap_err().to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_COUNT"), "{err}");
        assert!(Shard::resolve("slurm/0", &no_count).is_err());
    }

    #[test]
    fn shard_file_names_round_trip() {
        let s = Shard { index: 3, count: 8 };
        let out = s.output(Path::new("runs/captions.jsonl"));
        assert_eq!(out, Path::new("runs/captions-00003-of-00008.jsonl"));
        assert_eq!(shard_of_name(&out), Some((s, "captions.jsonl".to_string())));
        assert_eq!(
            s.output(Path::new("caps.tar.parquet")),
            Path::new("caps-00003-of-00008.tar.parquet")
        );
        assert_eq!(
            marker(&out),
            Path::new("runs/captions-00003-of-00008.jsonl.done")
        );
        assert_eq!(shard_of_name(Path::new("captions.jsonl")), None);
        assert_eq!(shard_of_name(Path::new("c-00009-of-00008.jsonl")), None);
    }

    #[test]
    fn merging_checks_all_shards_are_there_and_done() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..3)
            .map(|index| Shard { index, count: 3 }.output(&dir.path().join("c.jsonl")))
            .collect();
        for f in &files {
            std::fs::write(f, "").unwrap();
        }
        let err = check_complete(&files, false).unwrap_err().to_string();
        assert!(err.contains("shards 0, 1, 2 have no .done marker"), "{err}");
        for f in &files[..2] {
            write_marker(f, &serde_json::json!({"written": 0})).unwrap();
        }
        let err = check_complete(&files[..2], false).unwrap_err().to_string();
        assert!(err.contains("1 of 3 shards missing (indices 2)"), "{err}");
        assert_eq!(check_complete(&files[..2], true).unwrap().len(), 2);
        write_marker(&files[2], &0).unwrap();
        let mut with_markers = files.clone();
        with_markers.push(marker(&files[0]));
        assert_eq!(check_complete(&with_markers, false).unwrap().len(), 3);
        let other = Shard { index: 1, count: 3 }.output(&dir.path().join("d.jsonl"));
        let err = check_complete(&[files[0].clone(), other], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not shards of one run"), "{err}");
        let twice = [files[0].clone(), files[0].clone()];
        assert!(
            check_complete(&twice, false)
                .unwrap_err()
                .to_string()
                .contains("given twice")
        );
        clear_marker(&files[0]).unwrap();
        clear_marker(&files[0]).unwrap();
        assert!(!marker(&files[0]).exists());
    }

    #[test]
    fn a_run_with_another_shard_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.jsonl");
        std::fs::write(Shard { index: 0, count: 4 }.output(&out), "").unwrap();
        let two = Shard { index: 1, count: 2 };
        let err = check_siblings(&two.output(&out), two)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a shard of 4 but this run makes shards of 2"),
            "{err}"
        );
        let four = Shard { index: 1, count: 4 };
        assert!(check_siblings(&four.output(&out), four).is_ok());
        let other_name = dir.path().join("d.jsonl");
        assert!(check_siblings(&two.output(&other_name), two).is_ok());
    }
}
