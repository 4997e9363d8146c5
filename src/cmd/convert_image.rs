//! `mt convert image`: DICOM and NIfTI -> PNG/JPEG with metadata beside.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::{Context, finish_failures, print};
use crate::core::error::usage;
use crate::core::medical::output::Format;
use crate::core::medical::window::{Depth, Window};
use crate::core::medical::{self, Done, Options, WindowChoice, jobs};
use crate::core::progress;

const HELP: &str = "\
Inputs are files or folders (walked recursively): .dcm/.dicom files or files with the
DICM marker, .nii/.nii.gz. A file found in a folder keeps its sub-folder under -o.

Outputs, per input <stem>:
  DICOM   <stem>.png, or <stem>_f0003.png per frame of a multi-frame file (0-based)
  NIfTI   <stem>_z0042.png per slice across --axis (_x/_y for axes 0/1; 0-based), with
          _t0001 before it per volume of a 4D file
  both    <stem>.json: modality, body part, study/series description, rows, columns,
          frames, pixel spacing, slice thickness (NIfTI: pixdim, shape, axis),
          photometric interpretation, transfer syntax, rescale and window used, source,
          the settings and the pictures. No patient identifiers are copied.

Grey levels. DICOM: stored value -> RescaleSlope/Intercept -> the file's first
WindowCenter/WindowWidth with its VOI LUT function (PS3.3 C.11.2.1.2), or --window, or
without either the min-max window of all frames; MONOCHROME1 inverted after windowing.
Colour: RGB as it is, YBR_FULL / YBR_FULL_422 converted to RGB, PALETTE COLOR through its
tables; samples deeper than the picture scaled to --bits. NIfTI: voxels x scl_slope +
scl_inter (when set), then linear between the --percentile values of the whole file
(numpy's default linear percentile; NaN ignored), or --window. Slices are in array order, not reoriented: the
lower remaining axis runs along the columns, the higher one down the rows.

Resumable: a file whose <stem>.json exists with the same settings and whose pictures
are all there is skipped; pictures and sidecars are written atomically. Unreadable or
unsupported files (e.g. a broken JPEG stream, or a transfer syntax without a decoder
here, like JPEG XL) are listed and skipped: the others are converted, and the exit code
is 3.

DICOM transfer syntaxes: implicit/explicit VR little endian, explicit big endian,
deflated, RLE (8 to 32 bits), JPEG baseline, extended (8 and 12 bits) and lossless,
JPEG-LS (lossless, near-lossless), JPEG 2000 (lossless, lossy). NIfTI-1 and NIfTI-2
single files (.nii, .nii.gz; a CIFTI-2 matrix as one picture).

Examples:
  mt convert image scans/ -o pngs/
  mt convert image CT_small.dcm --window 40,400 -o out/
  mt convert image brain.nii.gz --axis 0 --percentile 1,99 -o slices/
  mt convert image scans/ --bits 16 --window auto -o png16/    full range, 16-bit PNG
  mt convert image scans/ --format jpeg --quality 90 -o jpg/";

/// `--window`: `C,W` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowArg {
    /// The min-max window of each file.
    Auto,
    /// A LINEAR window.
    Fixed { center: f64, width: f64 },
}

fn parse_window(s: &str) -> std::result::Result<WindowArg, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(WindowArg::Auto);
    }
    let [center, width] = parse_pair(s)
        .ok_or_else(|| format!("`{s}` is not a window: give CENTER,WIDTH (like 40,400) or auto"))?;
    if width < 1.0 {
        return Err(format!("window width {width} is below 1"));
    }
    Ok(WindowArg::Fixed { center, width })
}

fn parse_percentiles(s: &str) -> std::result::Result<[f64; 2], String> {
    match parse_pair(s) {
        Some([lo, hi]) if (0.0..hi).contains(&lo) && hi <= 100.0 => Ok([lo, hi]),
        _ => Err(format!(
            "`{s}` is not LO,HI percentiles with 0 <= LO < HI <= 100 (like 0.5,99.5)"
        )),
    }
}

/// Two finite numbers separated by a comma.
fn parse_pair(s: &str) -> Option<[f64; 2]> {
    let (a, b) = s.split_once(',')?;
    let a: f64 = a.trim().parse().ok()?;
    let b: f64 = b.trim().parse().ok()?;
    (a.is_finite() && b.is_finite()).then_some([a, b])
}

