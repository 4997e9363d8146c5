//! Records -> HF-style parquet shards: `id`, `image` (struct of `bytes` and `path`, the
//! `datasets` Image feature), `caption`, `source`, with the `huggingface` schema
//! metadata so `datasets.load_dataset("parquet", ...)` decodes the images. Row groups
//! close at ~`row_group_bytes`, shards at ~`shard_bytes`. A shard is written under a
//! temporary name and renamed when complete (`<split>-NNNNN.parquet`); a rerun reads
//! the ids of complete shards and skips them; at the end every shard is renamed to
//! `<split>-NNNNN-of-MMMMM.parquet`.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::{Record, RecordSink, complete_shards, next_shard_number, publish_shard};
use crate::core::caption_parts::PARTS;
use crate::core::data::columns::StrColumn;
use crate::core::data::parquet::{batches, open_checked};

/// Sizes and names of the output.
#[derive(Debug, Clone)]
pub(crate) struct ShardOptions {
    pub dir: PathBuf,
    /// File name prefix: the split (`train`).
    pub split: String,
    pub row_group_bytes: usize,
    pub shard_bytes: u64,
    /// Add the six caption part columns (from each record's fields).
    pub parts: bool,
}

/// Writes rows into shards.
pub(crate) struct ShardWriter {
    opts: ShardOptions,
    schema: SchemaRef,
    done: HashSet<String>,
    next_shard: usize,
    current: Option<Open>,
    pending: Pending,
    /// Rows written by this run.
    pub rows: usize,
}

struct Open {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
}

#[derive(Default)]
struct Pending {
    id: Vec<String>,
    bytes: Vec<Vec<u8>>,
    path: Vec<Option<String>>,
    caption: Vec<String>,
    source: Vec<Option<String>>,
    /// `--parts`: per part, its values.
    parts: [Vec<Option<String>>; 6],
    size: usize,
}

fn schema(parts: bool) -> SchemaRef {
    let image = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let mut features = json!({
        "id": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
        "caption": {"dtype": "string", "_type": "Value"},
        "source": {"dtype": "string", "_type": "Value"},
    });
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("image", DataType::Struct(image), true),
        Field::new("caption", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
    ];
    if parts {
        for name in PARTS {
            features[name] = json!({"dtype": "string", "_type": "Value"});
            fields.push(Field::new(name, DataType::Utf8, true));
        }
    }
    let features = json!({"info": {"features": features}});
    let metadata: std::collections::HashMap<String, String> =
        [("huggingface".to_string(), features.to_string())]
            .into_iter()
            .collect();
    Arc::new(Schema::new(fields).with_metadata(metadata))
}

impl RecordSink for ShardWriter {
    fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    fn resumed(&self) -> usize {
        self.done.len()
    }

    fn finish(self) -> Result<usize> {
        Ok(self.finish_shards()?.len())
    }

    /// Adds a row; writes a row group / closes a shard when they are full.
    fn push(&mut self, row: Record<'_>) -> Result<()> {
        let p = &mut self.pending;
        p.size += row.image.len() + row.caption.len() + row.id.len();
        p.id.push(row.id.to_string());
        p.bytes.push(row.image.to_vec());
        p.path.push(row.image_name.map(str::to_string));
        p.caption.push(row.caption.to_string());
        p.source.push(row.source.map(str::to_string));
        if self.opts.parts {
            for (values, name) in p.parts.iter_mut().zip(PARTS) {
                values.push(
                    row.extra
                        .get(name)
                        .and_then(|v| v.as_str())
                        .map(String::from),
                );
            }
        }
        self.rows += 1;
        if p.size >= self.opts.row_group_bytes {
            self.flush_row_group()?;
        }
        Ok(())
    }
}

