//! Turning command-line paths (files, folders, globs, `-`) into typed inputs.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use super::sample::ImageRef;
use crate::core::error::usage;

/// File extensions read as images.
pub(crate) const IMAGE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp", "gif"];

/// What kind of reader an input needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A parquet shard (MedTrinity-25M `25M_demo` / `25M_full`, or any parquet).
    Parquet,
    /// A JSON array of LLaVA-style records.
    LlavaJson,
    /// One LLaVA-style (or any) JSON record per line; `-` is stdin.
    Jsonl,
    /// A folder of image files (or a single image).
    ImageFolder,
    /// A `.tar`, `.tar.zst` or `.tzst` archive of images (WebDataset-style groups allowed).
    Archive,
}

impl Format {
    /// A short lowercase name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::LlavaJson => "json",
            Format::Jsonl => "jsonl",
            Format::ImageFolder => "images",
            Format::Archive => "archive",
        }
    }
}

/// Whether an input holds records, or only the images a manifest refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Records to read (parquet rows, LLaVA records, images of a folder or archive).
    Records,
    /// An image shard of a `25M_full`-style dataset: its members are matched to the
    /// manifest rows by file name.
    ImageShard,
}

/// Where image references (file names, relative paths) of an input resolve.
#[derive(Debug, Default)]
pub enum ImageStore {
    /// Relative to the working directory.
    #[default]
    None,
    /// Relative to a folder.
    Folder(PathBuf),
    /// Inside `.tar.zst` image shards, matched by file name.
    Archives(Vec<PathBuf>),
}

impl ImageStore {
    /// The folder image names resolve against, when they resolve to files.
    pub(crate) fn root(&self) -> Option<&Path> {
        match self {
            ImageStore::Folder(root) => Some(root),
            _ => None,
        }
    }

    /// Where the image called `name` is.
    pub(crate) fn resolve<'a>(&self, name: &'a str) -> ImageRef<'a> {
        match self {
            ImageStore::None => ImageRef::File(Cow::Borrowed(Path::new(name))),
            ImageStore::Folder(root) => ImageRef::File(Cow::Owned(root.join(name))),
            ImageStore::Archives(_) => ImageRef::Archived(name),
        }
    }
}

/// One input to read.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file or folder (`-` for stdin).
    pub path: PathBuf,
    /// The reader it needs.
    pub format: Format,
    /// Records, or an image shard of a manifest.
    pub role: Role,
    /// Where its image references resolve (one store shared by every input when an
    /// image folder is given).
    pub store: Arc<ImageStore>,
}

