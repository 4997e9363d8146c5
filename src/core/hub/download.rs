//! `mt download` end to end: resolve the revision, list and select files, see what is
//! already on disk, fetch the rest on parallel workers (largest first) under per-file
//! locks, and account for every file in a [`Report`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::api::{Api, RemoteFile};
use super::checksum::file_matches;
use super::http::{Client, HttpError};
use super::in_parallel;
use super::layout::{Layout, Presence, create_parent};
use super::repo::RepoRef;
use super::select::Selection;
use super::transfer::fetch;
use crate::core::progress;

/// What to fetch.
pub(crate) struct Request {
    pub repo: RepoRef,
    pub revision: String,
    /// Exact paths (empty: everything the selection wants).
    pub files: Vec<String>,
    pub selection: Selection,
    pub layout: Layout,
    pub max_workers: usize,
    /// Write `refs/` and `.no_exist/` (not for `--dry-run` / `--verify`, which change
    /// nothing on disk).
    pub record: bool,
}

/// A file and what is on disk for it.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub file: RemoteFile,
    pub presence: Presence,
}

/// The resolved commit and the selected files.
pub(crate) struct Plan {
    pub commit: String,
    pub files: Vec<Planned>,
    /// Requested paths the repository does not have at `commit`.
    pub absent: Vec<String>,
}

/// Lists the repository at the commit `revision` points at (through the Hub, or from
/// disk when `client` is `None`: offline) and selects the files.
pub(crate) fn plan(client: Option<&Client>, req: &Request) -> Result<Plan> {
    let (commit, listing, absent) = match client {
        Some(client) => {
            let api = Api {
                client,
                repo: &req.repo,
            };
            let commit = api.commit_of(&req.revision)?;
            let (listing, absent) = list(&api, &commit, req)?;
            if req.record {
                req.layout.write_ref(&req.revision, &commit)?;
                for path in &absent {
                    req.layout.mark_missing(&commit, path);
                }
            }
            (commit, listing, absent)
        }
        None => {
            let commit = req.layout.local_commit(&req.revision).with_context(|| {
                format!(
                    "offline (HF_HUB_OFFLINE) and {} has no `{}` on disk",
                    req.repo.display(),
                    req.revision
                )
            })?;
            let listing = req.layout.local_listing(&commit)?;
            let listing = under_path(listing, req.repo.path.as_deref());
            let (listing, absent) = if req.files.is_empty() {
                (listing, Vec::new())
            } else {
                let wanted = named_paths(req);
                let have: BTreeSet<&str> = listing.iter().map(|f| f.path.as_str()).collect();
                let absent = wanted
                    .iter()
                    .filter(|p| !have.contains(p.as_str()))
                    .cloned()
                    .collect();
                (
                    listing
                        .into_iter()
                        .filter(|f| wanted.contains(&f.path))
                        .collect(),
                    absent,
                )
            };
            (commit, listing, absent)
        }
    };
    let files = req
        .selection
        .apply(listing)
        .into_iter()
        .map(|file| Planned {
            presence: req.layout.presence(&commit, &file),
            file,
        })
        .collect();
    Ok(Plan {
        commit,
        files,
        absent,
    })
}

