//! HTTP/1.1 framing for the fake Hub: request parsing, response writing (streamed file
//! bodies with the body faults), ranges and percent-encoding.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{FileData, Source};

const MAX_LINE: usize = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 16 << 20;
pub(super) const CHUNK: usize = 1 << 20;

pub(super) struct Request {
    pub method: String,
    /// Origin-form target as received: path and query, still percent-encoded.
    pub target: String,
    /// The path part of `target` (encoded).
    pub path: String,
    /// The query part of `target` (encoded, without `?`).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        parse_form(&self.query)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(
            self.param(name)
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("true" | "1" | "yes")
        )
    }
}

pub(super) enum ReadError {
    /// The client closed (or went quiet); nothing to answer.
    Closed,
    /// A malformed request: answer `status` and close.
    Bad(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Closed
    }
}

fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n == MAX_LINE && buf.last() != Some(&b'\n') {
        return Err(ReadError::Bad(
            431,
            "request line or header too long".into(),
        ));
    }
    Ok(n)
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

pub(super) fn read_request<R: BufRead>(r: &mut R) -> Result<Request, ReadError> {
    let mut line = Vec::new();
    // Empty lines before a request line are allowed (RFC 9112 2.2).
    let mut skipped = 0;
    loop {
        if read_line(r, &mut line)? == 0 {
            return Err(ReadError::Closed);
        }
        if !trim_eol(&line).is_empty() {
            break;
        }
        skipped += 1;
        if skipped > 8 {
            return Err(ReadError::Bad(400, "empty request".into()));
        }
    }
    let start = String::from_utf8_lossy(trim_eol(&line)).into_owned();
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "malformed request line".into()));
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(ReadError::Bad(400, "malformed request line".into()));
    }
    let http10 = version == "HTTP/1.0";
    // Absolute-form: keep only the path and query.
    let target = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        target.to_string()
    };
    if !target.starts_with('/') {
        return Err(ReadError::Bad(400, "request target must be a path".into()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let path = path.split('#').next().unwrap_or("").to_string();

    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        let n = read_line(r, &mut line)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        total += n;
        if total > MAX_HEAD || headers.len() > MAX_HEADERS {
            return Err(ReadError::Bad(431, "request headers too large".into()));
        }
        let l = trim_eol(&line);
        if l.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(l);
        let Some((name, value)) = l.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header".into()));
        };
        if name.is_empty() || name.contains(' ') {
            return Err(ReadError::Bad(400, "malformed header".into()));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some() {
        return Err(ReadError::Bad(
            501,
            "chunked request bodies are not supported".into(),
        ));
    }
    let len = match get("content-length") {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(_) => return Err(ReadError::Bad(413, "request body too large".into())),
            Err(_) => return Err(ReadError::Bad(400, "bad Content-Length".into())),
        },
        None => 0,
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let conn = get("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if http10 {
        conn.contains("keep-alive")
    } else {
        !conn.split(',').any(|t| t.trim() == "close")
    };
    Ok(Request {
        method: method.to_string(),
        target,
        path,
        query,
        headers,
        body,
        keep_alive,
    })
}

pub(super) enum Body {
    Empty,
    Bytes(Vec<u8>),
    File {
        data: Arc<FileData>,
        start: u64,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

/// What the writer does to a body.
#[derive(Clone, Copy, Debug)]
pub(super) enum WriteFault {
    /// Send this many bytes, then shut the socket down.
    DropAfter(u64),
    /// Send this many bytes, pause, then shut the socket down.
    Stall(u64, Duration),
    /// Invert the byte at this offset of the body.
    Flip(u64),
}

pub(super) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub fault: Option<WriteFault>,
    pub fault_name: Option<&'static str>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            fault: None,
            fault_name: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = Body::Bytes(body.into());
        self
    }

    pub fn json(self, v: &serde_json::Value) -> Response {
        self.body(
            "application/json; charset=utf-8",
            serde_json::to_vec(v).expect("json"),
        )
    }

    /// Body bytes this response will put on the wire for a GET (after drop/stall
    /// cuts).
    pub fn planned_body(&self, head_only: bool) -> u64 {
        if head_only {
            return 0;
        }
        let len = self.body.len();
        match self.fault {
            Some(WriteFault::DropAfter(n)) | Some(WriteFault::Stall(n, _)) => n.min(len),
            _ => len,
        }
    }
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes `resp` (headers only when `head_only`). Returns the body bytes written and
/// whether the connection may be kept open.
pub(super) fn write_response(
    out: &mut TcpStream,
    resp: Response,
    head_only: bool,
    keep_alive: bool,
) -> (u64, bool) {
    let cut = matches!(
        resp.fault,
        Some(WriteFault::DropAfter(_) | WriteFault::Stall(..))
    ) && !head_only;
    let keep = keep_alive && !cut;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    head.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut head = head.into_bytes();
    if head_only {
        return match out.write_all(&head).and_then(|_| out.flush()) {
            Ok(()) => (0, keep),
            Err(_) => (0, false),
        };
    }
    let (sent, res) = match resp.body {
        Body::Empty => (0, out.write_all(&head)),
        Body::Bytes(b) => {
            head.extend_from_slice(&b);
            match out.write_all(&head) {
                Ok(()) => (b.len() as u64, Ok(())),
                Err(e) => (0, Err(e)),
            }
        }
        Body::File { data, start, len } => match out.write_all(&head) {
            Ok(()) => stream_file(out, &data, start, len, resp.fault),
            Err(e) => (0, Err(e)),
        },
    };
    let _ = out.flush();
    if res.is_err() {
        return (sent, false);
    }
    match resp.fault {
        Some(WriteFault::DropAfter(_)) => {
            let _ = out.shutdown(Shutdown::Both);
        }
        Some(WriteFault::Stall(_, pause)) => {
            std::thread::sleep(pause);
            let _ = out.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    (sent, keep)
}

fn stream_file(
    out: &mut TcpStream,
    data: &FileData,
    start: u64,
    len: u64,
    fault: Option<WriteFault>,
) -> (u64, io::Result<()>) {
    let limit = match fault {
        Some(WriteFault::DropAfter(n) | WriteFault::Stall(n, _)) => n.min(len),
        _ => len,
    };
    let flip = match fault {
        Some(WriteFault::Flip(at)) if at < len => Some(at),
        _ => None,
    };
    let mut sent = 0u64;
    match &data.source {
        Source::Memory(bytes) => {
            let s = start as usize;
            let body = &bytes[s..s + limit as usize];
            for chunk in body.chunks(CHUNK) {
                let res = match flip {
                    Some(at) if at >= sent && at < sent + chunk.len() as u64 => {
                        let mut c = chunk.to_vec();
                        c[(at - sent) as usize] ^= 0xff;
                        out.write_all(&c)
                    }
                    _ => out.write_all(chunk),
                };
                if let Err(e) = res {
                    return (sent, Err(e));
                }
                sent += chunk.len() as u64;
            }
            (sent, Ok(()))
        }
        Source::Disk(path) => {
            let mut file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => return (0, Err(e)),
            };
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                return (0, Err(e));
            }
            if flip.is_none() {
                // std's io::copy moves File -> TcpStream with sendfile/splice on Linux:
                // no copy through user space.
                let res = io::copy(&mut (&mut file).take(limit), out);
                let sent = match &res {
                    Ok(n) => *n,
                    Err(_) => file
                        .stream_position()
                        .map_or(0, |p| p.saturating_sub(start)),
                };
                return match res {
                    Ok(n) if n == limit => (n, Ok(())),
                    Ok(n) => (
                        n,
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank")),
                    ),
                    Err(e) => (sent, Err(e)),
                };
            }
            let mut buf = vec![0u8; CHUNK.min(limit.max(1) as usize)];
            while sent < limit {
                let want = (limit - sent).min(buf.len() as u64) as usize;
                if let Err(e) = file.read_exact(&mut buf[..want]) {
                    return (sent, Err(e));
                }
                if let Some(at) = flip
                    && at >= sent
                    && at < sent + want as u64
                {
                    buf[(at - sent) as usize] ^= 0xff;
                }
                if let Err(e) = out.write_all(&buf[..want]) {
                    return (sent, Err(e));
                }
                sent += want as u64;
            }
            (sent, Ok(()))
        }
    }
}

/// A `Range` header against a body of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Range {
    /// Inclusive byte range.
    Bytes(u64, u64),
    Unsatisfiable,
}

/// Parses `bytes=A-`, `bytes=A-B`, `bytes=-N`; `None` for anything else (multi-ranges
/// and malformed headers are ignored, as RFC 9110 allows).
pub(super) fn parse_range(header: &str, size: u64) -> Option<Range> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Range::Unsatisfiable);
        }
        return Some(Range::Bytes(size.saturating_sub(n), size - 1));
    }
    let a: u64 = a.parse().ok()?;
    let b: Option<u64> = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if let Some(b) = b
        && b < a
    {
        return None;
    }
    if a >= size {
        return Some(Range::Unsatisfiable);
    }
    Some(Range::Bytes(a, b.unwrap_or(u64::MAX).min(size - 1)))
}

/// Percent-decodes (`+` stays `+`); invalid escapes are kept literally.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but unreserved characters and those in `keep`.
pub(super) fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || keep.contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` (also query strings): `+` is a space.
pub(super) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}