impl Input {
    /// The path as shown in messages (`-` stays `-`).
    pub(crate) fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Resolves command-line paths into inputs. `images` is where file names in manifests
/// and LLaVA records resolve (a folder, or a folder / glob of `.tar.zst` shards).
pub fn resolve(paths: &[String], images: Option<&Path>) -> Result<Vec<Input>> {
    if paths.is_empty() {
        return Err(usage(
            "no input given (a parquet file, folder, glob, JSON/JSONL file or `-`)",
        ));
    }
    let explicit = images.map(image_store).transpose()?;
    let mut inputs = Vec::new();
    for arg in paths {
        if arg == "-" {
            inputs.push(Input {
                path: "-".into(),
                format: Format::Jsonl,
                role: Role::Records,
                store: store_or(&explicit, ImageStore::None),
            });
            continue;
        }
        let path = Path::new(arg);
        if path.exists() {
            resolve_path(path, &explicit, &mut inputs)?;
        } else if arg.contains(['*', '?', '[']) {
            let mut matches: Vec<PathBuf> = glob::glob(arg)
                .map_err(|e| usage(format!("bad glob `{arg}`: {e}")))?
                .filter_map(Result::ok)
                .collect();
            matches.sort();
            if matches.is_empty() {
                return Err(usage(format!("no file matches `{arg}`")));
            }
            for m in matches {
                resolve_path(&m, &explicit, &mut inputs)?;
            }
        } else {
            return Err(usage(format!("{arg}: no such file or folder")));
        }
    }
    Ok(inputs)
}

fn store_or(
    explicit: &Option<(Arc<ImageStore>, Vec<PathBuf>)>,
    default: ImageStore,
) -> Arc<ImageStore> {
    explicit
        .as_ref()
        .map_or_else(|| Arc::new(default), |(s, _)| s.clone())
}

fn resolve_path(
    path: &Path,
    explicit: &Option<(Arc<ImageStore>, Vec<PathBuf>)>,
    out: &mut Vec<Input>,
) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let records = |p: &Path, format, store| Input {
        path: p.to_path_buf(),
        format,
        role: Role::Records,
        store,
    };
    if path.is_file() {
        let Some(format) = format_of(path) else {
            return Err(usage(format!(
                "{}: unrecognised input (expected .parquet, .json, .jsonl, .tar/.tar.zst, an image or a folder)",
                path.display()
            )));
        };
        let store = match format {
            Format::Parquet | Format::LlavaJson | Format::Jsonl => {
                store_or(explicit, default_folder(parent))
            }
            _ => Arc::new(ImageStore::None),
        };
        out.push(records(path, format, store));
        push_image_shards(explicit, out);
        return Ok(());
    }
    let files = walk(path)?;
    let of = |f: Format| files.iter().filter(move |p| format_of(p) == Some(f));
    let parquet: Vec<_> = of(Format::Parquet).collect();
    let archives: Vec<PathBuf> = of(Format::Archive).cloned().collect();
    if !parquet.is_empty() {
        let store = match explicit {
            Some((s, _)) => s.clone(),
            None if !archives.is_empty() => Arc::new(ImageStore::Archives(archives.clone())),
            None => Arc::new(default_folder(path)),
        };
        out.extend(
            parquet
                .iter()
                .map(|p| records(p, Format::Parquet, store.clone())),
        );
        if explicit.is_some() {
            push_image_shards(explicit, out);
        } else {
            out.extend(archives.into_iter().map(image_shard));
        }
        return Ok(());
    }
    let json: Vec<_> = files
        .iter()
        .filter(|p| matches!(format_of(p), Some(Format::LlavaJson | Format::Jsonl)))
        .collect();
    if !json.is_empty() {
        let store = store_or(explicit, default_folder(path));
        out.extend(
            json.iter()
                .map(|p| records(p, format_of(p).expect("filtered"), store.clone())),
        );
        push_image_shards(explicit, out);
        return Ok(());
    }
    if !archives.is_empty() {
        out.extend(
            archives
                .iter()
                .map(|a| records(a, Format::Archive, Arc::new(ImageStore::None))),
        );
        return Ok(());
    }
    if !files
        .iter()
        .any(|p| format_of(p) == Some(Format::ImageFolder))
    {
        bail!(
            "{}: the folder holds no parquet, JSON/JSONL, archive or image files",
            path.display()
        );
    }
    out.push(records(
        path,
        Format::ImageFolder,
        Arc::new(ImageStore::None),
    ));
    Ok(())
}

/// Adds the explicit `--image-folder` archives as image shards (once).
fn push_image_shards(explicit: &Option<(Arc<ImageStore>, Vec<PathBuf>)>, out: &mut Vec<Input>) {
    if let Some((_, archives)) = explicit {
        for a in archives {
            if !out.iter().any(|i| &i.path == a) {
                out.push(image_shard(a.clone()));
            }
        }
    }
}

fn image_shard(path: PathBuf) -> Input {
    Input {
        path,
        format: Format::Archive,
        role: Role::ImageShard,
        store: Arc::new(ImageStore::None),
    }
}

/// The default image root of a dataset folder: its `images/` subfolder if it has one.
fn default_folder(root: &Path) -> ImageStore {
    let images = root.join("images");
    ImageStore::Folder(if images.is_dir() {
        images
    } else {
        root.to_path_buf()
    })
}