/// The listing for `req`: the named files (listing only their folders), or everything
/// under the `hf://` path, or the whole repository.
fn list(api: &Api<'_>, commit: &str, req: &Request) -> Result<(Vec<RemoteFile>, Vec<String>)> {
    if !req.files.is_empty() {
        let wanted = named_paths(req);
        let mut by_dir: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for path in &wanted {
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            by_dir.entry(dir).or_default().push(path);
        }
        let mut found = Vec::new();
        for dir in by_dir.keys() {
            match api.list(commit, Some(dir), false) {
                Ok(files) => found.extend(files.into_iter().filter(|f| wanted.contains(&f.path))),
                Err(e) if Api::is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let have: BTreeSet<&str> = found.iter().map(|f| f.path.as_str()).collect();
        let absent = wanted
            .iter()
            .filter(|p| !have.contains(p.as_str()))
            .cloned()
            .collect();
        return Ok((found, absent));
    }
    match api.list(commit, req.repo.path.as_deref(), true) {
        Ok(files) => Ok((files, Vec::new())),
        Err(e) if Api::is_missing(&e) && req.repo.path.is_some() => {
            // The hf:// path may name a single file.
            let path = req.repo.path.as_deref().unwrap_or_default();
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            let files: Vec<RemoteFile> = match api.list(commit, Some(dir), false) {
                Ok(files) => files.into_iter().filter(|f| f.path == path).collect(),
                Err(e) if Api::is_missing(&e) => Vec::new(),
                Err(e) => return Err(e),
            };
            let absent = if files.is_empty() {
                vec![path.to_string()]
            } else {
                Vec::new()
            };
            Ok((files, absent))
        }
        Err(e) => Err(e),
    }
}

/// The named files as repository paths (under the `hf://` path, if any).
fn named_paths(req: &Request) -> Vec<String> {
    let base = req
        .repo
        .path
        .as_deref()
        .map_or(String::new(), |p| format!("{p}/"));
    req.files
        .iter()
        .map(|f| format!("{base}{}", f.trim_start_matches('/')))
        .collect()
}

fn under_path(files: Vec<RemoteFile>, path: Option<&str>) -> Vec<RemoteFile> {
    match path {
        None => files,
        Some(p) => files
            .into_iter()
            .filter(|f| f.path == p || f.path.starts_with(&format!("{p}/")))
            .collect(),
    }
}

/// How one file ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileOutcome {
    /// Fetched (`resumed_from` bytes were kept from an earlier run).
    Downloaded {
        received: u64,
        resumed_from: u64,
    },
    /// Already complete.
    Present,
    /// The blob was in the cache already; linked into this snapshot.
    Linked,
    Failed {
        error: String,
    },
}

/// One file's line in the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileReport {
    pub path: String,
    pub size: u64,
    #[serde(flatten)]
    pub outcome: FileOutcome,
}

/// Everything a download did.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// Where the files are (snapshot folder or local dir).
    pub path: PathBuf,
    pub files: usize,
    pub downloaded: usize,
    pub present: usize,
    pub linked: usize,
    /// Files whose sha256 / git id was checked in this run.
    pub verified: usize,
    pub failed: usize,
    /// Bytes received over the network in this run.
    pub bytes_received: u64,
    /// Bytes kept from partial downloads of earlier runs.
    pub bytes_resumed: u64,
    /// Total size of the selected files.
    pub bytes_total: u64,
    pub seconds: f64,
    pub details: Vec<FileReport>,
}

impl Report {
    fn new(req: &Request, plan: &Plan, details: Vec<FileReport>, started: Instant) -> Self {
        let count =
            |f: &dyn Fn(&FileOutcome) -> bool| details.iter().filter(|d| f(&d.outcome)).count();
        let (mut received, mut resumed) = (0, 0);
        for d in &details {
            if let FileOutcome::Downloaded {
                received: r,
                resumed_from,
            } = d.outcome
            {
                received += r;
                resumed += resumed_from;
            }
        }
        let downloaded = count(&|o| matches!(o, FileOutcome::Downloaded { .. }));
        Self {
            repo: req.repo.display(),
            revision: req.revision.clone(),
            commit: plan.commit.clone(),
            path: req.layout.root(&plan.commit),
            files: details.len(),
            downloaded,
            present: count(&|o| matches!(o, FileOutcome::Present)),
            linked: count(&|o| matches!(o, FileOutcome::Linked)),
            verified: downloaded,
            failed: count(&|o| matches!(o, FileOutcome::Failed { .. })),
            bytes_received: received,
            bytes_resumed: resumed,
            bytes_total: details.iter().map(|d| d.size).sum(),
            seconds: started.elapsed().as_secs_f64(),
            details,
        }
    }

