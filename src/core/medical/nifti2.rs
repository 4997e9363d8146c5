//! NIfTI-2 single files (`.nii`, `.nii.gz`; magic `n+2`): the 540-byte header of 64-bit
//! dimensions and double-precision fields (nifti2.h), either byte order, then the voxels
//! at `vox_offset`. The nifti crate reads NIfTI-1 only. CIFTI-2 files (intent codes
//! 3000-3099) keep their matrix in dimensions 5 and up, the first four being 1: their
//! shape is the matrix's, as nibabel gives it.

use std::io::{Read, Seek as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use nifti::NiftiType;

use super::nifti::Volume;
use crate::core::budget;

/// `sizeof_hdr` of a NIfTI-2 header.
const HEADER_BYTES: usize = 540;

/// Whether the file starts with a NIfTI-2 header (in either byte order, gzipped or not).
pub(crate) fn is_nifti2(path: &Path) -> Result<bool> {
    let mut first = [0u8; 4];
    match open(path)?.read_exact(&mut first) {
        Ok(()) => Ok(i32::from_le_bytes(first) == 540 || i32::from_be_bytes(first) == 540),
        Err(_) => Ok(false), // too short: the NIfTI-1 reader says why
    }
}

/// The file's bytes, gunzipped when they start with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(path).context("cannot open")?;
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.rewind().context("cannot read")?;
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    })
}

/// Reads a NIfTI-2 file once its `dim` is known to fit [`budget::VOLUME_BYTES`] at
/// `computed` bytes a voxel beyond the stored bytes and their f64 values.
pub(crate) fn read(path: &Path, computed: u64) -> Result<Volume> {
    let unreadable = |what: &str| format!("not a readable NIfTI-2 file: {what}");
    let mut source = open(path)?;
    let mut h = [0u8; HEADER_BYTES];
    source
        .read_exact(&mut h)
        .with_context(|| unreadable("header cut short"))?;
    let big = i32::from_le_bytes([h[0], h[1], h[2], h[3]]) != 540;
    let i16_at = |at: usize| {
        let b = [h[at], h[at + 1]];
        if big {
            i16::from_be_bytes(b)
        } else {
            i16::from_le_bytes(b)
        }
    };
    let i32_at = |at: usize| {
        let b = [h[at], h[at + 1], h[at + 2], h[at + 3]];
        if big {
            i32::from_be_bytes(b)
        } else {
            i32::from_le_bytes(b)
        }
    };
    let u64_at = |at: usize| {
        let b: [u8; 8] = h[at..at + 8].try_into().unwrap_or_default();
        if big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    };
    let f64_at = |at: usize| f64::from_bits(u64_at(at));
    if &h[4..8] != b"n+2\0" {
        bail!(
            "{}",
            unreadable("magic is not n+2 (NIfTI-2 header/image pairs are not supported)")
        );
    }
    let datatype = i16_at(12);
    let (kind, width) = datatype_of(datatype)
        .with_context(|| format!("unsupported NIfTI datatype {datatype} (scalar types only)"))?;
    let rank = u64_at(16) as i64;
    if !(1..=7).contains(&rank) {
        bail!("{}", unreadable(&format!("dim[0] is {rank} (1 to 7)")));
    }
    let rank = rank as usize;
    let mut dims: Vec<u64> = (1..=rank).map(|i| u64_at(16 + 8 * i)).collect();
    if dims.iter().any(|&d| d as i64 <= 0) {
        bail!("NIfTI dim {dims:?} is not an image (every dimension must be at least 1)");
    }
    let mut pixdim: Vec<f64> = (1..=rank).map(|i| f64_at(104 + 8 * i)).collect();
    let intent = i32_at(504);
    if (3000..=3099).contains(&intent) && rank > 4 && dims[..4].iter().all(|&d| d == 1) {
        dims.drain(..4);
        pixdim.drain(..4);
    }
    budget::bytes(
        &format!("the voxels of dim {dims:?}"),
        &dims,
        width + 8 + computed,
        budget::VOLUME_BYTES,
    )?;
    let count = dims.iter().product::<u64>() as usize;
    // vox_offset is signed in nifti2.h: a negative one lies before the header too.
    let vox_offset = u64_at(168) as i64;
    let skip = (vox_offset.checked_sub(HEADER_BYTES as i64))
        .and_then(|v| u64::try_from(v).ok())
        .with_context(|| unreadable(&format!("vox_offset {vox_offset} lies inside the header")))?;
    std::io::copy(&mut (&mut source).take(skip), &mut std::io::sink())?;
    let mut bytes = vec![0u8; count * width as usize];
    source.read_exact(&mut bytes).with_context(|| {
        format!("the header's dim {dims:?} needs more voxels than the file holds")
    })?;
    let values = decode(&bytes, kind, big);
    let text = |range: std::ops::Range<usize>| {
        String::from_utf8_lossy(&h[range])
            .trim_end_matches('\0')
            .trim()
            .to_string()
    };
    Ok(Volume {
        shape: dims.iter().map(|&d| d as usize).collect(),
        values,
        datatype: kind,
        slope: f64_at(176),
        inter: f64_at(184),
        pixdim,
        descrip: text(240..320),
        xyzt_units: i32_at(500) as u8,
    })
}

