//! Ground truth in the LLaVA eval layout (`{id, image, conversations: [human, gpt],
//! answer_type, ...}` as a JSON array or JSONL), read leniently: a bad row is named and
//! skipped, the rest is used. `mt eval score` scores against it and the benchmark
//! loaders read the LLaVA-eval layout through it.

use rustc_hash::FxHashSet as HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

use super::{Id, Rejected};
use crate::core::data::json_array::JsonArrayElements;
use crate::core::data::llava_records::kind;

/// One ground-truth question.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// `id`: the question id.
    pub id: Id,
    /// The human turn (the question, usually with `<image>\n`), empty when absent.
    pub question: String,
    /// The gpt turn: the reference answer.
    pub answer: String,
    /// `answer_type` as written (`OPEN`, `CLOSED`, ...; a non-string value as its JSON
    /// text), `None` when the key is absent.
    pub answer_type: Option<String>,
    /// `image` as written, when present.
    pub image: Option<String>,
    /// Every other top-level field (modality, location, ...), for breakdowns.
    pub meta: serde_json::Map<String, Value>,
}

/// Reads ground truth (a JSON array or JSONL of LLaVA eval records).
pub fn read_truth(path: &Path, rejected: &mut Vec<Rejected>) -> Result<Vec<Truth>> {
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    for_each_record(path, rejected, |value| {
        let truth = truth_from_json(&value)?;
        if !seen.insert(truth.id.clone()) {
            bail!("duplicate id {} (the first one is kept)", truth.id);
        }
        out.push(truth);
        Ok(())
    })?;
    Ok(out)
}

fn truth_from_json(value: &Value) -> Result<Truth> {
    if !value.is_object() {
        bail!("expected an object, found {}", kind(value));
    }
    let id = Id::from_json(&value["id"], "id")?;
    // The reference also accepts the misspelt `conversatons`.
    let turns = value
        .get("conversations")
        .or_else(|| value.get("conversatons"))
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no `conversations` array"))?;
    let turn = |i: usize| -> Result<String> {
        match turns.get(i).map(|t| &t["value"]) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("`conversations[{i}].value` is not a string"),
            None => bail!("`conversations` has no turn {i}"),
        }
    };
    // Present but not a string (null, a number) is kept as its JSON text: the reference
    // then counts the row as neither OPEN nor CLOSED, and the key as present.
    let answer_type = match value.get("answer_type") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let meta = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "id" | "image" | "conversations" | "conversatons" | "answer_type"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Truth {
        id,
        question: turn(0)?,
        answer: turn(1)?,
        answer_type,
        image: value
            .get("image")
            .and_then(Value::as_str)
            .map(str::to_string),
        meta,
    })
}

/// Calls `f` on every record of a JSON array or JSON Lines file (told apart by the
/// first non-blank byte). Records that fail to parse or that `f` rejects are added to
/// `rejected`; an unreadable file or a broken array is an error.
pub(crate) fn for_each_record(
    path: &Path,
    rejected: &mut Vec<Rejected>,
    mut f: impl FnMut(Value) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let name = path.display().to_string();
    let mut reject = |at: String, e: anyhow::Error| {
        rejected.push(Rejected {
            file: name.clone(),
            at,
            error: format!("{e:#}"),
        })
    };
    if first_non_blank(&mut reader)? == Some(b'[') {
        let mut elements = JsonArrayElements::new(reader);
        while let Some(element) = elements.next() {
            let at = format!("record {}", elements.index.saturating_sub(1));
            let bytes = element.with_context(|| format!("{name}: {at}: broken JSON array"))?;
            let parsed = serde_json::from_slice(&bytes).map_err(|e| anyhow!("invalid JSON: {e}"));
            if let Err(e) = parsed.and_then(&mut f) {
                reject(at, e);
            }
        }
    } else {
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("{name}: line {}: cannot read", n + 1))?
                == 0
            {
                break;
            }
            n += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = serde_json::from_slice(&line).map_err(|e| anyhow!("invalid JSON: {e}"));
            if let Err(e) = parsed.and_then(&mut f) {
                reject(format!("line {n}"), e);
            }
        }
    }
    Ok(())
}

fn first_non_blank(reader: &mut BufReader<File>) -> Result<Option<u8>> {
    loop {
        let buf = reader.fill_buf()?;
        let Some(pos) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
            if buf.is_empty() {
                return Ok(None);
            }
            let len = buf.len();
            reader.consume(len);
            continue;
        };
        let b = buf[pos];
        // Keep the byte in the buffer for the parser.
        reader.consume(pos);
        return Ok(Some(b));
    }
}