    /// `(path, error)` of every failed file.
    pub(crate) fn failures(&self) -> Vec<(String, String)> {
        self.details
            .iter()
            .filter_map(|d| match &d.outcome {
                FileOutcome::Failed { error } => Some((d.path.clone(), error.clone())),
                _ => None,
            })
            .collect()
    }
}

fn report_of(file: &RemoteFile, outcome: FileOutcome) -> FileReport {
    FileReport {
        path: file.path.clone(),
        size: file.size,
        outcome,
    }
}

fn absent_reports(plan: &Plan) -> Vec<FileReport> {
    plan.absent
        .iter()
        .map(|p| FileReport {
            path: p.clone(),
            size: 0,
            outcome: FileOutcome::Failed {
                error: format!("{p}: not in the repository at commit {}", plan.commit),
            },
        })
        .collect()
}

/// Fetches every file of `plan` that is not complete yet (offline: reports them as
/// failed) on up to `req.max_workers` threads.
pub(crate) fn execute(client: Option<&Client>, req: &Request, plan: &Plan) -> Report {
    let started = Instant::now();
    let mut todo: Vec<&Planned> = plan.files.iter().collect();
    todo.sort_by(|a, b| {
        b.file
            .size
            .cmp(&a.file.size)
            .then(a.file.path.cmp(&b.file.path))
    });
    let need: u64 = todo
        .iter()
        .filter(|p| p.presence != Presence::Complete)
        .map(|p| p.file.size)
        .sum();
    let bars = progress::multi();
    let overall = progress::byte_bar(&bars, need, format!("{} files", todo.len()));
    let denied = AtomicBool::new(false);
    let mut details = in_parallel(&todo, req.max_workers.min(64), |item| {
        let needs_network = matches!(item.presence, Presence::Partial(_) | Presence::Missing);
        let outcome = if denied.load(Ordering::Relaxed) && needs_network {
            FileOutcome::Failed {
                error: format!(
                    "{}: not tried: the Hub refused access (above)",
                    item.file.path
                ),
            }
        } else {
            match one_file(client, req, plan, item, &bars, &overall) {
                Ok(o) => o,
                Err(e) => {
                    if is_denial(&e) {
                        denied.store(true, Ordering::Relaxed);
                    }
                    // Local errors name the blob or partial file: say which file it is.
                    let named = format!("{}: ", item.file.path);
                    let error = format!("{e:#}");
                    FileOutcome::Failed {
                        error: if error.starts_with(&named) {
                            error
                        } else {
                            named + &error
                        },
                    }
                }
            }
        };
        report_of(&item.file, outcome)
    });
    overall.finish_and_clear();
    details.extend(absent_reports(plan));
    details.sort_by(|a, b| a.path.cmp(&b.path));
    Report::new(req, plan, details, started)
}

/// A 401/403: every other file of the repository would be refused too.
fn is_denial(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<HttpError>(),
            Some(HttpError::Status {
                status: 401 | 403,
                ..
            })
        )
    })
}

/// Brings one file into place.
fn one_file(
    client: Option<&Client>,
    req: &Request,
    plan: &Plan,
    item: &Planned,
    bars: &indicatif::MultiProgress,
    overall: &indicatif::ProgressBar,
) -> Result<FileOutcome> {
    let file = &item.file;
    let layout = &req.layout;
    if let Layout::LocalDir { .. } = layout
        && file.path.starts_with(".cache/huggingface/")
    {
        bail!(
            "{}: refused: the path is inside the download metadata folder",
            file.path
        );
    }
    if item.presence == Presence::Complete {
        layout.refresh(&plan.commit, file)?;
        return Ok(FileOutcome::Present);
    }
    let lock = lock_file(&layout.lock_path(file), &file.path)?;
    // Someone else may have finished it while we waited.
    match layout.presence(&plan.commit, file) {
        Presence::Complete => return Ok(FileOutcome::Present),
        Presence::BlobOnly => {
            layout.link(&plan.commit, file)?;
            return Ok(FileOutcome::Linked);
        }
        Presence::Partial(_) | Presence::Missing => {}
    }
    if adopt_local_copy(layout, &plan.commit, file)? {
        return Ok(FileOutcome::Present);
    }
    let Some(client) = client else {
        bail!("{}: not on disk and HF_HUB_OFFLINE is set", file.path);
    };
    let partial = layout.partial_path(file);
    create_parent(&partial)?;
    let api = Api {
        client,
        repo: &req.repo,
    };
    let url = api.resolve_url(&plan.commit, &file.path);
    let bar = progress::byte_bar(bars, file.size, short_name(&file.path));
    let mut last = 0u64;
    let fetched = fetch(client, &url, file, &partial, &mut |pos| {
        if pos >= last {
            overall.inc(pos - last);
        } else {
            overall.dec(last - pos);
        }
        last = pos;
        bar.set_position(pos);
    });
    bar.finish_and_clear();
    let fetched = fetched?;
    layout.finish(&plan.commit, file, &partial)?;
    drop(lock);
    tracing::debug!("{}: {} bytes, verified", file.path, file.size);
    Ok(FileOutcome::Downloaded {
        received: fetched.received,
        resumed_from: fetched.resumed_from,
    })
}

