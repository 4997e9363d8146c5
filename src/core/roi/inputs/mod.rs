//! Readers for `mt roi` inputs: each input path expands to a stream of [`Item`]s, one per
//! image (or NIfTI slice), handed to a visitor as soon as it is read.
//!
//! # Inputs, by file name
//!
//! - **Mask images** (`.png`, `.tif`, `.tiff`; any other name not listed below is tried as
//!   an image too): one item, id = the file stem.
//!   - 8- and 16-bit grey (also grey + alpha, where alpha 0 is background): the values are
//!     the labels, with one exception, the **binary rule**: a mask whose only non-zero
//!     value is the full-scale value of its sample type (255 for 8-bit, 65535 for 16-bit,
//!     `2^d - 1` for `d`-bit grey PNGs) is binary and becomes label 1. Every other mask
//!     keeps its values: 0/1 masks are label 1 already, label maps keep their classes
//!     (also when only one class is present, so a class keeps its value across files),
//!     and instance masks (Cellpose's uint16 PNG/TIFF) keep one value per cell.
//!   - Grey PNGs below 8 bits are read at their own depth (a 4-bit label 3 is label 3,
//!     not the 51 a viewer shows).
//!   - Palette PNGs: the palette index is the label (first palette entry of a colour
//!     wins if the palette repeats colours); the binary rule does not apply.
//!   - RGB(A) masks: any pixel that is not black (and not fully transparent) is label 1.
//! - **NIfTI masks** (`.nii`, `.nii.gz`): the volume is read once; one item per axial
//!   slice (across array axis 2) that holds any foreground, id `stem#z` with `z` zero-padded
//!   to the width of the slice count (`seg#07` of 40 slices; `stem#t_z` for 4-D files).
//!   Slices are laid out exactly as `mt convert image` writes them (no reorientation:
//!   pixel (row `j`, column `i`) is voxel `(i, j, z)`), so boxes line up with the PNGs it
//!   writes for the same volume. Empty slices are skipped; a volume with no foreground at
//!   all gives its first slice (empty) as one item, so the file is still reported. Values
//!   are rescaled by `scl_slope`/`scl_inter` as the converter does and must then be whole
//!   numbers in `0..=u32::MAX` (else the file is one error item); they are kept as labels,
//!   except that the binary rule applies to `uint8` (255) and `uint16` (65535) volumes.
//! - **COCO JSON** (`.json`: `images`, `annotations`, `categories`): one item per entry of
//!   `images`, id = its `id`, image = its `file_name` resolved against `--image-folder` (else
//!   the JSON's folder), size = its `width`/`height` (else read from the image's header).
//!   - Polygon `segmentation`s (`[[x1, y1, x2, y2, ...], ...]`) are rasterised into a
//!     [`LabelMap`] with label = `category_id` (names in [`Item::label_names`]); see
//!     `fill_polygon` for the fill rule. The parts of one annotation are united; a later
//!     annotation paints over an earlier one where they overlap. In an image with
//!     polygons, annotations with only a `bbox` are painted as filled boxes.
//!   - Images whose annotations have only `bbox`es give [`Regions::Boxes`], labelled with
//!     the category's name (else its id); images without annotations give no boxes.
//!   - A `bbox` `[x, y, w, h]` covers pixels `floor(x)..ceil(x + w)` by
//!     `floor(y)..ceil(y + h)`, clamped to the image; an empty result is an error.
//!   - RLE segmentations (`{"counts", "size"}`) are not supported: the image's item is an
//!     error naming each such annotation.
//!   - Annotations whose `image_id` is not in `images` are reported in one error item.
//! - **JSONL** (`.jsonl`, `.ndjson`) of `{id, image, mask | bbox, label | labels}`, one
//!   item per non-blank line (source `file:line`):
//!   - `id`: a string or number; else the image's stem, else the mask's stem, else `line N`.
//!   - `image`: a path (or a list, first used) resolved against `--image-folder`, else the
//!     JSONL's folder. When given, its header is read: its size checks the mask's
//!     ("mask 512x512 but image 256x256" is an error item) and sizes the boxes.
//!   - `mask`: a mask image path relative to the JSONL's folder, read as above. `label`
//!     names label 1; `labels` names labels as `{"1": "liver"}` or a list for labels
//!     1, 2, ... A `bbox` beside a `mask` is ignored.
//!   - `bbox`: `[x0, y0, x1, y1]` in pixels or a list of them (pixels `floor(x0)..ceil(x1)`,
//!     clamped to the image); `label` names every box, `labels` is one name per box
//!     (default label `1`). The image size comes from `image`'s header, else from
//!     `width` and `height` fields.
//! - **Folders**: every `.png`, `.tif`, `.tiff`, `.nii`, `.nii.gz` inside, recursively, in
//!   path order (hidden entries skipped); ids are the path below the folder without the
//!   extension (`sub/a`, `sub/seg#12`).
//!
//! # Errors
//!
//! A missing input path stops [`read_inputs`] before anything is read. Everything else
//! that is wrong with a file, line or image (unreadable, malformed, size mismatch) is an
//! item whose [`Item::regions`] is an `Err` with a one-line message that already names the
//! file (and line, record or field), and reading goes on with the next item.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use image::DynamicImage;
use nifti::NiftiType;
use serde::Deserialize;
use serde_json::Value;

