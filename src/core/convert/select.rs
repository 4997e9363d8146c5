//! Which records a dataset conversion writes, and into which split: `--filter` (SQL over
//! the records), `--exclude-matches` (ids to drop), `--limit` (the first N written, in
//! input order; with `--stratify` the first N the filters keep, the cuts being made on
//! them) and `--split NAME:FRACTION,...`.
//!
//! A record's split comes from a hash of its id alone (FNV-1a, then splitmix64, as a
//! fraction of 2^64) against the cumulative fractions, so a rerun, a reordered input or
//! a grown dataset keeps every record in its split. Fractions may sum to less than 1:
//! records past the sum are not written (a deterministic sample). `--stratify` instead
//! cuts each modality (or organ) group at its own hash quantiles, so every group is
//! split in exactly the fractions asked (rounded); that needs a first pass over the
//! records, and a grown dataset then moves only records near a cut.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use anyhow::Result;

use super::{Stats, each_batch};
use crate::core::caption_parts;
use crate::core::data::filter::Filter;
use crate::core::data::sample::Batch;
use crate::core::data::{Dataset, ReadOptions};
use crate::core::error::usage;
use crate::core::hash::{fnv1a, mix64};

/// `--split`: names and fractions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SplitSpec {
    /// Split names, in order.
    pub names: Vec<String>,
    /// Their fractions of the records.
    pub fractions: Vec<f64>,
}

impl FromStr for SplitSpec {
    type Err = String;

