//! Writing a dataset's images out as files: safe relative names, one write per file,
//! a rerun (or a resume after kill -9) skipping files already complete.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use sha2::{Digest, Sha256};

use crate::core::data::sample::ImageRef;
use crate::core::hash::hex;

/// A relative path that stays inside the output folder: no root, no `..`, no empty
/// or `.` parts, backslashes treated as separators. `None` when nothing is left.
pub(crate) fn safe_relative(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in Path::new(&name.replace('\\', "/")).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// A name made from a record id, safe as a file stem and as a WebDataset key: characters
/// other than `[A-Za-z0-9_-]` become `_`, and when that changed anything a short hash
/// of the id is appended, so distinct ids keep distinct names on every run.
pub(crate) fn id_key(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == id && !safe.is_empty() {
        safe
    } else {
        format!("{safe}_{}", &hex(&Sha256::digest(id.as_bytes()))[..8])
    }
}

/// The file extension for encoded image bytes, from their magic number.
pub(crate) fn extension_of(bytes: &[u8]) -> &'static str {
    image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("bin")
}

/// The name an image gets in the output folder: for a file, its path relative to the
/// folder image names resolve against (`root`), as the record named it; for an archive
/// member, its member name (what a `25M_full` manifest refers to); for bytes held in the
/// record, `<id>.<ext>` (their own `path` field is not trusted to be unique).
pub(crate) fn output_name(id: &str, image: &ImageRef<'_>, root: Option<&Path>) -> Option<PathBuf> {
    match image {
        ImageRef::File(p) => {
            let rel = root.and_then(|r| p.strip_prefix(r).ok()).unwrap_or(p);
            safe_relative(&rel.to_string_lossy())
        }
        ImageRef::Archived(name) => safe_relative(name),
        ImageRef::Bytes { bytes, .. } => Some(PathBuf::from(format!(
            "{}.{}",
            id_key(id),
            extension_of(bytes)
        ))),
        ImageRef::None => None,
    }
}

/// Writes `bytes` to `path` unless a file of that size is already there. Returns
/// whether it wrote. Written in place, no temporary file: a file cut short by a crash
/// is shorter than its bytes, so the size check rewrites it on the next run (and a
/// temporary name plus rename per image doubled the directory work, the bottleneck
/// with 100k files in one folder). No fsync either: a rerun repairs what a power cut
/// loses.
pub(crate) fn write_once(path: &Path, bytes: &[u8]) -> Result<bool> {
    if path.metadata().is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(false);
    }
    let write = |p: &Path| std::fs::File::create(p).and_then(|mut f| f.write_all(bytes));
    if let Err(e) = write(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        // The folder is missing (or another thread is creating it): create_dir_all is
        // idempotent, then try once more.
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        write(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_output_folder() {
        assert_eq!(safe_relative("a/b.png"), Some(PathBuf::from("a/b.png")));
        assert_eq!(
            safe_relative("/etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(safe_relative("./x\\y.jpg"), Some(PathBuf::from("x/y.jpg")));
        assert_eq!(safe_relative("../../x.png"), None);
        assert_eq!(safe_relative("a/../../x.png"), None);
        assert_eq!(safe_relative(""), None);
        assert_eq!(id_key("082b501d-da7b"), "082b501d-da7b");
        let (a, b) = (id_key("scan_1.png"), id_key("scan_1_png"));
        assert!(a.starts_with("scan_1_png_") && !a.contains('.'));
        assert_ne!(a, b);
        assert_eq!(id_key("scan_1.png"), a);
        assert!(id_key("..").starts_with("___"));
    }
}