impl ShardWriter {
    /// Prepares `opts.dir`, reading the ids of shards a previous run completed.
    pub(crate) fn open(opts: ShardOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("{}: cannot create", opts.dir.display()))?;
        let mut done = HashSet::new();
        let shards = complete_shards(&opts.dir, &opts.split, "parquet")?;
        let schema = schema(opts.parts);
        if let Some((_, first)) = shards.first() {
            // A set of shards has one schema: a rerun must not add or drop the part columns.
            let names = |s: &Schema| {
                s.fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            };
            let earlier = open_checked(first)?.schema().clone();
            if names(&earlier) != names(&schema) {
                return Err(crate::core::error::usage(format!(
                    "{}: the earlier run's shards have columns {:?}, this run's would have {:?} \
                     (--parts differs); use another -o or the same flags",
                    first.display(),
                    names(&earlier),
                    names(&schema)
                )));
            }
        }
        for (_, path) in &shards {
            let n = read_ids(path, &mut done)?;
            tracing::debug!("{}: {n} rows from an earlier run", path.display());
        }
        let next_shard = next_shard_number(&shards);
        Ok(Self {
            schema,
            opts,
            done,
            next_shard,
            current: None,
            pending: Pending::default(),
            rows: 0,
        })
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.pending.id.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(&mut self.pending);
        let batch = self.batch(p)?;
        if self.current.is_none() {
            let path = self.opts.dir.join(format!(
                "{}-{:05}.parquet",
                self.opts.split, self.next_shard
            ));
            let tmp = path.with_extension("parquet.partial");
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(None)
                .build();
            let file =
                File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(props))?;
            self.current = Some(Open { writer, tmp, path });
            self.next_shard += 1;
        }
        let open = self.current.as_mut().expect("opened above");
        open.writer.write(&batch)?;
        open.writer.flush()?;
        if open.writer.bytes_written() as u64 >= self.opts.shard_bytes {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(open) = self.current.take() {
            let file = open.writer.into_inner()?;
            file.sync_all()?;
            publish_shard(&open.tmp, &open.path)?;
        }
        Ok(())
    }

    fn batch(&self, p: Pending) -> Result<RecordBatch> {
        let mut bytes = BinaryBuilder::new();
        let mut paths = StringBuilder::new();
        for (b, path) in p.bytes.iter().zip(&p.path) {
            bytes.append_value(b);
            paths.append_option(path.as_deref());
        }
        let DataType::Struct(fields) = self.schema.field(1).data_type().clone() else {
            bail!("image column is a struct");
        };
        let image = StructArray::new(
            fields,
            vec![
                Arc::new(bytes.finish()) as ArrayRef,
                Arc::new(paths.finish()),
            ],
            None,
        );
        let strings = |v: Vec<Option<String>>| -> ArrayRef {
            let mut b = StringBuilder::new();
            v.iter().for_each(|s| b.append_option(s.as_deref()));
            Arc::new(b.finish())
        };
        let mut columns = vec![
            strings(p.id.into_iter().map(Some).collect()),
            Arc::new(image),
            strings(p.caption.into_iter().map(Some).collect()),
            strings(p.source),
        ];
        if self.opts.parts {
            columns.extend(p.parts.into_iter().map(strings));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Writes what is pending, closes the last shard and names every shard
    /// `<split>-NNNNN-of-MMMMM.parquet`. Returns the shard paths.
    pub(crate) fn finish_shards(mut self) -> Result<Vec<PathBuf>> {
        self.flush_row_group()?;
        self.close_shard()?;
        let shards = complete_shards(&self.opts.dir, &self.opts.split, "parquet")?;
        let total = shards.len();
        let mut out = Vec::with_capacity(total);
        for (i, (_, path)) in shards.iter().enumerate() {
            let name = self
                .opts
                .dir
                .join(format!("{}-{i:05}-of-{total:05}.parquet", self.opts.split));
            if *path != name {
                publish_shard(path, &name)?;
            }
            out.push(name);
        }
        Ok(out)
    }
}

fn read_ids(path: &Path, into: &mut HashSet<String>) -> Result<usize> {
    let builder = open_checked(path)?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0]);
    let mut n = 0;
    for batch in batches(builder.with_projection(mask))? {
        let batch = batch?;
        let ids = StrColumn::new("id", batch.column(0))?;
        for i in 0..batch.num_rows() {
            if let Some(id) = ids.get(i) {
                into.insert(id.to_string());
                n += 1;
            }
        }
    }
    Ok(n)
}
