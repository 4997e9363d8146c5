//! Request routing and the Hub's answers.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{
    self, Body, Range, Request, Response, WriteFault, parse_range, percent_decode, percent_encode,
};
use super::{
    CommitState, Fault, FileData, Host, Kind, Logged, RefKind, RepoState, Shared, classify_ref,
    hex, sha256_hex,
};

const LAST_MODIFIED: &str = "2024-01-01T00:00:00.000Z";
const CREATED_AT: &str = "2023-06-01T00:00:00.000Z";
const HTTP_DATE: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// Answers one request; false when the connection must close.
pub(super) fn serve(sh: &Shared, host: Host, req: &Request, out: &mut TcpStream) -> bool {
    let subject = subject(sh, host, req);
    let head_only = req.method == "HEAD";
    let resp = match sh.faults.take(&subject, Fault::is_status) {
        Some(f) => status_fault(&f, req),
        None => match host {
            Host::Api => route_api(sh, req, &subject),
            Host::Cdn => route_cdn(sh, req, &subject),
        },
    };
    let planned = resp.planned_body(head_only);
    let seq = sh.next_seq.fetch_add(1, Ordering::Relaxed);
    {
        let mut log = sh.log.lock().unwrap();
        log.push((
            seq,
            Logged {
                method: req.method.clone(),
                host: host.name(),
                path: req.target.clone(),
                range: req.header("range").map(str::to_string),
                auth: req.header("authorization").is_some(),
                status: resp.status,
                body_bytes: planned,
                fault: resp.fault_name,
            },
        ));
        sh.bytes_sent.fetch_add(planned, Ordering::SeqCst);
    }
    let (sent, keep) = http::write_response(out, resp, head_only, req.keep_alive);
    if sent != planned {
        // The client went away early: correct the log.
        let mut log = sh.log.lock().unwrap();
        if let Some((_, l)) = log.iter_mut().rev().find(|(s, _)| *s == seq) {
            l.body_bytes = sent;
            let _ = sh
                .bytes_sent
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    Some(b.saturating_sub(planned - sent))
                });
        }
    }
    keep && !sh.stop.load(Ordering::SeqCst)
}

/// What fault filters match against: the decoded path and raw query, and for the CDN
/// the `repo/path` names of the blob.
fn subject(sh: &Shared, host: Host, req: &Request) -> String {
    let mut s = percent_decode(&req.path);
    if !req.query.is_empty() {
        s.push('?');
        s.push_str(&req.query);
    }
    if host == Host::Cdn
        && let Some(sha) = req.path.strip_prefix("/lfs/")
        && let Some(b) = sh.blobs.read().unwrap().get(sha)
    {
        s.push_str(&b.names);
    }
    s
}

fn status_fault(f: &Fault, req: &Request) -> Response {
    match *f {
        Fault::RateLimit {
            retry_after_secs: t,
        } => {
            let api = req.path.starts_with("/api/") && !req.path.starts_with("/api/resolve-cache/");
            let (bucket, quota) = if api {
                ("api", 1000)
            } else {
                ("resolvers", 3000)
            };
            error(
                429,
                None,
                &format!(
                    "We had to rate limit you, you hit the quota of {quota} {bucket} requests per 5 minutes period. \
                     Upgrade to a PRO user or Team/Enterprise organization account (https://hf.co/pricing) to get \
                     higher limits. See https://huggingface.co/docs/hub/rate-limits"
                ),
            )
            .header("RateLimit", format!("\"{bucket}\";r=0;t={t}"))
            .header("RateLimit-Policy", format!("\"fixed window\";\"{bucket}\";q={quota};w=300"))
            .header("Retry-After", t.to_string())
            .faulted("rate_limit")
        }
        Fault::ServerError { status } => error(
            status,
            None,
            "Internal Error - We're working hard to fix this as soon as possible!",
        )
        .faulted("server_error"),
        _ => unreachable!("not a status fault"),
    }
}

impl Response {
    fn faulted(mut self, name: &'static str) -> Response {
        self.fault_name = Some(name);
        self
    }
}

