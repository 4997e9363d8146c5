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
//!   `images`, id = its `id`, image = its `file_name` resolved against `--images` (else
//!   the JSON's folder), size = its `width`/`height` (else read from the image's header).
//!   - Polygon `segmentation`s (`[[x1, y1, x2, y2, ...], ...]`) are rasterised into a
//!     [`LabelMap`] with label = `category_id` (names in [`Item::label_names`]); see
//!     [`fill_polygon`] for the fill rule. The parts of one annotation are united; a later
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
//!   - `image`: a path (or a list, first used) resolved against `--images`, else the
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
use nifti::{NiftiObject, NiftiType, NiftiVolume};
use serde::Deserialize;
use serde_json::Value;

use super::{LabelMap, PixelBox};
use crate::core::budget;
use crate::core::data::id_text;

/// What one item gives the measurer.
#[derive(Debug, Clone, PartialEq)]
pub enum Regions {
    /// A label map (binary masks become label 1; label maps and instance masks keep their
    /// values; COCO polygons carry their category id).
    Mask(LabelMap),
    /// Boxes only (COCO `bbox`, JSONL `bbox`) with their labels, and the size of the image
    /// they refer to.
    Boxes {
        width: usize,
        height: usize,
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
pub fn is_mask_file(path: &Path) -> bool {
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

// ---------------------------------------------------------------------------------------
// Mask images

/// Reads one mask image (PNG, TIFF, or any format the `image` crate knows) as a label
/// map, following the module's rules. Errors name the file.
pub fn read_mask_image(path: &Path) -> Result<LabelMap> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    decode_mask(&bytes).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// PNG header facts the `image` crate hides: (bit depth, colour type).
fn png_header(bytes: &[u8]) -> Option<(u8, u8)> {
    (bytes.len() > 26 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR")
        .then(|| (bytes[24], bytes[25]))
}

fn decode_mask(bytes: &[u8]) -> Result<LabelMap> {
    let png = png_header(bytes);
    let img =
        crate::core::image::decode(bytes).map_err(|e| anyhow!("not a readable image: {e:#}"))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if let Some((_, 3)) = png {
        return palette_labels(bytes, &img);
    }
    let labels = match img {
        DynamicImage::ImageLuma8(g) => {
            let depth = match png {
                Some((d, 0)) if d < 8 => d,
                _ => 8,
            };
            grey8_labels(g.as_raw(), depth)
        }
        DynamicImage::ImageLuma16(g) => grey16_labels(g.as_raw()),
        DynamicImage::ImageLumaA8(g) => {
            let grey: Vec<u8> = g
                .pixels()
                .map(|p| if p.0[1] == 0 { 0 } else { p.0[0] })
                .collect();
            grey8_labels(&grey, 8)
        }
        DynamicImage::ImageLumaA16(g) => {
            let grey: Vec<u16> = g
                .pixels()
                .map(|p| if p.0[1] == 0 { 0 } else { p.0[0] })
                .collect();
            grey16_labels(&grey)
        }
        DynamicImage::ImageRgb8(g) => g.pixels().map(|p| u32::from(p.0 != [0; 3])).collect(),
        DynamicImage::ImageRgba8(g) => g
            .pixels()
            .map(|p| u32::from(p.0[3] != 0 && p.0[..3] != [0; 3]))
            .collect(),
        DynamicImage::ImageRgb16(g) => g.pixels().map(|p| u32::from(p.0 != [0; 3])).collect(),
        DynamicImage::ImageRgba16(g) => g
            .pixels()
            .map(|p| u32::from(p.0[3] != 0 && p.0[..3] != [0; 3]))
            .collect(),
        other => other
            .to_rgba32f()
            .pixels()
            .map(|p| u32::from(p.0[3] != 0.0 && p.0[..3].iter().any(|&c| c != 0.0)))
            .collect(),
    };
    Ok(LabelMap {
        width,
        height,
        labels,
    })
}

/// 8-bit grey values as labels, with the binary rule. `depth` < 8: a grey PNG of that
/// bit depth, which the `image` crate scales up to 0..=255; scaled back here.
fn grey8_labels(values: &[u8], depth: u8) -> Vec<u32> {
    let mut seen = [false; 256];
    for &v in values {
        seen[usize::from(v)] = true;
    }
    let binary = seen[255] && seen[1..255].iter().all(|s| !s);
    let scale = 255 / ((1u32 << depth) - 1);
    let lut: [u32; 256] = std::array::from_fn(|v| {
        if binary {
            u32::from(v != 0)
        } else {
            v as u32 / scale
        }
    });
    values.iter().map(|&v| lut[usize::from(v)]).collect()
}

/// 16-bit grey values as labels, with the binary rule.
fn grey16_labels(values: &[u16]) -> Vec<u32> {
    let binary = values.contains(&65535) && values.iter().all(|&v| v == 0 || v == 65535);
    if binary {
        values.iter().map(|&v| u32::from(v != 0)).collect()
    } else {
        values.iter().map(|&v| u32::from(v)).collect()
    }
}

/// Palette PNGs: the `image` crate expands them to RGB(A); map each colour back to its
/// palette index (from the PLTE and tRNS chunks, first index of a colour wins).
fn palette_labels(bytes: &[u8], img: &DynamicImage) -> Result<LabelMap> {
    let (mut plte, mut trns) = (None, None);
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = bytes
            .get(at + 8..at + 8 + len)
            .context("truncated PNG chunk")?;
        match kind {
            b"PLTE" => plte = Some(data),
            b"tRNS" => trns = Some(data),
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let plte = plte.context("palette PNG without a PLTE chunk")?;
    let mut index: HashMap<[u8; 4], u32> = HashMap::new();
    for (i, rgb) in plte.chunks_exact(3).enumerate() {
        let alpha = trns.and_then(|t| t.get(i)).copied().unwrap_or(255);
        index
            .entry([rgb[0], rgb[1], rgb[2], alpha])
            .or_insert(i as u32);
    }
    let rgba = img.to_rgba8();
    let (width, height) = (rgba.width() as usize, rgba.height() as usize);
    let mut labels = Vec::with_capacity(width * height);
    let mut last = ([0u8; 4], None);
    for (n, p) in rgba.pixels().enumerate() {
        if last.1.is_none() || last.0 != p.0 {
            last = (p.0, index.get(&p.0).copied());
        }
        let Some(i) = last.1 else {
            bail!(
                "pixel ({}, {}) has colour {:?}, which is not in the palette",
                n % width,
                n / width,
                p.0
            );
        };
        labels.push(i);
    }
    Ok(LabelMap {
        width,
        height,
        labels,
    })
}

// ---------------------------------------------------------------------------------------
// NIfTI

/// Voxel types a NIfTI label volume may hold.
trait Voxel: Copy {
    fn value(self) -> f64;
}

macro_rules! voxel {
    ($($t:ty),*) => {$(impl Voxel for $t {
        #[allow(clippy::cast_lossless)]
        fn value(self) -> f64 {
            self as f64
        }
    })*};
}
voxel!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

fn read_nifti(path: &Path, id: &str, visit: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
    let source = path.display().to_string();
    let obj = match crate::core::medical::nifti::read_within_budget(path, 0) {
        Ok(o) => o,
        Err(e) => {
            let msg = anyhow!("{source}: {e:#}");
            return visit(Item::new(id.to_string(), source, Err(msg)));
        }
    };
    let header = obj.header().clone();
    let volume = obj.into_volume();
    let shape: Vec<usize> = volume.dim().iter().map(|&d| usize::from(d)).collect();
    if shape.len() < 2 || shape.contains(&0) {
        let msg = anyhow!("{source}: NIfTI dim {shape:?} is not an image");
        return visit(Item::new(id.to_string(), source, Err(msg)));
    }
    let (slope, inter) = (f64::from(header.scl_slope), f64::from(header.scl_inter));
    let rescale = (slope.is_finite() && slope != 0.0 && (slope, inter) != (1.0, 0.0))
        .then_some((slope, if inter.is_finite() { inter } else { 0.0 }));
    let datatype = volume.data_type();
    let slices = Slices {
        path,
        id,
        shape: &shape,
        rescale,
    };
    macro_rules! typed {
        ($t:ty, $full:expr) => {
            match volume.into_nifti_typed_data::<$t>() {
                Ok(data) => slices.emit(&data, $full, visit),
                Err(e) => {
                    let msg = anyhow!("{source}: cannot read the {datatype:?} voxels: {e}");
                    visit(Item::new(id.to_string(), source, Err(msg)))
                }
            }
        };
    }
    match datatype {
        NiftiType::Uint8 => typed!(u8, Some(255.0)),
        NiftiType::Uint16 => typed!(u16, Some(65535.0)),
        NiftiType::Int8 => typed!(i8, None),
        NiftiType::Int16 => typed!(i16, None),
        NiftiType::Uint32 => typed!(u32, None),
        NiftiType::Int32 => typed!(i32, None),
        NiftiType::Uint64 => typed!(u64, None),
        NiftiType::Int64 => typed!(i64, None),
        NiftiType::Float32 => typed!(f32, None),
        NiftiType::Float64 => typed!(f64, None),
        other => {
            let msg = anyhow!("{source}: unsupported NIfTI datatype {other:?} for a mask");
            visit(Item::new(id.to_string(), source, Err(msg)))
        }
    }
}

/// One NIfTI volume being cut into axial slices.
struct Slices<'a> {
    path: &'a Path,
    id: &'a str,
    shape: &'a [usize],
    rescale: Option<(f64, f64)>,
}

impl Slices<'_> {
    /// Checks the volume holds labels, then visits its non-empty slices. `full`: the
    /// value the binary rule turns into 1 (none after a rescale).
    fn emit<T: Voxel>(
        &self,
        data: &[T],
        full: Option<f64>,
        visit: &mut dyn FnMut(Item) -> Result<()>,
    ) -> Result<()> {
        let source = self.path.display().to_string();
        let (nx, ny) = (self.shape[0], self.shape[1]);
        let nz = self.shape.get(2).copied().unwrap_or(1);
        let volumes: usize = self.shape[3.min(self.shape.len())..].iter().product();
        let plane = nx * ny;
        let total = plane * nz * volumes;
        if data.len() < total {
            let msg = anyhow!(
                "{source}: {} voxels for dim {:?} ({total} expected)",
                data.len(),
                self.shape
            );
            return visit(Item::new(self.id.to_string(), source, Err(msg)));
        }
        let data = &data[..total];
        let value = |v: T| match self.rescale {
            Some((s, i)) => v.value() * s + i,
            None => v.value(),
        };
        // One pass: every value a label, and is the volume binary (only `full`)?
        let mut only_full = full.is_some();
        for (n, &v) in data.iter().enumerate() {
            let f = value(v);
            if !(f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)) {
                let (i, j, k) = (n % nx, n / nx % ny, n / plane % nz);
                let msg = anyhow!(
                    "{source}: voxel ({i}, {j}, {k}) is {f}, not a label \
                     (labels are whole numbers from 0)"
                );
                return visit(Item::new(self.id.to_string(), source, Err(msg)));
            }
            if f != 0.0 && Some(f) != full {
                only_full = false;
            }
        }
        let label = |v: T| {
            let f = value(v);
            if only_full {
                u32::from(f != 0.0)
            } else {
                f as u32
            }
        };
        let (zw, tw) = (digits(nz), digits(volumes));
        let name = |t: usize, z: usize| {
            if volumes > 1 {
                format!("{t:0tw$}_{z:0zw$}")
            } else {
                format!("{z:0zw$}")
            }
        };
        let mut any = false;
        for t in 0..volumes {
            for z in 0..nz {
                let start = (t * nz + z) * plane;
                let slice = &data[start..start + plane];
                if slice.iter().all(|&v| value(v) == 0.0) {
                    continue;
                }
                any = true;
                let labels = slice.iter().map(|&v| label(v)).collect();
                let map = LabelMap {
                    width: nx,
                    height: ny,
                    labels,
                };
                let n = name(t, z);
                visit(Item::new(
                    format!("{}#{n}", self.id),
                    format!("{source}#{n}"),
                    Ok(Regions::Mask(map)),
                ))?;
            }
        }
        if !any {
            let n = name(0, 0);
            let map = LabelMap {
                width: nx,
                height: ny,
                labels: vec![0; plane],
            };
            visit(Item::new(
                format!("{}#{n}", self.id),
                format!("{source}#{n}"),
                Ok(Regions::Mask(map)),
            ))?;
        }
        Ok(())
    }
}

/// Decimal digits of `n` (at least 1).
fn digits(n: usize) -> usize {
    n.to_string().len()
}

// ---------------------------------------------------------------------------------------
// Boxes and polygons

/// The pixels a box with corners `(x0, y0)`-`(x1, y1)` (any reals) covers:
/// `floor(x0)..ceil(x1)` by `floor(y0)..ceil(y1)`, clamped to the image. `None` when that
/// is empty or a coordinate is not finite.
pub fn pixel_box(corners: [f64; 4], width: usize, height: usize) -> Option<PixelBox> {
    if corners.iter().any(|c| !c.is_finite()) {
        return None;
    }
    let clamp = |v: f64, max: usize| v.clamp(0.0, max as f64) as u32;
    let b = PixelBox {
        x0: clamp(corners[0].floor(), width),
        y0: clamp(corners[1].floor(), height),
        x1: clamp(corners[2].ceil(), width),
        y1: clamp(corners[3].ceil(), height),
    };
    (b.x1 > b.x0 && b.y1 > b.y0).then_some(b)
}

/// Paints `label` into `map` where pixel centres `(x + 0.5, y + 0.5)` lie inside the
/// polygon `points` (`[x1, y1, x2, y2, ...]`, pixel coordinates, closed implicitly), by
/// the even-odd rule. A centre exactly on a left or top edge is inside, on a right or
/// bottom edge outside, so an axis-aligned rectangle with integer corners `(x0, y0)`,
/// `(x1, y1)` fills exactly `(x1 - x0) * (y1 - y0)` pixels, and polygons sharing an edge
/// never paint the same pixel twice. Parts outside the map are clipped.
pub fn fill_polygon(map: &mut LabelMap, points: &[f64], label: u32) {
    let n = points.len() / 2;
    if n < 3 || map.width == 0 {
        return;
    }
    let pt = |i: usize| (points[2 * (i % n)], points[2 * (i % n) + 1]);
    let (lo, hi) = (0..n)
        .map(|i| pt(i).1)
        .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let first = ((lo - 0.5).ceil().max(0.0)) as usize;
    let last = ((hi - 0.5).ceil().clamp(0.0, map.height as f64)) as usize;
    let mut xs = Vec::new();
    for y in first..last {
        let yc = y as f64 + 0.5;
        xs.clear();
        for i in 0..n {
            let ((xa, ya), (xb, yb)) = (pt(i), pt(i + 1));
            if (ya <= yc && yc < yb) || (yb <= yc && yc < ya) {
                xs.push(xa + (yc - ya) * (xb - xa) / (yb - ya));
            }
        }
        xs.sort_by(f64::total_cmp);
        let row = &mut map.labels[y * map.width..(y + 1) * map.width];
        for pair in xs.chunks_exact(2) {
            let from = (pair[0] - 0.5).ceil().clamp(0.0, map.width as f64) as usize;
            let to = (pair[1] - 0.5).ceil().clamp(0.0, map.width as f64) as usize;
            if from < to {
                row[from..to].fill(label);
            }
        }
    }
}

fn fill_box(map: &mut LabelMap, b: PixelBox, label: u32) {
    for y in b.y0 as usize..b.y1 as usize {
        map.labels[y * map.width + b.x0 as usize..y * map.width + b.x1 as usize].fill(label);
    }
}

// ---------------------------------------------------------------------------------------
// COCO

#[derive(Deserialize)]
struct Coco {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    file_name: Value,
    #[serde(default)]
    width: Value,
    #[serde(default)]
    height: Value,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    image_id: Value,
    #[serde(default)]
    category_id: Value,
    #[serde(default)]
    bbox: Value,
    #[serde(default)]
    segmentation: Value,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: Value,
    #[serde(default)]
    name: Option<String>,
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

fn read_coco(
    path: &Path,
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let source = path.display().to_string();
    let parsed = File::open(path)
        .map_err(|e| anyhow!("{source}: cannot open: {e}"))
        .and_then(|f| {
            serde_json::from_reader::<_, Coco>(BufReader::with_capacity(1 << 20, f))
                .map_err(|e| anyhow!("{source}: not a COCO file: {e}"))
        });
    let coco = match parsed {
        Ok(c) => c,
        Err(e) => return visit(Item::new(stem(path), source, Err(e))),
    };
    let names: BTreeMap<u32, String> = coco
        .categories
        .iter()
        .filter_map(|c| {
            let id = u32::try_from(whole(&c.id)?).ok()?;
            Some((id, c.name.clone().unwrap_or_else(|| id.to_string())))
        })
        .collect();
    let mut by_image: HashMap<String, Vec<usize>> = HashMap::new();
    for (a, ann) in coco.annotations.iter().enumerate() {
        let key = id_text(&ann.image_id).unwrap_or_default();
        by_image.entry(key).or_default().push(a);
    }
    let folder = path.parent().unwrap_or(Path::new(""));
    let root = images_root.unwrap_or(folder);
    for (i, img) in coco.images.iter().enumerate() {
        let src = format!("{source}:images[{i}]");
        let key = id_text(&img.id);
        let anns = key
            .as_ref()
            .and_then(|k| by_image.remove(k))
            .unwrap_or_default();
        let image = img.file_name.as_str().map(|f| root.join(f));
        let regions = match &key {
            None => Err(anyhow!("{src}: field `id`: expected a string or number")),
            Some(_) => coco_regions(&coco.annotations, &anns, img, image.as_deref(), &names)
                .map_err(|e| anyhow!("{src}: {e:#}")),
        };
        let mut item = Item::new(key.unwrap_or_else(|| format!("images[{i}]")), src, regions);
        item.image = image;
        item.label_names = (!names.is_empty()).then(|| names.clone());
        visit(item)?;
    }
    if !by_image.is_empty() {
        let mut orphans: Vec<usize> = by_image.into_values().flatten().collect();
        orphans.sort_unstable();
        let first = &coco.annotations[orphans[0]];
        let msg = anyhow!(
            "{source}: {} annotation(s) refer to images not in `images` (first: annotations[{}], \
             image_id {})",
            orphans.len(),
            orphans[0],
            first.image_id
        );
        visit(Item::new(stem(path), source, Err(msg)))?;
    }
    Ok(())
}

/// One COCO image's regions from its annotations `anns` (indices into `all`).
fn coco_regions(
    all: &[CocoAnnotation],
    anns: &[usize],
    img: &CocoImage,
    image: Option<&Path>,
    names: &BTreeMap<u32, String>,
) -> Result<Regions> {
    let (width, height) = match (whole(&img.width), whole(&img.height)) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            let Some(image) = image else {
                bail!("no `width`/`height` and no `file_name` to read them from");
            };
            let info = crate::core::image::probe_file(image).map_err(|e| {
                anyhow!("no `width`/`height`, and the image cannot be read for its size: {e:#}")
            })?;
            (info.width as usize, info.height as usize)
        }
    };
    let mut rle = Vec::new();
    let mut polygons = false;
    for &a in anns {
        match &all[a].segmentation {
            Value::Object(_) => rle.push(format!("annotations[{a}] (id {})", all[a].id)),
            Value::Array(parts) if !parts.is_empty() => polygons = true,
            _ => {}
        }
    }
    if !rle.is_empty() {
        bail!(
            "RLE segmentation is not supported (polygons and boxes only): {}",
            rle.join(", ")
        );
    }
    if polygons {
        budget::picture("the polygons' label map", width as u64, height as u64, 4)?;
    }
    let mut map = polygons.then(|| LabelMap {
        width,
        height,
        labels: vec![0; width * height],
    });
    let mut boxes = Vec::new();
    for &a in anns {
        let ann = &all[a];
        let at = || format!("annotations[{a}] (id {})", ann.id);
        let category = whole(&ann.category_id)
            .and_then(|c| u32::try_from(c).ok())
            .filter(|&c| c > 0)
            .with_context(|| {
                format!(
                    "{}: field `category_id`: expected a whole number >= 1, found {}",
                    at(),
                    ann.category_id
                )
            })?;
        let bbox = match &ann.bbox {
            Value::Null => None,
            v => {
                let b = numbers(v)
                    .filter(|b| b.len() == 4 && b[2] >= 0.0 && b[3] >= 0.0)
                    .with_context(|| {
                        format!("{}: field `bbox`: expected [x, y, w, h], found {v}", at())
                    })?;
                let corners = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
                Some(pixel_box(corners, width, height).with_context(|| {
                    format!(
                        "{}: bbox {v} is empty or outside the {width}x{height} image",
                        at()
                    )
                })?)
            }
        };
        let parts = match &ann.segmentation {
            Value::Array(parts) => parts.as_slice(),
            Value::Null => &[],
            v => bail!(
                "{}: field `segmentation`: expected polygons, found {v}",
                at()
            ),
        };
        match &mut map {
            Some(map) if !parts.is_empty() => {
                for (p, part) in parts.iter().enumerate() {
                    let pts = numbers(part)
                        .filter(|pts| pts.len() >= 6 && pts.len() % 2 == 0)
                        .filter(|pts| pts.iter().all(|c| c.is_finite()))
                        .with_context(|| {
                            format!(
                                "{}: field `segmentation[{p}]`: expected a polygon \
                                 [x1, y1, x2, y2, x3, y3, ...]",
                                at()
                            )
                        })?;
                    fill_polygon(map, &pts, category);
                }
            }
            Some(map) => {
                let b = bbox.with_context(|| format!("{}: no `bbox` or `segmentation`", at()))?;
                fill_box(map, b, category);
            }
            None => {
                let b = bbox.with_context(|| format!("{}: no `bbox` or `segmentation`", at()))?;
                let label = names
                    .get(&category)
                    .cloned()
                    .unwrap_or_else(|| category.to_string());
                boxes.push((label, b));
            }
        }
    }
    Ok(match map {
        Some(map) => Regions::Mask(map),
        None => Regions::Boxes {
            width,
            height,
            boxes,
        },
    })
}

// ---------------------------------------------------------------------------------------
// JSONL

fn read_jsonl(
    path: &Path,
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let source = path.display().to_string();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let msg = anyhow!("{source}: cannot open: {e}");
            return visit(Item::new(stem(path), source, Err(msg)));
        }
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let roots = Roots {
        masks: folder,
        images: images_root.unwrap_or(folder),
    };
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let at = format!("{source}:{}", n + 1);
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let msg = anyhow!("{source}: line {}: cannot read: {e}", n + 1);
                return visit(Item::new(at.clone(), at, Err(msg)));
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let item = jsonl_item(&line, n + 1, &roots)
            .unwrap_or_else(|e| Item::new(at.clone(), at.clone(), Err(e)));
        let item = Item {
            source: at,
            regions: item
                .regions
                .map_err(|e| anyhow!("{source}: line {}: {e:#}", n + 1)),
            ..item
        };
        visit(item)?;
    }
    Ok(())
}

