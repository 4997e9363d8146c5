//! Parquet shards: MedTrinity-25M `25M_demo` (image struct, id, caption), `25M_full`
//! (file_name, caption, source, ...) and any other table with recognisable columns.
//! Reading streams row groups, projected to the columns asked for.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::{ParquetMetaData, ParquetStatisticsPolicy};
use serde_json::Value;

use crate::core::error::contain_panic;

use super::columns::{BinColumn, IdColumn, ImageStructColumn, StrColumn};
use super::inputs::ImageStore;
use super::sample::{ArrowImage, ArrowRows, Batch};
use super::{Flow, Visit};

/// Column names that play a role, in order of preference.
const ID_NAMES: &[&str] = &["id"];
const CAPTION_NAMES: &[&str] = &["caption", "text"];
const SOURCE_NAMES: &[&str] = &["source"];
const IMAGE_NAMES: &[&str] = &["image", "file_name", "image_path"];

/// Which top-level column plays which role.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub id: Option<usize>,
    pub caption: Option<usize>,
    pub source: Option<usize>,
    pub image: Option<usize>,
}

/// What mt keeps of a parquet file between reads: schema, roles and row counts. The
/// footer itself (megabytes for a shard of many row groups) is parsed again by the
/// unit that reads the file and dropped after, so memory does not grow with the
/// number of shards.
pub struct ParquetShard {
    pub path: PathBuf,
    pub bytes: u64,
    schema: SchemaRef,
    pub roles: Roles,
    /// Rows per row group.
    row_groups: Vec<u64>,
    hf_features: Option<Value>,
}

/// The largest row group read (compressed bytes): `MT_MAX_ROW_GROUP_BYTES`, default
/// 16 GiB. Peak memory is about twice the largest row group read (a 300 MB row group of
/// images: 530 MB peak RSS for `mt inspect`).
fn max_row_group_bytes() -> u64 {
    std::env::var("MT_MAX_ROW_GROUP_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(16 << 30)
}

/// Refuses row group `rg` of the footer `meta` when a column chunk's byte range is
/// negative or past the end of the file (`file_bytes`; the parquet reader would panic
/// or read garbage), or when the row group claims more compressed bytes than the file
/// holds or than `limit`: every reader of mt decodes a row group whole, so it would need
/// about twice that in memory.
fn check_row_group(
    path: &Path,
    file_bytes: u64,
    meta: &ParquetMetaData,
    rg: usize,
    limit: u64,
) -> Result<()> {
    let group = meta.row_group(rg);
    if group.num_rows() < 0 {
        bail!(
            "{}: row group {rg} claims {} rows: the file is corrupt",
            path.display(),
            group.num_rows()
        );
    }
    for column in group.columns() {
        let start = column
            .dictionary_page_offset()
            .unwrap_or(column.data_page_offset());
        let len = column.compressed_size();
        if start < 0 || len < 0 || (start as u64).saturating_add(len as u64) > file_bytes {
            bail!(
                "{}: row group {rg}, column `{}`: its data claims {len} bytes from byte {start}, \
                 outside the file ({file_bytes} bytes): the file is corrupt",
                path.display(),
                column.column_path().string()
            );
        }
    }
    let size = group.compressed_size().max(0) as u64;
    if size > limit.min(file_bytes) {
        bail!(
            "{}: row group {rg} claims {size} bytes (the file has {file_bytes}); mt reads one row \
             group at a time and needs about twice its size in memory: rewrite the file with \
             smaller row groups (mt convert parquet) or raise MT_MAX_ROW_GROUP_BYTES (now {limit})",
            path.display()
        );
    }
    Ok(())
}

/// [`check_row_group`] for every row group, with the limit from `MT_MAX_ROW_GROUP_BYTES`.
pub(crate) fn check_row_groups(path: &Path, file_bytes: u64, meta: &ParquetMetaData) -> Result<()> {
    let limit = max_row_group_bytes();
    (0..meta.num_row_groups()).try_for_each(|rg| check_row_group(path, file_bytes, meta, rg, limit))
}

/// A reader of the parquet file `path` for callers that read it whole (mt's own outputs,
/// shard ids), after [`check_row_groups`]; errors name the file.
pub(crate) fn open_checked(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let bytes = file.metadata()?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable parquet file", path.display()))?;
    check_row_groups(path, bytes, builder.metadata())?;
    Ok(builder)
}

/// Builds the reader `builder` describes and returns its batches; a panic of the parquet
/// crate on corrupt data (it has a few asserts and unchecked sums) becomes an error, of
/// the build or of the last item.
pub(crate) fn batches(
    builder: ParquetRecordBatchReaderBuilder<File>,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let mut reader = contain_panic("the parquet reader", || Ok(builder.build()?))?;
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let next = contain_panic("the parquet reader", || Ok(reader.next().transpose()?));
        failed = next.is_err();
        next.transpose()
    }))
}

