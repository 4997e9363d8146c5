//! Writing a dataset's images out as files: safe relative names, one write per file,
//! a rerun (or a resume after kill -9) skipping files already complete.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::core::data::sample::ImageRef;

/// A relative path that stays inside the output folder: no root, no `..`, no empty
/// or `.` parts, backslashes treated as separators. `None` when nothing is left.
pub fn safe_relative(name: &str) -> Option<PathBuf> {
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

/// A file name from a record id (characters outside `[A-Za-z0-9._-]` become `_`).
pub fn id_file_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || stem.starts_with('.') {
        format!("_{stem}")
    } else {
        stem
    }
}

/// The file extension for encoded image bytes, from their magic number.
pub fn extension_of(bytes: &[u8]) -> &'static str {
    image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("bin")
}

/// The name an image gets in the output folder: its own relative path when it has a
/// safe one, else `<id>.<ext>`.
pub fn output_name(id: &str, image: &ImageRef<'_>) -> Option<PathBuf> {
    let own = match image {
        ImageRef::Bytes { path: Some(p), .. } => safe_relative(p),
        ImageRef::Archived(name) => safe_relative(name),
        ImageRef::File(p) => p
            .file_name()
            .and_then(|n| safe_relative(&n.to_string_lossy())),
        _ => None,
    };
    own.or_else(|| match image {
        ImageRef::Bytes { bytes, .. } => Some(PathBuf::from(format!(
            "{}.{}",
            id_file_stem(id),
            extension_of(bytes)
        ))),
        _ => None,
    })
}

/// Writes `bytes` to `path` unless a file of that size is already there. Returns
/// whether it wrote. Written in place, no temporary file: a file cut short by a crash
/// is shorter than its bytes, so the size check rewrites it on the next run (and a
/// temporary name plus rename per image doubled the directory work, the bottleneck
/// with 100k files in one folder). No fsync either: a rerun repairs what a power cut
/// loses.
pub fn write_once(path: &Path, bytes: &[u8]) -> Result<bool> {
    if path.metadata().is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(false);
    }
    let write = |p: &Path| std::fs::File::create(p).and_then(|mut f| f.write_all(bytes));
    if let Err(e) = write(path) {
        let dir = path.parent().unwrap_or(Path::new("."));
        if e.kind() != std::io::ErrorKind::NotFound || dir.exists() {
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        write(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(true)
}

/// The bytes of an image that lives in a file or in the record.
pub fn read_bytes<'a>(image: &ImageRef<'a>) -> Result<std::borrow::Cow<'a, [u8]>> {
    match image {
        ImageRef::Bytes { bytes, .. } => Ok(std::borrow::Cow::Borrowed(*bytes)),
        ImageRef::File(p) => Ok(std::borrow::Cow::Owned(
            std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?,
        )),
        ImageRef::Archived(name) => {
            bail!("image {name} is inside a .tar.zst shard, not in the record")
        }
        ImageRef::None => bail!("the record has no image"),
    }
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
        assert_eq!(id_file_stem("PMC/12:3"), "PMC_12_3");
        assert_eq!(id_file_stem(".."), "_..");
    }
}