/// A Hub error: JSON `{"error": msg}`, `X-Error-Code` and `X-Error-Message`.
pub(super) fn error(status: u16, code: Option<&str>, msg: &str) -> Response {
    let mut r = Response::new(status);
    if let Some(c) = code {
        r = r.header("X-Error-Code", c);
    }
    r.header("X-Error-Message", msg.replace(['\r', '\n'], " "))
        .json(&json!({ "error": msg }))
}

fn not_found_page() -> Response {
    error(
        404,
        None,
        "Sorry, we can't find the page you are looking for.",
    )
}

fn method_not_allowed() -> Response {
    error(405, None, "Method not allowed")
}

fn repo_not_found(req: &Request) -> Response {
    // The Hub cannot tell "does not exist" from "private" without credentials.
    let status = if req.header("authorization").is_some() {
        404
    } else {
        401
    };
    error(
        status,
        Some("RepoNotFound"),
        "Repository not found. Make sure you specified the correct `repo_id` and `repo_type`; \
         if you are trying to access a private or gated repo, make sure you are authenticated.",
    )
}

fn rev_not_found(rev: &str) -> Response {
    error(
        404,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {rev}"),
    )
}

fn entry_not_found(commit: &str, what: &str) -> Response {
    error(404, Some("EntryNotFound"), what).header("X-Repo-Commit", commit)
}

/// 401 GatedRepo unless the request carries the repo's token.
fn gate(repo: &RepoState, req: &Request) -> Option<Response> {
    let token = repo.token.as_ref()?;
    let given = req.header("authorization").map(|v| {
        let v = v.trim();
        match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => v,
        }
    });
    let what = repo.kind.singular();
    let url = format!(
        "https://huggingface.co/{}{}",
        repo.kind.url_prefix(),
        repo.id
    );
    match given {
        Some(t) if t == token => None,
        Some(_) => Some(error(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to {what} {} is restricted and you are not in the authorized list. Visit {url} to ask for access.",
                repo.id
            ),
        )),
        None => Some(error(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to {what} {} is restricted. You must have access to it and be authenticated to access it. \
                 Please log in.",
                repo.id
            ),
        )),
    }
}

fn parse_kind(s: &str) -> Option<Kind> {
    match s {
        "models" => Some(Kind::Model),
        "datasets" => Some(Kind::Dataset),
        _ => None,
    }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// The longest known repo id of `kind` that prefixes `segs`: (repo, id, segments used).
/// Unknown repos take two segments (`org/name`).
fn split_repo(sh: &Shared, kind: Kind, segs: &[&str]) -> (Option<Arc<RepoState>>, String, usize) {
    let repos = sh.repos.read().unwrap();
    let mut best: Option<(Arc<RepoState>, usize)> = None;
    for ((k, id), r) in repos.iter() {
        if *k != kind {
            continue;
        }
        let n = id.split('/').count();
        if segs.len() >= n
            && id.split('/').eq(segs[..n].iter().copied())
            && best.as_ref().is_none_or(|b| b.1 < n)
        {
            best = Some((r.clone(), n));
        }
    }
    match best {
        Some((r, n)) => {
            let id = r.id.clone();
            (Some(r), id, n)
        }
        None => {
            let n = segs.len().min(2);
            (None, segs[..n].join("/"), n)
        }
    }
}

// ---------------------------------------------------------------------------------
// API host
// ---------------------------------------------------------------------------------

fn route_api(sh: &Shared, req: &Request, subject: &str) -> Response {
    let decoded: Vec<String> = req.path.split('/').skip(1).map(percent_decode).collect();
    let s: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["api", "resolve-cache", kind, rest @ ..] => match parse_kind(kind) {
            Some(k) => resolve_cache(sh, req, k, rest, subject),
            None => not_found_page(),
        },
        ["api", kind, rest @ ..]
            if parse_kind(kind).is_some() && !rest.is_empty() && !rest[0].is_empty() =>
        {
            api_repo(sh, req, parse_kind(kind).unwrap(), rest)
        }
        ["datasets", rest @ ..] if resolve_split(rest).is_some() => {
            resolve(sh, req, Kind::Dataset, rest, subject)
        }
        rest if rest.first() != Some(&"api") && resolve_split(rest).is_some() => {
            resolve(sh, req, Kind::Model, rest, subject)
        }
        _ => not_found_page(),
    }
}

