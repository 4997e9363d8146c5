//! NIfTI-1 and NIfTI-2 volumes (.nii, .nii.gz) -> one picture per slice.
//!
//! Values are the stored voxels times `scl_slope` plus `scl_inter` when the slope is set
//! (finite and non-zero, as nibabel; slope 1 and intercept 0 is recorded as no rescale). Slices are taken across one array axis and written
//! in array order, without reorientation: of the two remaining axes, the lower one runs
//! along the columns and the higher one down the rows, index 0 first (for axis 2, pixel
//! (row j, column i) is voxel (i, j, k)). Dimensions beyond the third are volumes `t`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use nifti::{InMemNiftiVolume, NiftiHeader, NiftiObject, NiftiType, NiftiVolume, ReaderOptions};

use super::output::{Outputs, Picture, Pixels};
use super::window::{self, Mapping, Window};
use super::{Options, Rescale, Sidecar, WindowChoice, WindowUsed, jobs::Kind};
use crate::core::budget;

/// Array axis names used in picture suffixes (`_z0042` is slice 42 across axis 2).
const AXIS_NAMES: [char; 3] = ['x', 'y', 'z'];

/// A NIfTI volume as read from either header version.
#[derive(Debug)]
pub(crate) struct Volume {
    /// `dim[1..=dim[0]]` (a CIFTI-2 matrix: its own dimensions).
    pub shape: Vec<usize>,
    /// The stored voxels as f64 in file (Fortran) order, not rescaled.
    pub values: Vec<f64>,
    /// The stored scalar type.
    pub datatype: NiftiType,
    /// `scl_slope`, `scl_inter`.
    pub slope: f64,
    pub inter: f64,
    /// `pixdim` of each dimension of `shape`.
    pub pixdim: Vec<f64>,
    pub descrip: String,
    pub xyzt_units: u8,
}

impl Volume {
    /// `scl_slope`/`scl_inter` when they change the values (a finite non-zero slope, as
    /// nibabel; a non-finite intercept counts as 0).
    pub(crate) fn rescale(&self) -> Option<Rescale> {
        let r = Rescale {
            slope: self.slope,
            intercept: if self.inter.is_finite() {
                self.inter
            } else {
                0.0
            },
        };
        (r.slope.is_finite() && r.slope != 0.0 && (r.slope, r.intercept) != (1.0, 0.0)).then_some(r)
    }
}

/// Reads a NIfTI-1 or NIfTI-2 file once its header's `dim` is known to fit
/// [`budget::VOLUME_BYTES`] at `computed` bytes a voxel beyond the copies reading makes
/// (the stored bytes, then f64 values): a header of a few bytes can claim terabytes,
/// and a gzip of zeros can deliver them.
pub(crate) fn read_volume(path: &Path, computed: u64) -> Result<Volume> {
    if super::nifti2::is_nifti2(path)? {
        return super::nifti2::read(path, computed);
    }
    let unreadable = |e: nifti::NiftiError| match e {
        nifti::NiftiError::Io(io) => anyhow::anyhow!("not a readable NIfTI-1 file: {io}"),
        e => anyhow::anyhow!("not a readable NIfTI-1 file: {e}"),
    };
    let header = NiftiHeader::from_file(path).map_err(unreadable)?;
    let dims: Vec<u64> = header
        .dim()
        .map_err(unreadable)?
        .iter()
        .map(|&d| u64::from(d))
        .collect();
    let stored = header.data_type().map_or(8, |t| t.size_of() as u64);
    budget::bytes(
        &format!("the voxels of dim {dims:?}"),
        &dims,
        2 * stored + 8 + computed,
        budget::VOLUME_BYTES,
    )?;
    let volume = ReaderOptions::new()
        .read_file(path)
        .map_err(unreadable)?
        .into_volume();
    let shape: Vec<usize> = volume.dim().iter().map(|&d| usize::from(d)).collect();
    let datatype = volume.data_type();
    let ndim = shape.len();
    Ok(Volume {
        values: voxel_values(volume)?,
        shape,
        datatype,
        slope: f64::from(header.scl_slope),
        inter: f64::from(header.scl_inter),
        pixdim: header.pixdim[1..=ndim.min(7)]
            .iter()
            .map(|&p| f64::from(p))
            .collect(),
        descrip: String::from_utf8_lossy(&header.descrip)
            .trim_end_matches('\0')
            .trim()
            .to_string(),
        xyzt_units: header.xyzt_units,
    })
}

