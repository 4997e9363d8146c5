//! A faithful fake of the Hugging Face Hub HTTP API, served on 127.0.0.1 for the
//! download tests and benchmarks.
//!
//! Two listeners: the API host (`http://127.0.0.1:PORT`, what `HF_ENDPOINT` is set to)
//! and a CDN host addressed as `http://localhost:CDN_PORT` (another host name, so a
//! client must drop `Authorization` when it follows the LFS redirect there).
//! Plain `std::net`, one thread per connection, HTTP/1.1 keep-alive with
//! Content-Length framing; file bodies are streamed from memory or disk in 1 MiB
//! writes.
//!
//! Endpoints (datasets under `/api/datasets/...` and `/datasets/{repo}/resolve/...`):
//! - `GET /api/{models|datasets}/{repo}[/revision/{rev}][?blobs=true]`: repo info.
//! - `GET /api/{..}/{repo}/tree/{rev}[/{path}]?recursive=..&cursor=..`: listing,
//!   `ServerConfig::page_size` entries a page, next page in `Link: <..>; rel="next"`.
//! - `POST /api/{..}/{repo}/paths-info/{rev}` (form `paths=..&paths=..`).
//! - `GET /api/{..}/{repo}/refs[?include_prs=1]`.
//! - `HEAD/GET /[datasets/]{repo}/resolve/{rev}/{path}`: git files 307 to a relative
//!   `/api/resolve-cache/{models|datasets}/{repo}/{commit}/{path}` (or 200 directly when
//!   `ServerConfig::git_redirect` is false); LFS files 302 to
//!   `http://localhost:{cdn}/lfs/{sha256}?X-Amz-...` with `X-Linked-Etag`/`X-Linked-Size`.
//! - CDN: `HEAD/GET /lfs/{sha256}?X-Amz-Signature=..` with `Range` support.
//!
//! Access rules as on the Hub: an unknown repo answers 401 `RepoNotFound` without an
//! `Authorization` header and 404 with one; a gated repo (`FakeRepo::token`) lists its
//! metadata (info, tree, refs, paths-info) to anyone, but its files (resolve,
//! resolve-cache) answer 401 `GatedRepo` unless `Authorization: Bearer <token>` matches.
//! Tokens sent to repos that are not gated are not checked.
//!
//! Refs (`FakeRepo::refs`) are named `main`, `refs/pr/1`, `refs/convert/parquet`,
//! `refs/heads/dev`, `refs/tags/v1`; a bare name is a branch, except that a bare name
//! that looks like a version (`v` then a digit, e.g. `v1.0`) is a tag. A revision given
//! to the server resolves by ref name (short or full: `v1.0`, `refs/tags/v1.0`,
//! `refs/heads/main`) or by a 40-hex commit sha.
#![allow(dead_code)]

mod http;
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sha1::{Digest, Sha1};
use sha2::Sha256;

// ---------------------------------------------------------------------------------
// Data model
// ---------------------------------------------------------------------------------

/// Repository type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Model,
    Dataset,
}

impl Kind {
    /// `models` / `datasets`, as in `/api/{plural}/...` and `/api/resolve-cache/{plural}/...`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::Dataset => "datasets",
        }
    }

    /// The prefix of resolve URLs: `` (models) or `datasets/`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            Kind::Model => "",
            Kind::Dataset => "datasets/",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Dataset => "dataset",
        }
    }
}

/// Where a file's bytes live.
#[derive(Clone, Debug)]
pub enum Content {
    Memory(Vec<u8>),
    Disk(PathBuf),
}

/// One file of a commit; `path` is `/`-separated, relative to the repo root.
#[derive(Clone, Debug)]
pub struct FakeFile {
    pub path: String,
    pub content: Content,
    pub lfs: bool,
}

/// One commit: a 40-hex sha and its complete file list.
#[derive(Clone, Debug)]
pub struct FakeCommit {
    pub sha: String,
    pub files: Vec<FakeFile>,
}