fn api_repo(sh: &Shared, req: &Request, kind: Kind, rest: &[&str]) -> Response {
    let (repo, _, n) = split_repo(sh, kind, rest);
    let Some(repo) = repo else {
        return repo_not_found(req);
    };
    let get = matches!(req.method.as_str(), "GET" | "HEAD");
    match &rest[n..] {
        [] | [""] if get => info(req, &repo, "main"),
        ["revision", rev @ ..] if get && !rev.is_empty() => info(req, &repo, &rev.join("/")),
        ["tree", rev, path @ ..] if get => tree(sh, req, &repo, rev, &path.join("/")),
        ["refs"] if get => refs(req, &repo),
        ["paths-info", rev] if req.method == "POST" => paths_info(req, &repo, rev),
        [] | [""] | ["revision", ..] | ["tree", ..] | ["refs"] | ["paths-info", ..] => {
            method_not_allowed()
        }
        _ => not_found_page(),
    }
}

fn id24(id: &str) -> String {
    sha256_hex(id.as_bytes())[..24].to_string()
}

fn info(req: &Request, repo: &RepoState, rev: &str) -> Response {
    let Some(c) = repo.resolve(rev) else {
        return rev_not_found(rev);
    };
    let blobs = req.flag("blobs");
    let siblings: Vec<Value> = c
        .files
        .values()
        .map(|f| {
            let mut o = json!({ "rfilename": f.path });
            if blobs {
                o["blobId"] = json!(f.oid);
                o["size"] = json!(f.size);
                if let Some(sha) = &f.sha256 {
                    o["lfs"] =
                        json!({ "sha256": sha, "size": f.size, "pointerSize": f.pointer_size });
                }
            }
            o
        })
        .collect();
    let gated = if repo.token.is_some() {
        json!("manual")
    } else {
        json!(false)
    };
    let mut v = json!({
        "_id": id24(&repo.id),
        "id": repo.id,
        "author": repo.id.split('/').next().unwrap_or(""),
        "sha": c.sha,
        "lastModified": LAST_MODIFIED,
        "createdAt": CREATED_AT,
        "private": false,
        "gated": gated,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    });
    if blobs {
        v["usedStorage"] = json!(c.files.values().map(|f| f.size).sum::<u64>());
    }
    Response::new(200).json(&v)
}

fn file_entry(c: &CommitState, f: &FileData, expand: bool) -> Value {
    let mut o = json!({ "type": "file", "oid": f.oid, "size": f.size, "path": f.path });
    if let Some(sha) = &f.sha256 {
        o["lfs"] = json!({ "oid": sha, "size": f.size, "pointerSize": f.pointer_size });
    }
    if expand {
        o["lastCommit"] = json!({ "id": c.sha, "title": "Upload files", "date": LAST_MODIFIED });
    }
    o
}

fn dir_entry(path: &str, oid: &str) -> Value {
    json!({ "type": "directory", "oid": oid, "size": 0, "path": path })
}

fn parent(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

/// Entries under `base` (one level, or all with `recursive`), sorted by path.
fn list_entries(c: &CommitState, base: &str, recursive: bool, expand: bool) -> Vec<Value> {
    let under = |p: &str| {
        base.is_empty()
            || (p.len() > base.len() && p.starts_with(base) && p.as_bytes()[base.len()] == b'/')
    };
    let pick = |p: &str| under(p) && (recursive || parent(p) == base);
    let mut v: Vec<(&str, Value)> = Vec::new();
    for (d, oid) in &c.dirs {
        if pick(d) {
            v.push((d, dir_entry(d, oid)));
        }
    }
    for (p, f) in &c.files {
        if pick(p) {
            v.push((p, file_entry(c, f, expand)));
        }
    }
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, e)| e).collect()
}

