//! Dataset records (MedTrinity `25M_demo` / `25M_full` shards, LLaVA files, image
//! folders) -> LLaVA conversation records: `{id, image, conversations: [human
//! "<image>\n<instruction>", gpt <caption>], ...other fields}`, with the images written
//! as files. JSONL output resumes by id; a JSON array is written to `<out>.partial`
//! and renamed into place at the end.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde_json::{Map, Value, json};

use super::image_files::{output_name, safe_relative, write_once};
use super::select::Selection;
use super::{Stats, each_routed_batch, part_fields};
use crate::core::data::inputs::Input;
use crate::core::data::sample::{Batch, ImageRef};
use crate::core::data::{Dataset, ReadOptions};
use crate::core::error::usage;
use crate::core::hash::{fnv1a, keyed};
use crate::core::jsonl_output::JsonlOutput;

/// How to convert.
#[derive(Debug, Clone)]
pub(crate) struct LlavaOptions {
    /// The human turns after `<image>\n`: one is drawn per record (by the seed and the
    /// record's id, so a rerun draws the same).
    pub instructions: Vec<String>,
    /// Seed of the instruction draw.
    pub seed: u64,
    /// Write the six caption parts as record fields.
    pub parts: bool,
    /// Where image files go; required when records embed their images.
    pub images_out: Option<PathBuf>,
}

impl LlavaOptions {
    /// The instruction drawn for record `id`.
    fn instruction(&self, id: &str) -> &str {
        let n = self.instructions.len() as u64;
        let pick = if n > 1 {
            keyed(self.seed, fnv1a(id), 0) % n
        } else {
            0
        };
        self.instructions
            .get(pick as usize)
            .map_or("", String::as_str)
    }
}

/// Where records go: resumable JSONL, or a JSON array renamed into place when done.
pub(crate) enum LlavaSink {
    Jsonl(JsonlOutput),
    Array {
        path: PathBuf,
        /// `<path>.partial`: one fixed name, so a killed run's leftover is simply
        /// overwritten by the next run.
        partial: PathBuf,
        tmp: BufWriter<std::fs::File>,
        written: usize,
    },
}

