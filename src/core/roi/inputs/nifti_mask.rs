//! NIfTI label volumes, cut into axial slices that hold foreground.

use super::*;

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

pub(super) fn read_nifti(
    path: &Path,
    id: &str,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
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
pub(super) fn digits(n: usize) -> usize {
    n.to_string().len()
}