fn encode_cursor(offset: usize) -> String {
    hex(format!("{{\"offset\":{offset}}}").as_bytes())
}

fn decode_cursor(c: &str) -> Option<usize> {
    if !c.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok())
        .collect();
    let s = String::from_utf8(bytes?).ok()?;
    s.strip_prefix("{\"offset\":")?
        .strip_suffix('}')?
        .parse()
        .ok()
}

fn tree(sh: &Shared, req: &Request, repo: &RepoState, rev: &str, path: &str) -> Response {
    let Some(c) = repo.resolve(rev) else {
        return rev_not_found(rev);
    };
    let base = path.trim_matches('/');
    if !base.is_empty() && !c.dirs.contains_key(base) {
        return entry_not_found(&c.sha, &format!("{base} does not exist on \"{rev}\""));
    }
    let entries = list_entries(&c, base, req.flag("recursive"), req.flag("expand"));
    let offset = match req.param("cursor") {
        Some(cur) => match decode_cursor(&cur) {
            Some(o) if o <= entries.len() => o,
            _ => return error(400, None, "Invalid cursor"),
        },
        None => 0,
    };
    let end = (offset + sh.config.page_size).min(entries.len());
    let page = Value::Array(entries[offset..end].to_vec());
    let mut resp = Response::new(200).json(&page);
    if end < entries.len() {
        let mut q: Vec<&str> = req
            .query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .collect();
        let cur = format!("cursor={}", encode_cursor(end));
        q.push(&cur);
        let link = format!(
            "<{}{}?{}>; rel=\"next\"",
            sh.endpoint(),
            req.path,
            q.join("&")
        );
        resp = resp.header("Link", link);
    }
    resp
}

fn refs(req: &Request, repo: &RepoState) -> Response {
    let (mut branches, mut converts, mut tags, mut prs) = (vec![], vec![], vec![], vec![]);
    for (name, sha) in &repo.refs {
        let (kind, short, full) = classify_ref(name);
        let o = json!({ "name": short, "ref": full, "targetCommit": sha });
        match kind {
            RefKind::Branch => branches.push(o),
            RefKind::Tag => tags.push(o),
            RefKind::Convert => converts.push(o),
            RefKind::PullRequest => prs.push(o),
        }
    }
    let mut v = json!({ "branches": branches, "converts": converts, "tags": tags });
    if req.flag("include_prs") {
        v["pullRequests"] = json!(prs);
    }
    Response::new(200).json(&v)
}

fn paths_info(req: &Request, repo: &RepoState, rev: &str) -> Response {
    let Some(c) = repo.resolve(rev) else {
        return rev_not_found(rev);
    };
    let json_body = req
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    let (paths, expand): (Vec<String>, bool) = if json_body {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let paths = match &v["paths"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => vec![],
        };
        (paths, v["expand"].as_bool().unwrap_or(false))
    } else {
        let form = http::parse_form(&String::from_utf8_lossy(&req.body));
        let paths = form
            .iter()
            .filter(|(k, _)| k == "paths")
            .map(|(_, v)| v.clone())
            .collect();
        let expand = form
            .iter()
            .any(|(k, v)| k == "expand" && matches!(v.as_str(), "true" | "True" | "1"));
        (paths, expand)
    };
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_matches('/');
        if let Some(f) = c.files.get(p) {
            out.push(file_entry(&c, f, expand));
        } else if let Some(oid) = c.dirs.get(p) {
            out.push(dir_entry(p, oid));
        }
    }
    Response::new(200).json(&Value::Array(out))
}

// ---------------------------------------------------------------------------------
// Resolve
// ---------------------------------------------------------------------------------

/// `{repo...}/resolve/{rev}/{path...}`: the index of `resolve`.
fn resolve_split(segs: &[&str]) -> Option<usize> {
    let i = segs.iter().position(|s| *s == "resolve")?;
    (i >= 1 && segs.len() >= i + 3 && !segs[i + 2..].join("/").is_empty()).then_some(i)
}

