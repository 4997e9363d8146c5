//! Resumable record outputs: JSONL, or parquet staged through JSONL.
//!
//! A path ending in `.parquet` is written in two steps. While the command runs, records
//! are appended to `<path>.partial.jsonl`, an ordinary `JsonlOutput`, so kill -9 loses
//! nothing and a rerun skips the ids already staged. `RecordOutput::finish` then infers
//! an Arrow schema from the whole staged file (objects become structs, arrays of objects
//! `list<struct>`, integers mixed with floats `float64`, other mixed scalars `utf8`),
//! streams it in batches into a zstd parquet file written as `<path>.tmp` and renamed
//! over `<path>`, and deletes the staging file. The pass over the staging file for the
//! schema and the one for the rows both stream; memory holds one batch and one row group.
//!
//! - A field that is null on every row is stored as a nullable `utf8` column, and a list
//!   that is empty on every row as `list<utf8>`, so the column is still there; an object
//!   that is `{}` on every row has no columns to store and is left out.
//! - No rows at all still give a valid parquet file, with the key as its only (`utf8`)
//!   column.
//! - Rerunning into a finished parquet file first exports its rows back into the staging
//!   file (through `<staging>.tmp` and a rename, so a run killed half-way exports again),
//!   so the ids in it are skipped and the new parquet file holds the old rows and the new.
//! - When both files exist, a run was killed after the rename and before the staging file
//!   was deleted: the staging file holds every row of the parquet file, and it wins.
//!
//! Any other path (and `-`, stdout) is plain JSONL, exactly as `JsonlOutput` writes it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use arrow_json::ReaderBuilder;
use arrow_json::reader::infer_json_schema_from_seekable;
use arrow_json::writer::{LineDelimited, WriterBuilder};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::data::parquet::{batches, open_checked};
use super::jsonl_output::JsonlOutput;

/// Rows per Arrow batch read from or written to the staging file.
const BATCH_ROWS: usize = 8192;
/// A parquet row group is closed once its encoded size reaches this.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// A resumable output keyed by one field: JSONL, or parquet when the path ends in
/// `.parquet` (see the module docs).
pub(crate) struct RecordOutput {
    staged: JsonlOutput,
    parquet: Option<ParquetTarget>,
}

/// Where a parquet output is staged and where it goes in the end.
struct ParquetTarget {
    path: PathBuf,
    staging: PathBuf,
    key: String,
}

impl RecordOutput {
    /// Opens `path` (`-` = stdout), collecting the `key` of every record already written
    /// there, in its staging file, or in a parquet file finished by an earlier run.
    pub(crate) fn open(path: &Path, key: &str) -> Result<Self> {
        let Some(staging) = staging_path(path) else {
            return Ok(Self {
                staged: JsonlOutput::open(path, key)?,
                parquet: None,
            });
        };
        match (path.exists(), staging.exists()) {
            (true, false) => {
                let rows = export_parquet(path, &staging, key)?;
                tracing::info!(
                    "{}: {rows} rows from an earlier run staged in {}",
                    path.display(),
                    staging.display()
                );
            }
            (true, true) => tracing::info!(
                "{}: resuming from {}, left by an interrupted run with all of its rows",
                path.display(),
                staging.display()
            ),
            _ => {}
        }
        Ok(Self {
            staged: JsonlOutput::open(&staging, key)?,
            parquet: Some(ParquetTarget {
                path: path.to_path_buf(),
                staging,
                key: key.to_string(),
            }),
        })
    }

    /// Whether a record with this key was written before.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.staged.contains(id)
    }

    /// Records already present when the output was opened (plus those written since).
    pub(crate) fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether nothing has been written yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Appends records and flushes them (to the staging file for parquet).
    pub(crate) fn write_all<T: Serialize>(&mut self, records: &[(String, T)]) -> Result<()> {
        self.staged.write_all(records)
    }

    /// Writes the parquet file from everything staged and returns its path; `None` for
    /// JSONL, which is complete already. Until this succeeds, the rows stay staged and
    /// the next run picks them up.
    pub(crate) fn finish(self) -> Result<Option<PathBuf>> {
        let Self { staged, parquet } = self;
        drop(staged);
        let Some(target) = parquet else {
            return Ok(None);
        };
        let rows = write_parquet(&target.staging, &target.path, &target.key)?;
        std::fs::remove_file(&target.staging)
            .with_context(|| format!("cannot remove {}", target.staging.display()))?;
        tracing::info!("{}: {rows} rows", target.path.display());
        Ok(Some(target.path))
    }
}