/// One repository. Construct with [`FakeRepo::new`] and the builder methods.
#[derive(Clone, Debug)]
pub struct FakeRepo {
    pub kind: Kind,
    /// `org/name`.
    pub id: String,
    pub commits: Vec<FakeCommit>,
    /// `(ref name, commit sha)`: `("main", sha)`, `("refs/pr/1", sha)`,
    /// `("refs/convert/parquet", sha)`, `("v1.0", sha)` (a tag).
    pub refs: Vec<(String, String)>,
    /// Gated: file downloads need `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// What the Hub knows about one file, as a client would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub lfs: bool,
    /// Git blob oid (40 hex): of the content for git files, of the LFS pointer
    /// file for LFS files (the tree's `oid`, info's `blobId`, the resolve `ETag`).
    pub oid: String,
    /// sha256 of the content (64 hex), LFS files only.
    pub sha256: Option<String>,
    /// What a client keeps as the blob name: sha256 for LFS, the git oid otherwise.
    pub etag: String,
    /// Length of the LFS pointer file (LFS only; 0 otherwise).
    pub pointer_size: u64,
}

impl FakeFile {
    pub fn memory(path: impl Into<String>, bytes: impl Into<Vec<u8>>, lfs: bool) -> FakeFile {
        FakeFile {
            path: path.into(),
            content: Content::Memory(bytes.into()),
            lfs,
        }
    }

    pub fn disk(path: impl Into<String>, file: impl Into<PathBuf>, lfs: bool) -> FakeFile {
        FakeFile {
            path: path.into(),
            content: Content::Disk(file.into()),
            lfs,
        }
    }

    /// Sizes and hashes (reads a Disk file once; the result is cached by path, size and
    /// mtime). Panics if a Disk file cannot be read.
    pub fn info(&self) -> FileInfo {
        let ids = file_ids(self);
        FileInfo {
            path: self.path.clone(),
            size: ids.size,
            lfs: self.lfs,
            etag: ids.sha256.clone().unwrap_or_else(|| ids.oid.clone()),
            oid: ids.oid,
            sha256: ids.sha256,
            pointer_size: ids.pointer_size,
        }
    }
}

impl FakeCommit {
    /// A commit of `files`, its sha computed from the sorted paths and blob oids
    /// (deterministic). Disk files are hashed in parallel.
    pub fn new(files: Vec<FakeFile>) -> FakeCommit {
        let ids = file_ids_all(&files);
        let mut lines: Vec<String> = files
            .iter()
            .zip(&ids)
            .map(|(f, id)| format!("{}\0{}\0{}\n", f.path, u8::from(f.lfs), id.oid))
            .collect();
        lines.sort();
        let mut h = Sha1::new();
        h.update(b"fake-hub commit\n");
        for l in &lines {
            h.update(l.as_bytes());
        }
        FakeCommit {
            sha: hex(&h.finalize()),
            files,
        }
    }
}

impl FakeRepo {
    pub fn new(kind: Kind, id: impl Into<String>) -> FakeRepo {
        FakeRepo {
            kind,
            id: id.into(),
            commits: Vec::new(),
            refs: Vec::new(),
            token: None,
        }
    }

    pub fn model(id: impl Into<String>) -> FakeRepo {
        FakeRepo::new(Kind::Model, id)
    }

    pub fn dataset(id: impl Into<String>) -> FakeRepo {
        FakeRepo::new(Kind::Dataset, id)
    }

    /// Adds a commit (not pointed at by any ref) and returns its sha.
    pub fn add_commit(&mut self, files: Vec<FakeFile>) -> String {
        let c = FakeCommit::new(files);
        let sha = c.sha.clone();
        if !self.commits.iter().any(|x| x.sha == sha) {
            self.commits.push(c);
        }
        sha
    }

    /// Adds a commit of in-memory `(path, bytes, lfs)` files, points `reference` at it
    /// and returns its sha.
    pub fn commit<P, B>(
        &mut self,
        reference: &str,
        files: impl IntoIterator<Item = (P, B, bool)>,
    ) -> String
    where
        P: Into<String>,
        B: AsRef<[u8]>,
    {
        let files = files
            .into_iter()
            .map(|(p, b, lfs)| FakeFile::memory(p, b.as_ref().to_vec(), lfs))
            .collect();
        let sha = self.add_commit(files);
        self.set_ref(reference, &sha);
        sha
    }

    /// Builder form of [`FakeRepo::commit`].
    pub fn with_commit<P, B>(
        mut self,
        reference: &str,
        files: impl IntoIterator<Item = (P, B, bool)>,
    ) -> FakeRepo
    where
        P: Into<String>,
        B: AsRef<[u8]>,
    {
        self.commit(reference, files);
        self
    }

