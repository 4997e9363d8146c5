//! Image decoding: header probes (format, size, colour mode without decoding pixels),
//! full decodes, and display thumbnails with a contrast stretch for 16-bit scans.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::core::error::contain_panic;

/// What an image header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    /// Channel layout and depth, e.g. `L8`, `RGB8`, `L16`, `RGBA8`.
    pub mode: &'static str,
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    if reader.format().is_none() {
        let head: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(anyhow!("unrecognised image format (first bytes {head})"));
    }
    Ok(reader)
}

/// Runs a decoder, turning a panic inside third-party decoding code into an error, so
/// one hostile image cannot take down a pass over millions.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    contain_panic("the image decoder", f)
}

/// Reads the header only: format, dimensions and colour mode.
pub(crate) fn probe(bytes: &[u8]) -> Result<ImageInfo> {
    guarded(|| probe_header(bytes))
}

fn probe_header(bytes: &[u8]) -> Result<ImageInfo> {
    let reader = reader(bytes)?;
    let format = format_name(reader.format().expect("checked"));
    let decoder = reader.into_decoder().context("bad image header")?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(anyhow!("image has zero size ({width}x{height})"));
    }
    Ok(ImageInfo {
        format,
        width,
        height,
        mode: mode_name(decoder.color_type()),
    })
}

/// Decodes every pixel (catches truncated or corrupt data a header probe misses).
pub(crate) fn decode(bytes: &[u8]) -> Result<DynamicImage> {
    guarded(|| reader(bytes)?.decode().context("cannot decode image"))
}

/// Reads and decodes an image file (format from its bytes, not its name); errors name
/// the file.
pub(crate) fn decode_file(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode(&bytes).with_context(|| path.display().to_string())
}

/// Reads an image file's header only (format, size, colour mode); errors name the file.
pub(crate) fn probe_file(path: &Path) -> Result<ImageInfo> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    // Headers sit at the start; a TIFF's may point further in, so those are read whole.
    let mut head = Vec::new();
    file.take(HEADER_BYTES)
        .read_to_end(&mut head)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let info = match probe(&head) {
        Ok(info) => Ok(info),
        Err(_) if head.len() as u64 == HEADER_BYTES => std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| probe(&bytes)),
        Err(e) => Err(e),
    };
    info.with_context(|| path.display().to_string())
}

/// How much of a file [`probe_file`] reads first.
const HEADER_BYTES: u64 = 64 * 1024;

/// An RGB thumbnail that fits in `size` x `size`. Images with more than 8 bits per
/// channel (CT, MR) are stretched to their own min..max first so they are visible.
pub(crate) fn thumbnail(image: &DynamicImage, size: u32) -> RgbImage {
    let small = image.thumbnail(size, size);
    match small {
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageRgb32F(_)
        | DynamicImage::ImageRgba32F(_) => stretch(&small.to_rgb32f()),
        other => other.to_rgb8(),
    }
}

fn stretch(img: &image::Rgb32FImage) -> RgbImage {
    let (lo, hi) = img
        .pixels()
        .flat_map(|p| p.0)
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(
            img.get_pixel(x, y)
                .0
                .map(|v| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8),
        )
    })
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Tiff => "tiff",
        ImageFormat::Bmp => "bmp",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        _ => "other",
    }
}

fn mode_name(c: image::ColorType) -> &'static str {
    use image::ColorType::*;
    match c {
        L8 => "L8",
        La8 => "LA8",
        Rgb8 => "RGB8",
        Rgba8 => "RGBA8",
        L16 => "L16",
        La16 => "LA16",
        Rgb16 => "RGB16",
        Rgba16 => "RGBA16",
        Rgb32F => "RGB32F",
        Rgba32F => "RGBA32F",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A valid 1x1 RGB PNG whose IHDR then claims `width` x `height` (CRC fixed up):
    /// a decompression bomb's header on a few bytes of data.
    pub(crate) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let one = DynamicImage::ImageRgb8(RgbImage::new(1, 1));
        let mut bytes = encode(&one, ImageFormat::Png);
        // Signature (8), IHDR length (4) + type (4), then width and height.
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[test]
    fn a_huge_png_header_fails_before_allocating_its_pixels() {
        // 50,000 x 50,000 RGB: 7.5 GB of pixels claimed by a ~70-byte file.
        let bomb = png_claiming(50_000, 50_000);
        let info = probe(&bomb).unwrap();
        assert_eq!((info.width, info.height), (50_000, 50_000));
        let started = std::time::Instant::now();
        let err = format!("{:#}", decode(&bomb).unwrap_err());
        assert!(err.contains("limit"), "{err}");
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn probes_read_size_format_and_mode() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::new(7, 5));
        let info = probe(&encode(&grey, ImageFormat::Png)).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                format: "png",
                width: 7,
                height: 5,
                mode: "L8"
            }
        );
        let rgb = DynamicImage::ImageRgb8(RgbImage::new(16, 9));
        let info = probe(&encode(&rgb, ImageFormat::Jpeg)).unwrap();
        assert_eq!(
            (info.format, info.width, info.height, info.mode),
            ("jpeg", 16, 9, "RGB8")
        );
    }

    #[test]
    fn corrupt_bytes_fail_with_a_reason() {
        assert!(
            probe(b"hello world")
                .unwrap_err()
                .to_string()
                .contains("unrecognised image format")
        );
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([x as u8, y as u8, 7])
        }));
        let png = encode(&rgb, ImageFormat::Png);
        // The header survives truncation; only a full decode notices.
        let cut = &png[..png.len() / 2];
        assert!(probe(cut).is_ok());
        assert!(decode(cut).is_err());
    }

    #[test]
    fn decoder_panics_become_errors() {
        let out: Result<()> = guarded(|| panic!("a decoder bug"));
        assert!(out.unwrap_err().to_string().contains("crashed"));
    }

    #[test]
    fn sixteen_bit_scans_are_stretched_for_display() {
        let ct = image::ImageBuffer::from_fn(4, 1, |x, _| image::Luma([1000u16 + x as u16 * 10]));
        let thumb = thumbnail(&DynamicImage::ImageLuma16(ct), 4);
        let row: Vec<u8> = thumb.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row, vec![0, 85, 170, 255]);
    }
}
