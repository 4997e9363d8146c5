//! Finding the medical files among the inputs and naming their outputs.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::core::data::inputs::walk;
use crate::core::error::usage;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// DICOM: `.dcm`, `.dicom`, or the `DICM` marker at byte 128.
    Dicom,
    /// NIfTI-1: `.nii` or `.nii.gz`.
    Nifti,
}

/// One input file and where its outputs go: `<out_dir>/<stem>...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The input file.
    pub source: PathBuf,
    /// What it holds.
    pub kind: Kind,
    /// The output folder (the sub-folder the file was found in, under the output root).
    pub out_dir: PathBuf,
    /// The file name without its medical extension (`brain.nii.gz` -> `brain`).
    pub stem: String,
}

/// The files to convert, and the inputs refused before converting.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub jobs: Vec<Job>,
    /// (input, one-line reason).
    pub rejected: Vec<(String, String)>,
    /// Files in the folders that are neither DICOM nor NIfTI.
    pub ignored: usize,
}

/// Extensions stripped from file names to make stems (longest first).
const EXTENSIONS: [(&str, Kind); 4] = [
    (".nii.gz", Kind::Nifti),
    (".nii", Kind::Nifti),
    (".dcm", Kind::Dicom),
    (".dicom", Kind::Dicom),
];

/// The kind of `path`: by extension, else DICOM when it has the `DICM` marker at byte 128.
pub(crate) fn kind_of(path: &Path) -> Option<Kind> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    if let Some((_, kind)) = EXTENSIONS.iter().find(|(ext, _)| name.ends_with(ext)) {
        return Some(*kind);
    }
    let mut head = [0u8; 132];
    let mut f = File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    (&head[128..] == b"DICM").then_some(Kind::Dicom)
}

/// The file name without a known medical extension (`a.nii.gz` -> `a`; `1.2.840.5` stays).
pub(crate) fn stem_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    EXTENSIONS
        .iter()
        .find(|(ext, _)| lower.ends_with(ext) && lower.len() > ext.len())
        .map_or(name.clone(), |(ext, _)| {
            name[..name.len() - ext.len()].to_string()
        })
}

/// Resolves files and folders (walked recursively, hidden entries skipped) into jobs.
/// Files found in a folder keep their sub-folder under `out`; files named directly go
/// to `out` itself. A missing input is a usage error; a named file that is neither DICOM
/// nor NIfTI, or one whose output names another input already took, is rejected.
pub(crate) fn plan(inputs: &[PathBuf], out: &Path) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut taken: HashMap<(PathBuf, String), PathBuf> = HashMap::new();
    for input in inputs {
        if !input.exists() {
            return Err(usage(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
        let found: Vec<(PathBuf, Option<Kind>, PathBuf)> = if input.is_dir() {
            walk(input)?
                .into_iter()
                .map(|f| {
                    let rel = f
                        .parent()
                        .and_then(|p| p.strip_prefix(input).ok())
                        .map_or_else(PathBuf::new, Path::to_path_buf);
                    let kind = kind_of(&f);
                    if kind.is_none() {
                        plan.ignored += 1;
                    }
                    (f, kind, out.join(rel))
                })
                .filter(|(_, kind, _)| kind.is_some())
                .collect()
        } else {
            vec![(input.clone(), kind_of(input), out.to_path_buf())]
        };
        for (source, kind, out_dir) in found {
            let Some(kind) = kind else {
                plan.rejected.push((
                    source.display().to_string(),
                    format!(
                        "{}: neither DICOM (no DICM marker at byte 128) nor NIfTI (.nii, .nii.gz)",
                        source.display()
                    ),
                ));
                continue;
            };
            let stem = stem_of(&source);
            if let Some(first) = taken.get(&(out_dir.clone(), stem.clone())) {
                plan.rejected.push((
                    source.display().to_string(),
                    format!(
                        "{}: its outputs {}/{stem}.* would overwrite those of {}",
                        source.display(),
                        out_dir.display(),
                        first.display()
                    ),
                ));
                continue;
            }
            taken.insert((out_dir.clone(), stem.clone()), source.clone());
            plan.jobs.push(Job {
                source,
                kind,
                out_dir,
                stem,
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_strip_known_extensions_only() {
        assert_eq!(stem_of(Path::new("a/brain.nii.gz")), "brain");
        assert_eq!(stem_of(Path::new("CT.DCM")), "CT");
        assert_eq!(stem_of(Path::new("1.2.840.10008.5")), "1.2.840.10008.5");
        assert_eq!(stem_of(Path::new(".nii")), ".nii");
    }

    #[test]
    fn plans_folders_by_extension_and_magic() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir_all(root.join("series")).unwrap();
        let mut dicm = vec![0u8; 128];
        dicm.extend_from_slice(b"DICM");
        std::fs::write(root.join("series/IM0001"), &dicm).unwrap();
        std::fs::write(root.join("vol.nii.gz"), b"x").unwrap();
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        std::fs::write(root.join("vol.nii"), b"x").unwrap();
        let out = dir.path().join("out");
        let plan = plan(std::slice::from_ref(&root), &out).unwrap();
        let got: Vec<_> = plan
            .jobs
            .iter()
            .map(|j| (j.kind, j.out_dir.clone(), j.stem.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::Dicom, out.join("series"), "IM0001"),
                (Kind::Nifti, out.clone(), "vol"),
            ]
        );
        assert_eq!(plan.ignored, 1);
        // vol.nii and vol.nii.gz would share outputs: the second is refused.
        assert_eq!(plan.rejected.len(), 1);
        assert!(plan.rejected[0].1.contains("would overwrite"));
        let missing = super::plan(&[dir.path().join("nope")], &out).unwrap_err();
        assert!(missing.to_string().contains("no such file"));
    }
}