/// Where the records of a parquet output are staged while it is written
/// (`<path>.partial.jsonl`); `None` for other paths, which are written as they go.
pub(crate) fn staging_path(path: &Path) -> Option<PathBuf> {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        .then(|| with_suffix(path, ".partial.jsonl"))
}

/// Where a record sits in its file, for messages: `file:LINE` or `file: row N`.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The file.
    pub path: &'a Path,
    /// 1-based line (JSONL) or row (parquet).
    pub n: u64,
    /// A parquet row (`file: row N`) rather than a JSONL line (`file:N`).
    pub parquet: bool,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parquet {
            true => write!(f, "{}: row {}", self.path.display(), self.n),
            false => write!(f, "{}:{}", self.path.display(), self.n),
        }
    }
}

/// Streams the records of a JSONL file, or of a parquet file (`*.parquet`, as
/// `RecordOutput` writes them), to `visit` one at a time; blank lines and an unfinished
/// last line (no newline: still being written, or cut by a crash) are skipped, and a line
/// that is not JSON fails with its position.
pub fn for_each_record(
    path: &Path,
    visit: &mut dyn FnMut(At<'_>, serde_json::Value) -> Result<()>,
) -> Result<()> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let mut at = At {
        path,
        n: 0,
        parquet: is_parquet,
    };
    if !is_parquet {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("{at}: cannot read"))?
                == 0
            {
                return Ok(());
            }
            at.n += 1;
            if !line.ends_with(b"\n") {
                // The last line of a file still being written, or cut by kill -9.
                tracing::warn!("{at}: skipping an unfinished last line");
                return Ok(());
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value =
                serde_json::from_slice(&line).with_context(|| format!("{at}: not a JSON line"))?;
            visit(at, value)?;
        }
    }
    let mut buf = Vec::new();
    for batch in batches(open_checked(path)?.with_batch_size(BATCH_ROWS))? {
        let batch = batch.with_context(|| format!("{}: cannot read", path.display()))?;
        buf.clear();
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buf);
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            at.n += 1;
            let value =
                serde_json::from_slice(line).with_context(|| format!("{at}: cannot convert"))?;
            visit(at, value)?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces `path` with what `write` puts into a fresh `<path>.tmp`, by a rename once it
