//! LLaVA conversation records (`id`, `image`, `conversations[{from, value}]`) from JSON
//! arrays and JSON Lines, and any flat JSON record with `caption` / `source` fields.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value};

use super::inputs::ImageStore;
use super::json_array::JsonArrayElements;
use super::sample::{Batch, ImageSource, Sample};
use super::{Flow, Visit};

/// Converts one JSON record into a [`Sample`]. `row` is its zero-based position.
///
/// - `id`: the `id` field (string or number), else the row number;
/// - image: the `image` field (a path, or the first of a list), resolved against `store`;
/// - caption: the `caption` field, else the assistant (`gpt`) turns joined by newlines;
/// - source: the `source` field; everything else lands in `extra`.
pub(crate) fn sample_from_json(value: Value, row: u64, store: &ImageStore) -> Result<Sample> {
    let Value::Object(mut obj) = value else {
        bail!("expected a JSON object, found {}", kind(&value));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => row.to_string(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => bail!(
            "field `id`: expected a string or number, found {}",
            kind(&other)
        ),
    };
    let image = match obj.get("image") {
        None | Some(Value::Null) => ImageSource::None,
        Some(Value::String(s)) => store.resolve(s).to_source(),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::String(s)) => store.resolve(s).to_source(),
            _ => bail!("field `image`: expected a path or a list of paths"),
        },
        Some(other) => bail!("field `image`: expected a path, found {}", kind(other)),
    };
    if matches!(obj.get("image"), Some(Value::String(_))) {
        obj.remove("image");
    }
    let caption = match obj.remove("caption") {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => assistant_text(&obj)?,
        Some(other) => bail!("field `caption`: expected a string, found {}", kind(&other)),
    };
    let source = match obj.remove("source") {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(other) => bail!("field `source`: expected a string, found {}", kind(&other)),
    };
    Ok(Sample {
        id,
        image,
        caption,
        source,
        extra: obj,
    })
}

/// The assistant turns of `conversations`, joined by newlines.
fn assistant_text(obj: &Map<String, Value>) -> Result<Option<String>> {
    let Some(conv) = obj.get("conversations") else {
        return Ok(None);
    };
    let Value::Array(turns) = conv else {
        bail!("field `conversations`: expected a list of turns");
    };
    let mut parts = Vec::new();
    for (t, turn) in turns.iter().enumerate() {
        let from = turn.get("from").and_then(Value::as_str);
        let text = turn.get("value").and_then(Value::as_str);
        match (from, text) {
            (Some("gpt" | "assistant"), Some(v)) => parts.push(v),
            (Some(_), Some(_)) => {}
            _ => bail!("field `conversations[{t}]`: expected {{\"from\": ..., \"value\": ...}}"),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("\n")))
}

/// What kind of JSON value `v` is, for error messages ("a string", "a list", ...).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses one JSON record's text into a [`Sample`].
fn parse_record(text: &[u8], row: u64, store: &ImageStore) -> Result<Sample> {
    let value = serde_json::from_slice(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    sample_from_json(value, row, store)
}

/// Streams a JSON Lines file (`-` for stdin) as batches of `batch_rows` records. A bad
/// line is reported (with its line number) and skipped; reading goes on.
pub fn read_jsonl(
    input: usize,
    path: &Path,
    store: &ImageStore,
    batch_rows: usize,
    visit: Visit<'_>,
) -> Result<()> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(path).with_context(|| format!("{}: cannot open", path.display()))?,
        ))
    };
    let mut rows = Rows::new(input, batch_rows);
    for (n, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: line {}: cannot read", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_record(line.as_bytes(), rows.next_row, store)
            .with_context(|| format!("{}: line {}", path.display(), n + 1));
        if rows.push(parsed, visit) == Flow::Stop {
            return Ok(());
        }
    }
    rows.flush(visit);
    Ok(())
}

