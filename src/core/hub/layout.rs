//! Where downloaded files live, exactly as huggingface_hub lays them out, so each tool
//! finds what the other fetched:
//! - the cache: `<cache>/<kind>s--org--name/{blobs/<etag>, snapshots/<commit>/<path> ->
//!   ../../blobs/<etag>, refs/<revision>, .no_exist/<commit>/<path>}`, locks in
//!   `<cache>/.locks/<kind>s--org--name/<etag>.lock`, partial downloads in
//!   `blobs/<etag>.incomplete`;
//! - `--local-dir`: files at their paths, and per file in
//!   `.cache/huggingface/download/`: `<path>.metadata` (commit, etag, time),
//!   `<path>.lock` and `<path>.<etag>.incomplete`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};

use super::api::RemoteFile;
use super::repo::{RepoRef, is_commit};

/// The on-disk destination of one download.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    Cache {
        /// `<cache>/<kind>s--org--name`.
        repo_dir: PathBuf,
        /// `<cache>/.locks/<kind>s--org--name`.
        locks_dir: PathBuf,
    },
    LocalDir {
        root: PathBuf,
    },
}

/// How much of a file is already here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Complete and in place.
    Complete,
    /// The blob is in the cache (another revision had it): only the link is missing.
    BlobOnly,
    /// A partial download of this many bytes.
    Partial(u64),
    Missing,
}

impl Layout {
    /// The shared cache under `cache_dir`.
    pub(crate) fn cache(cache_dir: &Path, repo: &RepoRef) -> Self {
        let folder = repo.folder_name();
        Self::Cache {
            repo_dir: cache_dir.join(&folder),
            locks_dir: cache_dir.join(".locks").join(folder),
        }
    }

    fn meta_dir(root: &Path) -> PathBuf {
        root.join(".cache").join("huggingface")
    }

    fn download_dir(root: &Path) -> PathBuf {
        Self::meta_dir(root).join("download")
    }

    /// Where the user finds the files of `commit`: the snapshot folder or the local dir.
    pub(crate) fn root(&self, commit: &str) -> PathBuf {
        match self {
            Self::Cache { repo_dir, .. } => repo_dir.join("snapshots").join(commit),
            Self::LocalDir { root } => root.clone(),
        }
    }

    /// The final path of `file`.
    pub(crate) fn file_path(&self, commit: &str, file: &RemoteFile) -> PathBuf {
        self.root(commit).join(&file.path)
    }

    fn blob_path(&self, etag: &str) -> Option<PathBuf> {
        match self {
            Self::Cache { repo_dir, .. } => Some(repo_dir.join("blobs").join(etag)),
            Self::LocalDir { .. } => None,
        }
    }

    /// The partial download of `file` (kept across runs and resumed).
    pub(crate) fn partial_path(&self, file: &RemoteFile) -> PathBuf {
        match self {
            Self::Cache { repo_dir, .. } => repo_dir
                .join("blobs")
                .join(format!("{}.incomplete", file.etag())),
            Self::LocalDir { root } => {
                Self::download_dir(root).join(format!("{}.{}.incomplete", file.path, file.etag()))
            }
        }
    }

    /// The lock file guarding `file` against a second process.
    pub(crate) fn lock_path(&self, file: &RemoteFile) -> PathBuf {
        match self {
            Self::Cache { locks_dir, .. } => locks_dir.join(format!("{}.lock", file.etag())),
            Self::LocalDir { root } => Self::download_dir(root).join(format!("{}.lock", file.path)),
        }
    }

    fn metadata_path(root: &Path, path: &str) -> PathBuf {
        Self::download_dir(root).join(format!("{path}.metadata"))
    }