fn resolve(sh: &Shared, req: &Request, kind: Kind, segs: &[&str], subject: &str) -> Response {
    let i = resolve_split(segs).expect("checked");
    let id = segs[..i].join("/");
    let rev = segs[i + 1];
    let path = segs[i + 2..].join("/");
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return method_not_allowed();
    }
    let Some(repo) = sh.repo(kind, &id) else {
        return repo_not_found(req);
    };
    if let Some(r) = gate(&repo, req) {
        return r;
    }
    let Some(c) = repo.resolve(rev) else {
        return rev_not_found(rev);
    };
    let Some(f) = c.files.get(&path) else {
        return entry_not_found(&c.sha, "Entry not found");
    };
    file_answer(sh, req, &repo, &c, f, subject, sh.config.git_redirect)
}

fn resolve_cache(sh: &Shared, req: &Request, kind: Kind, rest: &[&str], subject: &str) -> Response {
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return method_not_allowed();
    }
    let (repo, _, n) = split_repo(sh, kind, rest);
    let Some(repo) = repo else {
        return repo_not_found(req);
    };
    if rest.len() < n + 2 {
        return not_found_page();
    }
    if let Some(r) = gate(&repo, req) {
        return r;
    }
    let rev = rest[n];
    let path = rest[n + 1..].join("/");
    let Some(c) = repo.resolve(rev) else {
        return rev_not_found(rev);
    };
    let Some(f) = c.files.get(&path) else {
        return entry_not_found(&c.sha, "Entry not found");
    };
    file_answer(sh, req, &repo, &c, f, subject, false)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn content_disposition(path: &str) -> String {
    let name = file_name(path);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "inline; filename*=UTF-8''{}; filename=\"{ascii}\";",
        percent_encode(name, b"")
    )
}

pub(super) fn signature(sha256: &str) -> String {
    sha256_hex(format!("fake-hub-signature:{sha256}").as_bytes())
}

fn file_answer(
    sh: &Shared,
    req: &Request,
    repo: &RepoState,
    c: &CommitState,
    f: &Arc<FileData>,
    subject: &str,
    redirect_git: bool,
) -> Response {
    if let Some(sha) = &f.sha256 {
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD\
             &X-Amz-Credential=FAKEKEY%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z\
             &X-Amz-Expires=3600&X-Amz-Signature={}&X-Amz-SignedHeaders=host&response-content-disposition={}\
             &x-id=GetObject",
            signature(sha),
            percent_encode(&content_disposition(&f.path), b"")
        );
        return Response::new(302)
            .header(
                "Location",
                format!("http://localhost:{}/lfs/{sha}?{query}", sh.cdn_port),
            )
            .header("X-Repo-Commit", c.sha.clone())
            .header("ETag", quoted(&f.oid))
            .header("X-Linked-Etag", quoted(sha))
            .header("X-Linked-Size", f.size.to_string())
            .header("Vary", "Origin, Accept");
    }
    if redirect_git {
        let loc = format!(
            "/api/resolve-cache/{}/{}/{}/{}",
            repo.kind.plural(),
            percent_encode(&repo.id, b"/"),
            c.sha,
            percent_encode(&f.path, b"/")
        );
        let body = format!("Temporary Redirect. Redirecting to {loc}");
        return Response::new(307)
            .header("Location", loc)
            .header("X-Repo-Commit", c.sha.clone())
            .header("Vary", "Origin, Accept")
            .body("text/plain; charset=utf-8", body);
    }
    let headers = vec![
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
        ("ETag".to_string(), quoted(&f.oid)),
        ("X-Repo-Commit".to_string(), c.sha.clone()),
        (
            "Content-Disposition".to_string(),
            content_disposition(&f.path),
        ),
        ("Last-Modified".to_string(), HTTP_DATE.to_string()),
    ];
    file_response(sh, req, f.clone(), subject, headers)
}

