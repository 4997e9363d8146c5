//! Memory budgets for buffers whose size an input decides: a picture's canvas, a mask's
//! label map, a volume's voxels. A few bytes of header (a PNG's IHDR, a COCO `width`, a
//! NIfTI `dim`) can claim gigabytes, and an allocation that large aborts the whole
//! process, where no error handling or [`contain_panic`](super::error::contain_panic)
//! can save the run. Every such buffer is sized here first: over its budget, the item is
//! refused with an error naming the buffer, and the run goes on with the next one.

use anyhow::{Result, bail};

use crate::core::display::binary_bytes;

/// The most one 2-D buffer (a padded canvas, a resized picture, a label map, an overlay)
/// may take: twice the image decoder's own 512 MiB limit, so every picture the decoder
/// accepts can still be converted to RGB and padded to a square of its long side
/// (a 13000 x 4000 scan pads to 13000 x 13000 RGB, 507 MB).
pub(crate) const PICTURE_BYTES: u64 = 1 << 30;

/// The most the voxels of one volume may take in memory once read (as stored and as the
/// values mt computes from them): an int16 CT of 512 x 512 x 1200 slices, read and
/// turned into f64 values, takes 3.8 GB.
pub(crate) const VOLUME_BYTES: u64 = 8 << 30;

/// The bytes of a buffer of `dims` items of `item_bytes` each, or an error saying that
/// `what` (e.g. "the 100000x100000 padded canvas") would overflow or exceed `budget`.
pub(crate) fn bytes(what: &str, dims: &[u64], item_bytes: u64, budget: u64) -> Result<u64> {
    let total = dims
        .iter()
        .try_fold(item_bytes, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= budget);
    match total {
        Some(n) => Ok(n),
        None => bail!(
            "{what} would take {}, over mt's {} budget for one buffer (item skipped)",
            binary_bytes(dims.iter().fold(item_bytes as f64, |n, &d| n * d as f64)),
            binary_bytes(budget as f64)
        ),
    }
}

/// Checks a 2-D buffer of `width` x `height` items of `item_bytes` against
/// [`PICTURE_BYTES`].
pub(crate) fn picture(what: &str, width: u64, height: u64, item_bytes: u64) -> Result<()> {
    bytes(
        &format!("{what} ({width}x{height})"),
        &[width, height],
        item_bytes,
        PICTURE_BYTES,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_budget_gives_the_size() {
        assert_eq!(bytes("x", &[3, 4], 2, 24).unwrap(), 24);
        picture("a canvas", 13_000, 13_000, 3).unwrap();
    }

    #[test]
    fn over_budget_or_overflowing_is_refused_by_name() {
        let e = picture("the padded canvas", 100_000, 100_000, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the padded canvas (100000x100000) would take 27.9 GiB, over mt's 1.0 GiB \
             budget for one buffer (item skipped)"
        );
        let e = bytes("voxels", &[u64::MAX, 2], 8, VOLUME_BYTES).unwrap_err();
        assert!(
            e.to_string().starts_with("voxels would take 256 EiB"),
            "{e}"
        );
        assert!(bytes("one more byte", &[PICTURE_BYTES + 1], 1, PICTURE_BYTES).is_err());
    }
}
