//! Medical volumes (DICOM, NIfTI) to 2D PNG/JPEG pictures with a JSON sidecar of their
//! metadata. One input file is converted at a time; memory is bounded by one volume.
//!
//! The pipeline of a file: read it (`dicom` or `nifti`), turn each frame or slice
//! into real values (stored value -> rescale), map them to grey levels ([`window`]),
//! write each picture atomically and last the sidecar ([`output`]), whose presence with
//! the same settings marks the file complete for a rerun.

pub(crate) mod colour;
pub(crate) mod dicom;
pub(crate) mod dicom_lengths;
pub(crate) mod dicom_native;
pub mod jobs;
pub(crate) mod jpeg12;
pub(crate) mod nifti;
pub(crate) mod nifti2;
pub mod output;
pub mod window;

use anyhow::Result;
use serde::Serialize;

use self::jobs::{Job, Kind};
use self::output::{Format, Outputs};
use self::window::{Depth, Window};
use crate::core::error::contain_panic;

/// Which window turns values into grey levels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WindowChoice {
    /// DICOM: the file's first window (min-max without one); NIfTI: the percentiles.
    Default,
    /// The min-max window of each file's values.
    MinMax,
    /// This window for every file.
    Fixed(Window),
}

/// Settings of a conversion; recorded in every sidecar, so a rerun with other settings
/// converts again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Options {
    /// Picture file format.
    pub format: Format,
    /// JPEG quality, 1-100.
    pub quality: u8,
    /// Sample depth of the pictures.
    pub depth: Depth,
    /// Which window maps values to grey levels.
    pub window: WindowChoice,
    /// NIfTI percentile window `[lo, hi]` (0-100), used with [`WindowChoice::Default`].
    pub percentiles: [f64; 2],
    /// NIfTI array axis the slices are taken across (0, 1 or 2).
    pub axis: usize,
}

/// The window a file was converted with, as recorded in its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub(crate) enum WindowUsed {
    /// The file's own (first) window.
    File(Window),
    /// `--window C,W`.
    Option(Window),
    /// The min-max window of the file's values.
    MinMax(Window),
    /// Linear between the values at two percentiles of the volume.
    Percentile {
        percentiles: [f64; 2],
        lo: f64,
        hi: f64,
    },
    /// Colour pictures are written as they are.
    None,
}

/// A rescale (DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter): `v * slope + intercept`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

/// A transfer syntax, by UID and name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TransferSyntax {
    pub uid: String,
    pub name: String,
}

/// The JSON written beside a file's pictures (`<stem>.json`). Absent attributes are null;
/// no patient identifiers are copied.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sidecar {
    /// The input file.
    pub source: String,
    /// `dicom` or `nifti`.
    pub kind: Kind,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub study_description: Option<String>,
    pub series_description: Option<String>,
    /// NIfTI `descrip`.
    pub description: Option<String>,
    /// Height of each picture.
    pub rows: u32,
    /// Width of each picture.
    pub columns: u32,
    /// Number of pictures written (DICOM frames, NIfTI slices x volumes).
    pub frames: u32,
    /// Spacing between rows and between columns (DICOM PixelSpacing order), in `spacing_unit`.
    pub pixel_spacing: Option<[f64; 2]>,
    /// DICOM SliceThickness; NIfTI pixdim along the slice axis.
    pub slice_thickness: Option<f64>,
    pub spacing_unit: Option<String>,
    /// NIfTI array shape and pixdim (`dim[1..]`, `pixdim[1..]`).
    pub shape: Option<Vec<usize>>,
    pub pixdim: Option<Vec<f64>>,
    /// NIfTI axis the slices were taken across.
    pub axis: Option<usize>,
    pub photometric_interpretation: Option<String>,
    pub transfer_syntax: Option<TransferSyntax>,
    pub bits_stored: Option<u16>,
    /// The rescale applied (null: none in the file).
    pub rescale: Option<Rescale>,
    pub window: WindowUsed,
    /// MONOCHROME1: grey levels inverted after windowing.
    pub inverted: bool,
    /// The pictures, file names in the sidecar's folder, in order (filled by [`Outputs::finish`]).
    pub outputs: Vec<String>,
    pub settings: Options,
}

/// What converting one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Pictures written.
    Converted {
        /// How many pictures (frames or slices) were written.
        pictures: usize,
    },
    /// A complete earlier conversion with the same settings was found.
    Skipped,
}

/// Converts one input file, unless its outputs are already complete. A panic in a
/// decoder on malformed data is this file's error, not the end of the run.
pub fn convert(job: &Job, opts: &Options) -> Result<Done> {
    contain_panic("the decoder", || convert_file(job, opts))
}

fn convert_file(job: &Job, opts: &Options) -> Result<Done> {
    let mut outputs = Outputs::open(&job.out_dir, &job.stem, &job.source, opts);
    if outputs.is_complete() {
        return Ok(Done::Skipped);
    }
    let sidecar = match job.kind {
        Kind::Dicom => dicom::convert(&job.source, opts, &mut outputs)?,
        Kind::Nifti => nifti::convert(&job.source, opts, &mut outputs)?,
    };
    let pictures = outputs.finish(sidecar)?;
    Ok(Done::Converted { pictures })
}
