//! Dataset converters: MedTrinity shards / LLaVA records / image folders into LLaVA
//! conversation files, HF-style parquet shards and WebDataset tars, all streaming,
//! resumable and writing each image once.

pub(crate) mod image_files;
pub(crate) mod llava_out;
pub(crate) mod parquet_out;
pub mod select;
pub(crate) mod wds;

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

use crate::core::caption_parts::{PARTS, part_columns};
use crate::core::data::inputs::{Input, Role};
use crate::core::data::sample::{Batch, ImageRef};
use crate::core::data::{Dataset, Flow, ReadOptions};
use image_files::output_name;
use select::Selection;

/// What a conversion did.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub records: usize,
    pub skipped_existing: usize,
    pub images_written: usize,
    pub archive_members: usize,
    /// (where, error) for every record or input that failed.
    pub failures: Vec<(String, String)>,
    /// Records written (or found from an earlier run) per split, in `--split` order.
    pub per_split: Vec<usize>,
    /// Records `--filter` dropped, `--exclude-matches` dropped, and records whose id
    /// hash fell past the last `--split` fraction.
    pub filtered_out: u64,
    pub excluded: u64,
    pub unsplit: u64,
}

/// Feeds every batch of `dataset` to `f`, in input order, and returns the stats `f`
/// kept. A batch that fails to read is recorded in the failures and skipped; an error
/// from `f` stops everything. `stop` turning true (`--limit` reached) ends the reading of
/// record inputs; image-shard inputs (`images`: read them at all) are still read, as the
/// records taken may need their members.
pub(crate) fn each_batch(
    dataset: &Dataset,
    read: &ReadOptions,
    images: bool,
    on_rows: &dyn Fn(u64),
    stop: &dyn Fn() -> bool,
    f: &mut dyn FnMut(&Input, &Batch, &mut Stats) -> Result<()>,
) -> Result<Stats> {
    let mut stats = Stats::default();
    for unit in dataset.units(&[], 1) {
        let input = &dataset.inputs[unit.input];
        let records = input.role == Role::Records;
        if (records && stop()) || (!records && !images) {
            continue;
        }
        let mut fatal = None;
        dataset.read(&unit, read, &mut |batch| {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    stats.failures.push((input.display(), format!("{e:#}")));
                    return Flow::Continue;
                }
            };
            on_rows(batch.len() as u64);
            match f(input, &batch, &mut stats) {
                Ok(()) if records && stop() => Flow::Stop,
                Ok(()) => Flow::Continue,
                Err(e) => {
                    fatal = Some(e);
                    Flow::Stop
                }
            }
        })?;
        if let Some(e) = fatal {
            return Err(e);
        }
    }
    Ok(stats)
}

/// A record with its image bytes in hand, for the shard writers.
pub(crate) struct Record<'a> {
    pub id: &'a str,
    pub image: &'a [u8],
    /// The image's own (safe, relative) file name, if it has one.
    pub image_name: Option<&'a str>,
    pub caption: &'a str,
    pub source: Option<&'a str>,
    pub extra: Map<String, Value>,
}

