//! Streams the elements of a top-level JSON array without holding the whole file:
//! element boundaries are found with a small scanner, each element is parsed alone.

use std::io::{self, BufRead};

/// Yields the raw bytes of each element of a top-level JSON array.
pub(crate) struct JsonArrayElements<R> {
    reader: R,
    started: bool,
    done: bool,
    /// Zero-based index of the next element.
    pub index: usize,
}

impl<R: BufRead> JsonArrayElements<R> {
    pub(crate) fn new(reader: R) -> Self {
        JsonArrayElements {
            reader,
            started: false,
            done: false,
            index: 0,
        }
    }

    fn next_byte(&mut self) -> io::Result<Option<u8>> {
        let buf = self.reader.fill_buf()?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        self.reader.consume(1);
        Ok(Some(b))
    }

    fn next_non_space(&mut self) -> io::Result<Option<u8>> {
        while let Some(b) = self.next_byte()? {
            if !b.is_ascii_whitespace() {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Reads one element that starts with `first`, up to (not including) the `,` or `]`
    /// that ends it. Returns the element and that terminator.
    fn element(&mut self, first: u8) -> io::Result<(Vec<u8>, Option<u8>)> {
        let mut out = vec![first];
        let (mut depth, mut in_string, mut escaped) = (0i64, first == b'"', false);
        if matches!(first, b'{' | b'[') {
            depth = 1;
        }
        loop {
            // Copy a run of uninteresting bytes at once.
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok((out, None));
            }
            let mut used = 0;
            let mut end = None;
            for &b in buf {
                used += 1;
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' if depth > 0 => depth -= 1,
                        b',' | b']' if depth == 0 => {
                            end = Some(b);
                            break;
                        }
                        _ => {}
                    }
                }
            }
            let keep = if end.is_some() { used - 1 } else { used };
            out.extend_from_slice(&buf[..keep]);
            self.reader.consume(used);
            if end.is_some() {
                return Ok((out, end));
            }
        }
    }
}

impl<R: BufRead> Iterator for JsonArrayElements<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let bad = |msg: &str| {
            Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                msg.to_string(),
            )))
        };
        if !self.started {
            self.started = true;
            match self.next_non_space() {
                Ok(Some(b'[')) => {}
                Ok(_) => {
                    self.done = true;
                    return bad("expected a JSON array of records");
                }
                Err(e) => return Some(Err(e)),
            }
        }
        let first = match self.next_non_space() {
            Ok(Some(b']')) if self.index == 0 => {
                self.done = true;
                return None;
            }
            Ok(Some(b)) => b,
            Ok(None) => {
                self.done = true;
                return bad("unexpected end of file inside the array");
            }
            Err(e) => return Some(Err(e)),
        };
        match self.element(first) {
            Ok((bytes, end)) => {
                self.index += 1;
                match end {
                    Some(b',') => {}
                    Some(_) => self.done = true,
                    None => {
                        self.done = true;
                        return bad("unexpected end of file inside the array");
                    }
                }
                Some(Ok(bytes))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Vec<Result<String, String>> {
        // A tiny buffer exercises elements spanning refills.
        let reader = io::BufReader::with_capacity(3, text.as_bytes());
        JsonArrayElements::new(reader)
            .map(|r| {
                r.map(|b| String::from_utf8(b).unwrap().trim().to_string())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn splits_nested_values_and_tricky_strings() {
        let got = elements(r#" [ {"a": [1, {"b": "]"}]}, "x,\"y]", 3 ,[ ] ] "#);
        let want = vec![r#"{"a": [1, {"b": "]"}]}"#, r#""x,\"y]""#, "3", "[ ]"];
        assert_eq!(
            got,
            want.into_iter()
                .map(|s| Ok(s.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn empty_arrays_and_bad_documents() {
        assert!(elements("[]").is_empty());
        assert_eq!(
            elements(r#"{"a": 1}"#),
            vec![Err("expected a JSON array of records".into())]
        );
        let truncated = elements(r#"[{"a": 1}, {"b": "#);
        assert_eq!(truncated.len(), 2);
        assert!(truncated[1].as_ref().unwrap_err().contains("end of file"));
    }
}