    /// What is already on disk for `file` at `commit`.
    pub(crate) fn presence(&self, commit: &str, file: &RemoteFile) -> Presence {
        let final_path = self.file_path(commit, file);
        let complete = match self {
            Self::Cache { .. } => fs::metadata(&final_path).is_ok_and(|m| m.len() == file.size),
            Self::LocalDir { root } => {
                fs::metadata(&final_path).is_ok_and(|m| m.len() == file.size)
                    && read_metadata(&Self::metadata_path(root, &file.path))
                        .is_some_and(|m| m.etag == file.etag() && m.fresh_for(&final_path))
            }
        };
        if complete {
            return Presence::Complete;
        }
        if let Some(blob) = self.blob_path(file.etag())
            && fs::metadata(&blob).is_ok_and(|m| m.len() == file.size)
        {
            return Presence::BlobOnly;
        }
        match fs::metadata(self.partial_path(file)) {
            Ok(m) => Presence::Partial(m.len()),
            Err(_) => Presence::Missing,
        }
    }

    /// Moves a finished, verified partial into place and records it.
    pub(crate) fn finish(&self, commit: &str, file: &RemoteFile, partial: &Path) -> Result<()> {
        match self {
            Self::Cache { .. } => {
                let blob = self.blob_path(file.etag()).expect("cache layout");
                fs::rename(partial, &blob)
                    .with_context(|| format!("cannot move {} into place", blob.display()))?;
                self.link(commit, file)
            }
            Self::LocalDir { root } => {
                let dest = self.file_path(commit, file);
                create_parent(&dest)?;
                fs::rename(partial, &dest)
                    .with_context(|| format!("cannot move {} into place", dest.display()))?;
                self.record(root, commit, file)
            }
        }
    }

    /// Points the snapshot path of `file` at its blob (cache), or writes its metadata
    /// for a file already in place (local dir).
    pub(crate) fn link(&self, commit: &str, file: &RemoteFile) -> Result<()> {
        match self {
            Self::Cache { .. } => {
                let link = self.file_path(commit, file);
                create_parent(&link)?;
                let depth = file.path.matches('/').count() + 2;
                let target = PathBuf::from("../".repeat(depth))
                    .join("blobs")
                    .join(file.etag());
                // One name per link (made under the file's lock), so a run killed
                // between the two steps leaves nothing the next one does not replace.
                let tmp = link.with_file_name(format!(
                    ".{}.mt-link",
                    link.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&target, &tmp)
                    .and_then(|_| fs::rename(&tmp, &link))
                    .with_context(|| format!("cannot link {}", link.display()))
            }
            Self::LocalDir { root } => self.record(root, commit, file),
        }
    }

    /// Brings the records of a complete file up to `commit`: a local dir's metadata
    /// names the commit the file was last confirmed at, as huggingface_hub keeps it.
    pub(crate) fn refresh(&self, commit: &str, file: &RemoteFile) -> Result<()> {
        if let Self::LocalDir { root } = self
            && read_metadata(&Self::metadata_path(root, &file.path))
                .is_some_and(|m| m.commit != commit)
        {
            self.record(root, commit, file)?;
        }
        Ok(())
    }

    fn record(&self, root: &Path, commit: &str, file: &RemoteFile) -> Result<()> {
        let ignore = Self::meta_dir(root).join(".gitignore");
        if !ignore.exists() {
            create_parent(&ignore)?;
            fs::write(&ignore, "*")
                .with_context(|| format!("cannot write {}", ignore.display()))?;
        }
        let meta = Self::metadata_path(root, &file.path);
        create_parent(&meta)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        write_shared(
            &meta,
            format!("{commit}\n{}\n{now}\n", file.etag()).as_bytes(),
        )
    }

    /// Records that `revision` points at `commit` (nothing for a commit id itself).
    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if let Self::Cache { repo_dir, .. } = self
            && !is_commit(revision)
        {
            let path = repo_dir.join("refs").join(revision);
            create_parent(&path)?;
            write_shared(&path, commit.as_bytes())?;
        }
        Ok(())
    }