    /// Adds a commit of arbitrary files and points `reference` at it; returns the sha.
    pub fn commit_files(&mut self, reference: &str, files: Vec<FakeFile>) -> String {
        let sha = self.add_commit(files);
        self.set_ref(reference, &sha);
        sha
    }

    /// Points ref `name` at `target` (a commit sha, or the name of an existing ref).
    pub fn set_ref(&mut self, name: &str, target: &str) {
        let sha = self.sha_of(target).unwrap_or_else(|| target.to_string());
        match self.refs.iter_mut().find(|(n, _)| n == name) {
            Some(r) => r.1 = sha,
            None => self.refs.push((name.to_string(), sha)),
        }
    }

    pub fn with_ref(mut self, name: &str, target: &str) -> FakeRepo {
        self.set_ref(name, target);
        self
    }

    /// Makes the repo gated: file downloads need `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> FakeRepo {
        self.token = Some(token.to_string());
        self
    }

    /// The commit sha a revision (ref name or sha) resolves to.
    pub fn sha_of(&self, rev: &str) -> Option<String> {
        resolve_rev(&self.refs, self.commits.iter().map(|c| c.sha.as_str()), rev)
    }

    /// The sha `main` points at. Panics if there is none.
    pub fn head(&self) -> String {
        self.sha_of("main").expect("repo has no main branch")
    }

    /// A file of the commit `rev` resolves to.
    pub fn file(&self, rev: &str, path: &str) -> Option<&FakeFile> {
        let sha = self.sha_of(rev)?;
        let c = self.commits.iter().find(|c| c.sha == sha)?;
        c.files.iter().find(|f| f.path == path)
    }
}

// ---------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// Git blob oid: sha1 of `blob {len}\0` + bytes.
pub fn git_blob_oid(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The canonical git-lfs pointer file of a blob.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

#[derive(Clone, Debug)]
struct FileIds {
    size: u64,
    /// Git oid of the content (git files) or of the pointer (LFS files).
    oid: String,
    sha256: Option<String>,
    pointer_size: u64,
}

fn ids_from(size: u64, lfs: bool, sha1_oid: Option<String>, sha256: Option<String>) -> FileIds {
    if lfs {
        let sha = sha256.expect("sha256 of an LFS file");
        let pointer = lfs_pointer(&sha, size);
        FileIds {
            size,
            oid: git_blob_oid(pointer.as_bytes()),
            sha256: Some(sha),
            pointer_size: pointer.len() as u64,
        }
    } else {
        FileIds {
            size,
            oid: sha1_oid.expect("git oid"),
            sha256: None,
            pointer_size: 0,
        }
    }
}

type IdCache = Mutex<HashMap<(PathBuf, bool), (u64, Option<SystemTime>, FileIds)>>;

fn id_cache() -> &'static IdCache {
    static CACHE: OnceLock<IdCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn file_ids(f: &FakeFile) -> FileIds {
    match &f.content {
        Content::Memory(b) => {
            if f.lfs {
                ids_from(b.len() as u64, true, None, Some(sha256_hex(b)))
            } else {
                ids_from(b.len() as u64, false, Some(git_blob_oid(b)), None)
            }
        }
        Content::Disk(p) => disk_ids(p, f.lfs)
            .unwrap_or_else(|e| panic!("fake hub: cannot hash {} ({}): {e}", f.path, p.display())),
    }
}

fn disk_ids(p: &Path, lfs: bool) -> io::Result<FileIds> {
    let meta = std::fs::metadata(p)?;
    let key = (p.to_path_buf(), lfs);
    let mtime = meta.modified().ok();
    if let Some((len, mt, ids)) = id_cache().lock().unwrap().get(&key)
        && *len == meta.len()
        && *mt == mtime
    {
        return Ok(ids.clone());
    }
    let size = meta.len();
    let mut file = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha1 = Sha1::new();
    let mut sha2 = Sha256::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut seen = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if lfs {
            sha2.update(&buf[..n]);
        } else {
            sha1.update(&buf[..n]);
        }
    }
    if seen != size {
        return Err(io::Error::other(format!(
            "file changed while hashing ({seen} of {size} bytes)"
        )));
    }
    let ids = if lfs {
        ids_from(size, true, None, Some(hex(&sha2.finalize())))
    } else {
        ids_from(size, false, Some(hex(&sha1.finalize())), None)
    };
    id_cache()
        .lock()
        .unwrap()
        .insert(key, (size, mtime, ids.clone()));
    Ok(ids)
}