/// Converts one NIfTI file; returns its sidecar (outputs filled in by the caller).
pub(crate) fn convert(path: &Path, opts: &Options, out: &mut Outputs) -> Result<Sidecar> {
    let volume = read_volume(path, 0)?;
    let shape = volume.shape.clone();
    if shape.len() < 2 || shape.contains(&0) {
        bail!("NIfTI dim {shape:?} is not an image (needs at least 2 non-empty dimensions)");
    }
    let rescale = volume.rescale();
    let mut values = volume.values;
    if let Some(r) = rescale {
        values
            .iter_mut()
            .for_each(|v| *v = *v * r.slope + r.intercept);
    }
    let (mapping, used) = choose_mapping(&values, opts)?;

    let grid = Grid::new(&shape, opts.axis)?;
    // Found by fuzzing: a header whose dim promises more voxels than the data holds.
    let needed = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if needed.is_none_or(|n| n > values.len()) {
        bail!(
            "the header's dim {shape:?} needs more voxels than the {} the file holds",
            values.len()
        );
    }
    for t in 0..grid.volumes {
        for s in 0..grid.slices {
            let slice = grid.slice(&values, t, s);
            let grey = window::quantize(&slice, &mapping, false, opts.depth);
            let mut suffix = String::new();
            if grid.volumes > 1 {
                suffix.push_str(&format!("_t{t:04}"));
            }
            suffix.push_str(&format!("_{}{s:04}", AXIS_NAMES[opts.axis]));
            let picture = Picture {
                width: grid.columns as u32,
                height: grid.rows as u32,
                pixels: Pixels::Grey(grey),
            };
            out.write(&suffix, picture)?;
        }
    }

    let pixdim = volume.pixdim;
    let spacing = |axis: usize| pixdim.get(axis).copied();
    let descrip = volume.descrip;
    Ok(Sidecar {
        source: path.display().to_string(),
        kind: Kind::Nifti,
        modality: None,
        body_part: None,
        study_description: None,
        series_description: None,
        description: (!descrip.is_empty()).then_some(descrip),
        rows: grid.rows as u32,
        columns: grid.columns as u32,
        frames: (grid.volumes * grid.slices) as u32,
        pixel_spacing: spacing(grid.row_axis)
            .zip(spacing(grid.column_axis))
            .map(|(r, c)| [r, c]),
        slice_thickness: spacing(opts.axis),
        spacing_unit: space_unit(volume.xyzt_units).map(String::from),
        shape: Some(shape),
        pixdim: Some(pixdim),
        axis: Some(opts.axis),
        photometric_interpretation: None,
        transfer_syntax: None,
        bits_stored: None,
        rescale,
        window: used,
        inverted: false,
        outputs: Vec::new(),
        settings: opts.clone(),
    })
}

/// The voxels as f64 in file (Fortran) order.
fn voxel_values(volume: InMemNiftiVolume) -> Result<Vec<f64>> {
    fn cast<T: Into<f64>>(v: Vec<T>) -> Vec<f64> {
        v.into_iter().map(Into::into).collect()
    }
    let datatype = volume.data_type();
    let data = |e: nifti::NiftiError| anyhow::anyhow!("cannot read the {datatype:?} voxels: {e}");
    Ok(match datatype {
        NiftiType::Uint8 => cast(volume.into_nifti_typed_data::<u8>().map_err(data)?),
        NiftiType::Int8 => cast(volume.into_nifti_typed_data::<i8>().map_err(data)?),
        NiftiType::Uint16 => cast(volume.into_nifti_typed_data::<u16>().map_err(data)?),
        NiftiType::Int16 => cast(volume.into_nifti_typed_data::<i16>().map_err(data)?),
        NiftiType::Uint32 => cast(volume.into_nifti_typed_data::<u32>().map_err(data)?),
        NiftiType::Int32 => cast(volume.into_nifti_typed_data::<i32>().map_err(data)?),
        NiftiType::Float32 => cast(volume.into_nifti_typed_data::<f32>().map_err(data)?),
        NiftiType::Float64 => volume.into_nifti_typed_data::<f64>().map_err(data)?,
        NiftiType::Int64 => (volume.into_nifti_typed_data::<i64>().map_err(data)?)
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        NiftiType::Uint64 => (volume.into_nifti_typed_data::<u64>().map_err(data)?)
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        other => bail!("unsupported NIfTI datatype {other:?} (scalar types only)"),
    })
}

