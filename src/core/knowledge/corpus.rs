//! Passage corpora: JSON Lines of `{id, text, title?, source?}`, read one line at a time,
//! with errors that name the file, the line and the field.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::Hasher;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use rustc_hash::FxHashSet;
use serde::Deserialize;
use serde_json::Value;

/// One passage of a knowledge corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Passage {
    /// Unique in the corpus (an integer id is kept as its decimal text).
    pub id: String,
    /// Empty when the line has none.
    pub title: String,
    pub text: String,
    /// Where the passage comes from (a book, PubMed, ...); empty when the line has none.
    pub source: String,
}

/// The fields of a line as written; any other fields are ignored.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    text: Value,
    #[serde(default)]
    title: Value,
    #[serde(default)]
    source: Value,
}

/// Parses one non-blank line; the error says what is wrong without the place.
pub(super) fn parse_passage(line: &[u8]) -> std::result::Result<Passage, String> {
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("expected a JSON object `{\"id\": ..., \"text\": ...}`".into());
    }
    let raw: Line = serde_json::from_slice(line).map_err(|e| {
        let msg = e.to_string();
        let place = format!(" at line {} column {}", e.line(), e.column());
        let what = msg.strip_suffix(&place).unwrap_or(&msg).to_string();
        match e.classify() {
            serde_json::error::Category::Data => what,
            _ => format!("not valid JSON at column {}: {what}", e.column()),
        }
    })?;
    let id = match raw.id {
        Value::String(s) if s.is_empty() => return Err("field `id` is empty".into()),
        Value::String(s) => s,
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::Null => return Err("missing field `id`".into()),
        other => {
            return Err(format!(
                "field `id` must be a string or an integer, got {}",
                kind(&other)
            ));
        }
    };
    Ok(Passage {
        id,
        text: string(raw.text, "text", true)?,
        title: string(raw.title, "title", false)?,
        source: string(raw.source, "source", false)?,
    })
}

/// A string field: `null` or absent is an error when `required`, else empty.
fn string(value: Value, field: &str, required: bool) -> std::result::Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null if required => Err(format!("missing field `{field}`")),
        Value::Null => Ok(String::new()),
        other => Err(format!(
            "field `{field}` must be a string, got {}",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Streams the passages of one JSONL file as `(line number, passage)`, skipping blank
/// lines; stops after the first error, which reads `FILE:LINE: what is wrong`.
pub(super) struct PassageReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl PassageReader {
    /// Opens `path` for reading.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(PassageReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            buf: Vec::new(),
            failed: false,
        })
    }

    fn read_next(&mut self) -> Result<Option<(u64, Passage)>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .with_context(|| {
                    format!("{}:{}: cannot read", self.path.display(), self.line + 1)
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut bytes = self.buf.as_slice();
            if self.line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return match parse_passage(bytes) {
                Ok(p) => Ok(Some((self.line, p))),
                Err(why) => bail!("{}:{}: {why}", self.path.display(), self.line),
            };
        }
    }
}

