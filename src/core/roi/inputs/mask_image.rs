//! Mask images (PNG, TIFF, any format the image crate knows) as label maps.

use super::*;

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

pub(super) fn decode_mask(bytes: &[u8]) -> Result<LabelMap> {
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
