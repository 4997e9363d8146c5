//! Folders of image files. Each image is a record whose id is its path relative to the
//! folder; a sidecar `<name>.txt` next to an image is read as its caption.

use std::fs;
use std::path::Path;

use anyhow::Result;
use serde_json::Map;

use super::inputs::{Format, format_of, walk};
use super::llava_records::Rows;
use super::sample::{ImageSource, Sample};
use super::{Flow, Visit};

/// Streams the images under `root` (or the single image `root`) in path order.
pub(crate) fn read_folder(
    input: usize,
    root: &Path,
    batch_rows: usize,
    visit: Visit<'_>,
) -> Result<()> {
    let (base, files) = if root.is_file() {
        (
            root.parent().unwrap_or(Path::new("")).to_path_buf(),
            vec![root.to_path_buf()],
        )
    } else {
        let files = walk(root)?
            .into_iter()
            .filter(|p| format_of(p) == Some(Format::ImageFolder))
            .collect();
        (root.to_path_buf(), files)
    };
    let mut rows = Rows::new(input, batch_rows);
    for path in files {
        let id = path
            .strip_prefix(&base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let caption = fs::read_to_string(path.with_extension("txt"))
            .ok()
            .map(|s| s.trim().to_string());
        let sample = Sample {
            id,
            image: ImageSource::File(path),
            caption,
            source: None,
            extra: Map::new(),
        };
        if rows.push(Ok(sample), visit) == Flow::Stop {
            return Ok(());
        }
    }
    rows.flush(visit);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_relative_paths_and_sidecars_are_captions() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("ct")).unwrap();
        fs::write(t.path().join("ct/b.png"), b"png").unwrap();
        fs::write(t.path().join("ct/b.txt"), "A CT slice.\n").unwrap();
        fs::write(t.path().join("a.jpg"), b"jpg").unwrap();
        fs::write(t.path().join("notes.md"), b"no").unwrap();
        let mut got = Vec::new();
        read_folder(0, t.path(), 1, &mut |b| {
            let b = b.unwrap();
            got.push((b.id(0).into_owned(), b.caption(0).map(str::to_string)));
            Flow::Continue
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("a.jpg".into(), None),
                ("ct/b.png".into(), Some("A CT slice.".into()))
            ]
        );
    }
}
