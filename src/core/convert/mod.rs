//! Dataset converters: MedTrinity shards / LLaVA records / image folders into LLaVA
//! conversation files, HF-style parquet shards and WebDataset tars, all streaming,
//! resumable and writing each image once.

pub mod images;
pub mod llava;
pub mod parquet_out;
pub mod wds;

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

use crate::core::data::inputs::{Input, Role};
use crate::core::data::sample::{Batch, ImageRef};
use crate::core::data::{Dataset, Flow, ReadOptions};
use images::{output_name, read_bytes};

/// What a conversion did.
#[derive(Debug, Default)]
pub struct Stats {
    pub records: usize,
    pub skipped_existing: usize,
    pub images_written: usize,
    pub archive_members: usize,
    /// (where, error) for every record or input that failed.
    pub failures: Vec<(String, String)>,
}

/// Feeds every batch of `dataset` to `f`, in input order. A batch that fails to read
/// is recorded in `stats.failures` and skipped; an error from `f` stops everything.
pub fn each_batch(
    dataset: &Dataset,
    read: &ReadOptions,
    stats: &mut Stats,
    on_rows: &dyn Fn(u64),
    f: &mut dyn FnMut(&Input, &Batch, &mut Stats) -> Result<()>,
) -> Result<()> {
    for unit in dataset.units(&[], 1) {
        let input = &dataset.inputs[unit.input];
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
            match f(input, &batch, stats) {
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
    Ok(())
}

/// A record with its image bytes in hand, for the shard writers.
pub struct Record<'a> {
    pub id: &'a str,
    pub image: &'a [u8],
    /// The image's own (safe, relative) file name, if it has one.
    pub image_name: Option<&'a str>,
    pub caption: &'a str,
    pub source: Option<&'a str>,
    pub extra: Map<String, Value>,
}

/// A writer of [`Record`]s that can tell which ids an earlier run already wrote.
pub trait RecordSink {
    /// Whether `id` was written by an earlier run.
    fn contains(&self, id: &str) -> bool;
    /// Writes one record.
    fn push(&mut self, record: Record<'_>) -> Result<()>;
}

/// Feeds every record of `dataset` that has a caption and image bytes (in the record
/// or in a file) to `sink`, skipping ids it already has. Other records are listed in
/// the stats; image members of `.tar.zst` shards are counted, not written.
pub fn write_records(
    dataset: &Dataset,
    read: &ReadOptions,
    sink: &mut dyn RecordSink,
    on_rows: &dyn Fn(u64),
) -> Result<Stats> {
    let mut stats = Stats::default();
    each_batch(
        dataset,
        read,
        &mut stats,
        on_rows,
        &mut |input, batch, stats| {
            if input.role == Role::ImageShard {
                stats.archive_members += batch.len();
                return Ok(());
            }
            for i in 0..batch.len() {
                let id = batch.id(i);
                if sink.contains(&id) {
                    stats.skipped_existing += 1;
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
                    _ => read_bytes(&image),
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
                let name = output_name(&id, &image).map(|p| p.to_string_lossy().into_owned());
                sink.push(Record {
                    id: &id,
                    image: &bytes,
                    image_name: name.as_deref(),
                    caption: batch.caption(i).unwrap_or_default(),
                    source: batch.source(i),
                    extra: batch.extra(i),
                })?;
                stats.records += 1;
            }
            Ok(())
        },
    )?;
    Ok(stats)
}

/// Complete shards `<prefix>-*.<ext>` in `dir`, sorted; leftovers of an interrupted
/// shard (`*.<ext>.partial`) are removed.
pub fn complete_shards(dir: &Path, prefix: &str, ext: &str) -> Result<Vec<PathBuf>> {
    let mut shards = Vec::new();
    let start = format!("{prefix}-");
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&start) {
            continue;
        }
        if name.ends_with(&format!(".{ext}.partial")) {
            std::fs::remove_file(e.path())?;
        } else if name.ends_with(&format!(".{ext}")) {
            shards.push(e.path());
        }
    }
    shards.sort();
    Ok(shards)
}