/// Ids of all files; Disk files are hashed on several threads.
fn file_ids_all(files: &[FakeFile]) -> Vec<FileIds> {
    let disk = files
        .iter()
        .filter(|f| matches!(f.content, Content::Disk(_)))
        .count();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(disk)
        .min(16);
    if workers < 2 {
        return files.iter().map(file_ids).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<FileIds>>> = Mutex::new(vec![None; files.len()]);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() {
                        break;
                    }
                    let ids = file_ids(&files[i]);
                    out.lock().unwrap()[i] = Some(ids);
                }
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|x| x.expect("hashed"))
        .collect()
}

// ---------------------------------------------------------------------------------
// Refs
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefKind {
    Branch,
    Tag,
    Convert,
    PullRequest,
}

/// (kind, short name, full ref) of a ref as written in `FakeRepo::refs`.
fn classify_ref(name: &str) -> (RefKind, String, String) {
    if let Some(n) = name.strip_prefix("refs/heads/") {
        (RefKind::Branch, n.to_string(), name.to_string())
    } else if let Some(n) = name.strip_prefix("refs/tags/") {
        (RefKind::Tag, n.to_string(), name.to_string())
    } else if let Some(n) = name.strip_prefix("refs/convert/") {
        (RefKind::Convert, n.to_string(), name.to_string())
    } else if name.starts_with("refs/pr/") {
        (RefKind::PullRequest, name.to_string(), name.to_string())
    } else if name.starts_with("refs/") {
        (RefKind::Branch, name.to_string(), name.to_string())
    } else {
        let b = name.as_bytes();
        if b.len() >= 2 && b[0] == b'v' && b[1].is_ascii_digit() {
            (RefKind::Tag, name.to_string(), format!("refs/tags/{name}"))
        } else {
            (
                RefKind::Branch,
                name.to_string(),
                format!("refs/heads/{name}"),
            )
        }
    }
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn resolve_rev<'a>(
    refs: &[(String, String)],
    mut commits: impl Iterator<Item = &'a str>,
    rev: &str,
) -> Option<String> {
    for (name, sha) in refs {
        if name == rev {
            return Some(sha.clone());
        }
    }
    for (name, sha) in refs {
        let (_, short, full) = classify_ref(name);
        if rev == full || rev == short {
            return Some(sha.clone());
        }
    }
    if is_sha(rev) {
        let rev = rev.to_ascii_lowercase();
        if commits.any(|c| c == rev) {
            return Some(rev);
        }
    }
    None
}

// ---------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Tree entries per page (the Hub uses 1000; tests use small values).
    pub page_size: usize,
    /// Git files: 307 from `/resolve/` to `/api/resolve-cache/` (true, as the Hub) or
    /// 200 straight from `/resolve/` (false).
    pub git_redirect: bool,
    /// The CDN answers 400 (S3's "Only one auth mechanism allowed") to requests that
    /// carry an `Authorization` header, as S3 presigned URLs do. Requests are logged
    /// with `auth` either way.
    pub cdn_auth_check: bool,
    /// API port; 0 picks a free one.
    pub port: u16,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            page_size: 1000,
            git_redirect: true,
            cdn_auth_check: true,
            port: 0,
        }
    }
}

/// One served request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// "api" or "cdn".
    pub host: &'static str,
    /// Path and query as received (still percent-encoded).
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// Whether an `Authorization` header was present.
    pub auth: bool,
    pub status: u16,
    /// Body bytes sent (0 for HEAD).
    pub body_bytes: u64,
    /// The fault that shaped this response, if any (`Fault::name`).
    pub fault: Option<&'static str>,
}

struct FileData {
    path: String,
    source: Source,
    size: u64,
    oid: String,
    sha256: Option<String>,
    pointer_size: u64,
    lfs: bool,
}

enum Source {
    Memory(Vec<u8>),
    Disk(PathBuf),
}

