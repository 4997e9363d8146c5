//! Records -> WebDataset tar shards: per record `<key>.<ext>` (the image bytes as they
//! are), `<key>.txt` (caption) and `<key>.json` ({id, source, ...other fields}). Keys
//! are the ids made safe for WebDataset (which splits keys at the first dot): ids that
//! needed changes get a short hash of the original appended, so keys stay unique and
//! the same on every run. Shards close after `max_records` records or `max_bytes`
//! bytes; a shard is written as `.partial` and renamed when complete; a rerun skips
//! the ids of complete shards (read back from their `.json` members).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::image_files::{extension_of, id_key};
use super::{Record, RecordSink, complete_shards, next_shard_number, publish_shard};

/// Sizes and names of the output.
#[derive(Debug, Clone)]
pub(crate) struct WdsOptions {
    pub dir: PathBuf,
    /// File name prefix (`train` -> `train-000000.tar`).
    pub prefix: String,
    pub max_records: usize,
    pub max_bytes: u64,
    /// zstd-compress the shards (`.tar.zst`, as MedTrinity's own image shards).
    pub zstd: bool,
}

/// Writes records into tar shards.
pub(crate) struct WdsWriter {
    opts: WdsOptions,
    done: HashSet<String>,
    next_shard: usize,
    current: Option<Shard>,
}

struct Shard {
    builder: tar::Builder<ShardFile>,
    tmp: PathBuf,
    path: PathBuf,
    records: usize,
    bytes: u64,
}

/// A shard's byte sink: plain, or through a zstd encoder that is finished (not just
/// dropped) when the shard closes, so its errors are seen.
enum ShardFile {
    Plain(BufWriter<File>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Write for ShardFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ShardFile::Plain(f) => f.write(buf),
            ShardFile::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ShardFile::Plain(f) => f.flush(),
            ShardFile::Zstd(z) => z.flush(),
        }
    }
}

impl WdsOptions {
    fn ext(&self) -> &'static str {
        if self.zstd { "tar.zst" } else { "tar" }
    }
}

impl WdsWriter {
    /// Prepares `opts.dir`, reading the ids in shards an earlier run completed.
    pub(crate) fn open(opts: WdsOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("{}: cannot create", opts.dir.display()))?;
        let shards = complete_shards(&opts.dir, &opts.prefix, opts.ext())?;
        let mut done = HashSet::new();
        for (_, path) in &shards {
            read_ids(path, opts.zstd, &mut done)?;
        }
        let next_shard = next_shard_number(&shards);
        Ok(Self {
            opts,
            done,
            next_shard,
            current: None,
        })
    }

    fn shard(&mut self) -> Result<&mut Shard> {
        if self.current.is_none() {
            let path = self.opts.dir.join(format!(
                "{}-{:06}.{}",
                self.opts.prefix,
                self.next_shard,
                self.opts.ext()
            ));
            let tmp = PathBuf::from(format!("{}.partial", path.display()));
            let file = BufWriter::new(
                File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
            );
            let sink = if self.opts.zstd {
                ShardFile::Zstd(zstd::Encoder::new(file, 3)?)
            } else {
                ShardFile::Plain(file)
            };
            self.current = Some(Shard {
                builder: tar::Builder::new(sink),
                tmp,
                path,
                records: 0,
                bytes: 0,
            });
            self.next_shard += 1;
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn close(&mut self) -> Result<()> {
        if let Some(shard) = self.current.take() {
            let file = match shard.builder.into_inner()? {
                ShardFile::Plain(f) => f,
                ShardFile::Zstd(z) => z.finish()?,
            };
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", shard.tmp.display()))?;
            publish_shard(&shard.tmp, &shard.path)?;
        }
        Ok(())
    }
}

impl RecordSink for WdsWriter {
    fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    fn resumed(&self) -> usize {
        self.done.len()
    }

    /// Closes the last shard; returns how many complete shards the folder holds.
    fn finish(mut self) -> Result<usize> {
        self.close()?;
        Ok(complete_shards(&self.opts.dir, &self.opts.prefix, self.opts.ext())?.len())
    }

    fn push(&mut self, r: Record<'_>) -> Result<()> {
        let key = id_key(r.id);
        let mut meta = serde_json::Map::new();
        meta.insert("id".into(), json!(r.id));
        if let Some(s) = r.source {
            meta.insert("source".into(), json!(s));
        }
        if let Some(n) = r.image_name {
            meta.insert("image_name".into(), json!(n));
        }
        meta.extend(r.extra);
        let members = [
            (format!("{key}.{}", extension_of(r.image)), r.image.to_vec()),
            (format!("{key}.txt"), r.caption.as_bytes().to_vec()),
            (
                format!("{key}.json"),
                serde_json::to_vec(&Value::Object(meta))?,
            ),
        ];
        let (max_records, max_bytes) = (self.opts.max_records, self.opts.max_bytes);
        let shard = self.shard()?;
        for (name, bytes) in &members {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            shard
                .builder
                .append_data(&mut header, name, bytes.as_slice())?;
            shard.bytes += 512 + bytes.len().div_ceil(512) as u64 * 512;
        }
        shard.records += 1;
        if shard.records >= max_records || shard.bytes >= max_bytes {
            self.close()?;
        }
        Ok(())
    }
}

/// The ids of a complete shard, from its `.json` members.
fn read_ids(path: &Path, zstd: bool, into: &mut HashSet<String>) -> Result<()> {
    let file = File::open(path)?;
    let reader: Box<dyn Read> = if zstd {
        Box::new(zstd::Decoder::new(file)?)
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .with_context(|| format!("{}: not a tar file", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: corrupt tar", path.display()))?;
        if entry.path()?.extension().is_some_and(|e| e == "json") {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let value: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: bad .json member", path.display()))?;
            if let Some(id) = value.get("id").and_then(Value::as_str) {
                into.insert(id.to_string());
            }
        }
    }
    Ok(())
}