impl Iterator for PassageReader {
    type Item = Result<(u64, Passage)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.read_next().transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Finds duplicate ids across the corpus in 8 bytes a passage: a set of 64-bit id
/// hashes, and on a hash already seen a re-read of the files so far, which confirms the
/// duplicate (a hash collision is not one) and finds where the id first was.
#[derive(Default)]
pub(super) struct DuplicateIds {
    seen: FxHashSet<u64>,
}

impl DuplicateIds {
    /// Records `id`, met at `files[file]` line `line`; errors when it was met before.
    pub(super) fn check(
        &mut self,
        files: &[PathBuf],
        file: usize,
        line: u64,
        id: &str,
    ) -> Result<()> {
        let mut h = DefaultHasher::new();
        h.write(id.as_bytes());
        if self.seen.insert(h.finish()) {
            return Ok(());
        }
        let here = format!("{}:{line}", files[file].display());
        match first_occurrence(files, file, line, id)? {
            Some((f, l)) => Err(anyhow!(
                "{here}: duplicate id `{id}` (first at {}:{l}); ids must be unique",
                files[f].display()
            )),
            None => Ok(()),
        }
    }
}

/// Where `id` first occurs before `files[file]` line `line`, if it does.
fn first_occurrence(
    files: &[PathBuf],
    file: usize,
    line: u64,
    id: &str,
) -> Result<Option<(usize, u64)>> {
    for (f, path) in files.iter().enumerate().take(file + 1) {
        for item in PassageReader::open(path)? {
            let (l, p) = item?;
            if f == file && l >= line {
                break;
            }
            if p.id == id {
                return Ok(Some((f, l)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_passage(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn lines_parse_with_optional_fields_and_integer_ids() {
        let p = parse_passage(br#"{"id": 7, "text": "Liver mass.", "extra": [1]}"#).unwrap();
        assert_eq!(
            p,
            Passage {
                id: "7".into(),
                title: String::new(),
                text: "Liver mass.".into(),
                source: String::new(),
            }
        );
        let p = parse_passage(br#"{"id":"a","title":"T","text":"x","source":null}"#).unwrap();
        assert_eq!((p.id.as_str(), p.title.as_str()), ("a", "T"));
    }

    #[test]
    fn bad_lines_name_the_field() {
        assert_eq!(err(r#"{"text": "x"}"#), "missing field `id`");
        assert_eq!(err(r#"{"id": "a"}"#), "missing field `text`");
        assert_eq!(err(r#"{"id": "", "text": "x"}"#), "field `id` is empty");
        assert_eq!(
            err(r#"{"id": 1.5, "text": "x"}"#),
            "field `id` must be a string or an integer, got a number"
        );
        assert_eq!(
            err(r#"{"id": "a", "text": ["x"]}"#),
            "field `text` must be a string, got an array"
        );
        assert_eq!(
            err(r#"{"id": "a", "text": "x", "title": 3}"#),
            "field `title` must be a string, got a number"
        );
        assert!(err("[1, 2]").starts_with("expected a JSON object"));
        assert!(err("hello").starts_with("expected a JSON object"));
        assert_eq!(
            err(r#"{"id": "a", "id": "b", "text": "x"}"#),
            "duplicate field `id`"
        );
        let e = err(r#"{"id": "a", "text": "x"#);
        assert!(e.starts_with("not valid JSON at column"), "{e}");
        assert!(!e.contains("line 1"), "{e}");
    }

    #[test]
    fn reader_skips_blank_lines_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(
            &path,
            "\u{feff}{\"id\":\"a\",\"text\":\"x\"}\r\n\n  \n{\"id\":\"b\",\"text\":\"y\"}\n{\"id\":\"c\"}\n{\"id\":\"d\",\"text\":\"z\"}\n",
        )
        .unwrap();
        let mut r = PassageReader::open(&path).unwrap();
        assert_eq!(r.next().unwrap().unwrap().0, 1);
        let (line, p) = r.next().unwrap().unwrap();
        assert_eq!((line, p.id.as_str()), (4, "b"));
        let e = r.next().unwrap().unwrap_err().to_string();
        assert_eq!(e, format!("{}:5: missing field `text`", path.display()));
        assert!(r.next().is_none(), "stops after an error");
    }

    #[test]
    fn duplicates_name_both_places_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(
            &a,
            "{\"id\":\"x\",\"text\":\"1\"}\n{\"id\":\"y\",\"text\":\"2\"}\n",
        )
        .unwrap();
        std::fs::write(
            &b,
            "\n{\"id\":\"z\",\"text\":\"3\"}\n{\"id\":\"y\",\"text\":\"4\"}\n",
        )
        .unwrap();
        let files = vec![a.clone(), b.clone()];
        let mut ids = DuplicateIds::default();
        let mut result = Ok(());
        for (f, path) in files.iter().enumerate() {
            for item in PassageReader::open(path).unwrap() {
                let (line, p) = item.unwrap();
                result = result.and_then(|_| ids.check(&files, f, line, &p.id));
            }
        }
        let e = result.unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:3: duplicate id `y` (first at {}:2); ids must be unique",
                b.display(),
                a.display()
            )
        );
    }

    #[test]
    fn a_hash_collision_is_not_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(
            &a,
            "{\"id\":\"x\",\"text\":\"1\"}\n{\"id\":\"y\",\"text\":\"2\"}\n",
        )
        .unwrap();
        let files = vec![a];
        let mut ids = DuplicateIds::default();
        ids.check(&files, 0, 1, "x").unwrap();
        // Pretend `y` hashed like `x`: the re-read finds no earlier `y`.
        let mut h = DefaultHasher::new();
        h.write(b"y");
        ids.seen.insert(h.finish());
        ids.check(&files, 0, 2, "y").unwrap();
    }
}