    /// Records that `path` does not exist at `commit` (cache only), as huggingface_hub
    /// does so that later lookups need no request; a marker that cannot be written (a
    /// folder in the way) is only a warning.
    pub(crate) fn mark_missing(&self, commit: &str, path: &str) {
        if let Self::Cache { repo_dir, .. } = self {
            let marker = repo_dir.join(".no_exist").join(commit).join(path);
            let made = create_parent(&marker).and_then(|_| {
                File::create(&marker)
                    .map(drop)
                    .with_context(|| format!("cannot write {}", marker.display()))
            });
            if let Err(e) = made {
                tracing::warn!("{e:#}");
            }
        }
    }

    /// The commit `revision` points at according to what is on disk (offline use).
    pub(crate) fn local_commit(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        match self {
            Self::Cache { repo_dir, .. } => {
                fs::read_to_string(repo_dir.join("refs").join(revision))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| is_commit(s))
            }
            Self::LocalDir { root } => {
                let mut commits = self.local_files(root).into_iter().map(|(_, m)| m.commit);
                let first = commits.next().filter(|c| is_commit(c))?;
                commits.all(|c| c == first).then_some(first)
            }
        }
    }

    /// The files on disk for `commit`, as the listing would give them (offline use and
    /// `--verify`): path, size and etag; the git oid is the etag for git files.
    pub(crate) fn local_listing(&self, commit: &str) -> Result<Vec<RemoteFile>> {
        let mut files = Vec::new();
        match self {
            Self::Cache { .. } => {
                let root = self.root(commit);
                for path in walk(&root)? {
                    let rel = relative(&root, &path);
                    let Ok(target) = fs::read_link(&path) else {
                        continue;
                    };
                    let etag = target
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    files.push(file_entry(rel, size, etag));
                }
            }
            Self::LocalDir { root } => {
                for (rel, meta) in self.local_files(root) {
                    if meta.commit == commit {
                        let size = fs::metadata(root.join(&rel)).map(|m| m.len()).unwrap_or(0);
                        files.push(file_entry(rel, size, meta.etag));
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn local_files(&self, root: &Path) -> Vec<(String, Metadata)> {
        let dir = Self::download_dir(root);
        walk(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let rel = relative(&dir, &p);
                let rel = rel.strip_suffix(".metadata")?.to_string();
                Some((rel, read_metadata(&p)?))
            })
            .collect()
    }

    /// Forgets a file that failed verification, so the next download fetches it again:
    /// the cache drops the blob, a local dir drops the metadata (the file stays).
    pub(crate) fn forget(&self, file: &RemoteFile) -> Result<()> {
        let path = match self {
            Self::Cache { .. } => self.blob_path(file.etag()).expect("cache layout"),
            Self::LocalDir { root } => Self::metadata_path(root, &file.path),
        };
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }
}

fn file_entry(path: String, size: u64, etag: String) -> RemoteFile {
    let lfs = etag.len() == 64;
    RemoteFile {
        path,
        size,
        oid: if lfs { String::new() } else { etag.clone() },
        lfs_sha256: lfs.then_some(etag),
    }
}

/// A `--local-dir` metadata file.
#[derive(Debug, Clone, PartialEq)]
struct Metadata {
    commit: String,
    etag: String,
    timestamp: f64,
}

impl Metadata {
    /// huggingface_hub's rule: the file was not modified after the metadata was written.
    fn fresh_for(&self, file: &Path) -> bool {
        fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .is_some_and(|t| t.as_secs_f64() - 1.0 <= self.timestamp)
    }
}

fn read_metadata(path: &Path) -> Option<Metadata> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    Some(Metadata {
        commit: lines.next()?.trim().to_string(),
        etag: lines.next()?.trim().to_string(),
        timestamp: lines.next()?.trim().parse().ok()?,
    })
}

/// Writes `bytes` to `path` atomically (temporary file + rename) with the umask's usual
/// permissions, so other users of a shared cache can read it; an unchanged file is not
/// rewritten (a read-only cache stays usable).
fn write_shared(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_file_name(format!(
        ".{}.{}.mt-tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    fs::write(&tmp, bytes)
        .and_then(|_| fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the parent folder of `path`.
pub(crate) fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

/// Every non-directory entry under `root` (symlinks not followed), sorted.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hub::repo::RepoKind;

    fn file(path: &str, body: &[u8]) -> RemoteFile {
        let mut h =
            crate::core::hub::checksum::ContentHash::for_etag(&"0".repeat(40), body.len() as u64)
                .unwrap();
        h.update(body);
        RemoteFile {
            path: path.into(),
            size: body.len() as u64,
            oid: h.finish(),
            lfs_sha256: None,
        }
    }

    #[test]
    fn cache_links_are_relative_and_shared_between_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoRef::parse("org/m", RepoKind::Model).unwrap();
        let layout = Layout::cache(dir.path(), &repo);
        let f = file("a/b/c.json", b"{}");
        let (c1, c2) = ("1".repeat(40), "2".repeat(40));
        assert_eq!(layout.presence(&c1, &f), Presence::Missing);
        let partial = layout.partial_path(&f);
        create_parent(&partial).unwrap();
        fs::write(&partial, b"{").unwrap();
        assert_eq!(layout.presence(&c1, &f), Presence::Partial(1));
        fs::write(&partial, b"{}").unwrap();
        layout.finish(&c1, &f, &partial).unwrap();
        let link = dir
            .path()
            .join("models--org--m/snapshots")
            .join(&c1)
            .join("a/b/c.json");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../../../blobs/{}", f.oid))
        );
        assert_eq!(fs::read(&link).unwrap(), b"{}");
        assert_eq!(layout.presence(&c1, &f), Presence::Complete);
        assert_eq!(layout.presence(&c2, &f), Presence::BlobOnly);
        layout.write_ref("refs/pr/1", &c2).unwrap();
        // An unchanged ref is left alone (a read-only cache stays usable).
        use std::os::unix::fs::MetadataExt;
        let ref_path = dir.path().join("models--org--m/refs/refs/pr/1");
        let inode = fs::metadata(&ref_path).unwrap().ino();
        layout.write_ref("refs/pr/1", &c2).unwrap();
        assert_eq!(fs::metadata(&ref_path).unwrap().ino(), inode);
        assert_eq!(layout.local_commit("refs/pr/1"), Some(c2.clone()));
        assert_eq!(layout.local_listing(&c1).unwrap(), vec![f.clone()]);
        layout.mark_missing(&c1, "x/missing.txt");
        assert!(
            dir.path()
                .join("models--org--m/.no_exist")
                .join(&c1)
                .join("x/missing.txt")
                .is_file()
        );
    }

    #[test]
    fn local_dir_metadata_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::LocalDir {
            root: dir.path().to_path_buf(),
        };
        let f = file("sub/x.txt", b"hello");
        let c = "3".repeat(40);
        let partial = layout.partial_path(&f);
        create_parent(&partial).unwrap();
        fs::write(&partial, b"hello").unwrap();
        layout.finish(&c, &f, &partial).unwrap();
        let meta = fs::read_to_string(
            dir.path()
                .join(".cache/huggingface/download/sub/x.txt.metadata"),
        )
        .unwrap();
        let lines: Vec<&str> = meta.lines().collect();
        assert_eq!(&lines[..2], &[c.as_str(), f.oid.as_str()]);
        assert!(lines[2].parse::<f64>().is_ok());
        assert_eq!(layout.presence(&c, &f), Presence::Complete);
        assert_eq!(layout.local_commit("main"), Some(c.clone()));
        assert_eq!(layout.local_listing(&c).unwrap(), vec![f.clone()]);
        layout.forget(&f).unwrap();
        assert_eq!(layout.presence(&c, &f), Presence::Missing);
    }
}