/// A writer of [`Record`]s into shards that can tell which ids an earlier run wrote.
pub(crate) trait RecordSink {
    /// Whether `id` was written by an earlier run.
    fn contains(&self, id: &str) -> bool;
    /// How many ids earlier runs wrote.
    fn resumed(&self) -> usize;
    /// Writes one record.
    fn push(&mut self, record: Record<'_>) -> Result<()>;
    /// Completes the output; returns how many shards it holds.
    fn finish(self) -> Result<usize>
    where
        Self: Sized;
}

/// What [`each_routed_batch`] calls per batch: the input, the batch, its routes, the
/// per-split tally and the stats.
pub(crate) type RoutedBatch<'a> = dyn FnMut(&Input, &Batch, Option<Vec<Option<usize>>>, &mut [usize], &mut Stats) -> Result<()>
    + 'a;

/// Runs [`each_batch`] with `selection` routing the records: `f` gets each record
/// batch's routes (the split of each record, None for those not written; None for the
/// batches of image-shard inputs) and the per-split tally of `splits` splits, which ends
/// up in the stats with the selection's counts.
pub(crate) fn each_routed_batch(
    dataset: &Dataset,
    read: &ReadOptions,
    selection: &mut Selection,
    splits: usize,
    on_rows: &dyn Fn(u64),
    f: &mut RoutedBatch<'_>,
) -> Result<Stats> {
    let mut per_split = vec![0; splits];
    let selected = std::cell::RefCell::new(selection);
    let stop = || selected.borrow().exhausted();
    let mut stats = each_batch(
        dataset,
        read,
        true,
        on_rows,
        &stop,
        &mut |input, batch, stats| {
            let routes = match input.role {
                Role::Records => Some(selected.borrow_mut().route(batch)?),
                Role::ImageShard => None,
            };
            f(input, batch, routes, &mut per_split, stats)
        },
    )?;
    stats.per_split = per_split;
    selected.borrow().record_in(&mut stats);
    Ok(stats)
}

/// Feeds every record of `dataset` that `selection` routes to a split and that has a
/// caption and image bytes (in the record or in a file) to that split's sink, skipping
/// ids it already has. Other records are listed in the stats; image members of
/// `.tar.zst` shards are counted, not written. With `parts`, the six caption parts go
/// in each record's fields.
pub(crate) fn write_records(
    dataset: &Dataset,
    read: &ReadOptions,
    sinks: &mut [&mut dyn RecordSink],
    selection: &mut Selection,
    parts: bool,
    on_rows: &dyn Fn(u64),
) -> Result<Stats> {
    let splits = sinks.len();
    each_routed_batch(
        dataset,
        read,
        selection,
        splits,
        on_rows,
        &mut |input, batch, routes, per_split, stats| {
            let Some(routes) = routes else {
                stats.archive_members += batch.len();
                return Ok(());
            };
            for (i, split) in routes.into_iter().enumerate() {
                let Some(split) = split else {
                    continue;
                };
                let id = batch.id(i);
                // In any split: with --stratify a grown dataset can move a record's split.
                if sinks.iter().any(|s| s.contains(&id)) {
                    stats.skipped_existing += 1;
                    per_split[split] += 1;
                    continue;
                }
                let row = batch.first_row + i as u64;
                let at = format!("{}: row {row}", input.display());
                let image = batch.image(i);
                let bytes = match (&image, batch.caption(i)) {
                    (_, None) => Err(anyhow!("no caption")),
                    (ImageRef::Archived(name), _) => Err(anyhow!(
                        "image {name} is inside a .tar.zst shard; extract the shards first (mt convert llava --images-out DIR)"
                    )),
                    _ => image.bytes(),
                };
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) => {
                        stats
                            .failures
                            .push((at.clone(), format!("{at} (id {id}): {e:#}")));
                        continue;
                    }
                };
                let name = output_name(&id, &image, input.store.root())
                    .map(|p| p.to_string_lossy().into_owned());
                let sink = &mut *sinks[split];
                let caption = batch.caption(i).unwrap_or_default();
                let mut extra = batch.extra(i);
                if parts {
                    extra.extend(part_fields(caption));
                }
                sink.push(Record {
                    id: &id,
                    image: &bytes,
                    image_name: name.as_deref(),
                    caption,
                    source: batch.source(i),
                    extra,
                })?;
                stats.records += 1;
                per_split[split] += 1;
            }
            Ok(())
        },
    )
}

/// `--parts`: the six MedTrinity caption parts as record fields (null where absent).
pub(crate) fn part_fields(caption: &str) -> impl Iterator<Item = (String, Value)> {
    PARTS
        .iter()
        .zip(part_columns(caption))
        .map(|(name, value)| (name.to_string(), value.map_or(Value::Null, Value::String)))
}

/// Complete shards `<prefix>-NNNNN[-of-MMMMM].<ext>` in `dir` with their numbers, in
/// order; leftovers of an interrupted shard (`<prefix>-NNNNN.<ext>.partial`) are
/// removed. Other files, other prefixes (`train-v2-...`) included, are left alone.
pub(crate) fn complete_shards(
    dir: &Path,
    prefix: &str,
    ext: &str,
) -> Result<Vec<(usize, PathBuf)>> {
    let mut shards = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(partial) = name.strip_suffix(".partial") {
            if shard_number(partial, prefix, ext).is_some() {
                std::fs::remove_file(e.path())?;
            }
        } else if let Some(n) = shard_number(&name, prefix, ext) {
            shards.push((n, e.path()));
        }
    }
    shards.sort();
    Ok(shards)
}

/// The number of a shard file name `<prefix>-NNNNN[-of-MMMMM].<ext>`.
fn shard_number(name: &str, prefix: &str, ext: &str) -> Option<usize> {
    let rest = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(ext)?
        .strip_suffix('.')?;
    let (number, total) = match rest.split_once("-of-") {
        Some((n, t)) => (n, Some(t)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(number) && total.is_none_or(digits))
        .then(|| number.parse().ok())
        .flatten()
}

/// The number for a new shard: one past the highest there.
pub(crate) fn next_shard_number(shards: &[(usize, PathBuf)]) -> usize {
    shards.last().map_or(0, |(n, _)| n + 1)
}

/// Renames a finished shard into place, refusing to replace an existing file.
pub(crate) fn publish_shard(tmp: &Path, path: &Path) -> Result<()> {
    if path.exists() {
        anyhow::bail!(
            "{}: already exists; refusing to overwrite a complete shard",
            path.display()
        );
    }
    std::fs::rename(tmp, path).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_matched_exactly() {
        assert_eq!(
            shard_number("train-00003.parquet", "train", "parquet"),
            Some(3)
        );
        assert_eq!(
            shard_number("train-00003-of-00010.parquet", "train", "parquet"),
            Some(3)
        );
        assert_eq!(
            shard_number("train-000012.tar.zst", "train", "tar.zst"),
            Some(12)
        );
        assert_eq!(
            shard_number("train-v2-00000-of-00001.parquet", "train", "parquet"),
            None
        );
        assert_eq!(shard_number("train-small-000000.tar", "train", "tar"), None);
        assert_eq!(shard_number("train-000000.tar", "train", "tar.zst"), None);
        assert_eq!(shard_number("train-.parquet", "train", "parquet"), None);
    }
}
