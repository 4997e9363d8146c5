//! Benchmark questions -> the LLaVA eval layout the MedTrinity / LLaVA-Med scripts read,
//! with the images written out where asked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::answers::Id;
use super::vqa::{Question, QuestionImage};
use crate::core::convert::images::safe_relative;
use crate::core::error::usage;
use crate::core::hash::hex;
use crate::core::run::write_atomic;

/// Where images go.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions<'a> {
    /// Write (or copy) every image into this folder; required for embedded images.
    pub images_out: Option<&'a Path>,
}

/// The records and what happened to the images.
#[derive(Debug, Default)]
pub struct Exported {
    pub records: Vec<Value>,
    /// Image files created by this run (existing identical ones are not rewritten).
    pub images_written: usize,
    /// The folder the records' `image` paths are relative to.
    pub image_root: Option<PathBuf>,
    /// Questions whose image could not be used (missing file, unsafe name), with why.
    pub problems: Vec<(Id, String)>,
}

/// Converts `questions` to LLaVA eval records: `{id, image, conversations: [human
/// "<image>\nQ", gpt "A"], answer_type, ...meta}`.
pub fn export(questions: &[Question], opts: &ExportOptions) -> Result<Exported> {
    let mut out = Exported {
        image_root: opts.images_out.map(Path::to_path_buf),
        ..Exported::default()
    };
    let mut done: HashSet<String> = HashSet::new();
    for q in questions {
        let image = match &q.image {
            QuestionImage::File { root, name } => {
                let src = root.join(name);
                let copy_to = opts
                    .images_out
                    .map(|dir| safe_relative(name).map(|rel| dir.join(rel)));
                if !src.is_file() {
                    out.problems.push((
                        q.id.clone(),
                        format!("image {} does not exist", src.display()),
                    ));
                } else if let Some(None) = copy_to {
                    out.problems.push((
                        q.id.clone(),
                        format!("image name `{name}` would leave --images-out"),
                    ));
                } else if let Some(Some(dst)) = copy_to
                    && done.insert(name.clone())
                    && copy_if_changed(&src, &dst)?
                {
                    out.images_written += 1;
                }
                out.image_root.get_or_insert_with(|| root.clone());
                name.clone()
            }
            QuestionImage::Embedded { bytes, name } => {
                let Some(dir) = opts.images_out else {
                    return Err(usage(
                        "this copy embeds its images: pass --images-out DIR to write them",
                    ));
                };
                let file = embedded_name(bytes, name.as_deref());
                if done.insert(file.clone()) && write_if_changed(&dir.join(&file), bytes)? {
                    out.images_written += 1;
                }
                file
            }
        };
        out.records.push(record(q, image));
    }
    Ok(out)
}

fn record(q: &Question, image: String) -> Value {
    let mut r = Map::new();
    r.insert("id".into(), json!(q.id));
    r.insert("image".into(), json!(image));
    r.insert(
        "conversations".into(),
        json!([
            {"from": "human", "value": format!("<image>\n{}", q.question)},
            {"from": "gpt", "value": q.answer},
        ]),
    );
    r.insert("answer_type".into(), json!(q.answer_type));
    for (k, v) in &q.meta {
        r.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(r)
}

/// `<first 16 hex digits of sha256>.<ext>`: one file per distinct image, the same
/// name on every run. The extension comes from the bytes, else the original name.
fn embedded_name(bytes: &[u8], original: Option<&str>) -> String {
    let ext = image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .map(str::to_string)
        .or_else(|| {
            original
                .and_then(|n| Path::new(n).extension())
                .map(|e| e.to_string_lossy().to_lowercase())
        })
        .unwrap_or_else(|| "bin".into());
    format!("{}.{ext}", &hex(&Sha256::digest(bytes))[..16])
}

/// Writes `bytes` to `path` (atomically) unless the file already holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

fn copy_if_changed(src: &Path, dst: &Path) -> Result<bool> {
    let same_size = |a: &Path, b: &Path| -> bool {
        matches!((a.metadata(), b.metadata()), (Ok(x), Ok(y)) if x.len() == y.len())
    };
    if same_size(src, dst) {
        return Ok(false);
    }
    let bytes = std::fs::read(src).with_context(|| format!("{}: cannot read", src.display()))?;
    write_if_changed(dst, &bytes)
}

/// The records as a JSON array, one record per line.
pub fn to_json_lines(records: &[Value]) -> Result<String> {
    let mut out = String::from("[\n");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&serde_json::to_string(r)?);
    }
    out.push_str("\n]\n");
    Ok(out)
}