/// Picture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatArg {
    Png,
    Jpeg,
}

/// Bits per grey sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum BitsArg {
    #[value(name = "8")]
    #[serde(rename = "8")]
    Eight,
    #[value(name = "16")]
    #[serde(rename = "16")]
    Sixteen,
}

/// `mt convert image`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = HELP)]
pub struct ImageArgs {
    /// DICOM / NIfTI files or folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Picture format.
    #[arg(long, value_enum, default_value = "png")]
    pub format: FormatArg,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// Bits per grey sample: 8, or 16 (PNG only) to keep the full windowed range.
    #[arg(long, value_enum, default_value = "8")]
    pub bits: BitsArg,
    /// Window CENTER,WIDTH (LINEAR) for every file, or `auto` for each file's min-max
    /// window [default: DICOM the file's window, NIfTI the percentiles].
    #[arg(long, value_name = "C,W|auto", value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<WindowArg>,
    /// NIfTI: window between these percentiles of the volume.
    #[arg(long, value_name = "LO,HI", default_value = "0.5,99.5", value_parser = parse_percentiles)]
    pub percentile: [f64; 2],
    /// NIfTI: array axis to slice across (2 = the third axis, axial in RAS-like files).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub axis: u8,
}

impl ImageArgs {
    fn options(&self) -> Result<Options> {
        let depth = match self.bits {
            BitsArg::Eight => Depth::Eight,
            BitsArg::Sixteen => Depth::Sixteen,
        };
        let format = match self.format {
            FormatArg::Png => Format::Png,
            FormatArg::Jpeg => Format::Jpeg,
        };
        if format == Format::Jpeg && depth == Depth::Sixteen {
            return Err(usage(
                "--bits 16 needs --format png: JPEG holds 8-bit samples",
            ));
        }
        Ok(Options {
            format,
            quality: self.quality,
            depth,
            window: match self.window {
                None => WindowChoice::Default,
                Some(WindowArg::Auto) => WindowChoice::MinMax,
                Some(WindowArg::Fixed { center, width }) => {
                    WindowChoice::Fixed(Window::linear(center, width))
                }
            },
            percentiles: self.percentile,
            axis: usize::from(self.axis),
        })
    }
}

/// Runs `mt convert image`.
pub(crate) fn run(args: &ImageArgs, ctx: &mut Context) -> Result<()> {
    let opts = args.options()?;
    let plan = jobs::plan(&args.inputs, &args.output)?;
    if plan.jobs.is_empty() && plan.rejected.is_empty() {
        return Err(usage(format!(
            "no DICOM or NIfTI files in {} ({} other files)",
            args.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            plan.ignored
        )));
    }
    let bar = progress::bar(Some(plan.jobs.len() as u64), "files", "converting");
    let (mut converted, mut skipped, mut pictures) = (0, 0, 0);
    let rejected = plan.rejected.len();
    let mut failures = plan.rejected;
    for job in &plan.jobs {
        match medical::convert(job, &opts) {
            Ok(Done::Converted { pictures: n }) => {
                converted += 1;
                pictures += n;
            }
            Ok(Done::Skipped) => skipped += 1,
            Err(e) => failures.push((
                job.source.display().to_string(),
                format!("{}: {e:#}", job.source.display()),
            )),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let failed = failures.len();
    let total = plan.jobs.len() + rejected;
    tracing::info!(
        converted,
        skipped_existing = skipped,
        pictures,
        failed,
        "{converted} files converted ({pictures} pictures), {skipped} already done, {failed} failed, into {}",
        args.output.display()
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("files", total);
        run.set_count("converted", converted);
        run.set_count("skipped_existing", skipped);
        run.set_count("pictures_written", pictures);
        run.set_count("ignored_files", plan.ignored);
        run.set_count("failed", failed);
    }
    if ctx.json {
        let summary = serde_json::json!({
            "output": args.output,
            "files": total,
            "converted": converted,
            "skipped_existing": skipped,
            "pictures_written": pictures,
            "failed": failed,
        });
        print(&format!("{summary}\n"))?;
    }
    finish_failures(ctx, failures, failed, total)
}