    /// `NAME` (every record) or `NAME:FRACTION,NAME:FRACTION...` (fractions in (0, 1],
    /// summing to at most 1).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut spec = SplitSpec {
            names: Vec::new(),
            fractions: Vec::new(),
        };
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        for part in &parts {
            let (name, fraction) = match part.split_once(':') {
                Some((n, f)) => {
                    let f: f64 = f
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{part}`: the fraction is not a number"))?;
                    (n.trim(), f)
                }
                None if parts.len() == 1 => (*part, 1.0),
                None => return Err(format!("`{part}`: give each split a fraction, NAME:0.1")),
            };
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(format!(
                    "`{name}`: split names are letters, digits, `_` and `-`"
                ));
            }
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(format!("`{part}`: the fraction must be in (0, 1]"));
            }
            if spec.names.iter().any(|n| n == name) {
                return Err(format!("split `{name}` is named twice"));
            }
            spec.names.push(name.to_string());
            spec.fractions.push(fraction);
        }
        let sum: f64 = spec.fractions.iter().sum();
        if sum > 1.0 + 1e-9 {
            return Err(format!("the fractions sum to {sum}, over 1"));
        }
        Ok(spec)
    }
}

/// `--exclude-matches`: the training ids of a contamination report
/// (`contamination.jsonl`: one match a line, the training record's id at `train.id`).
pub(crate) fn read_exclusions(path: &std::path::Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--exclude-matches {}: {e}", path.display())))?;
    let mut ids = HashSet::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            usage(format!(
                "--exclude-matches {}:{}: {e}",
                path.display(),
                n + 1
            ))
        })?;
        let id = value["train"]["id"].as_str().ok_or_else(|| {
            usage(format!(
                "--exclude-matches {}:{}: no train.id (a line of contamination.jsonl)",
                path.display(),
                n + 1
            ))
        })?;
        ids.insert(id.to_string());
    }
    Ok(ids)
}

/// The caption-derived group `--stratify` splits by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stratum {
    /// The first imaging modality the caption names (CT, MRI, ...).
    Modality,
    /// The first organ or tissue the caption names.
    Organ,
}

impl Stratum {
    fn of(self, caption: Option<&str>) -> Option<u8> {
        let parts = caption_parts::analyze(caption?);
        match self {
            Stratum::Modality => parts.modality,
            Stratum::Organ => parts.organ,
        }
    }
}

/// What to select and how to split.
#[derive(Debug, Default)]
pub(crate) struct SelectOptions {
    pub filter: Option<Filter>,
    /// Ids never written.
    pub exclude: HashSet<String>,
    pub limit: Option<u64>,
    pub split: Option<SplitSpec>,
    pub stratify: Option<Stratum>,
}

/// Routes records to splits; counts what it dropped.
#[derive(Debug)]
pub(crate) struct Selection {
    opts: SelectOptions,
    /// Cumulative fraction bounds of the splits, as u64 hash thresholds.
    bounds: Vec<u64>,
    /// `--stratify`: per group, the hash thresholds of its cuts.
    groups: Option<HashMap<Option<u8>, Vec<u64>>>,
    /// Records routed to a split so far (the count `--limit` caps).
    taken: u64,
    /// Records `--filter` dropped.
    filtered_out: u64,
    /// Records `--exclude-matches` dropped.
    excluded: u64,
    /// Records whose hash fell past the last split.
    unsplit: u64,
}

/// `fraction` of 2^64, saturating.
fn threshold(fraction: f64) -> u64 {
    if fraction >= 1.0 {
        u64::MAX
    } else {
        (fraction * 2f64.powi(64)) as u64
    }
}

/// The id's hash that places it in a split.
fn id_hash(id: &str) -> u64 {
    mix64(fnv1a(id))
}

impl Selection {
    /// Prepares the selection; `--stratify` reads the records once to find each group's
    /// cuts.
    pub(crate) fn new(opts: SelectOptions, dataset: &Dataset, read: &ReadOptions) -> Result<Self> {
        let mut cumulative = 0.0;
        let bounds = match &opts.split {
            Some(spec) => spec
                .fractions
                .iter()
                .map(|f| {
                    cumulative += f;
                    threshold(cumulative)
                })
                .collect(),
            None => vec![u64::MAX],
        };
        let mut selection = Selection::unstratified(opts, bounds);
        if let (Some(stratum), Some(spec)) = (selection.opts.stratify, &selection.opts.split) {
            let fractions = spec.fractions.clone();
            let mut hashes: HashMap<Option<u8>, Vec<u64>> = HashMap::new();
            // The first pass routes every record it keeps to one split.
            let opts = std::mem::take(&mut selection.opts);
            let first = std::cell::RefCell::new(Selection::unstratified(opts, vec![u64::MAX]));
            let stop = || first.borrow().exhausted();
            each_batch(dataset, read, false, &|_| {}, &stop, &mut |_, batch, _| {
                // Record inputs only: the pass skips image shards.
                let routes = first.borrow_mut().route(batch)?;
                for (i, split) in routes.into_iter().enumerate() {
                    if split.is_some() {
                        let group = stratum.of(batch.caption(i));
                        hashes.entry(group).or_default().push(id_hash(&batch.id(i)));
                    }
                }
                Ok(())
            })?;
            selection.opts = first.into_inner().opts;
            selection.groups = Some(
                hashes
                    .into_iter()
                    .map(|(group, mut h)| {
                        h.sort_unstable();
                        (group, cuts(&h, &fractions))
                    })
                    .collect(),
            );
        }
        Ok(selection)
    }

    /// A selection cutting every record at the same `bounds`, nothing counted yet.
    fn unstratified(opts: SelectOptions, bounds: Vec<u64>) -> Self {
        Selection {
            opts,
            bounds,
            groups: None,
            taken: 0,
            filtered_out: 0,
            excluded: 0,
            unsplit: 0,
        }
    }

    /// Whether anything is left out or split (without, every record goes to one output).
    pub(crate) fn is_active(&self) -> bool {
        let o = &self.opts;
        o.filter.is_some() || !o.exclude.is_empty() || o.limit.is_some() || o.split.is_some()
    }

    /// Whether `--limit` records have been selected.
    pub(crate) fn exhausted(&self) -> bool {
        self.opts.limit.is_some_and(|l| self.taken >= l)
    }

    /// For each record of `batch`: the split it goes to (0 without `--split`), or None
    /// when it is not written.
    pub(crate) fn route(&mut self, batch: &Batch) -> Result<Vec<Option<usize>>> {
        let keep = match &self.opts.filter {
            Some(f) => f.mask(batch)?,
            None => vec![true; batch.len()],
        };
        let mut out = Vec::with_capacity(batch.len());
        for (i, keep) in keep.into_iter().enumerate() {
            if self.exhausted() {
                out.push(None);
                continue;
            }
            if !keep {
                self.filtered_out += 1;
                out.push(None);
                continue;
            }
            let id = batch.id(i);
            if self.opts.exclude.contains(id.as_ref()) {
                self.excluded += 1;
                out.push(None);
                continue;
            }
            let hash = id_hash(&id);
            let bounds = match (&self.groups, self.opts.stratify) {
                (Some(groups), Some(stratum)) => groups
                    .get(&stratum.of(batch.caption(i)))
                    .map_or(&self.bounds, |cuts| cuts),
                _ => &self.bounds,
            };
            let split = bounds.iter().position(|&b| hash < b || b == u64::MAX);
            match split {
                Some(_) => self.taken += 1,
                None => self.unsplit += 1,
            }
            out.push(split);
        }
        Ok(out)
    }

    /// The counts for the run's summary.
    pub(crate) fn record_in(&self, stats: &mut Stats) {
        stats.filtered_out = self.filtered_out;
        stats.excluded = self.excluded;
        stats.unsplit = self.unsplit;
    }
}

/// The hash thresholds that cut sorted `hashes` in `fractions` (the cumulative counts
/// rounded to the nearest record): a record goes to the first split whose threshold its
/// hash is below.
fn cuts(hashes: &[u64], fractions: &[f64]) -> Vec<u64> {
    let n = hashes.len();
    let mut cumulative = 0.0;
    fractions
        .iter()
        .map(|f| {
            cumulative += f;
            let at = (cumulative * n as f64).round() as usize;
            if cumulative >= 1.0 - 1e-9 {
                u64::MAX
            } else {
                hashes.get(at).copied().unwrap_or(u64::MAX)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_specs_parse_and_refuse_nonsense() {
        let spec: SplitSpec = "train:0.8, validation:0.1,test:0.1".parse().unwrap();
        assert_eq!(spec.names, ["train", "validation", "test"]);
        assert_eq!(spec.fractions, [0.8, 0.1, 0.1]);
        let all: SplitSpec = "train".parse().unwrap();
        assert_eq!(all.fractions, [1.0]);
        let sample: SplitSpec = "sample:0.01".parse().unwrap();
        assert_eq!(sample.fractions, [0.01]);
        for bad in [
            "train:0.9,test:0.2",
            "train,test",
            "a:0",
            "a:x",
            "a b:0.5",
            "a:0.5,a:0.5",
            "",
        ] {
            assert!(bad.parse::<SplitSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_splits_follow_the_fractions_and_the_id_alone() {
        let bounds = [threshold(0.7), threshold(0.9), u64::MAX];
        let mut counts = [0usize; 3];
        for i in 0..100_000 {
            let h = id_hash(&format!("img-{i}"));
            counts[bounds.iter().position(|&b| h < b || b == u64::MAX).unwrap()] += 1;
        }
        let share = |c: usize| c as f64 / 100_000.0;
        assert!((share(counts[0]) - 0.7).abs() < 0.01, "{counts:?}");
        assert!((share(counts[1]) - 0.2).abs() < 0.01, "{counts:?}");
        assert_eq!(id_hash("img-7"), id_hash("img-7"));
    }

    #[test]
    fn stratified_cuts_split_each_group_exactly() {
        let hashes: Vec<u64> = (0..10u64).map(|i| i * 100).collect();
        // 7 / 2 / 1 of 10: thresholds at ranks 7 and 9, then everything.
        assert_eq!(cuts(&hashes, &[0.7, 0.2, 0.1]), vec![700, 900, u64::MAX]);
        // A sample of 30%: the first 3 ranks, the rest past the last split.
        assert_eq!(cuts(&hashes, &[0.3]), vec![300]);
    }
}