struct CommitState {
    sha: String,
    files: BTreeMap<String, Arc<FileData>>,
    /// Directory path -> tree oid.
    dirs: BTreeMap<String, String>,
}

struct RepoState {
    kind: Kind,
    id: String,
    token: Option<String>,
    refs: Vec<(String, String)>,
    commits: HashMap<String, Arc<CommitState>>,
}

impl RepoState {
    fn resolve(&self, rev: &str) -> Option<Arc<CommitState>> {
        let sha = resolve_rev(&self.refs, self.commits.keys().map(String::as_str), rev)?;
        self.commits.get(&sha).cloned()
    }
}

fn build_repo(repo: FakeRepo) -> RepoState {
    assert!(!repo.id.is_empty(), "fake hub: empty repo id");
    let mut commits = HashMap::new();
    for c in repo.commits {
        let ids = file_ids_all(&c.files);
        let mut files = BTreeMap::new();
        for (f, id) in c.files.into_iter().zip(ids) {
            assert!(
                !f.path.is_empty()
                    && !f.path.starts_with('/')
                    && !f.path.ends_with('/')
                    && !f.path.contains("//"),
                "fake hub: bad file path {:?}",
                f.path
            );
            let data = FileData {
                path: f.path.clone(),
                source: match f.content {
                    Content::Memory(b) => Source::Memory(b),
                    Content::Disk(p) => Source::Disk(p),
                },
                size: id.size,
                oid: id.oid,
                sha256: id.sha256,
                pointer_size: id.pointer_size,
                lfs: f.lfs,
            };
            assert!(
                files.insert(f.path.clone(), Arc::new(data)).is_none(),
                "fake hub: duplicate path {:?}",
                f.path
            );
        }
        let mut dirs: BTreeMap<String, Sha1> = BTreeMap::new();
        for (path, data) in &files {
            let mut p = path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                let h = dirs.entry(p.to_string()).or_insert_with(|| {
                    let mut h = Sha1::new();
                    h.update(b"tree\0");
                    h
                });
                h.update(format!("{path}\0{}\n", data.oid).as_bytes());
            }
        }
        let dirs = dirs
            .into_iter()
            .map(|(d, h)| (d, hex(&h.finalize())))
            .collect();
        commits.insert(
            c.sha.clone(),
            Arc::new(CommitState {
                sha: c.sha,
                files,
                dirs,
            }),
        );
    }
    for (name, sha) in &repo.refs {
        assert!(
            commits.contains_key(sha),
            "fake hub: ref {name} of {} points at unknown commit {sha}",
            repo.id
        );
    }
    RepoState {
        kind: repo.kind,
        id: repo.id,
        token: repo.token,
        refs: repo.refs,
        commits,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    Api,
    Cdn,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Api => "api",
            Host::Cdn => "cdn",
        }
    }
}

struct Blob {
    data: Arc<FileData>,
    /// `repo/path` of every file with this content, for fault filters.
    names: String,
}

struct Shared {
    config: ServerConfig,
    api_port: u16,
    cdn_port: u16,
    repos: RwLock<HashMap<(Kind, String), Arc<RepoState>>>,
    blobs: RwLock<HashMap<String, Blob>>,
    faults: Faults,
    /// (sequence number, entry).
    log: Mutex<Vec<(u64, Logged)>>,
    next_seq: AtomicU64,
    bytes_sent: AtomicU64,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

impl Shared {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn add_repo(&self, repo: FakeRepo) {
        let state = Arc::new(build_repo(repo));
        {
            let mut blobs = self.blobs.write().unwrap();
            for c in state.commits.values() {
                for f in c.files.values() {
                    if let Some(sha) = &f.sha256 {
                        let name = format!("{}/{}", state.id, f.path);
                        let b = blobs.entry(sha.clone()).or_insert_with(|| Blob {
                            data: f.clone(),
                            names: String::new(),
                        });
                        if !b.names.split(' ').any(|n| n == name) {
                            b.names.push(' ');
                            b.names.push_str(&name);
                        }
                    }
                }
            }
        }
        self.repos
            .write()
            .unwrap()
            .insert((state.kind, state.id.clone()), state);
    }

    fn repo(&self, kind: Kind, id: &str) -> Option<Arc<RepoState>> {
        self.repos
            .read()
            .unwrap()
            .get(&(kind, id.to_string()))
            .cloned()
    }