/// Footer options: column statistics are never used, so they are not decoded.
fn footer_options() -> ArrowReaderOptions {
    ArrowReaderOptions::new()
        .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
}

fn load_footer(path: &Path, file: &File) -> Result<ArrowReaderMetadata> {
    ArrowReaderMetadata::load(file, footer_options()).with_context(|| {
        format!(
            "{}: not a readable parquet file (truncated or corrupt footer?)",
            path.display()
        )
    })
}

impl ParquetShard {
    /// Reads the footer of `path`. Fails with the file name when it is not parquet,
    /// is truncated or has an unreadable footer.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let bytes = file.metadata()?.len();
        let meta = load_footer(path, &file)?;
        let footer = meta.metadata();
        Ok(ParquetShard {
            path: path.to_path_buf(),
            bytes,
            schema: meta.schema().clone(),
            roles: find_roles(meta.schema()),
            row_groups: footer
                .row_groups()
                .iter()
                .map(|rg| rg.num_rows().max(0) as u64)
                .collect(),
            hf_features: hf_features(footer),
        })
    }

    /// The Arrow schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows in the file.
    pub(crate) fn num_rows(&self) -> u64 {
        self.rows_in(0..self.row_groups.len())
    }

    /// Number of row groups.
    pub(crate) fn num_row_groups(&self) -> usize {
        self.row_groups.len()
    }

    /// Rows in the row groups `rgs`.
    pub(crate) fn rows_in(&self, rgs: Range<usize>) -> u64 {
        // Saturating: a corrupt footer may claim any count (its row groups are refused
        // when read).
        self.row_groups[rgs]
            .iter()
            .fold(0, |sum, &rows| sum.saturating_add(rows))
    }

    /// The Hugging Face `datasets` features stored under the `huggingface` key, if any.
    pub(crate) fn hf_features(&self) -> Option<&Value> {
        self.hf_features.as_ref()
    }

    /// `25M_demo`, `25M_full` or `table`: the layout this shard looks like.
    pub(crate) fn layout(&self) -> &'static str {
        match self.roles.image.map(|i| self.schema().field(i)) {
            Some(f) if matches!(f.data_type(), DataType::Struct(_)) => "25M_demo",
            Some(f) if f.name() == "file_name" => "25M_full",
            _ => "table",
        }
    }

    /// Top-level column indices to read for `columns` (names, or the role names `id`,
    /// `caption`, `source`, `image`); all columns when None.
    pub(crate) fn projection(&self, columns: Option<&[String]>) -> Result<Vec<usize>> {
        let schema = self.schema();
        let Some(columns) = columns else {
            return Ok((0..schema.fields().len()).collect());
        };
        let mut out = Vec::new();
        for name in columns {
            let index = schema.index_of(name).ok().or(match name.as_str() {
                "id" => self.roles.id,
                "caption" => self.roles.caption,
                "source" => self.roles.source,
                "image" => self.roles.image,
                _ => None,
            });
            match index {
                Some(i) if !out.contains(&i) => out.push(i),
                Some(_) => {}
                None => bail!(
                    "{}: no column `{name}` (columns: {})",
                    self.path.display(),
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Streams the row groups `rgs` to `visit` as batches of at most `batch_rows` rows,
    /// reading only the top-level columns in `projection`. A row group that fails to
    /// decode is reported to `visit` and reading resumes with the next one.
    pub(crate) fn read_row_groups(
        &self,
        input: usize,
        rgs: Range<usize>,
        projection: &[usize],
        batch_rows: usize,
        store: &Arc<ImageStore>,
        visit: Visit<'_>,
    ) -> Result<()> {
        let path = self.path.display();
        let file = File::open(&self.path).with_context(|| format!("{path}: cannot open"))?;
        let meta = load_footer(&self.path, &file)?;
        let mask = ProjectionMask::roots(meta.parquet_schema(), projection.iter().copied());
        let mut next_row = self.rows_in(0..rgs.start);
        let limit = max_row_group_bytes();
        for rg in rgs {
            if let Err(e) = check_row_group(&self.path, self.bytes, meta.metadata(), rg, limit) {
                if visit(Err(e)) == Flow::Stop {
                    return Ok(());
                }
                next_row = next_row.saturating_add(self.row_groups[rg]);
                continue;
            }
            // One reader per row group: batches never span two, so an error names the
            // row group at fault and the next one is read regardless.
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, meta.clone())
                    .with_row_groups(vec![rg])
                    .with_projection(mask.clone())
                    .with_batch_size(batch_rows);
            let reader =
                batches(reader).with_context(|| format!("{path}: row group {rg}: cannot read"));
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    if visit(Err(e)) == Flow::Stop {
                        return Ok(());
                    }
                    continue;
                }
            };
            let start = next_row;
            for rb in reader {
                let batch = rb
                    .with_context(|| format!("{path}: row group {rg}: corrupt data"))
                    .and_then(|rb| {
                        arrow_rows(&rb, store.clone())
                            .with_context(|| format!("{path}: row group {rg}"))
                    })
                    .map(|rows| Batch::arrow(input, Some(rg), next_row, rows));
                let failed = batch.is_err();
                if let Ok(b) = &batch {
                    next_row = next_row.saturating_add(b.len() as u64);
                }
                if visit(batch) == Flow::Stop {
                    return Ok(());
                }
                if failed {
                    break;
                }
            }
            next_row = start.saturating_add(self.row_groups[rg]);
        }
        Ok(())
    }
}