/// Streams a JSON array of records as batches of `batch_rows` records. A bad element is
/// reported (with its index) and skipped; a broken array ends the input with an error.
pub fn read_json_array(
    input: usize,
    path: &Path,
    store: &ImageStore,
    batch_rows: usize,
    visit: Visit<'_>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut elements = JsonArrayElements::new(BufReader::with_capacity(1 << 20, file));
    let mut rows = Rows::new(input, batch_rows);
    while let Some(element) = elements.next() {
        let index = elements.index;
        let bytes = match element {
            Ok(b) => b,
            Err(e) => {
                rows.flush(visit);
                bail!("{}: after record {index}: {e}", path.display());
            }
        };
        let parsed = parse_record(&bytes, rows.next_row, store)
            .with_context(|| format!("{}: record {}", path.display(), index.saturating_sub(1)));
        if rows.push(parsed, visit) == Flow::Stop {
            return Ok(());
        }
    }
    rows.flush(visit);
    Ok(())
}

/// Groups parsed records into batches, passing errors through in order.
pub(crate) struct Rows {
    input: usize,
    batch_rows: usize,
    first_row: u64,
    next_row: u64,
    pending: Vec<Sample>,
}

impl Rows {
    pub(crate) fn new(input: usize, batch_rows: usize) -> Self {
        Rows {
            input,
            batch_rows: batch_rows.max(1),
            first_row: 0,
            next_row: 0,
            pending: Vec::new(),
        }
    }

    /// Adds one record (or its error); hands full batches and errors to `visit`.
    pub(crate) fn push(&mut self, sample: Result<Sample>, visit: Visit<'_>) -> Flow {
        match sample {
            Ok(s) => {
                self.pending.push(s);
                self.next_row += 1;
                if self.pending.len() >= self.batch_rows {
                    return self.flush(visit);
                }
                Flow::Continue
            }
            Err(e) => {
                if self.flush(visit) == Flow::Stop {
                    return Flow::Stop;
                }
                self.next_row += 1;
                self.first_row = self.next_row;
                visit(Err(e))
            }
        }
    }

    /// Hands the pending records to `visit`.
    pub(crate) fn flush(&mut self, visit: Visit<'_>) -> Flow {
        if self.pending.is_empty() {
            return Flow::Continue;
        }
        let batch = Batch::owned(
            self.input,
            self.first_row,
            std::mem::take(&mut self.pending),
        );
        self.first_row = self.next_row;
        visit(Ok(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversation_records_become_samples() {
        let store = ImageStore::Folder("/data/imgs".into());
        let v = json!({
            "id": 17, "image": "ct/1.png", "source": "slake",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "An axial CT of the chest."}
            ]
        });
        let s = sample_from_json(v, 0, &store).unwrap();
        assert_eq!(s.id, "17");
        assert_eq!(s.caption.as_deref(), Some("An axial CT of the chest."));
        assert_eq!(s.source.as_deref(), Some("slake"));
        assert!(matches!(&s.image, ImageSource::File(p) if p == Path::new("/data/imgs/ct/1.png")));
        assert!(s.extra.contains_key("conversations"));
        assert!(!s.extra.contains_key("image"));
    }

    #[test]
    fn errors_name_the_field() {
        let store = ImageStore::None;
        for (v, field) in [
            (json!({"id": [1]}), "`id`"),
            (json!({"image": 3}), "`image`"),
            (json!({"caption": {}}), "`caption`"),
            (
                json!({"conversations": [{"from": "gpt"}]}),
                "`conversations[0]`",
            ),
        ] {
            let err = sample_from_json(v, 0, &store).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(
            sample_from_json(json!([1]), 0, &store)
                .unwrap_err()
                .to_string()
                .contains("object")
        );
    }

    #[test]
    fn jsonl_skips_bad_lines_and_keeps_row_numbers() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        std::fs::write(&p, "{\"id\":\"a\"}\n\n{oops\n{\"id\":\"c\"}\n").unwrap();
        let mut seen = Vec::new();
        read_jsonl(0, &p, &ImageStore::None, 10, &mut |b| {
            seen.push(match b {
                Ok(b) => format!(
                    "rows {}..{} {}",
                    b.first_row,
                    b.first_row + b.len() as u64,
                    b.id(0)
                ),
                Err(e) => format!("{e:#}"),
            });
            Flow::Continue
        })
        .unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], "rows 0..1 a");
        assert!(
            seen[1].contains("a.jsonl: line 3: invalid JSON"),
            "{}",
            seen[1]
        );
        assert_eq!(seen[2], "rows 2..3 c");
    }
}