use super::{LabelMap, PixelBox};
use crate::core::budget;
use crate::core::data::id_text;

mod coco;
mod jsonl;
mod mask_image;
mod nifti_mask;
mod shapes;

use coco::read_coco;
use jsonl::read_jsonl;
pub use mask_image::read_mask_image;
use nifti_mask::read_nifti;
pub(crate) use shapes::fill_polygon;
pub(crate) use shapes::pixel_box;

/// What one item gives the measurer.
#[derive(Debug, Clone, PartialEq)]
pub enum Regions {
    /// A label map (binary masks become label 1; label maps and instance masks keep their
    /// values; COCO polygons carry their category id).
    Mask(LabelMap),
    /// Boxes only (COCO `bbox`, JSONL `bbox`) with their labels, and the size of the image
    /// they refer to.
    Boxes {
        /// Image width, in pixels.
        width: usize,
        /// Image height, in pixels.
        height: usize,
        /// Each box with its label, in input order.
        boxes: Vec<(String, PixelBox)>,
    },
}

/// One image's (or NIfTI slice's) regions, or why they could not be read.
#[derive(Debug)]
pub struct Item {
    /// File stem, `stem#z` for NIfTI slices, the JSONL / COCO id.
    pub id: String,
    /// The image the regions belong to, when known (JSONL `image`, COCO `file_name`).
    pub image: Option<PathBuf>,
    /// Where the item came from, for messages: `masks/a.png`, `seg.nii.gz#12`,
    /// `cases.jsonl:12`, `coco.json:images[3]`.
    pub source: String,
    /// The regions, or why they could not be read (a one-line message that already
    /// names the file and line, record or field).
    pub regions: Result<Regions>,
    /// Names of label values (COCO categories, JSONL `labels`), when the input has them.
    pub label_names: Option<BTreeMap<u32, String>>,
}

impl Item {
    fn new(id: String, source: String, regions: Result<Regions>) -> Self {
        Item {
            id,
            image: None,
            source,
            regions,
            label_names: None,
        }
    }
}

/// Reads every input in order and hands each [`Item`] to `visit` as soon as it is read
/// (one mask, NIfTI volume or JSONL line in memory at a time; a COCO file is parsed
/// whole). `images_root` resolves COCO `file_name`s and JSONL `image`s. Stops at the
/// first error `visit` returns; fails before reading anything if an input is missing.
pub fn read_inputs(
    paths: &[PathBuf],
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    for path in paths {
        if std::fs::metadata(path).is_err() {
            bail!("{}: no such file or folder", path.display());
        }
    }
    for path in paths {
        if path.is_dir() {
            read_folder(path, visit)?;
        } else {
            read_file(path, &stem(path), images_root, visit)?;
        }
    }
    Ok(())
}

/// Whether a file found in a folder is read as a mask (by extension).
pub(crate) fn is_mask_file(path: &Path) -> bool {
    let name = lower_name(path);
    [".png", ".tif", ".tiff", ".nii", ".nii.gz"]
        .iter()
        .any(|ext| name.ends_with(ext) && name.len() > ext.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Nifti,
    Coco,
    Jsonl,
}

fn kind_of(path: &Path) -> Kind {
    let name = lower_name(path);
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        Kind::Nifti
    } else if name.ends_with(".json") {
        Kind::Coco
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Kind::Jsonl
    } else {
        Kind::Image
    }
}

fn lower_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The file name without its extension (`.nii.gz` counts as one).
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cut = if name.to_ascii_lowercase().ends_with(".nii.gz") && name.len() > 7 {
        name.len() - 7
    } else {
        match name.rfind('.') {
            Some(dot) if dot > 0 => dot,
            _ => name.len(),
        }
    };
    name[..cut].to_string()
}

fn read_file(
    path: &Path,
    id: &str,
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    match kind_of(path) {
        Kind::Image => {
            let regions = read_mask_image(path).map(Regions::Mask);
            visit(Item::new(
                id.to_string(),
                path.display().to_string(),
                regions,
            ))
        }
        Kind::Nifti => read_nifti(path, id, visit),
        Kind::Coco => read_coco(path, images_root, visit),
        Kind::Jsonl => read_jsonl(path, images_root, visit),
    }
}