struct Roots<'a> {
    masks: &'a Path,
    images: &'a Path,
}

/// One JSONL line as an item; `Err` when even the id cannot be had (invalid JSON).
fn jsonl_item(line: &str, number: usize, roots: &Roots<'_>) -> Result<Item> {
    let value: Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        bail!("expected a JSON object");
    };
    let image = match obj.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(roots.images.join(s)),
        Some(Value::Array(list)) => list
            .first()
            .and_then(Value::as_str)
            .map(|s| roots.images.join(s)),
        Some(_) => None,
    };
    let mask = obj
        .get("mask")
        .and_then(Value::as_str)
        .map(|m| roots.masks.join(m));
    let id = match obj.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_))) => id_text(v).unwrap_or_default(),
        _ => image
            .as_deref()
            .or(mask.as_deref())
            .map(stem)
            .unwrap_or_else(|| format!("line {number}")),
    };
    let (regions, label_names) = match jsonl_regions(&obj, image.as_deref(), mask.as_deref()) {
        Ok((regions, names)) => (Ok(regions), names),
        Err(e) => (Err(e), None),
    };
    Ok(Item {
        id,
        image,
        source: String::new(),
        regions,
        label_names,
    })
}

type Named = (Regions, Option<BTreeMap<u32, String>>);

fn jsonl_regions(
    obj: &serde_json::Map<String, Value>,
    image: Option<&Path>,
    mask: Option<&Path>,
) -> Result<Named> {
    match obj.get("image") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(l)) if l.first().is_some_and(Value::is_string) => {}
        Some(v) => bail!("field `image`: expected a path, found {v}"),
    }
    if let Some(v) = obj.get("id")
        && !matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
    {
        bail!("field `id`: expected a string or number, found {v}");
    }
    let image_size = |image: &Path| -> Result<(usize, usize)> {
        let info = crate::core::image::probe_file(image)
            .map_err(|e| anyhow!("cannot read the image's size: {e:#}"))?;
        Ok((info.width as usize, info.height as usize))
    };
    let label =
        match obj.get("label") {
            None | Some(Value::Null) => None,
            Some(v) => Some(id_text(v).with_context(|| {
                format!("field `label`: expected a string or number, found {v}")
            })?),
        };
    let labels = obj.get("labels").filter(|v| !v.is_null());
    if let Some(m) = obj.get("mask").filter(|v| !v.is_null()) {
        let Some(mask) = mask else {
            bail!("field `mask`: expected a path, found {m}");
        };
        if kind_of(mask) == Kind::Nifti {
            bail!(
                "field `mask`: {} is a NIfTI volume; pass it to `mt roi` directly",
                mask.display()
            );
        }
        let map = read_mask_image(mask)?;
        if let Some(image) = image {
            let (w, h) = image_size(image)?;
            if (w, h) != (map.width, map.height) {
                bail!(
                    "mask {}x{} but image {w}x{h} ({} vs {})",
                    map.width,
                    map.height,
                    mask.display(),
                    image.display()
                );
            }
        }
        let mut names = BTreeMap::new();
        if let Some(l) = label {
            names.insert(1, l);
        }
        match labels {
            None => {}
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    let key = k.parse::<u32>().ok().filter(|&k| k > 0);
                    let name = id_text(v);
                    let (Some(key), Some(name)) = (key, name) else {
                        bail!(
                            "field `labels`: expected {{\"1\": \"name\", ...}}, found {k:?}: {v}"
                        );
                    };
                    names.insert(key, name);
                }
            }
            Some(Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    let name = id_text(v).with_context(|| {
                        format!("field `labels[{i}]`: expected a string or number, found {v}")
                    })?;
                    names.insert(i as u32 + 1, name);
                }
            }
            Some(v) => bail!("field `labels`: expected an object or a list, found {v}"),
        }
        return Ok((Regions::Mask(map), (!names.is_empty()).then_some(names)));
    }
    let Some(bbox) = obj.get("bbox").filter(|v| !v.is_null()) else {
        bail!("no `mask` or `bbox`");
    };
    let corners: Vec<[f64; 4]> = match numbers(bbox) {
        Some(b) if b.len() == 4 => vec![[b[0], b[1], b[2], b[3]]],
        _ => bbox
            .as_array()
            .filter(|l| !l.is_empty())
            .and_then(|l| {
                l.iter()
                    .map(|b| {
                        numbers(b)
                            .filter(|b| b.len() == 4)
                            .map(|b| [b[0], b[1], b[2], b[3]])
                    })
                    .collect()
            })
            .with_context(|| {
                format!("field `bbox`: expected [x0, y0, x1, y1] or a list of them, found {bbox}")
            })?,
    };
    let given = match (obj.get("width"), obj.get("height")) {
        (None, None) => None,
        (Some(w), Some(h)) => match (whole(w), whole(h)) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Some((w, h)),
            _ => bail!("fields `width`, `height`: expected whole numbers >= 1"),
        },
        _ => bail!("fields `width`, `height`: give both or neither"),
    };
    let (width, height) = match (image, given) {
        (Some(image), given) => {
            let (w, h) = image_size(image)?;
            if let Some((gw, gh)) = given
                && (gw, gh) != (w, h)
            {
                bail!(
                    "`width`/`height` say {gw}x{gh} but image {w}x{h} ({})",
                    image.display()
                );
            }
            (w, h)
        }
        (None, Some(size)) => size,
        (None, None) => {
            bail!("field `bbox`: needs `image` (or `width` and `height`) for the image size")
        }
    };
    let names: Vec<String> = match labels {
        None => vec![label.unwrap_or_else(|| "1".to_string()); corners.len()],
        Some(Value::Array(list)) if list.len() == corners.len() => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                id_text(v).with_context(|| {
                    format!("field `labels[{i}]`: expected a string or number, found {v}")
                })
            })
            .collect::<Result<_>>()?,
        Some(v) => bail!(
            "field `labels`: expected a list of {} name(s), one per box, found {v}",
            corners.len()
        ),
    };
    let mut boxes = Vec::with_capacity(corners.len());
    for (i, (c, name)) in corners.iter().zip(names).enumerate() {
        if c[2] < c[0] || c[3] < c[1] {
            bail!("field `bbox`: box {i} {c:?} has x1 < x0 or y1 < y0 (expected [x0, y0, x1, y1])");
        }
        let b = pixel_box(*c, width, height).with_context(|| {
            format!("field `bbox`: box {i} {c:?} is empty or outside the {width}x{height} image")
        })?;
        boxes.push((name, b));
    }
    Ok((
        Regions::Boxes {
            width,
            height,
            boxes,
        },
        None,
    ))
}

#[cfg(test)]
mod tests {
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
