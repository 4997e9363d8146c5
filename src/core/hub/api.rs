//! The Hub's JSON API: revision to commit, and file listings (paginated tree) with the
//! sizes and hashes every download is checked against.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::http::{Client, HttpError};
use super::repo::{RepoRef, percent_encode};

/// Tree pages a listing may take (the Hub sends 1000 entries a page).
const MAX_PAGES: usize = 100_000;

/// A file of a repository at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// `/`-separated path in the repository.
    pub path: String,
    /// Size of the content in bytes (the LFS object's for LFS files).
    pub size: u64,
    /// The git blob id (sha1 of `blob {size}\0` + content for files stored in git).
    pub oid: String,
    /// The sha256 of the content for LFS files.
    pub lfs_sha256: Option<String>,
}

impl RemoteFile {
    /// The name of the file's blob in the cache: the sha256 for LFS files, else the
    /// git blob id (what huggingface_hub gets as the etag).
    pub fn etag(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.oid)
    }

    fn from_tree_entry(entry: &Value) -> Result<Option<Self>> {
        if entry.get("type").and_then(Value::as_str) != Some("file") {
            return Ok(None);
        }
        let text = |v: Option<&Value>, what: &str| -> Result<String> {
            v.and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("tree entry without `{what}`: {entry}"))
        };
        let path = text(entry.get("path"), "path")?;
        let lfs = entry.get("lfs").filter(|v| !v.is_null());
        let size = lfs
            .and_then(|l| l.get("size"))
            .or_else(|| entry.get("size"))
            .and_then(Value::as_u64)
            .with_context(|| format!("tree entry `{path}` without a size"))?;
        let lfs_sha256 = match lfs {
            Some(l) => Some(text(l.get("oid").or_else(|| l.get("sha256")), "lfs.oid")?),
            None => None,
        };
        let file = Self {
            oid: text(entry.get("oid"), "oid")?,
            path,
            size,
            lfs_sha256,
        };
        file.check_hashes()?;
        Ok(Some(file))
    }

    /// Hashes are used as file names in the cache: anything but hex is refused.
    fn check_hashes(&self) -> Result<()> {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(&self.oid, 40) || self.lfs_sha256.as_deref().is_some_and(|s| !hex(s, 64)) {
            bail!("tree entry `{}` has a malformed oid or lfs.oid", self.path);
        }
        if self
            .path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            || self.path.contains('\0')
        {
            bail!("tree entry `{}` is not a safe relative path", self.path);
        }
        Ok(())
    }
}

/// The files of one page of a tree listing (a JSON array of entries; folders are
/// skipped), each checked: a size, hex hashes, a safe relative path.
pub fn parse_tree_page(page: &Value) -> Result<Vec<RemoteFile>> {
    let entries = page.as_array().context("not a JSON array")?;
    let mut files = Vec::new();
    for entry in entries {
        if let Some(file) = RemoteFile::from_tree_entry(entry)? {
            files.push(file);
        }
    }
    Ok(files)
}

/// The Hub API for one repository.
pub(crate) struct Api<'a> {
    pub client: &'a Client,
    pub repo: &'a RepoRef,
}

