//! DICOM files -> one picture per frame.
//!
//! Grey images follow PS3.3 C.11: stored value (masked to BitsStored, sign-extended when
//! PixelRepresentation is 1) -> modality LUT (RescaleSlope/Intercept) -> VOI window (the
//! file's first WindowCenter/Width and VOILUTFunction, or `--window`, or the min-max
//! window of the modality values over all frames) -> MONOCHROME1 inverted. Per-frame
//! rescale and windows of enhanced multi-frame files are applied per frame. VOI and
//! modality LUT tables (sequences) are not applied. Colour files (RGB, YBR, PALETTE
//! COLOR) become RGB ([`super::colour`]).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    PlanarConfiguration, VoiLutFunction, WindowLevel,
};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::colour::Colour;
use super::output::{Outputs, Picture, Pixels};
use super::window::{self, Depth, Mapping, VoiFunction, Window};
use super::{Options, Rescale, Sidecar, TransferSyntax, WindowChoice, WindowUsed, jobs::Kind};

/// Converts one DICOM file; returns its sidecar (outputs filled in by the caller).
pub(crate) fn convert(path: &Path, opts: &Options, out: &mut Outputs) -> Result<Sidecar> {
    let obj = open(path)?;
    let syntax = transfer_syntax(&obj)?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        bail!("no pixel data (7FE0,0010): not an image");
    }
    let native = super::dicom_native::rewrite(&obj, &syntax.uid)
        .map_err(|e| anyhow!("cannot decode pixel data ({}): {e:#}", syntax.label()))?;
    let pixels = native
        .as_ref()
        .unwrap_or(&obj)
        .decode_pixel_data()
        .map_err(|e| {
            let chain = error_chain(&e);
            if chain.to_ascii_lowercase().contains("unsupported") {
                anyhow!(
                    "unsupported transfer syntax/encoding {}: {chain}",
                    syntax.label()
                )
            } else {
                anyhow!("cannot decode pixel data ({}): {chain}", syntax.label())
            }
        })?;
    let frames = Frames::new(&pixels)?;
    // dicom-pixeldata labels every decoded 3-sample frame RGB, but only the JPEG and JPEG
    // 2000 decoders convert colour: RLE and JPEG-LS keep the file's own model.
    let photometric = match super::dicom_native::photometric(&obj) {
        Some(pi) if KEEPS_COLOUR_MODEL.contains(&syntax.uid.as_str()) => pi,
        _ => pixels.photometric_interpretation().to_string(),
    };
    let colour = Colour::of(&obj, &photometric, frames.layout.samples)?;
    let (used, inverted) = match (colour, frames.layout.samples, photometric.as_str()) {
        (Some(colour), ..) => (frames.write_colour(&colour, opts.depth, out)?, false),
        (None, 1, "MONOCHROME1") => (frames.write_grey(opts, true, out)?, true),
        (None, 1, "MONOCHROME2") => (frames.write_grey(opts, false, out)?, false),
        (None, n, pi) => bail!(
            "photometric interpretation {pi} with {n} samples per pixel is not supported \
             (MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR)"
        ),
    };
    let layout = &frames.layout;

    let text = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let floats = |tag| obj.get(tag).and_then(|e| e.to_multi_float64().ok());
    let spacing = floats(tags::PIXEL_SPACING)
        .or_else(|| floats(tags::IMAGER_PIXEL_SPACING))
        .filter(|v| v.len() == 2)
        .map(|v| [v[0], v[1]]);
    Ok(Sidecar {
        source: path.display().to_string(),
        kind: Kind::Dicom,
        modality: text(tags::MODALITY),
        body_part: text(tags::BODY_PART_EXAMINED),
        study_description: text(tags::STUDY_DESCRIPTION),
        series_description: text(tags::SERIES_DESCRIPTION),
        description: None,
        rows: layout.rows,
        columns: layout.columns,
        frames: layout.frames,
        pixel_spacing: spacing,
        slice_thickness: floats(tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        spacing_unit: spacing.map(|_| "mm".to_string()),
        shape: None,
        pixdim: None,
        axis: None,
        photometric_interpretation: Some(photometric),
        transfer_syntax: Some(syntax.into()),
        bits_stored: Some(layout.bits_stored),
        rescale: Some(frames.rescale(0)),
        window: used,
        inverted,
        outputs: Vec::new(),
        settings: opts.clone(),
    })
}