/// `--image-folder`: a folder of images, or archives (a file, a folder of them, or a glob).
fn image_store(arg: &Path) -> Result<(Arc<ImageStore>, Vec<PathBuf>)> {
    let text = arg.to_string_lossy();
    let archives: Vec<PathBuf> = if arg.is_file() {
        vec![arg.to_path_buf()]
    } else if arg.is_dir() {
        walk(arg)?
            .into_iter()
            .filter(|p| format_of(p) == Some(Format::Archive))
            .collect()
    } else if text.contains(['*', '?', '[']) {
        let mut m: Vec<PathBuf> = glob::glob(&text)
            .map_err(|e| usage(format!("bad glob `{text}`: {e}")))?
            .filter_map(Result::ok)
            .collect();
        m.sort();
        m
    } else {
        return Err(usage(format!(
            "--image-folder {text}: no such file or folder"
        )));
    };
    if archives.is_empty() {
        return Ok((Arc::new(ImageStore::Folder(arg.to_path_buf())), Vec::new()));
    }
    if let Some(bad) = archives
        .iter()
        .find(|p| format_of(p) != Some(Format::Archive))
    {
        return Err(usage(format!(
            "--image-folder {}: not a .tar or .tar.zst archive",
            bad.display()
        )));
    }
    Ok((Arc::new(ImageStore::Archives(archives.clone())), archives))
}

/// The format a file's name says it has.
pub(crate) fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let ext = name.rsplit('.').next().unwrap_or("");
    Some(match ext {
        "parquet" => Format::Parquet,
        "json" => Format::LlavaJson,
        "jsonl" | "ndjson" => Format::Jsonl,
        "tar" | "tzst" => Format::Archive,
        "zst" if name.ends_with(".tar.zst") => Format::Archive,
        e if IMAGE_EXTENSIONS.contains(&e) => Format::ImageFolder,
        _ => return None,
    })
}

/// Every file under `root`, recursively, sorted, skipping hidden files and folders.
pub(crate) fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("{}: cannot list folder", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list folder", dir.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            format_of(Path::new("a/train-0.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(format_of(Path::new("x.tar.zst")), Some(Format::Archive));
        assert_eq!(format_of(Path::new("x.zst")), None);
        assert_eq!(format_of(Path::new("x.JPG")), Some(Format::ImageFolder));
        assert_eq!(format_of(Path::new("llava.jsonl")), Some(Format::Jsonl));
        assert_eq!(format_of(Path::new("README.md")), None);
    }

    #[test]
    fn a_full_dataset_folder_pairs_manifests_with_image_shards() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("25M_full/b.parquet"));
        touch(&t.path().join("25M_full/a.parquet"));
        touch(&t.path().join("25M_accessible/s0.tar.zst"));
        touch(&t.path().join(".cache/x.parquet"));
        let inputs = resolve(&[t.path().to_string_lossy().into_owned()], None).unwrap();
        let names: Vec<_> = inputs
            .iter()
            .map(|i| {
                (
                    i.path.file_name().unwrap().to_string_lossy().into_owned(),
                    i.role,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.parquet".into(), Role::Records),
                ("b.parquet".into(), Role::Records),
                ("s0.tar.zst".into(), Role::ImageShard)
            ]
        );
        assert!(matches!(&*inputs[0].store, ImageStore::Archives(a) if a.len() == 1));
    }

    #[test]
    fn globs_missing_paths_and_unknown_files_are_usage_errors() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("s/train-1.parquet"));
        touch(&t.path().join("s/train-0.parquet"));
        touch(&t.path().join("notes.md"));
        let glob = format!("{}/s/train-*.parquet", t.path().display());
        let inputs = resolve(&[glob], None).unwrap();
        assert_eq!(inputs.len(), 2);
        assert!(inputs[0].path.ends_with("train-0.parquet"));
        for bad in [
            format!("{}/nope", t.path().display()),
            format!("{}/s/*.json", t.path().display()),
            format!("{}/notes.md", t.path().display()),
        ] {
            let err = resolve(std::slice::from_ref(&bad), None).unwrap_err();
            assert_eq!(crate::core::error::exit_code(&err), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn a_plain_folder_of_images_is_one_input() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("ct/a.png"));
        touch(&t.path().join("mr/b.JPG"));
        let inputs = resolve(&[t.path().to_string_lossy().into_owned()], None).unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].format, Format::ImageFolder);
    }
}
