//! Dataset converters: MedTrinity shards / LLaVA records / image folders into LLaVA
//! conversation files, HF-style parquet shards and WebDataset tars, all streaming,
//! resumable and writing each image once.

pub mod images;
pub mod llava;
pub mod parquet_out;

use anyhow::Result;

use crate::core::data::inputs::Input;
use crate::core::data::sample::Batch;
use crate::core::data::{Dataset, Flow, ReadOptions};

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