/// Reads a DICOM file after [`super::dicom_lengths::check`]; a data set written in
/// implicit VR under an explicit VR transfer syntax is read as implicit VR (with a warning).
fn open(path: &Path) -> Result<DefaultDicomObject> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read: {e}"))?;
    let unreadable =
        |e: &dyn std::error::Error| anyhow!("not a readable DICOM file: {}", error_chain(e));
    let mislabelled = super::dicom_lengths::check(&bytes)
        .map_err(|e| anyhow!("not a readable DICOM file: {e:#}"))?;
    let Some(data_set) = mislabelled else {
        drop(bytes);
        return OpenFileOptions::new()
            .open_file(path)
            .map_err(|e| unreadable(&e));
    };
    tracing::warn!(
        "{}: explicit VR transfer syntax but an implicit VR data set; reading it as implicit VR",
        path.display()
    );
    let meta = FileMetaTable::from_reader(&bytes[128..]).map_err(|e| unreadable(&e))?;
    let implicit = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let elements = InMemDicomObject::read_dataset_with_ts(&bytes[data_set..], &implicit)
        .map_err(|e| unreadable(&e))?;
    let mut obj = DefaultDicomObject::new_empty_with_meta(meta);
    for element in elements {
        obj.put(element);
    }
    Ok(obj)
}

/// RLE lossless, JPEG-LS lossless and near-lossless: decoders that leave the samples in
/// the file's colour model.
const KEEPS_COLOUR_MODEL: [&str; 3] = [
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
];

/// No rescale.
const IDENTITY: Rescale = Rescale {
    slope: 1.0,
    intercept: 0.0,
};

/// The decoded frames of a file, with what turns their samples into modality values.
struct Frames<'a> {
    pixels: &'a DecodedPixelData<'a>,
    layout: Layout,
    rescales: Vec<Rescale>,
}

impl<'a> Frames<'a> {
    fn new(pixels: &'a DecodedPixelData<'a>) -> Result<Self> {
        let rescales = pixels
            .rescale()
            .map_err(|e| anyhow!("bad RescaleSlope/RescaleIntercept: {e}"))?
            .iter()
            .map(|r| Rescale {
                slope: r.slope,
                intercept: r.intercept,
            })
            .collect();
        Ok(Self {
            pixels,
            layout: Layout::of(pixels)?,
            rescales,
        })
    }

    fn bytes(&self, frame: u32) -> Result<&'a [u8]> {
        let len = self.layout.frame_bytes();
        let start = frame as usize * len;
        self.pixels.data().get(start..start + len).ok_or_else(|| {
            anyhow!(
                "pixel data too short: {} bytes, frame {frame} needs {}",
                self.pixels.data().len(),
                start + len
            )
        })
    }

    fn rescale(&self, frame: u32) -> Rescale {
        pick(&self.rescales, frame).copied().unwrap_or(IDENTITY)
    }

    /// Modality values (stored values through the rescale) of one grey frame.
    fn values(&self, frame: u32) -> Result<Vec<f64>> {
        let r = self.rescale(frame);
        let stored = self
            .layout
            .stored(self.bytes(frame)?, self.layout.pixel_count())?;
        Ok(stored
            .into_iter()
            .map(|v| v as f64 * r.slope + r.intercept)
            .collect())
    }

    /// The min-max window of the modality values of all frames.
    fn min_max_window(&self) -> Result<Window> {
        let mut range: Option<(f64, f64)> = None;
        for frame in 0..self.layout.frames {
            range = match (range, window::finite_min_max(self.values(frame)?)) {
                (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
                (r, None) | (None, r) => r,
            };
        }
        let (lo, hi) = range.context("no finite pixel values")?;
        Ok(Window::min_max(lo, hi))
    }

    /// Windows every grey frame (inverted for MONOCHROME1) and writes it.
    fn write_grey(&self, opts: &Options, invert: bool, out: &mut Outputs) -> Result<WindowUsed> {
        let file_windows = file_windows(self.pixels)?;
        let (windows, used) = match opts.window {
            WindowChoice::Fixed(w) => (vec![w], WindowUsed::Option(w)),
            WindowChoice::Default if !file_windows.is_empty() => {
                let first = file_windows[0];
                (file_windows, WindowUsed::File(first))
            }
            WindowChoice::Default | WindowChoice::MinMax => {
                let w = self.min_max_window()?;
                (vec![w], WindowUsed::MinMax(w))
            }
        };
        for frame in 0..self.layout.frames {
            let window = pick(&windows, frame).copied().unwrap_or(windows[0]);
            let mapping = Mapping::Window(window);
            let grey = window::quantize(&self.values(frame)?, &mapping, invert, opts.depth);
            self.write(frame, Pixels::Grey(grey), out)?;
        }
        Ok(used)
    }

    /// Writes every colour frame as RGB at `depth`.
    fn write_colour(&self, colour: &Colour, depth: Depth, out: &mut Outputs) -> Result<WindowUsed> {
        for frame in 0..self.layout.frames {
            let samples = self.layout.colour_samples(self.bytes(frame)?, colour)?;
            let rgb = colour.to_rgb(&samples, self.layout.bits_stored, depth)?;
            self.write(frame, Pixels::Rgb(rgb), out)?;
        }
        Ok(WindowUsed::None)
    }

    fn write(&self, frame: u32, pixels: Pixels, out: &mut Outputs) -> Result<()> {
        let suffix = frame_suffix(frame, self.layout.frames);
        out.write(&suffix, self.layout.picture(pixels))
    }
}

