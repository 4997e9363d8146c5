//! Dataset readers: one `Sample` model over MedTrinity-25M parquet shards (`25M_demo`
//! and `25M_full`), LLaVA JSON/JSONL, image folders and `.tar.zst` image shards.
//!
//! Work is split into [`Unit`]s (a parquet row group, or a whole file) so callers can
//! spread it over threads; each unit streams [`Batch`]es to a visitor.

pub(crate) mod archive;
pub(crate) mod columns;
pub(crate) mod filter;
pub(crate) mod folder;
pub mod inputs;
pub(crate) mod json_array;
pub mod llava_records;
pub(crate) mod parquet;
pub(crate) mod sample;

use std::ops::Range;

use anyhow::Result;

pub(crate) use inputs::Format;
pub(crate) use inputs::Input;
pub(crate) use inputs::Role;
pub(crate) use parquet::ParquetShard;
pub use sample::Batch;
pub(crate) use sample::ImageRef;
pub(crate) use sample::ImageSource;
pub(crate) use sample::Sample;

/// A record id as text: a string as is, a number written out; `None` for anything else.
pub(crate) fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a visitor wants more batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Send the next batch.
    Continue,
    /// Stop reading this unit.
    Stop,
}

/// Receives each batch (or the error that replaced it) in input order.
pub(crate) type Visit<'a> = &'a mut dyn FnMut(Result<Batch>) -> Flow;

/// A piece of work: a run of row groups of a parquet file, or one whole other input.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Index of its input in [`Dataset::inputs`].
    pub input: usize,
    /// The parquet row groups it covers (`None`: the whole input, not parquet).
    pub row_groups: Option<Range<usize>>,
    /// Rows in the unit when known up front (parquet).
    pub rows: Option<u64>,
}

/// How to read units.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Columns to read (names or roles `id`, `caption`, `source`, `image`); None = all.
    pub columns: Option<Vec<String>>,
    /// Records per batch.
    pub batch_rows: usize,
}

/// Resolved inputs with their parquet footers opened.
pub struct Dataset {
    /// The inputs, in command-line order.
    pub inputs: Vec<Input>,
    /// The opened shard of each parquet input (None for other formats or on failure).
    pub shards: Vec<Option<ParquetShard>>,
    /// Parquet projections per input, from [`ReadOptions::columns`].
    projections: Vec<Vec<usize>>,
}

impl Dataset {
    /// Opens every parquet footer and checks the column selection. Inputs that fail are
    /// returned with their error and produce no units.
    pub fn open(inputs: Vec<Input>, options: &ReadOptions) -> (Self, Vec<(usize, anyhow::Error)>) {
        let mut failures = Vec::new();
        let mut shards = Vec::with_capacity(inputs.len());
        let mut projections = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            if input.format != Format::Parquet {
                shards.push(None);
                projections.push(Vec::new());
                continue;
            }
            let opened = ParquetShard::open(&input.path)
                .and_then(|s| s.projection(options.columns.as_deref()).map(|p| (s, p)));
            match opened {
                Ok((shard, projection)) => {
                    shards.push(Some(shard));
                    projections.push(projection);
                }
                Err(e) => {
                    failures.push((i, e));
                    shards.push(None);
                    projections.push(Vec::new());
                }
            }
        }
        (
            Dataset {
                inputs,
                shards,
                projections,
            },
            failures,
        )
    }

    /// The units of work, in input order; `failed` inputs are left out. Parquet files
    /// are whole units when there are enough of them to keep `threads` busy, else they
    /// are split into runs of row groups.
    pub fn units(&self, failed: &[usize], threads: usize) -> Vec<Unit> {
        let shards = self
            .shards
            .iter()
            .enumerate()
            .filter(|(i, s)| s.is_some() && !failed.contains(i))
            .count();
        let pieces = (4 * threads.max(1)).div_ceil(shards.max(1));
        let mut units = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            if failed.contains(&i) {
                continue;
            }
            match &self.shards[i] {
                Some(shard) => {
                    let n = shard.num_row_groups();
                    let step = n.div_ceil(pieces).max(1);
                    units.extend((0..n).step_by(step).map(|start| {
                        let rgs = start..(start + step).min(n);
                        Unit {
                            input: i,
                            rows: Some(shard.rows_in(rgs.clone())),
                            row_groups: Some(rgs),
                        }
                    }));
                }
                None if input.format == Format::Parquet => {}
                None => units.push(Unit {
                    input: i,
                    row_groups: None,
                    rows: None,
                }),
            }
        }
        units
    }

    /// Total rows of the parquet inputs (for progress), None if there are other inputs.
    pub(crate) fn known_rows(&self, units: &[Unit]) -> Option<u64> {
        units.iter().map(|u| u.rows).sum()
    }

    /// Streams the batches of `unit` to `visit`. Errors that end the unit early are
    /// returned; recoverable ones (a bad line) are passed to `visit` and reading goes on.
    pub fn read(&self, unit: &Unit, options: &ReadOptions, visit: Visit<'_>) -> Result<()> {
        let input = &self.inputs[unit.input];
        let rows = options.batch_rows.max(1);
        match (input.format, &self.shards[unit.input], &unit.row_groups) {
            (Format::Parquet, Some(shard), Some(rgs)) => shard.read_row_groups(
                unit.input,
                rgs.clone(),
                &self.projections[unit.input],
                rows,
                &input.store,
                visit,
            ),
            (Format::Parquet, ..) => {
                anyhow::bail!("{}: parquet input was not opened", input.display())
            }
            (Format::Jsonl, ..) => {
                llava_records::read_jsonl(unit.input, &input.path, &input.store, rows, visit)
            }
            (Format::LlavaJson, ..) => {
                llava_records::read_json_array(unit.input, &input.path, &input.store, rows, visit)
            }
            (Format::ImageFolder, ..) => folder::read_folder(unit.input, &input.path, rows, visit),
            (Format::Archive, ..) => archive::read_archive(unit.input, &input.path, rows, visit),
        }
    }
}