/// is complete and synced; the temporary file is removed when `write` fails.
fn replace_with(path: &Path, write: impl FnOnce(File) -> Result<File>) -> Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let result = File::create(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))
        .and_then(write)
        .and_then(|file| {
            file.sync_all()
                .with_context(|| format!("cannot write {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the rows of the parquet file `path` as JSON lines into `staging`; returns the
/// row count.
fn export_parquet(path: &Path, staging: &Path, key: &str) -> Result<usize> {
    let builder = open_checked(path)?;
    if builder.schema().field_with_name(key).is_err() {
        bail!(
            "{}: no `{key}` column; is this an output of the same command?",
            path.display()
        );
    }
    let rows_read = batches(builder.with_batch_size(BATCH_ROWS))?;
    let mut rows = 0;
    replace_with(staging, |file| {
        // Nulls stay explicit so that a column null on every row keeps existing.
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(BufWriter::new(file));
        for batch in rows_read {
            let batch = batch.with_context(|| format!("{}: cannot read", path.display()))?;
            rows += batch.num_rows();
            writer
                .write(&batch)
                .with_context(|| format!("cannot write {}", staging.display()))?;
        }
        writer
            .finish()
            .with_context(|| format!("cannot write {}", staging.display()))?;
        writer
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", staging.display()))
    })?;
    Ok(rows)
}

/// Writes the records staged in `staging` into the parquet file `path`; returns the row
/// count.
fn write_parquet(staging: &Path, path: &Path, key: &str) -> Result<usize> {
    let file = File::open(staging).with_context(|| format!("cannot open {}", staging.display()))?;
    let mut reader = BufReader::new(file);
    let (inferred, rows) =
        infer_json_schema_from_seekable(&mut reader, None).with_context(|| {
            format!(
                "{}: cannot infer a parquet schema (does a field change type between lines?)",
                staging.display()
            )
        })?;
    let schema = Arc::new(storable_schema(&inferred, key));
    let batches = ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH_ROWS)
        .with_coerce_primitive(true)
        .build(reader)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build();
    replace_with(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))
            .with_context(|| format!("cannot write {}", path.display()))?;
        for batch in batches {
            let batch = batch.with_context(|| format!("{}: cannot read", staging.display()))?;
            writer
                .write(&batch)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        writer
            .into_inner()
            .with_context(|| format!("cannot write {}", path.display()))
    })?;
    Ok(rows)
}

/// The inferred schema with only types parquet can store (see the module docs), and the
/// key column in front when there were no rows to infer it from.
fn storable_schema(inferred: &Schema, key: &str) -> Schema {
    let mut fields: Vec<Field> = inferred
        .fields()
        .iter()
        .filter_map(|f| storable(f))
        .collect();
    if !fields.iter().any(|f| f.name() == key) {
        fields.insert(0, Field::new(key, DataType::Utf8, true));
    }
    Schema::new(fields)
}

/// `field` with never-seen types made `utf8`, or `None` when nothing of it can be stored.
fn storable(field: &Field) -> Option<Field> {
    let data_type = match field.data_type() {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(storable(item)?)),
        DataType::Struct(children) => {
            let children: Fields = children.iter().filter_map(|f| storable(f)).collect();
            if children.is_empty() {
                return None;
            }
            DataType::Struct(children)
        }
        other => other.clone(),
    };
    Some(field.clone().with_data_type(data_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::{RecordBatch, RecordBatchReader as _};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::{Value, json};

    fn records(values: &[Value]) -> Vec<(String, Value)> {
        values
            .iter()
            .map(|v| (v["id"].as_str().unwrap().to_string(), v.clone()))
            .collect()
    }

    /// One record per id: an integral float and a name that is always null.
    fn simple(ids: &[&str]) -> Vec<(String, Value)> {
        let values: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "score": 2.0, "name": null}))
            .collect();
        records(&values)
    }

    /// All rows of a small parquet file (one row group) as one batch.
    fn read_parquet(path: &Path) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let schema = reader.schema();
        let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert!(batches.len() <= 1, "{} batches", batches.len());
        batches
            .pop()
            .unwrap_or_else(|| RecordBatch::new_empty(schema))
    }

    fn ids(batch: &RecordBatch) -> Vec<&str> {
        let col = batch.column_by_name("id").unwrap().as_string::<i32>();
        col.iter().map(Option::unwrap).collect()
    }

    /// The folder's file names, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn jsonl_paths_are_written_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut out = RecordOutput::open(&path, "id").unwrap();
        out.write_all(&simple(&["a", "b"])).unwrap();
        assert_eq!(out.finish().unwrap(), None);
        let out = RecordOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && out.contains("b") && out.len() == 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"a\",\"score\":2.0,\"name\":null}\n\
             {\"id\":\"b\",\"score\":2.0,\"name\":null}\n"
        );
        assert_eq!(files(dir.path()), ["out.jsonl"]);
    }

    #[test]
    fn nested_records_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut out = RecordOutput::open(&path, "id").unwrap();
        out.write_all(&records(&[
            json!({"id": "a", "image": null, "score": 1, "rois": [
                {"label": "x", "bbox": [1, 2, 3, 4], "pct": 12.5},
                {"label": "y", "bbox": [0, 0, 1, 1], "pct": 0.25},
            ], "never": null, "none": [], "blank": {}}),
            json!({"id": "b", "image": "b.png", "score": 2.5, "rois": [],
                   "never": null, "none": [], "blank": {}}),
            json!({"id": "c", "score": null, "rois": [{"label": "z", "bbox": [5, 6, 7, 8], "pct": 3}]}),
        ]))
        .unwrap();
        assert!(out.contains("c") && !out.contains("d"));
        assert_eq!(out.finish().unwrap(), Some(path.clone()));
        assert_eq!(files(dir.path()), ["out.parquet"]);

        let batch = read_parquet(&path);
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        // `blank` is `{}` everywhere: nothing to store.
        assert_eq!(names, ["id", "image", "score", "rois", "never", "none"]);
        assert_eq!(ids(&batch), ["a", "b", "c"]);
        let image = batch.column_by_name("image").unwrap().as_string::<i32>();
        assert_eq!(
            image.iter().collect::<Vec<_>>(),
            [None, Some("b.png"), None]
        );
        // Integers mixed with floats are floats.
        let score = batch.column_by_name("score").unwrap();
        let score = score.as_primitive::<Float64Type>();
        assert_eq!(
            score.iter().collect::<Vec<_>>(),
            [Some(1.0), Some(2.5), None]
        );
        // Never-typed fields keep a column: utf8 and list<utf8>, all null / empty.
        let never = batch.column_by_name("never").unwrap();
        assert_eq!(never.data_type(), &DataType::Utf8);
        assert_eq!(never.null_count(), 3);
        let none = batch.column_by_name("none").unwrap().as_list::<i32>();
        assert_eq!(none.value_type(), DataType::Utf8);
        assert_eq!(none.values().len(), 0);

        let rois = batch.column_by_name("rois").unwrap().as_list::<i32>();
        assert_eq!(
            (0..3).map(|i| rois.value_length(i)).collect::<Vec<_>>(),
            [2, 0, 1]
        );
        let roi = rois.values().as_struct();
        let labels = roi.column_by_name("label").unwrap().as_string::<i32>();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            [Some("x"), Some("y"), Some("z")]
        );
        let pct = roi
            .column_by_name("pct")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(pct.values().to_vec(), [12.5, 0.25, 3.0]);
        let bbox = roi.column_by_name("bbox").unwrap().as_list::<i32>();
        let last = bbox.value(2);
        assert_eq!(
            last.as_primitive::<Int64Type>().values().to_vec(),
            [5, 6, 7, 8]
        );
    }

    #[test]
    fn an_unfinished_parquet_output_resumes_from_its_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut out = RecordOutput::open(&path, "id").unwrap();
        out.write_all(&simple(&["a", "b"])).unwrap();
        drop(out); // killed before finish
        assert_eq!(files(dir.path()), ["out.parquet.partial.jsonl"]);
        let mut out = RecordOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && out.contains("b") && out.len() == 2);
        out.write_all(&simple(&["c"])).unwrap();
        out.finish().unwrap();
        assert_eq!(ids(&read_parquet(&path)), ["a", "b", "c"]);
    }

    #[test]
    fn a_rerun_appends_to_a_finished_parquet_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut out = RecordOutput::open(&path, "id").unwrap();
        out.write_all(&simple(&["a", "b"])).unwrap();
        out.finish().unwrap();
        // Left by an export killed half-way: overwritten, not read.
        std::fs::write(dir.path().join("out.parquet.partial.jsonl.tmp"), "{\"id\":").unwrap();

        let mut out = RecordOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && out.contains("b") && out.len() == 2);
        out.write_all(&simple(&["c"])).unwrap();
        out.finish().unwrap();
        assert_eq!(files(dir.path()), ["out.parquet"]);
        // A rerun with nothing new rewrites the rows from the parquet file alone.
        RecordOutput::open(&path, "id").unwrap().finish().unwrap();
        let batch = read_parquet(&path);
        assert_eq!(ids(&batch), ["a", "b", "c"]);
        // Types survive the trips through the staging file: 2.0 stays a float, and the
        // always-null column is still there.
        let score = batch.column_by_name("score").unwrap();
        assert_eq!(
            score.as_primitive::<Float64Type>().values().to_vec(),
            [2.0; 3]
        );
        assert_eq!(batch.column_by_name("name").unwrap().null_count(), 3);
    }

    #[test]
    fn the_staging_file_wins_over_a_parquet_file_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut out = RecordOutput::open(&path, "id").unwrap();
        out.write_all(&simple(&["a", "b"])).unwrap();
        out.finish().unwrap();
        // Killed after the rename, before the staging file (a, b, then c) was removed.
        let staging = dir.path().join("out.parquet.partial.jsonl");
        let lines: String = ["a", "b", "c"]
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"score\":2.0,\"name\":null}}\n"))
            .collect();
        std::fs::write(&staging, lines).unwrap();

        let out = RecordOutput::open(&path, "id").unwrap();
        assert_eq!(out.len(), 3);
        out.finish().unwrap();
        assert_eq!(ids(&read_parquet(&path)), ["a", "b", "c"]);
        assert!(!staging.exists());
    }

    #[test]
    fn a_staged_line_cut_by_a_crash_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        std::fs::write(
            dir.path().join("out.parquet.partial.jsonl"),
            "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\"",
        )
        .unwrap();
        let mut out = RecordOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && !out.contains("b"));
        out.write_all(&records(&[json!({"id": "b", "x": 2})]))
            .unwrap();
        out.finish().unwrap();
        let batch = read_parquet(&path);
        assert_eq!(ids(&batch), ["a", "b"]);
        let x = batch
            .column_by_name("x")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(x.values().to_vec(), [1, 2]);
    }

    #[test]
    fn no_rows_give_a_parquet_file_with_the_key_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        RecordOutput::open(&path, "id").unwrap().finish().unwrap();
        let batch = read_parquet(&path);
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["id"]
        );
        // And a rerun into it works.
        let mut out = RecordOutput::open(&path, "id").unwrap();
        assert!(out.is_empty());
        out.write_all(&simple(&["a"])).unwrap();
        out.finish().unwrap();
        assert_eq!(ids(&read_parquet(&path)), ["a"]);
    }

    #[test]
    fn a_parquet_file_without_the_key_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut out = RecordOutput::open(&path, "name").unwrap();
        out.write_all(&[("x".to_string(), json!({"name": "x"}))])
            .unwrap();
        out.finish().unwrap();
        let err = RecordOutput::open(&path, "id").err().unwrap().to_string();
        assert!(err.contains("out.parquet: no `id` column"), "{err}");
        assert_eq!(files(dir.path()), ["out.parquet"]);
    }

    #[test]
    fn records_read_back_from_jsonl_and_parquet_with_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let values = [
            json!({"id": "a", "rois": [{"label": "x", "area": 3}]}),
            json!({"id": "b", "rois": []}),
        ];
        for name in ["r.jsonl", "r.parquet"] {
            let path = dir.path().join(name);
            let mut out = RecordOutput::open(&path, "id").unwrap();
            out.write_all(&records(&values)).unwrap();
            out.finish().unwrap();
            let mut seen = Vec::new();
            for_each_record(&path, &mut |at, v| {
                seen.push((at.to_string(), v));
                Ok(())
            })
            .unwrap();
            assert_eq!(seen.len(), 2, "{name}");
            assert_eq!(seen[0].1["rois"][0]["area"], 3, "{name}");
            assert_eq!(seen[1].1["id"], "b");
            let second = if name.ends_with("parquet") {
                ": row 2"
            } else {
                ":2"
            };
            assert!(
                seen[1].0.ends_with(&format!("{name}{second}")),
                "{}",
                seen[1].0
            );
        }
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"id\": 1}\n\n{oops\n{\"id\": 2}").unwrap();
        let err = for_each_record(&bad, &mut |_, _| Ok(())).unwrap_err();
        assert!(
            err.to_string().ends_with("bad.jsonl:3: not a JSON line"),
            "{err}"
        );
        std::fs::write(&bad, "{\"id\": 1}\n{\"id\": 2, \"cut").unwrap();
        let mut n = 0;
        for_each_record(&bad, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1, "the cut last line is skipped");
    }
}