/// All mask files below `dir`, in path order; ids are the paths below `dir` without the
/// extension.
fn read_folder(dir: &Path, visit: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                let id = relative_id(dir, &d);
                let msg = anyhow!("{}: cannot list the folder: {e}", d.display());
                visit(Item::new(id, d.display().to_string(), Err(msg)))?;
                continue;
            }
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_mask_file(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        let msg = anyhow!(
            "{}: no mask files (.png, .tif, .tiff, .nii, .nii.gz) inside",
            dir.display()
        );
        return visit(Item::new(stem(dir), dir.display().to_string(), Err(msg)));
    }
    for f in files {
        let id = relative_id(dir, &f);
        read_file(&f, &id, None, visit)?;
    }
    Ok(())
}

/// `f` below `dir`, `/`-separated, without the extension.
fn relative_id(dir: &Path, f: &Path) -> String {
    let rel = f.strip_prefix(dir).unwrap_or(f);
    let mut parts: Vec<String> = rel
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    parts.push(stem(f));
    parts.join("/")
}

/// A JSON id (string or number) as text; `None` for anything else.
/// A JSON number as a whole number >= 0 that fits `usize`.
fn whole(v: &Value) -> Option<usize> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .and_then(|n| usize::try_from(n).ok())
}

fn numbers(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

#[cfg(test)]
mod tests {
    use super::nifti_mask::digits;
    use super::*;

    fn map(w: usize, h: usize) -> LabelMap {
        LabelMap {
            width: w,
            height: h,
            labels: vec![0; w * h],
        }
    }

    fn area(m: &LabelMap) -> usize {
        m.labels.iter().filter(|&&v| v != 0).count()
    }

    #[test]
    fn polygons_fill_pixel_centres() {
        let mut m = map(40, 40);
        fill_polygon(&mut m, &[10., 10., 20., 10., 20., 30., 10., 30.], 3);
        assert_eq!(area(&m), 200);
        assert_eq!(m.labels[10 * 40 + 10], 3);
        assert_eq!(m.labels[29 * 40 + 19], 3);
        assert_eq!(m.labels[30 * 40 + 19], 0);
        // Right triangle (0,0) (10,0) (0,10): row y holds 9 - y centres.
        let mut m = map(40, 40);
        fill_polygon(&mut m, &[0., 0., 10., 0., 0., 10.], 1);
        assert_eq!(area(&m), 45);
        // Clipped: a square half outside.
        let mut m = map(10, 10);
        fill_polygon(&mut m, &[-5., -5., 5., -5., 5., 5., -5., 5.], 1);
        assert_eq!(area(&m), 25);
        // Squares sharing an edge paint disjoint pixels.
        let mut m = map(10, 10);
        fill_polygon(&mut m, &[0., 0., 4., 0., 4., 4., 0., 4.], 1);
        fill_polygon(&mut m, &[4., 0., 8., 0., 8., 4., 4., 4.], 2);
        assert_eq!(m.labels.iter().filter(|&&v| v == 1).count(), 16);
        assert_eq!(m.labels.iter().filter(|&&v| v == 2).count(), 16);
        // Even-odd: a square traced around a square hole leaves the hole empty.
        let mut m = map(10, 10);
        let keyhole = [
            0., 0., 10., 0., 10., 10., 0., 10., 0., 0., 3., 3., 3., 7., 7., 7., 7., 3., 3., 3.,
        ];
        fill_polygon(&mut m, &keyhole, 1);
        assert_eq!(area(&m), 84);
        assert_eq!(m.labels[5 * 10 + 5], 0);
    }

    #[test]
    fn boxes_floor_and_ceil() {
        assert_eq!(
            pixel_box([1.2, 2.7, 5.1, 6.0], 10, 10),
            Some(PixelBox {
                x0: 1,
                y0: 2,
                x1: 6,
                y1: 6
            })
        );
        assert_eq!(
            pixel_box([-3.0, -1.0, 50.0, 4.0], 10, 10),
            Some(PixelBox {
                x0: 0,
                y0: 0,
                x1: 10,
                y1: 4
            })
        );
        assert_eq!(pixel_box([3.0, 3.0, 3.0, 5.0], 10, 10), None);
        assert_eq!(pixel_box([12.0, 3.0, 15.0, 5.0], 10, 10), None);
        assert_eq!(pixel_box([f64::NAN, 3.0, 15.0, 5.0], 10, 10), None);
    }

    #[test]
    fn stems_and_ids() {
        assert_eq!(stem(Path::new("a/seg.nii.gz")), "seg");
        assert_eq!(stem(Path::new("a/m.1.png")), "m.1");
        assert_eq!(stem(Path::new(".hidden")), ".hidden");
        assert_eq!(
            relative_id(Path::new("/d"), Path::new("/d/sub/x.tif")),
            "sub/x"
        );
        assert!(is_mask_file(Path::new("X.TIFF")));
        assert!(!is_mask_file(Path::new("x.jpg")));
        assert_eq!(digits(7), 1);
        assert_eq!(digits(10), 2);
    }
}