/// 200/206/416 for a file body, with `Range` and the body faults.
fn file_response(
    sh: &Shared,
    req: &Request,
    data: Arc<FileData>,
    subject: &str,
    headers: Vec<(String, String)>,
) -> Response {
    let get = req.method == "GET";
    let mut fault_name = None;
    // A short object serves fewer bytes than the Hub lists, for every request.
    let size = match sh.faults.take(
        subject,
        |f| matches!(*f, Fault::ShortObject { bytes } if bytes < data.size),
    ) {
        Some(Fault::ShortObject { bytes }) => {
            fault_name = Some("short_object");
            bytes
        }
        _ => data.size,
    };
    let mut range = req.header("range").and_then(|h| parse_range(h, size));
    if get
        && fault_name.is_none()
        && matches!(range, Some(Range::Bytes(..)))
        && sh
            .faults
            .take(subject, |f| matches!(f, Fault::IgnoreRange))
            .is_some()
    {
        range = None;
        fault_name = Some("ignore_range");
    }
    let (status, start, mut len) = match range {
        None => (200, 0, size),
        Some(Range::Bytes(a, b)) => (206, a, b - a + 1),
        Some(Range::Unsatisfiable) => {
            let mut r = Response::new(416);
            r.headers = headers;
            return r
                .header("Content-Range", format!("bytes */{size}"))
                .header("Accept-Ranges", "bytes");
        }
    };
    let mut fault = None;
    if get && fault_name.is_none_or(|f| f == "short_object") {
        let taken = sh.faults.take(subject, |f| match *f {
            Fault::DropAfter { bytes } => bytes < len,
            Fault::Stall { after_bytes, .. } | Fault::StallMillis { after_bytes, .. } => {
                after_bytes < len
            }
            Fault::Truncate { bytes } => bytes < len && (status == 200 || bytes > 0),
            Fault::WrongBytes => len > 0,
            _ => false,
        });
        if let Some(f) = taken {
            fault_name = Some(f.name());
            match f {
                Fault::DropAfter { bytes } => fault = Some(WriteFault::DropAfter(bytes)),
                Fault::Stall { after_bytes, secs } => {
                    fault = Some(WriteFault::Stall(after_bytes, Duration::from_secs(secs)))
                }
                Fault::StallMillis {
                    after_bytes,
                    millis,
                } => {
                    fault = Some(WriteFault::Stall(
                        after_bytes,
                        Duration::from_millis(millis),
                    ))
                }
                Fault::Truncate { bytes } => len = bytes,
                Fault::WrongBytes => fault = Some(WriteFault::Flip(len / 2)),
                _ => unreachable!("not a body fault"),
            }
        }
    }
    let mut r = Response::new(status);
    r.headers = headers;
    r = r.header("Accept-Ranges", "bytes");
    if status == 206 {
        r = r.header(
            "Content-Range",
            format!("bytes {}-{}/{size}", start, start + len - 1),
        );
    }
    r.body = Body::File { data, start, len };
    r.fault = fault;
    r.fault_name = fault_name;
    r
}

// ---------------------------------------------------------------------------------
// CDN host
// ---------------------------------------------------------------------------------

fn s3_error(status: u16, code: &str, msg: &str) -> Response {
    Response::new(status).body(
        "application/xml",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"),
    )
}

fn route_cdn(sh: &Shared, req: &Request, subject: &str) -> Response {
    let Some(sha) = req.path.strip_prefix("/lfs/").filter(|s| !s.contains('/')) else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return s3_error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        );
    }
    if sh.config.cdn_auth_check && req.header("authorization").is_some() {
        return s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string \
             parameter or the Authorization header should be specified",
        );
    }
    let Some(data) = sh.blobs.read().unwrap().get(sha).map(|b| b.data.clone()) else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    if req.param("X-Amz-Signature").as_deref() != Some(signature(sha).as_str()) {
        return s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let headers = vec![
        (
            "Content-Type".to_string(),
            "binary/octet-stream".to_string(),
        ),
        ("ETag".to_string(), quoted(sha)),
        ("Last-Modified".to_string(), HTTP_DATE.to_string()),
        (
            "Content-Disposition".to_string(),
            content_disposition(&data.path),
        ),
    ];
    file_response(sh, req, data, subject, headers)
}
