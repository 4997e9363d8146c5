//! Resumable JSONL outputs: the ids already written are read back, a line cut short
//! by a crash is trimmed away, and new records are appended and flushed one batch at
//! a time, so a rerun after kill -9 neither loses nor duplicates records.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

/// An append-only JSONL file keyed by one string field, or stdout.
pub(crate) struct JsonlOutput {
    path: Option<PathBuf>,
    sink: Box<dyn Write>,
    done: HashSet<String>,
}

impl JsonlOutput {
    /// Opens `path` for appending (`-` = stdout, which never resumes), collecting the
    /// `key` of every complete line already there.
    pub(crate) fn open(path: &Path, key: &str) -> Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                path: None,
                sink: Box::new(std::io::stdout()),
                done: HashSet::new(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let (done, good_len) = read_keys(&mut file, path, key)?;
        let len = file.metadata()?.len();
        if good_len < len {
            tracing::warn!(
                "{}: dropping an incomplete last line ({} bytes) left by an interrupted run",
                path.display(),
                len - good_len
            );
            file.set_len(good_len)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            sink: Box::new(file),
            done,
        })
    }

    /// Whether a record with this key was written before.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Records already present when the file was opened (plus those written since).
    pub(crate) fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether nothing has been written yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Appends records and flushes them.
    pub(crate) fn write_all<T: Serialize>(&mut self, records: &[(String, T)]) -> Result<()> {
        let mut buf = Vec::new();
        for (id, record) in records {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
            self.done.insert(id.clone());
        }
        let result = self.sink.write_all(&buf).and_then(|_| self.sink.flush());
        match result {
            Err(e) if self.path.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.with_context(|| match &self.path {
                Some(p) => format!("cannot write {}", p.display()),
                None => "cannot write to stdout".to_string(),
            }),
        }
    }
}

/// The keys of all complete lines and the byte length they span.
fn read_keys(file: &mut File, path: &Path, key: &str) -> Result<(HashSet<String>, u64)> {
    let mut done = HashSet::new();
    let mut good = 0u64;
    let mut reader = BufReader::new(&mut *file);
    // Bytes, not text: a line cut by a crash may end inside a multi-byte character.
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with(b"\n") {
            break; // cut short: trimmed by the caller
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            good += n as u64;
            continue;
        }
        let value: serde_json::Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => bail!(
                "{}:{number}: not a JSON line ({e}); fix or move the file before resuming",
                path.display()
            ),
        };
        match value.get(key) {
            Some(serde_json::Value::String(s)) => done.insert(s.clone()),
            Some(v) => done.insert(v.to_string()),
            None => bail!(
                "{}:{number}: no `{key}` field; is this an output of the same command?",
                path.display()
            ),
        };
        good += n as u64;
    }
    Ok((done, good))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_a_cut_line_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\":2}\n{\"id\":\"c\",\"x\"",
        )
        .unwrap();
        let mut out = JsonlOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && out.contains("b") && !out.contains("c"));
        out.write_all(&[("c".to_string(), serde_json::json!({"id": "c", "x": 3}))])
            .unwrap();
        drop(out);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\":2}\n{\"id\":\"c\",\"x\":3}\n"
        );
    }

    #[test]
    fn a_line_cut_inside_a_character_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut bytes = b"{\"id\":\"a\",\"t\":\"caf\xc3\xa9\"}\n{\"id\":\"b\",\"t\":\"caf".to_vec();
        bytes.push(0xc3);
        std::fs::write(&path, &bytes).unwrap();
        let out = JsonlOutput::open(&path, "id").unwrap();
        assert!(out.contains("a") && !out.contains("b"));
        drop(out);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            "{\"id\":\"a\",\"t\":\"café\"}\n".as_bytes()
        );
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\nnot json\n").unwrap();
        let err = JsonlOutput::open(&path, "id").err().unwrap().to_string();
        assert!(err.contains("out.jsonl:2"), "{err}");
    }
}
