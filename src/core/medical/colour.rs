//! Colour DICOM frames -> interleaved RGB levels.
//!
//! Three-sample frames arrive interleaved (planar ones are interleaved first) as RGB,
//! YBR_FULL or YBR_FULL_422 (two luma samples and one chroma pair per two pixels, as
//! stored natively); YBR is converted with the equations of PS3.3 C.7.6.3.1.2 at the
//! samples' own depth. PALETTE COLOR frames look their stored values up in the red, green
//! and blue tables (values below the first mapped one take the first entry, above the last
//! the last). Samples are then scaled from their bit depth to the picture's:
//! `round(v / (2^bits - 1) * (2^depth - 1))`, so 8-bit colour is written as it is.

use anyhow::{Result, bail};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::window::{Depth, Levels};

/// How a frame's samples become RGB.
pub(crate) enum Colour {
    /// Three samples, red, green and blue.
    Rgb,
    /// Three samples, full-range luma and chroma.
    YbrFull,
    /// Luma for each pixel, one chroma pair for each two pixels of a row.
    YbrFull422,
    /// One stored value a pixel, looked up in three tables.
    Palette(Palette),
}

impl Colour {
    /// The colour model of `photometric` with `samples` samples a pixel, if mt writes it.
    pub(crate) fn of(
        obj: &DefaultDicomObject,
        photometric: &str,
        samples: u16,
    ) -> Result<Option<Self>> {
        Ok(match (samples, photometric) {
            (3, "RGB") => Some(Self::Rgb),
            (3, "YBR_FULL") => Some(Self::YbrFull),
            (3, "YBR_FULL_422") => Some(Self::YbrFull422),
            (1, "PALETTE COLOR") => Some(Self::Palette(Palette::of(obj)?)),
            _ => None,
        })
    }

    /// How many stored samples a frame of `pixels` pixels holds.
    pub(crate) fn stored_samples(&self, pixels: usize) -> usize {
        match self {
            Self::Rgb | Self::YbrFull => 3 * pixels,
            Self::YbrFull422 => 2 * pixels,
            Self::Palette(_) => pixels,
        }
    }

    /// Interleaved RGB levels at `depth` from a frame's stored samples (interleaved, or
    /// stored values for a palette), `bits` bits each.
    pub(crate) fn to_rgb(&self, stored: &[i64], bits: u16, depth: Depth) -> Result<Levels> {
        let (rgb, bits) = match self {
            Self::Rgb => (stored.to_vec(), bits),
            Self::YbrFull => (ybr_to_rgb(stored, bits), bits),
            Self::YbrFull422 => (ybr_to_rgb(&expand_422(stored)?, bits), bits),
            Self::Palette(p) => (p.look_up(stored), p.bits),
        };
        Ok(scale(&rgb, bits, depth))
    }
}

/// Full-range YCbCr -> RGB (PS3.3 C.7.6.3.1.2), rounded and clamped to the samples' range.
fn ybr_to_rgb(ybr: &[i64], bits: u16) -> Vec<i64> {
    let max = ((1u64 << bits) - 1) as f64;
    let half = (1u64 << (bits - 1)) as f64;
    let clamp = |v: f64| v.round().clamp(0.0, max) as i64;
    ybr.chunks_exact(3)
        .flat_map(|p| {
            let (y, cb, cr) = (p[0] as f64, p[1] as f64 - half, p[2] as f64 - half);
            [
                clamp(y + 1.402 * cr),
                clamp(y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr),
                clamp(y + 1.772 * cb),
            ]
        })
        .collect()
}

/// YBR_FULL_422 (`Y1 Y2 Cb Cr` per two pixels) -> YBR_FULL (`Y Cb Cr` per pixel).
fn expand_422(stored: &[i64]) -> Result<Vec<i64>> {
    if !stored.len().is_multiple_of(4) {
        bail!("YBR_FULL_422 needs an even number of columns");
    }
    Ok(stored
        .chunks_exact(4)
        .flat_map(|q| [q[0], q[2], q[3], q[1], q[2], q[3]])
        .collect())
}

/// Scales samples of `bits` bits to levels of `depth`.
fn scale(samples: &[i64], bits: u16, depth: Depth) -> Levels {
    let from = ((1u64 << bits) - 1) as f64;
    let level = |v: i64, to: f64| ((v.max(0) as f64 / from).min(1.0) * to).round();
    match depth {
        Depth::Eight => Levels::Eight(samples.iter().map(|&v| level(v, 255.0) as u8).collect()),
        Depth::Sixteen => {
            Levels::Sixteen(samples.iter().map(|&v| level(v, 65535.0) as u16).collect())
        }
    }
}