impl Api<'_> {
    fn api_base(&self) -> String {
        format!(
            "{}/api/{}/{}",
            self.client.endpoint(),
            self.repo.kind.plural(),
            self.repo.id
        )
    }

    /// The commit a branch, tag or ref points at (a commit id is checked to exist).
    pub(crate) fn commit_of(&self, revision: &str) -> Result<String> {
        let url = format!(
            "{}/revision/{}",
            self.api_base(),
            percent_encode(revision, false)
        );
        let (info, _) = self
            .client
            .get_json(&url)
            .map_err(|e| self.explain(e, revision))?;
        let sha = info.get("sha").and_then(Value::as_str).with_context(|| {
            format!(
                "{}: the Hub sent no commit for `{revision}`",
                self.repo.display()
            )
        })?;
        if !super::repo::is_commit(sha) {
            bail!(
                "{}: malformed commit id `{sha}` for `{revision}`",
                self.repo.display()
            );
        }
        Ok(sha.to_string())
    }

    /// Every file under `path` (the whole repository when `None`) at `commit`;
    /// `recursive: false` lists one folder level.
    pub(crate) fn list(
        &self,
        commit: &str,
        path: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<RemoteFile>> {
        let mut url = format!("{}/tree/{commit}", self.api_base());
        if let Some(p) = path.filter(|p| !p.is_empty()) {
            url.push('/');
            url.push_str(&percent_encode(p, true));
        }
        url.push_str(&format!("?recursive={recursive}&expand=false"));
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(url);
        while let Some(page) = next.take() {
            if !seen.insert(page.clone()) || seen.len() > MAX_PAGES {
                bail!(
                    "{}: the tree listing does not end (page {} repeats or too many pages)",
                    self.repo.display(),
                    seen.len()
                );
            }
            let (entries, link) = self
                .client
                .get_json(&page)
                .map_err(|e| self.explain(e, commit))?;
            files.extend(
                parse_tree_page(&entries)
                    .with_context(|| format!("{}: tree listing", self.repo.display()))?,
            );
            next = link;
        }
        Ok(files)
    }

    /// The download URL of `path` at `commit`.
    pub(crate) fn resolve_url(&self, commit: &str, path: &str) -> String {
        format!(
            "{}/{}{}/resolve/{commit}/{}",
            self.client.endpoint(),
            self.repo.kind.url_prefix(),
            self.repo.id,
            percent_encode(path, true)
        )
    }

    /// Adds what a Hub error means for this repository to `err`.
    fn explain(&self, err: anyhow::Error, revision: &str) -> anyhow::Error {
        let code = err
            .downcast_ref::<HttpError>()
            .and_then(HttpError::code)
            .map(str::to_string);
        match code.as_deref() {
            Some("RepoNotFound") => err.context(format!(
                "repository {} not found (or private: pass --token)",
                self.repo.display()
            )),
            Some("RevisionNotFound") => err.context(format!(
                "{}: revision `{revision}` not found",
                self.repo.display()
            )),
            _ => err.context(self.repo.display()),
        }
    }

    /// Whether `err` (from [`Self::list`]) says the folder does not exist.
    pub(crate) fn is_missing(err: &anyhow::Error) -> bool {
        err.chain()
            .filter_map(|e| e.downcast_ref::<HttpError>())
            .any(|e| {
                e.code() == Some("EntryNotFound")
                    || matches!(e, HttpError::Status { status: 404, .. })
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tree_entries_become_files() {
        let git = json!({"type": "file", "oid": "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0", "size": 5, "path": "a/hello.txt"});
        let f = RemoteFile::from_tree_entry(&git).unwrap().unwrap();
        assert_eq!(
            (f.size, f.etag()),
            (5, "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0")
        );
        let sha = "9".repeat(64);
        let lfs = json!({"type": "file", "oid": "a".repeat(40), "size": 134, "path": "w.safetensors",
                         "lfs": {"oid": sha, "size": 1234, "pointerSize": 134}});
        let f = RemoteFile::from_tree_entry(&lfs).unwrap().unwrap();
        assert_eq!((f.size, f.etag()), (1234, sha.as_str()));
        let dir = json!({"type": "directory", "oid": "a".repeat(40), "size": 0, "path": "a"});
        assert!(RemoteFile::from_tree_entry(&dir).unwrap().is_none());
        let page = parse_tree_page(&json!([git, dir, lfs])).unwrap();
        assert_eq!(page.len(), 2, "the folder is skipped");
        assert!(parse_tree_page(&json!({"path": "a"})).is_err());
    }

    #[test]
    fn hostile_entries_are_refused() {
        for (oid, path) in [
            ("../x", "a"),
            (&"a".repeat(40) as &str, "../etc/passwd"),
            (&"a".repeat(40), "a//b"),
        ] {
            let e = json!({"type": "file", "oid": oid, "size": 1, "path": path});
            assert!(RemoteFile::from_tree_entry(&e).is_err(), "{path}");
        }
        let no_size = json!({"type": "file", "oid": "a".repeat(40), "path": "x"});
        assert!(RemoteFile::from_tree_entry(&no_size).is_err());
    }
}