/// The `info.features` of the `huggingface` key-value metadata.
fn hf_features(footer: &ParquetMetaData) -> Option<Value> {
    let kv = footer.file_metadata().key_value_metadata()?;
    let raw = kv
        .iter()
        .find(|k| k.key == "huggingface")?
        .value
        .as_deref()?;
    let parsed: Value = serde_json::from_str(raw).ok()?;
    parsed.pointer("/info/features").cloned()
}

/// Finds the role columns of a schema by name.
pub(crate) fn find_roles(schema: &SchemaRef) -> Roles {
    let find = |names: &[&str]| names.iter().find_map(|n| schema.index_of(n).ok());
    Roles {
        id: find(ID_NAMES),
        caption: find(CAPTION_NAMES),
        source: find(SOURCE_NAMES),
        image: find(IMAGE_NAMES),
    }
}

/// Splits a record batch into role columns and extras.
fn arrow_rows(rb: &RecordBatch, store: Arc<ImageStore>) -> Result<ArrowRows> {
    let schema = rb.schema();
    let roles = find_roles(&schema);
    let column = |i: Option<usize>| i.map(|i| (schema.field(i).name().as_str(), rb.column(i)));
    let image = match column(roles.image) {
        None => ArrowImage::None,
        Some((name, a)) => match a.data_type() {
            DataType::Struct(_) => ArrowImage::Struct(Box::new(ImageStructColumn::new(name, a)?)),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                ArrowImage::Binary(BinColumn::new(name, a)?)
            }
            _ => ArrowImage::Reference(StrColumn::new(name, a)?),
        },
    };
    let roles_used = [roles.id, roles.caption, roles.source, roles.image];
    Ok(ArrowRows {
        len: rb.num_rows(),
        id: column(roles.id)
            .map(|(n, a)| IdColumn::new(n, a))
            .transpose()?,
        caption: column(roles.caption)
            .map(|(n, a)| StrColumn::new(n, a))
            .transpose()?,
        source: column(roles.source)
            .map(|(n, a)| StrColumn::new(n, a))
            .transpose()?,
        image,
        extras: (0..rb.num_columns())
            .filter(|i| !roles_used.contains(&Some(*i)))
            .map(|i| (schema.field(i).name().clone(), rb.column(i).clone()))
            .collect(),
        columns: schema
            .fields()
            .iter()
            .zip(rb.columns())
            .map(|(f, a)| (f.name().clone(), a.clone()))
            .collect(),
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, BinaryArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A parquet file of two row groups of 2 KB of bytes each.
    fn two_row_groups(dir: &Path) -> PathBuf {
        let path = dir.join("big.parquet");
        let blob = vec![7u8; 2048];
        let column: ArrayRef = Arc::new(BinaryArray::from(vec![blob.as_slice(); 2]));
        let batch = RecordBatch::try_from_iter([("image", column)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1))
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .build();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props))
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    #[test]
    fn row_groups_over_the_limit_or_the_file_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = two_row_groups(dir.path());
        let bytes = std::fs::metadata(&path).unwrap().len();
        let builder = open_checked(&path).unwrap();
        let meta = builder.metadata();
        assert_eq!(meta.num_row_groups(), 2);
        for rg in 0..2 {
            check_row_group(&path, bytes, meta, rg, 1 << 20).unwrap();
            let e = check_row_group(&path, bytes, meta, rg, 1000).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(&format!("row group {rg} claims"))
                    && text.contains("big.parquet")
                    && text.contains("(now 1000)"),
                "{text}"
            );
            // A footer claiming more than the file holds is refused whatever the limit.
            check_row_group(&path, 100, meta, rg, u64::MAX).unwrap_err();
        }
    }

    /// Every error `read_row_groups` reports for `path`, read as `mt inspect` does.
    fn read_errors(path: &Path) -> Vec<String> {
        let shard = ParquetShard::open(path).unwrap();
        let all: Vec<usize> = (0..shard.schema().fields().len()).collect();
        let mut errors = Vec::new();
        let store = Arc::new(ImageStore::None);
        let mut visit = |batch: Result<Batch>| {
            if let Err(e) = batch {
                errors.push(format!("{e:#}"));
            }
            Flow::Continue
        };
        shard
            .read_row_groups(0, 0..shard.num_row_groups(), &all, 8, &store, &mut visit)
            .unwrap();
        errors
    }

    #[test]
    fn a_column_chunk_outside_the_file_is_an_error_not_a_panic() {
        // Found by fuzz/fuzz_targets/parquet.rs: a footer giving a column chunk a negative
        // length made the parquet reader panic. The other row group is still read (and
        // is corrupt too).
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/parquet/negative-column-start.parquet");
        let errors = read_errors(&path);
        assert!(
            errors.len() == 2
                && errors[0].contains("row group 0, column `id`: its data claims -1 bytes")
                && errors[1].contains("row group 1: corrupt data"),
            "{errors:?}"
        );
        // The readers of whole files refuse it too (here its footer's statistics already).
        let Err(e) = open_checked(&path) else {
            panic!("{} was read", path.display());
        };
        let e = e.to_string();
        assert!(e.contains("negative-column-start.parquet"), "{e}");
    }

    #[test]
    fn row_counts_that_overflow_are_an_error_not_a_panic() {
        // Found by fuzzing: row counts whose sum overflows made the parquet crate's reader
        // builder panic (where overflow checks are on).
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/parquet/row-count-overflow.parquet");
        let mut records = 0;
        let e = crate::core::records::for_each_record(&path, &mut |_, _| {
            records += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("row-count-overflow.parquet"),
            "{e:#}"
        );
        assert_eq!(records, 0);
        let errors = read_errors(&path);
        assert!(
            !errors.is_empty() && errors.iter().all(|e| e.contains("row group")),
            "{errors:?}"
        );
    }
}