    fn repo_any(&self, id: &str) -> Option<Arc<RepoState>> {
        let repos = self.repos.read().unwrap();
        repos
            .get(&(Kind::Model, id.to_string()))
            .or_else(|| repos.get(&(Kind::Dataset, id.to_string())))
            .cloned()
    }
}

// ---------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------

/// A switchable misbehaviour. Status faults (`RateLimit`, `ServerError`) replace the
/// answer to any matching request (API, resolve, resolve-cache, CDN). Body faults
/// shape file bodies only: GET 200/206 of resolve, resolve-cache and the CDN; they fire
/// only where they change something (`DropAfter`/`Stall`/`Truncate` when `bytes` is
/// less than the body, `IgnoreRange` on a satisfiable `Range` request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `RateLimit: "resolvers";r=0;t=<secs>` (`"api"` for /api paths),
    /// `RateLimit-Policy` and `Retry-After`.
    RateLimit { retry_after_secs: u64 },
    /// `status` (500/502/503/504) with a JSON error body.
    ServerError { status: u16 },
    /// Headers and the first `bytes` body bytes, then the socket is shut down.
    DropAfter { bytes: u64 },
    /// `after_bytes` body bytes, a pause of `secs`, then the socket is shut down.
    Stall { after_bytes: u64, secs: u64 },
    /// As `Stall`, the pause in milliseconds (for fast tests).
    StallMillis { after_bytes: u64, millis: u64 },
    /// A well-framed response cut to `bytes`: Content-Length (and Content-Range for
    /// a 206) say `bytes`; only the expected size tells.
    Truncate { bytes: u64 },
    /// The stored object is only `bytes` long (a truncated upload): every GET serves at
    /// most that, and a `Range` starting there gets 416 `bytes */<bytes>`.
    ShortObject { bytes: u64 },
    /// One byte in the middle of the body inverted (size right, content wrong).
    WrongBytes,
    /// A `Range` request answered 200 with the whole body.
    IgnoreRange,
}

impl Fault {
    /// `rate_limit`, `server_error`, `drop_after`, `stall`, `truncate`, `wrong_bytes`,
    /// `ignore_range`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::RateLimit { .. } => "rate_limit",
            Fault::ServerError { .. } => "server_error",
            Fault::DropAfter { .. } => "drop_after",
            Fault::Stall { .. } | Fault::StallMillis { .. } => "stall",
            Fault::Truncate { .. } => "truncate",
            Fault::ShortObject { .. } => "short_object",
            Fault::WrongBytes => "wrong_bytes",
            Fault::IgnoreRange => "ignore_range",
        }
    }

    fn is_status(&self) -> bool {
        matches!(self, Fault::RateLimit { .. } | Fault::ServerError { .. })
    }

    /// Parses `NAME[:KEY=VALUE,...]` into (fault, times, path filter). Keys:
    /// `rate_limit:secs=N`, `server_error:status=N`, `drop_after:bytes=N`,
    /// `stall:after_bytes=N,secs=S` (or `ms=M`), `truncate:bytes=N`, `wrong_bytes`,
    /// `ignore_range`; any of them also `times=N` (default: forever) and
    /// `path=SUBSTRING`. Example: `drop_after:bytes=1000000,times=3,path=big.bin`.
    pub fn parse_spec(spec: &str) -> Result<(Fault, u32, Option<String>), String> {
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        let mut kv: HashMap<&str, &str> = HashMap::new();
        for a in args.split(',').filter(|a| !a.is_empty()) {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("fault {spec:?}: {a:?} is not KEY=VALUE"))?;
            kv.insert(k.trim(), v.trim());
        }
        let num = |k: &str, default: Option<u64>| -> Result<u64, String> {
            match kv.get(k) {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("fault {spec:?}: {k}={v} is not a number")),
                None => default.ok_or_else(|| format!("fault {spec:?}: needs {k}=N")),
            }
        };
        let fault = match name.trim() {
            "rate_limit" => Fault::RateLimit {
                retry_after_secs: num("secs", Some(1))?,
            },
            "server_error" => Fault::ServerError {
                status: num("status", Some(500))? as u16,
            },
            "drop_after" => Fault::DropAfter {
                bytes: num("bytes", None)?,
            },
            "stall" if kv.contains_key("ms") => Fault::StallMillis {
                after_bytes: num("after_bytes", Some(0))?,
                millis: num("ms", None)?,
            },
            "stall" => Fault::Stall {
                after_bytes: num("after_bytes", Some(0))?,
                secs: num("secs", Some(60))?,
            },
            "short_object" => Fault::ShortObject {
                bytes: num("bytes", None)?,
            },
            "truncate" => Fault::Truncate {
                bytes: num("bytes", None)?,
            },
            "wrong_bytes" => Fault::WrongBytes,
            "ignore_range" => Fault::IgnoreRange,
            other => return Err(format!("unknown fault {other:?}")),
        };
        let times = match kv.get("times") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("fault {spec:?}: times={v} is not a number"))?,
            None => u32::MAX,
        };
        Ok((fault, times, kv.get("path").map(|s| s.to_string())))
    }
}

