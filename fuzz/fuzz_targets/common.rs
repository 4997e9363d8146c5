//! A scratch folder per fuzzing process and a helper to put the input in a file there:
//! most of mt's readers take paths, as the CLI gives them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder (removed when the process ends normally).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir")).path()
}

/// Writes `data` to `scratch()/name` (its folders made) and returns the path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch folders");
    }
    std::fs::write(&path, data).expect("scratch file");
    path
}
