//! NIfTI label volumes, cut into axial slices that hold foreground.

use super::*;

pub(super) fn read_nifti(
    path: &Path,
    id: &str,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let source = path.display().to_string();
    let volume = match crate::core::medical::nifti::read_volume(path, 0) {
        Ok(v) => v,
        Err(e) => {
            let msg = anyhow!("{source}: {e:#}");
            return visit(Item::new(id.to_string(), source, Err(msg)));
        }
    };
    if volume.shape.len() < 2 || volume.shape.contains(&0) {
        let msg = anyhow!("{source}: NIfTI dim {:?} is not an image", volume.shape);
        return visit(Item::new(id.to_string(), source, Err(msg)));
    }
    let rescale = volume.rescale().map(|r| (r.slope, r.intercept));
    // The value the binary rule turns into 1: a full 8- or 16-bit voxel.
    let full = match volume.datatype {
        NiftiType::Uint8 => Some(255.0),
        NiftiType::Uint16 => Some(65535.0),
        _ => None,
    };
    let slices = Slices {
        path,
        id,
        shape: &volume.shape,
        rescale,
    };
    slices.emit(&volume.values, full, visit)
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
    fn emit(
        &self,
        data: &[f64],
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
        let value = |v: f64| match self.rescale {
            Some((s, i)) => v * s + i,
            None => v,
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
        let label = |v: f64| {
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