/// One armed fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub fault: Fault,
    /// Firings left; `u32::MAX` = forever (never decremented).
    pub remaining: u32,
    /// Fires only on requests whose decoded path+query (for the CDN: also the
    /// `repo/path` names of the blob) contains this.
    pub path: Option<String>,
    /// How many times it fired.
    pub fired: u32,
}

/// Handle on the server's faults; clones share the same state.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<FaultRule>>>);

impl Faults {
    /// Arms `fault` for `times` firings (`u32::MAX` = forever) on requests matching
    /// `path` (a substring; `None` = all). Rules accumulate; the first armed matching
    /// rule wins.
    pub fn set(&self, fault: Fault, times: u32, path: Option<&str>) {
        self.0.lock().unwrap().push(FaultRule {
            fault,
            remaining: times,
            path: path.map(str::to_string),
            fired: 0,
        });
    }

    /// Disarms and forgets every rule.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The rules, with their remaining and fired counts.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.0.lock().unwrap().clone()
    }

    /// Total firings of all rules.
    pub fn fired(&self) -> u64 {
        self.0.lock().unwrap().iter().map(|r| r.fired as u64).sum()
    }

    /// Fires (and returns) the first armed rule matching `subject` whose fault passes
    /// `pred`.
    fn take(&self, subject: &str, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut rules = self.0.lock().unwrap();
        for r in rules.iter_mut() {
            if r.remaining == 0 || !pred(&r.fault) {
                continue;
            }
            if let Some(p) = &r.path
                && !subject.contains(p.as_str())
            {
                continue;
            }
            if r.remaining != u32::MAX {
                r.remaining -= 1;
            }
            r.fired = r.fired.saturating_add(1);
            return Some(r.fault.clone());
        }
        None
    }
}

// ---------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------

/// A running fake Hub; stops when dropped.
pub struct HubServer {
    shared: Arc<Shared>,
    wake: Vec<SocketAddr>,
    acceptors: Vec<JoinHandle<()>>,
}

impl HubServer {
    /// Starts serving `repos`. Panics if it cannot bind or a repo is malformed.
    pub fn start(repos: Vec<FakeRepo>, config: ServerConfig) -> HubServer {
        HubServer::try_start(repos, config).expect("fake hub: cannot listen on 127.0.0.1")
    }

    pub fn try_start(repos: Vec<FakeRepo>, config: ServerConfig) -> io::Result<HubServer> {
        let api = TcpListener::bind(("127.0.0.1", config.port))?;
        let api_addr = api.local_addr()?;
        let (cdn, cdn6) = bind_cdn()?;
        let cdn_addr = cdn.local_addr()?;
        let shared = Arc::new(Shared {
            config: ServerConfig {
                page_size: config.page_size.max(1),
                ..config
            },
            api_port: api_addr.port(),
            cdn_port: cdn_addr.port(),
            repos: RwLock::new(HashMap::new()),
            blobs: RwLock::new(HashMap::new()),
            faults: Faults::default(),
            log: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        for r in repos {
            let key = (r.kind, r.id.clone());
            assert!(
                shared.repo(key.0, &key.1).is_none(),
                "fake hub: repo {} given twice",
                key.1
            );
            shared.add_repo(r);
        }
        let mut wake = vec![api_addr, cdn_addr];
        let mut acceptors = vec![
            spawn_acceptor(shared.clone(), api, Host::Api),
            spawn_acceptor(shared.clone(), cdn, Host::Cdn),
        ];
        if let Some(l6) = cdn6 {
            wake.push(l6.local_addr()?);
            acceptors.push(spawn_acceptor(shared.clone(), l6, Host::Cdn));
        }
        Ok(HubServer {
            shared,
            wake,
            acceptors,
        })
    }

    /// `http://127.0.0.1:PORT`: what `HF_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint()
    }

    pub fn port(&self) -> u16 {
        self.shared.api_port
    }

    /// `http://localhost:CDN_PORT`, where LFS redirects point.
    pub fn cdn_endpoint(&self) -> String {
        format!("http://localhost:{}", self.shared.cdn_port)
    }

    pub fn cdn_port(&self) -> u16 {
        self.shared.cdn_port
    }

    /// The fault switchboard (shared with the server).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Total body bytes sent, both hosts.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::SeqCst)
    }