/// The value for `frame` of a per-frame list (one value = all frames).
fn pick<T>(list: &[T], frame: u32) -> Option<&T> {
    match list.len() {
        1 => list.first(),
        _ => list.get(frame as usize),
    }
}

/// `""` for a single frame, `_f0003` for frame 3 (0-based) of several.
fn frame_suffix(frame: u32, frames: u32) -> String {
    if frames > 1 {
        format!("_f{frame:04}")
    } else {
        String::new()
    }
}

/// The file's valid windows (the first value of each attribute; per frame in enhanced
/// files), with their VOI LUT functions.
fn file_windows(pixels: &DecodedPixelData<'_>) -> Result<Vec<Window>> {
    let levels: Vec<WindowLevel> = match pixels.window() {
        Ok(Some(w)) => w.to_vec(),
        Ok(None) => return Ok(Vec::new()),
        Err(e) => bail!("bad WindowCenter/WindowWidth: {e}"),
    };
    let functions = pixels.voi_lut_function().ok().flatten().unwrap_or(&[]);
    let windows: Vec<Window> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| Window {
            center: l.center,
            width: l.width,
            function: match pick(functions, i as u32) {
                Some(VoiLutFunction::LinearExact) => VoiFunction::LinearExact,
                Some(VoiLutFunction::Sigmoid) => VoiFunction::Sigmoid,
                _ => VoiFunction::Linear,
            },
        })
        .collect();
    // An invalid window (width < 1 for LINEAR) is ignored: min-max is used instead.
    Ok(if windows.iter().all(Window::is_valid) {
        windows
    } else {
        tracing::warn!("ignoring invalid window {:?}", levels);
        Vec::new()
    })
}

/// A transfer syntax this build can decode, or the error naming it.
struct Syntax {
    uid: String,
    name: String,
}

impl Syntax {
    fn label(&self) -> String {
        format!("{} [{}]", self.name, self.uid)
    }
}

impl From<Syntax> for TransferSyntax {
    fn from(s: Syntax) -> Self {
        Self {
            uid: s.uid,
            name: s.name,
        }
    }
}

fn transfer_syntax(obj: &DefaultDicomObject) -> Result<Syntax> {
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let Some(ts) = TransferSyntaxRegistry.get(&uid) else {
        bail!(
            "unsupported transfer syntax/encoding [{uid}]: not a transfer syntax this build knows"
        );
    };
    let syntax = Syntax {
        uid,
        name: ts.name().to_string(),
    };
    if ts.is_unsupported_pixel_encapsulation() || !ts.can_decode_all() {
        bail!(
            "unsupported transfer syntax/encoding {}: no pixel data decoder for it in this build",
            syntax.label()
        );
    }
    Ok(syntax)
}

/// `e` and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// Sample layout of the decoded pixel data.
struct Layout {
    rows: u32,
    columns: u32,
    frames: u32,
    samples: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    /// Samples stored a frame (YBR_FULL_422 stores two a pixel).
    frame_samples: usize,
}

impl Layout {
    fn of(p: &DecodedPixelData<'_>) -> Result<Self> {
        let layout = Self {
            rows: p.rows(),
            columns: p.columns(),
            frames: p.number_of_frames(),
            samples: p.samples_per_pixel(),
            bits_allocated: p.bits_allocated(),
            bits_stored: p.bits_stored(),
            signed: p.pixel_representation() == PixelRepresentation::Signed,
            planar: p.planar_configuration() == PlanarConfiguration::PixelFirst,
            frame_samples: p.rows() as usize
                * p.columns() as usize
                * match p.photometric_interpretation() {
                    PhotometricInterpretation::YbrFull422 => 2,
                    _ => usize::from(p.samples_per_pixel()),
                },
        };
        if layout.rows == 0 || layout.columns == 0 || layout.frames == 0 {
            bail!(
                "empty image ({} rows, {} columns, {} frames)",
                layout.rows,
                layout.columns,
                layout.frames
            );
        }
        if layout.bits_stored == 0 || layout.bits_stored > layout.bits_allocated.max(1) {
            bail!(
                "BitsStored {} does not fit BitsAllocated {}",
                layout.bits_stored,
                layout.bits_allocated
            );
        }
        Ok(layout)
    }