/// Takes the lock of one file, waiting (and saying so every 30 s) while another process
/// holds it.
fn lock_file(path: &Path, name: &str) -> Result<File> {
    create_parent(path)?;
    let lock = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let started = Instant::now();
    let mut told = Duration::ZERO;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let waited = started.elapsed();
        if waited >= told {
            tracing::warn!(
                "{name}: another process holds {} (waited {:.0} s); waiting for it",
                path.display(),
                waited.as_secs_f64()
            );
            told = waited + Duration::from_secs(30);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// In a local dir, a file already at its path with the right size and hash (copied
/// there, or metadata lost) is kept: only its metadata is written.
fn adopt_local_copy(layout: &Layout, commit: &str, file: &RemoteFile) -> Result<bool> {
    let Layout::LocalDir { .. } = layout else {
        return Ok(false);
    };
    let path = layout.file_path(commit, file);
    if !fs::metadata(&path).is_ok_and(|m| m.len() == file.size) {
        return Ok(false);
    }
    if file_matches(&path, file.etag())? == Some(true) {
        layout.link(commit, file)?;
        return Ok(true);
    }
    Ok(false)
}

fn short_name(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    crate::core::display::ellipsize(name, 30)
}

/// Re-hashes every selected file that is on disk (`--verify`); files that do not match
/// are forgotten so the next download fetches them again.
pub(crate) fn verify(req: &Request, plan: &Plan) -> Report {
    let started = Instant::now();
    let mut details = in_parallel(&plan.files, req.max_workers.min(64), |item| {
        report_of(&item.file, verify_one(req, plan, &item.file))
    });
    details.extend(absent_reports(plan));
    details.sort_by(|a, b| a.path.cmp(&b.path));
    let mut report = Report::new(req, plan, details, started);
    report.verified = report.present;
    report
}

fn verify_one(req: &Request, plan: &Plan, file: &RemoteFile) -> FileOutcome {
    let path = req.layout.file_path(&plan.commit, file);
    let failed = |error: String| FileOutcome::Failed { error };
    match fs::metadata(&path) {
        Err(_) => return failed(format!("{}: not downloaded", file.path)),
        Ok(m) if m.len() != file.size => {
            return failed(format!(
                "{}: {} bytes, the Hub lists {}",
                file.path,
                m.len(),
                file.size
            ));
        }
        Ok(_) => {}
    }
    match file_matches(&path, file.etag()) {
        Ok(Some(true)) => FileOutcome::Present,
        Ok(Some(false)) => {
            let forgot = match req.layout.forget(file) {
                Ok(()) => "; removed from the cache records, `mt download` fetches it again",
                Err(_) => "",
            };
            failed(format!(
                "{}: content does not hash to {}{forgot}",
                file.path,
                file.etag()
            ))
        }
        Ok(None) => failed(format!(
            "{}: etag `{}` is not a content hash",
            file.path,
            file.etag()
        )),
        Err(e) => failed(format!("{e:#}")),
    }
}