impl LlavaSink {
    /// JSONL for `.jsonl` paths and `-`, a JSON array otherwise.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if path == Path::new("-") || path.extension().is_some_and(|e| e == "jsonl") {
            return Ok(LlavaSink::Jsonl(JsonlOutput::open(path, "id")?));
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        let mut tmp = BufWriter::new(
            std::fs::File::create(&partial)
                .with_context(|| format!("{}: cannot create", partial.display()))?,
        );
        tmp.write_all(b"[")?;
        Ok(LlavaSink::Array {
            path: path.to_path_buf(),
            partial,
            tmp,
            written: 0,
        })
    }

    fn done(&self, id: &str) -> bool {
        matches!(self, LlavaSink::Jsonl(out) if out.contains(id))
    }

    /// Records already in a resumed JSONL output.
    pub(crate) fn resumed(&self) -> usize {
        match self {
            LlavaSink::Jsonl(out) => out.len(),
            LlavaSink::Array { .. } => 0,
        }
    }

    fn write(&mut self, records: &[(String, Value)]) -> Result<()> {
        match self {
            LlavaSink::Jsonl(out) => out.write_all(records),
            LlavaSink::Array { tmp, written, .. } => {
                for (_, r) in records {
                    tmp.write_all(if *written == 0 { b"\n" } else { b",\n" })?;
                    serde_json::to_writer(&mut *tmp, r)?;
                    *written += 1;
                }
                Ok(())
            }
        }
    }

    /// Completes the output (renames the JSON array into place).
    pub(crate) fn finish(self) -> Result<()> {
        if let LlavaSink::Array {
            path,
            partial,
            mut tmp,
            ..
        } = self
        {
            tmp.write_all(b"\n]\n")?;
            let file = tmp.into_inner().map_err(|e| e.into_error())?;
            file.sync_data()?;
            std::fs::rename(&partial, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Converts every record of `dataset` that `selection` routes to a split into that
/// split's sink.
pub(crate) fn convert(
    dataset: &Dataset,
    read: &ReadOptions,
    sinks: &mut [LlavaSink],
    selection: &mut Selection,
    opts: &LlavaOptions,
    on_rows: &dyn Fn(u64),
) -> Result<Stats> {
    // With a selection, only the archive members the records taken name are written.
    let mut members = selection.is_active().then(HashSet::new);
    let splits = sinks.len();
    each_routed_batch(
        dataset,
        read,
        selection,
        splits,
        on_rows,
        &mut |input, batch, routes, per_split, stats| match routes {
            None => archive_members(batch, opts, members.as_ref(), stats),
            Some(routes) => {
                let mut to = Split {
                    sinks: &mut *sinks,
                    routes,
                    per_split,
                    members: members.as_mut(),
                };
                records(batch, input, &mut to, opts, stats)
            }
        },
    )
}

/// Where the records of one batch go.
struct Split<'a> {
    sinks: &'a mut [LlavaSink],
    /// Per record of the batch, its split (None: not written).
    routes: Vec<Option<usize>>,
    per_split: &'a mut [usize],
    /// The archive members the records taken name (None: every member is wanted).
    members: Option<&'a mut HashSet<String>>,
}

/// Image members of a `25M_full` archive shard: written under their own names (only
/// those in `wanted`, when given).
fn archive_members(
    batch: &Batch,
    opts: &LlavaOptions,
    wanted: Option<&HashSet<String>>,
    stats: &mut Stats,
) -> Result<()> {
    stats.archive_members += batch.len();
    let Some(dir) = &opts.images_out else {
        return Ok(());
    };
    let jobs: Vec<(PathBuf, &[u8])> = (0..batch.len())
        .filter_map(|i| match batch.image(i) {
            ImageRef::Bytes {
                bytes,
                path: Some(p),
            } if wanted.is_none_or(|w| w.contains(p)) => {
                safe_relative(p).map(|n| (dir.join(n), bytes))
            }
            _ => None,
        })
        .collect();
    stats.images_written += write_all(&jobs)?;
    Ok(())
}

fn write_all(jobs: &[(PathBuf, &[u8])]) -> Result<usize> {
    let wrote: Vec<bool> = jobs
        .par_iter()
        .map(|(p, b)| write_once(p, b))
        .collect::<Result<_>>()?;
    Ok(wrote.into_iter().filter(|w| *w).count())
}

fn records(
    batch: &Batch,
    source: &Input,
    to: &mut Split<'_>,
    opts: &LlavaOptions,
    stats: &mut Stats,
) -> Result<()> {
    let input = source.display();
    let root = source.store.root();
    let mut out: Vec<Vec<(String, Value)>> = vec![Vec::new(); to.sinks.len()];
    let mut jobs: Vec<(PathBuf, std::borrow::Cow<'_, [u8]>)> = Vec::new();
    for i in 0..batch.len() {
        let Some(split) = to.routes[i] else {
            continue;
        };
        let id = batch.id(i).into_owned();
        if let (Some(members), ImageRef::Archived(name)) = (&mut to.members, batch.image(i)) {
            members.insert(name.to_string());
        }
        // In any split: with --stratify a grown dataset can move a record's split.
        if to.sinks.iter().any(|s| s.done(&id)) {
            stats.skipped_existing += 1;
            to.per_split[split] += 1;
            continue;
        }
        let row = batch.first_row + i as u64;
        let fail = |stats: &mut Stats, e: &str| {
            stats.failures.push((
                format!("{input}: row {row}"),
                format!("{input}: row {row} (id {id}): {e}"),
            ))
        };
        let Some(caption) = batch.caption(i) else {
            fail(stats, "no caption");
            continue;
        };
        let image = batch.image(i);
        let Some(name) = output_name(&id, &image, root) else {
            fail(stats, "no image");
            continue;
        };
        let shown = match (&opts.images_out, &image) {
            (None, ImageRef::Bytes { .. }) => {
                return Err(usage(format!(
                    "{input}: the records embed their images: pass --images-out DIR to write them"
                )));
            }
            (None, ImageRef::File(p)) => p.to_string_lossy().into_owned(),
            (Some(dir), ImageRef::Bytes { .. } | ImageRef::File(_)) => {
                match image.bytes() {
                    Ok(bytes) => jobs.push((dir.join(&name), bytes)),
                    Err(e) => {
                        fail(stats, &format!("{e:#}"));
                        continue;
                    }
                }
                name.to_string_lossy().into_owned()
            }
            _ => name.to_string_lossy().into_owned(),
        };
        let source = batch.source(i).map(|s| ("source".to_string(), json!(s)));
        let parts = opts
            .parts
            .then(|| part_fields(caption))
            .into_iter()
            .flatten();
        let record = conversation_record(
            json!(id),
            &shown,
            opts.instruction(&id),
            caption,
            source.into_iter().chain(parts).chain(batch.extra(i)),
        );
        out[split].push((id, record));
    }
    // One job per file: records sharing an image would race on the same path.
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    jobs.dedup_by(|a, b| a.0 == b.0);
    let borrowed: Vec<(PathBuf, &[u8])> =
        jobs.iter().map(|(p, b)| (p.clone(), b.as_ref())).collect();
    stats.images_written += write_all(&borrowed)?;
    for (split, records) in out.iter().enumerate() {
        stats.records += records.len();
        to.per_split[split] += records.len();
        to.sinks[split].write(records)?;
    }
    Ok(())
}

/// One LLaVA conversation record: `{id, image, conversations: [human "<image>\n" +
/// `prompt`, gpt `answer`], ...fields}`; a field never replaces one set before it.
pub(crate) fn conversation_record(
    id: Value,
    image: &str,
    prompt: &str,
    answer: &str,
    fields: impl IntoIterator<Item = (String, Value)>,
) -> Value {
    let mut r = Map::new();
    r.insert("id".into(), id);
    r.insert("image".into(), json!(image));
    r.insert(
        "conversations".into(),
        json!([
            {"from": "human", "value": format!("<image>\n{prompt}")},
            {"from": "gpt", "value": answer},
        ]),
    );
    for (k, v) in fields {
        r.entry(k).or_insert(v);
    }
    Value::Object(r)
}

/// The output file of split `name`: `out.jsonl` -> `out.NAME.jsonl` (the file itself
/// without a split).
pub(crate) fn split_path(output: &Path, name: Option<&str>) -> PathBuf {
    let Some(name) = name else {
        return output.to_path_buf();
    };
    match output.extension() {
        Some(ext) => output.with_extension(format!("{name}.{}", ext.to_string_lossy())),
        None => output.with_extension(name),
    }
}

/// `--instructions`: a JSON array of strings (a `.json` file), else one instruction a
/// line (blank lines skipped).
pub(crate) fn read_instructions(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--instructions {}: {e}", path.display())))?;
    let pool: Vec<String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "--instructions {}: not a JSON array of strings: {e}",
                path.display()
            ))
        })?
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    if pool.is_empty() {
        return Err(usage(format!(
            "--instructions {}: no instructions in it",
            path.display()
        )));
    }
    Ok(pool)
}

/// Fails unless `path` can hold the output (a file path, not a folder).
pub(crate) fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{}: is a folder; -o takes a .json or .jsonl file",
            path.display()
        );
    }
    Ok(())
}