    /// Bytes a decoded frame takes (1-bit samples arrive unpacked, a byte each).
    fn frame_bytes(&self) -> usize {
        self.frame_samples * usize::from(self.bits_allocated.div_ceil(8))
    }

    fn pixel_count(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    fn picture(&self, pixels: Pixels) -> Picture {
        Picture {
            width: self.columns,
            height: self.rows,
            pixels,
        }
    }

    /// The first `count` stored samples of a frame's decoded bytes (native byte order;
    /// 1-bit samples arrive unpacked, one byte each), masked to BitsStored and
    /// sign-extended when signed.
    fn stored(&self, bytes: &[u8], count: usize) -> Result<Vec<i64>> {
        let bits = u32::from(self.bits_stored);
        let value = |raw: u32| {
            let v = if bits >= 32 {
                raw
            } else {
                raw & ((1 << bits) - 1)
            };
            if self.signed && (v >> (bits - 1)) & 1 == 1 {
                i64::from(v) - (1i64 << bits)
            } else {
                i64::from(v)
            }
        };
        let width = match self.bits_allocated {
            1 | 8 => 1,
            16 => 2,
            32 => 4,
            other => bail!("BitsAllocated {other} is not supported (1, 8, 16 or 32)"),
        };
        if bytes.len() < count * width {
            bail!(
                "pixel data too short: {} bytes for {count} samples of {} bits",
                bytes.len(),
                self.bits_allocated
            );
        }
        let bytes = &bytes[..count * width];
        Ok(match self.bits_allocated {
            1 => bytes.iter().map(|&b| i64::from(b != 0)).collect(),
            8 => bytes.iter().map(|&b| value(u32::from(b))).collect(),
            16 => bytes
                .chunks_exact(2)
                .map(|c| value(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| value(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        })
    }

    /// The stored samples of one colour frame, interleaved (planar configuration 0 or 1).
    fn colour_samples(&self, bytes: &[u8], colour: &Colour) -> Result<Vec<i64>> {
        let n = self.pixel_count();
        let stored = self.stored(bytes, colour.stored_samples(n))?;
        // YBR_FULL_422 is never planar (PS3.3 C.7.6.3.1.3): its samples stay as stored.
        Ok(
            if self.planar && matches!(colour, Colour::Rgb | Colour::YbrFull) {
                (0..n)
                    .flat_map(|i| [stored[i], stored[n + i], stored[2 * n + i]])
                    .collect()
            } else {
                stored
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bits_allocated: u16, bits_stored: u16, signed: bool) -> Layout {
        Layout {
            rows: 1,
            columns: 2,
            frames: 1,
            samples: 1,
            bits_allocated,
            bits_stored,
            signed,
            planar: false,
            frame_samples: 2,
        }
    }

    #[test]
    fn stored_values_mask_and_sign_extend() {
        let twelve = layout(16, 12, true);
        let bytes: Vec<u8> = [0x0FFFu16, 0xF7FF]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        // 0x0FFF is -1 in 12-bit two's complement; 0xF7FF masks to 0x7FF = 2047.
        assert_eq!(twelve.stored(&bytes, 2).unwrap(), vec![-1, 2047]);
        let unsigned = layout(16, 12, false);
        assert_eq!(unsigned.stored(&bytes, 2).unwrap(), vec![4095, 2047]);
        let one_bit = layout(1, 1, false);
        assert_eq!(one_bit.stored(&[0, 255], 2).unwrap(), vec![0, 1]);
        let int32 = layout(32, 32, true);
        let bytes: Vec<u8> = [-5i32, 7].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(int32.stored(&bytes, 2).unwrap(), vec![-5, 7]);
        let uint32 = layout(32, 32, false);
        assert_eq!(uint32.stored(&bytes, 2).unwrap(), vec![(1 << 32) - 5, 7]);
        assert!(layout(16, 16, false).stored(&[1, 2], 2).is_err());
    }

    #[test]
    fn planar_rgb_is_interleaved() {
        let mut l = layout(8, 8, false);
        (l.planar, l.samples) = (true, 3);
        let samples = l.colour_samples(&[1, 2, 3, 4, 5, 6], &Colour::Rgb).unwrap();
        assert_eq!(samples, vec![1, 3, 5, 2, 4, 6]);
    }

    #[test]
    fn frame_names_and_per_frame_values() {
        assert_eq!(frame_suffix(0, 1), "");
        assert_eq!(frame_suffix(3, 12), "_f0003");
        assert_eq!(pick(&[7], 5), Some(&7));
        assert_eq!(pick(&[7, 8], 1), Some(&8));
        assert_eq!(pick::<u8>(&[], 0), None);
    }
}