    /// Forgets the request log and zeroes `bytes_sent`.
    pub fn reset_log(&self) {
        let mut log = self.shared.log.lock().unwrap();
        log.clear();
        self.shared.bytes_sent.store(0, Ordering::SeqCst);
    }

    /// Whether any CDN request carried an `Authorization` header.
    pub fn cdn_saw_authorization(&self) -> bool {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l.host == "cdn" && l.auth)
    }

    /// Adds a repo, or replaces the one with the same kind and id (e.g. a new commit
    /// on `main`) while the server runs.
    pub fn set_repo(&self, repo: FakeRepo) {
        self.shared.add_repo(repo);
    }

    /// The commit sha `rev` resolves to in repo `id` (models first, then datasets).
    pub fn sha_of(&self, id: &str, rev: &str) -> Option<String> {
        Some(self.shared.repo_any(id)?.resolve(rev)?.sha.clone())
    }

    /// A served file's sizes and hashes.
    pub fn file_info(&self, id: &str, rev: &str, path: &str) -> Option<FileInfo> {
        let c = self.shared.repo_any(id)?.resolve(rev)?;
        let f = c.files.get(path)?;
        Some(FileInfo {
            path: f.path.clone(),
            size: f.size,
            lfs: f.lfs,
            oid: f.oid.clone(),
            sha256: f.sha256.clone(),
            etag: f.sha256.clone().unwrap_or_else(|| f.oid.clone()),
            pointer_size: f.pointer_size,
        })
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for a in &self.wake {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(500));
        }
        for t in self.acceptors.drain(..) {
            let _ = t.join();
        }
        for (_, s) in self.shared.conns.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// The CDN listener on 127.0.0.1 and, where the machine has IPv6, on [::1] with the
/// same port (clients may resolve `localhost` to either).
fn bind_cdn() -> io::Result<(TcpListener, Option<TcpListener>)> {
    let mut last = None;
    for _ in 0..20 {
        let v4 = TcpListener::bind(("127.0.0.1", 0))?;
        let port = v4.local_addr()?.port();
        match TcpListener::bind(("::1", port)) {
            Ok(v6) => return Ok((v4, Some(v6))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(v4),
            Err(_) => return Ok((v4, None)),
        }
    }
    Ok((last.expect("bound"), None))
}

fn spawn_acceptor(shared: Arc<Shared>, listener: TcpListener, host: Host) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("fake-hub-{}", host.name()))
        .spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let sh = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("fake-hub-conn".into())
                    .spawn(move || serve_connection(sh, stream, host));
            }
        })
        .expect("spawn acceptor")
}

fn serve_connection(shared: Arc<Shared>, stream: TcpStream, host: Host) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(120)));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if let Ok(c) = stream.try_clone() {
        shared.conns.lock().unwrap().insert(id, c);
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut out = stream;
    while !shared.stop.load(Ordering::SeqCst) {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::ReadError::Closed) => break,
            Err(http::ReadError::Bad(status, msg)) => {
                let resp = routes::error(status, None, &msg);
                let _ = http::write_response(&mut out, resp, false, false);
                break;
            }
        };
        let keep = req.keep_alive;
        if !routes::serve(&shared, host, &req, &mut out) || !keep {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
    shared.conns.lock().unwrap().remove(&id);
}
