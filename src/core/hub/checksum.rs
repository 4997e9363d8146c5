//! The hashes the Hub names files by: sha256 of the content for LFS files, the git blob
//! id (sha1 of `blob {size}\0` + content) for files stored in git.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, Result};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::core::hash::hex;

/// An incremental hash matching one kind of Hub etag.
#[derive(Clone)]
pub(crate) enum ContentHash {
    Sha256(Sha256),
    GitBlob(Sha1),
}

impl ContentHash {
    /// The hash that names `etag` (64 hex: sha256; 40 hex: git blob id of a `size`-byte
    /// file); `None` for an etag of another shape.
    pub(crate) fn for_etag(etag: &str, size: u64) -> Option<Self> {
        if !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match etag.len() {
            64 => Some(Self::Sha256(Sha256::new())),
            40 => {
                let mut h = Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                Some(Self::GitBlob(h))
            }
            _ => None,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::GitBlob(h) => h.update(bytes),
        }
    }

    /// Lower-case hex of the digest.
    pub(crate) fn finish(self) -> String {
        match self {
            Self::Sha256(h) => hex(&h.finalize()),
            Self::GitBlob(h) => hex(&h.finalize()),
        }
    }

    /// Feeds the first `len` bytes of `file` (from its start) into the hash.
    pub(crate) fn update_from(&mut self, file: &mut File, len: u64, path: &Path) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        let mut reader = file.take(len);
        while left > 0 {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            if n == 0 {
                anyhow::bail!("{}: shorter than {len} bytes", path.display());
            }
            self.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }
}

/// Whether the file at `path` hashes to `etag`; `None` when `etag` is not a hash.
pub(crate) fn file_matches(path: &Path, etag: &str) -> Result<Option<bool>> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let size = file.metadata()?.len();
    let Some(mut hash) = ContentHash::for_etag(etag, size) else {
        return Ok(None);
    };
    hash.update_from(&mut file, size, path)?;
    Ok(Some(hash.finish() == etag.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello' | git hash-object --stdin`
        let mut h = ContentHash::for_etag("b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0", 5).unwrap();
        h.update(b"hello");
        assert_eq!(h.finish(), "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0");
    }

    #[test]
    fn sha256_and_files() {
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(file_matches(&p, sha).unwrap(), Some(true));
        assert_eq!(file_matches(&p, &"0".repeat(64)).unwrap(), Some(false));
        assert_eq!(
            file_matches(&p, "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0").unwrap(),
            Some(true)
        );
        assert_eq!(file_matches(&p, "W/\"abc\"").unwrap(), None);
    }
}