/// The scalar type and its bytes for a NIfTI datatype code.
fn datatype_of(code: i16) -> Option<(NiftiType, u64)> {
    Some(match code {
        2 => (NiftiType::Uint8, 1),
        256 => (NiftiType::Int8, 1),
        4 => (NiftiType::Int16, 2),
        512 => (NiftiType::Uint16, 2),
        8 => (NiftiType::Int32, 4),
        768 => (NiftiType::Uint32, 4),
        16 => (NiftiType::Float32, 4),
        1024 => (NiftiType::Int64, 8),
        1280 => (NiftiType::Uint64, 8),
        64 => (NiftiType::Float64, 8),
        _ => return None,
    })
}

/// Stored voxels -> f64, in file order.
fn decode(bytes: &[u8], kind: NiftiType, big: bool) -> Vec<f64> {
    macro_rules! each {
        ($t:ty, $n:literal) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let b: [u8; $n] = c.try_into().unwrap_or_default();
                    (if big {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    }) as f64
                })
                .collect()
        };
    }
    match kind {
        NiftiType::Uint8 => bytes.iter().map(|&b| f64::from(b)).collect(),
        NiftiType::Int8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        NiftiType::Int16 => each!(i16, 2),
        NiftiType::Uint16 => each!(u16, 2),
        NiftiType::Int32 => each!(i32, 4),
        NiftiType::Uint32 => each!(u32, 4),
        NiftiType::Float32 => each!(f32, 4),
        NiftiType::Int64 => each!(i64, 8),
        NiftiType::Uint64 => each!(u64, 8),
        _ => each!(f64, 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little- or big-endian NIfTI-2 file of `dims` u16 voxels 0, 1, 2...
    fn file(dims: &[u64], big: bool, intent: i32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_BYTES + 4];
        let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
        let e32 = |v: i32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let e64 = |v: u64| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        put(0, &e32(540));
        put(4, b"n+2\0\r\n\x1a\n");
        put(
            12,
            &(if big {
                512i16.to_be_bytes()
            } else {
                512i16.to_le_bytes()
            }),
        );
        put(16, &e64(dims.len() as u64));
        for (i, &d) in dims.iter().enumerate() {
            put(24 + 8 * i, &e64(d));
            put(112 + 8 * i, &e64(1.5f64.to_bits()));
        }
        put(168, &e64(544));
        put(176, &e64(2f64.to_bits()));
        put(240, b"test volume");
        put(500, &e32(2));
        put(504, &e32(intent));
        let n: u64 = dims.iter().product();
        for v in 0..n as u16 {
            h.extend_from_slice(&if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        h
    }

    #[test]
    fn both_byte_orders_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        for big in [false, true] {
            let path = dir.path().join(format!("v{big}.nii"));
            std::fs::write(&path, file(&[3, 2, 2], big, 0)).unwrap();
            assert!(is_nifti2(&path).unwrap());
            let v = read(&path, 0).unwrap();
            assert_eq!(v.shape, vec![3, 2, 2]);
            assert_eq!(v.values, (0..12).map(f64::from).collect::<Vec<_>>());
            assert_eq!((v.slope, v.inter), (2.0, 0.0));
            assert_eq!(v.pixdim, vec![1.5; 3]);
            assert_eq!((v.descrip.as_str(), v.xyzt_units), ("test volume", 2));
        }
    }

    #[test]
    fn cifti_matrices_drop_their_four_unit_dimensions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.dconn.nii");
        std::fs::write(&path, file(&[1, 1, 1, 1, 3, 4], false, 3001)).unwrap();
        assert_eq!(read(&path, 0).unwrap().shape, vec![3, 4]);
    }

    #[test]
    fn short_or_lying_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.nii");
        let whole = file(&[3, 2, 2], false, 0);
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        let err = format!("{:#}", read(&path, 0).unwrap_err());
        assert!(err.contains("needs more voxels"), "{err}");
        std::fs::write(&path, &whole[..100]).unwrap();
        assert!(format!("{:#}", read(&path, 0).unwrap_err()).contains("header cut short"));
        let huge = file(&[1 << 40, 1 << 20], false, 0);
        std::fs::write(&path, &huge[..HEADER_BYTES + 4]).unwrap();
        let err = format!("{:#}", read(&path, 0).unwrap_err());
        assert!(err.contains("budget"), "{err}");
        let mut negative = file(&[3, 2, 2], false, 0);
        negative[168..176].copy_from_slice(&(-8i64).to_le_bytes());
        std::fs::write(&path, &negative).unwrap();
        let err = format!("{:#}", read(&path, 0).unwrap_err());
        assert!(
            err.contains("vox_offset -8 lies inside the header"),
            "{err}"
        );
        std::fs::write(&path, b"ab").unwrap();
        assert!(!is_nifti2(&path).unwrap());
    }
}