/// The red, green and blue lookup tables of a PALETTE COLOR file (PS3.3 C.7.6.3.1.5).
pub(crate) struct Palette {
    /// The stored value the first entry maps.
    first: i64,
    /// Bits of each entry (8 or 16).
    bits: u16,
    tables: [Vec<i64>; 3],
}

impl Palette {
    fn of(obj: &DefaultDicomObject) -> Result<Self> {
        let descriptors = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        ];
        let data = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ];
        if obj
            .get(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA)
            .is_some()
        {
            bail!("segmented PALETTE COLOR lookup tables are not supported");
        }
        let mut first = 0;
        let mut bits = 0;
        let mut tables: [Vec<i64>; 3] = Default::default();
        for (i, (descriptor, data)) in descriptors.iter().zip(data).enumerate() {
            let colour = ["red", "green", "blue"][i];
            let d: Vec<i64> = obj
                .get(*descriptor)
                .and_then(|e| e.to_multi_int::<i64>().ok())
                .filter(|d| d.len() == 3)
                .ok_or_else(|| anyhow::anyhow!("PALETTE COLOR without a {colour} descriptor"))?;
            // 0 entries means 65536 (the count does not fit 16 bits).
            let entries = if d[0] == 0 { 65536 } else { d[0] as usize };
            (first, bits) = (d[1], d[2] as u16);
            if bits != 8 && bits != 16 {
                bail!("PALETTE COLOR {colour} entries of {bits} bits (8 or 16)");
            }
            let bytes = obj
                .get(data)
                .and_then(|e| e.to_bytes().ok())
                .ok_or_else(|| anyhow::anyhow!("PALETTE COLOR without {colour} table data"))?;
            // 8-bit entries may be packed a byte each, or sit in 16-bit words.
            tables[i] = if bits == 8 && bytes.len() == entries {
                bytes.iter().map(|&b| i64::from(b)).collect()
            } else {
                bytes
                    .chunks_exact(2)
                    .take(entries)
                    .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            if tables[i].len() != entries {
                bail!(
                    "PALETTE COLOR {colour} table holds {} of its {entries} entries",
                    tables[i].len()
                );
            }
        }
        Ok(Self {
            first,
            bits,
            tables,
        })
    }

    fn look_up(&self, stored: &[i64]) -> Vec<i64> {
        stored
            .iter()
            .flat_map(|&v| {
                self.tables.each_ref().map(|t| {
                    let i = (v - self.first).clamp(0, t.len() as i64 - 1);
                    t[i as usize]
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ybr_grey_stays_grey_and_primaries_convert() {
        // Neutral chroma keeps the luma on all three channels.
        assert_eq!(ybr_to_rgb(&[77, 128, 128], 8), vec![77, 77, 77]);
        // Pure red in full-range YCbCr (BT.601): Y 76, Cb 85, Cr 255.
        assert_eq!(ybr_to_rgb(&[76, 85, 255], 8), vec![254, 0, 0]);
        // 16-bit samples use a chroma offset of 32768.
        assert_eq!(ybr_to_rgb(&[1000, 32768, 32768], 16), vec![1000; 3]);
    }

    #[test]
    fn ybr_422_shares_chroma_between_pixel_pairs() {
        assert_eq!(
            expand_422(&[10, 20, 1, 2]).unwrap(),
            vec![10, 1, 2, 20, 1, 2]
        );
        assert!(expand_422(&[1, 2, 3]).is_err());
    }

    #[test]
    fn samples_scale_to_the_picture_depth() {
        assert_eq!(
            scale(&[0, 255], 8, Depth::Eight),
            Levels::Eight(vec![0, 255])
        );
        assert_eq!(
            scale(&[0, 255, 128], 8, Depth::Sixteen),
            Levels::Sixteen(vec![0, 65535, 32896])
        );
        assert_eq!(
            scale(&[65535, 257], 16, Depth::Eight),
            Levels::Eight(vec![255, 1])
        );
    }

    #[test]
    fn palette_clamps_below_and_above_its_range() {
        let p = Palette {
            first: 10,
            bits: 8,
            tables: [vec![1, 2], vec![3, 4], vec![5, 6]],
        };
        assert_eq!(p.look_up(&[0, 11, 99]), vec![1, 3, 5, 2, 4, 6, 2, 4, 6]);
    }
}