/// The mapping to grey levels the options ask for, and how to record it.
fn choose_mapping(values: &[f64], opts: &Options) -> Result<(Mapping, WindowUsed)> {
    Ok(match opts.window {
        WindowChoice::Fixed(w) => (Mapping::Window(w), WindowUsed::Option(w)),
        WindowChoice::MinMax => {
            let (lo, hi) = window::finite_min_max(values.iter().copied())
                .context("the volume has no finite values")?;
            let w = Window::min_max(lo, hi);
            (Mapping::Window(w), WindowUsed::MinMax(w))
        }
        WindowChoice::Default => {
            let mut copy = values.to_vec();
            let p = window::percentiles(&mut copy, &opts.percentiles)
                .context("the volume has no finite values")?;
            let (lo, hi) = (p[0], p[1]);
            (
                Mapping::Range { lo, hi },
                WindowUsed::Percentile {
                    percentiles: opts.percentiles,
                    lo,
                    hi,
                },
            )
        }
    })
}

/// How slices across one axis sit in the Fortran-ordered voxel array.
struct Grid {
    strides: [usize; 3],
    axis: usize,
    column_axis: usize,
    row_axis: usize,
    columns: usize,
    rows: usize,
    slices: usize,
    volumes: usize,
    volume_len: usize,
}

impl Grid {
    fn new(shape: &[usize], axis: usize) -> Result<Self> {
        if axis > 2 {
            bail!("axis {axis} does not exist (0, 1 or 2)");
        }
        let dims = [shape[0], shape[1], shape.get(2).copied().unwrap_or(1)];
        let volume_len = dims.iter().product::<usize>();
        let (column_axis, row_axis) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        Ok(Self {
            strides: [1, dims[0], dims[0] * dims[1]],
            axis,
            column_axis,
            row_axis,
            columns: dims[column_axis],
            rows: dims[row_axis],
            slices: dims[axis],
            volumes: shape[3.min(shape.len())..].iter().product(),
            volume_len,
        })
    }

    /// Slice `s` of volume `t`, row-major.
    fn slice(&self, values: &[f64], t: usize, s: usize) -> Vec<f64> {
        let base = t * self.volume_len + s * self.strides[self.axis];
        let (cs, rs) = (self.strides[self.column_axis], self.strides[self.row_axis]);
        (0..self.rows)
            .flat_map(|r| (0..self.columns).map(move |c| values[base + r * rs + c * cs]))
            .collect()
    }
}

/// NIfTI spatial unit names (`xyzt_units & 7`).
fn space_unit(xyzt_units: u8) -> Option<&'static str> {
    match xyzt_units & 0x07 {
        1 => Some("m"),
        2 => Some("mm"),
        3 => Some("um"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_array_order() {
        // shape (2, 3, 4): value = i + 10 j + 100 k, Fortran order.
        let shape = [2, 3, 4];
        let mut values = Vec::new();
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    values.push((i + 10 * j + 100 * k) as f64);
                }
            }
        }
        let z = Grid::new(&shape, 2).unwrap();
        assert_eq!((z.rows, z.columns, z.slices, z.volumes), (3, 2, 4, 1));
        assert_eq!(
            z.slice(&values, 0, 1),
            vec![100., 101., 110., 111., 120., 121.]
        );
        let x = Grid::new(&shape, 0).unwrap();
        assert_eq!((x.rows, x.columns, x.slices), (4, 3, 2));
        assert_eq!(&x.slice(&values, 0, 1)[..4], &[1., 11., 21., 101.]);
        let y = Grid::new(&shape, 1).unwrap();
        assert_eq!(&y.slice(&values, 0, 2)[..3], &[20., 21., 120.]);
        assert!(Grid::new(&shape, 3).is_err());
        let four = Grid::new(&[2, 3, 4, 5], 2).unwrap();
        assert_eq!(four.volumes, 5);
        assert_eq!(Grid::new(&[2, 3], 2).unwrap().slices, 1);
    }
}
