//! Benchmark questions -> the LLaVA eval layout the MedTrinity / LLaVA-Med scripts read,
//! with the images written out where asked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::questions::{Question, QuestionImage};
use crate::core::convert::image_files::{extension_of, safe_relative, write_once};
use crate::core::convert::llava_out::conversation_record;
use crate::core::error::usage;
use crate::core::hash::hex;
use crate::core::vqa::Id;

/// Where images go.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportOptions<'a> {
    /// Write (or copy) every image into this folder; required for embedded images.
    pub images_out: Option<&'a Path>,
}

/// The records and what happened to the images.
#[derive(Debug, Default)]
pub(crate) struct Exported {
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
pub(crate) fn export(questions: &[Question], opts: &ExportOptions) -> Result<Exported> {
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
                    && copy_once(&src, &dst)?
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
                if done.insert(file.clone()) && write_once(&dir.join(&file), bytes)? {
                    out.images_written += 1;
                }
                file
            }
        };
        out.records.push(record(q, image));
    }
    Ok(out)
}

/// The questions as ground truth in the LLaVA eval layout, images named as the dataset
/// names them (nothing written): what the Python scorers read.
pub(crate) fn ground_truth(questions: &[Question]) -> Vec<Value> {
    questions
        .iter()
        .map(|q| record(q, q.image.label().to_string()))
        .collect()
}

fn record(q: &Question, image: String) -> Value {
    let answer_type = ("answer_type".to_string(), json!(q.answer_type));
    let meta = q.meta.iter().map(|(k, v)| (k.clone(), v.clone()));
    conversation_record(
        json!(q.id),
        &image,
        &q.question,
        &q.answer,
        std::iter::once(answer_type).chain(meta),
    )
}

/// `<first 16 hex digits of sha256>.<ext>`: one file per distinct image, the same
/// name on every run. The extension comes from the bytes, else the original name.
fn embedded_name(bytes: &[u8], original: Option<&str>) -> String {
    let ext = match extension_of(bytes) {
        "bin" => original
            .and_then(|n| Path::new(n).extension())
            .map_or_else(|| "bin".into(), |e| e.to_string_lossy().to_lowercase()),
        known => known.to_string(),
    };
    format!("{}.{ext}", &hex(&Sha256::digest(bytes))[..16])
}

/// Copies `src` to `dst` unless a file of its size is already there.
fn copy_once(src: &Path, dst: &Path) -> Result<bool> {
    if matches!((src.metadata(), dst.metadata()), (Ok(x), Ok(y)) if x.len() == y.len()) {
        return Ok(false);
    }
    let bytes = std::fs::read(src).with_context(|| format!("{}: cannot read", src.display()))?;
    write_once(dst, &bytes)
}

/// The records as a JSON array, one record per line.
pub(crate) fn to_json_lines(records: &[Value]) -> Result<String> {
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
