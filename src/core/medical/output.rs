//! The files of one converted input: pictures `<stem><suffix>.<ext>` written atomically,
//! then the sidecar `<stem>.json`, which marks the input complete.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageBuffer, ImageFormat};
use serde::Serialize;
use serde_json::Value;

use super::window::Levels;
use super::{Options, Sidecar};
use crate::core::files::write_atomic;

/// Picture file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// PNG (`.png`), lossless, 8 or 16 bits.
    Png,
    /// JPEG (`.jpg`), 8 bits, at [`Options::quality`](super::Options::quality).
    Jpeg,
}

impl Format {
    /// File extension, without the dot.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }
}

/// Samples of a picture, row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pixels {
    Grey(Levels),
    /// Interleaved RGB.
    Rgb(Levels),
}

/// One 2D picture ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
}

impl Picture {
    fn into_image(self) -> Option<DynamicImage> {
        let (w, h) = (self.width, self.height);
        Some(match self.pixels {
            Pixels::Grey(Levels::Eight(v)) => {
                DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, v)?)
            }
            Pixels::Grey(Levels::Sixteen(v)) => {
                DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, v)?)
            }
            Pixels::Rgb(Levels::Eight(v)) => {
                DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, v)?)
            }
            Pixels::Rgb(Levels::Sixteen(v)) => {
                DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, v)?)
            }
        })
    }

    /// Encodes the picture as PNG, or as JPEG at `quality` (8-bit only).
    pub(crate) fn encode(self, format: Format, quality: u8) -> Result<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let img = self
            .into_image()
            .with_context(|| format!("{w}x{h} picture has the wrong number of samples"))?;
        let mut buf = Cursor::new(Vec::new());
        match format {
            Format::Png => img.write_to(&mut buf, ImageFormat::Png)?,
            Format::Jpeg => {
                if matches!(
                    img,
                    DynamicImage::ImageLuma16(_) | DynamicImage::ImageRgb16(_)
                ) {
                    bail!("JPEG holds 8-bit samples only; use PNG for 16-bit output");
                }
                img.write_with_encoder(JpegEncoder::new_with_quality(&mut buf, quality))?
            }
        }
        Ok(buf.into_inner())
    }
}

/// Where one input's files go, and what is there already.
pub(crate) struct Outputs {
    dir: PathBuf,
    stem: String,
    format: Format,
    quality: u8,
    settings: Value,
    /// The pictures listed by an earlier sidecar, if any.
    previous: Vec<String>,
    /// Whether that sidecar was made from the same source file with the same settings.
    previous_same_job: bool,
    written: Vec<String>,
}

impl Outputs {
    /// Looks at `<dir>/<stem>.json` for an earlier conversion of `source`; writes nothing yet.
    pub(crate) fn open(dir: &Path, stem: &str, source: &Path, opts: &Options) -> Self {
        let settings = serde_json::to_value(opts).unwrap_or(Value::Null);
        let earlier: Option<Value> = std::fs::read(dir.join(format!("{stem}.json")))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let previous = earlier
            .as_ref()
            .and_then(|v| v["outputs"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let same_file = |v: &Value| {
            let earlier = v["source"]
                .as_str()
                .and_then(|s| std::fs::canonicalize(s).ok());
            earlier.is_some() && earlier == std::fs::canonicalize(source).ok()
        };
        let previous_same_job = earlier.is_some_and(|v| v["settings"] == settings && same_file(&v));
        Self {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
            format: opts.format,
            quality: opts.quality,
            settings,
            previous,
            previous_same_job,
            written: Vec::new(),
        }
    }

    /// Whether an earlier run of the same file with the same settings wrote the sidecar
    /// and every picture it lists.
    pub(crate) fn is_complete(&self) -> bool {
        self.previous_same_job
            && !self.settings.is_null()
            && !self.previous.is_empty()
            && self.previous.iter().all(|n| self.dir.join(n).is_file())
    }

    /// Writes `<stem><suffix>.<ext>` atomically.
    pub(crate) fn write(&mut self, suffix: &str, picture: Picture) -> Result<()> {
        let name = format!("{}{suffix}.{}", self.stem, self.format.extension());
        let path = self.dir.join(&name);
        let bytes = picture
            .encode(self.format, self.quality)
            .with_context(|| format!("{}: cannot encode", path.display()))?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("{}: cannot create folder", self.dir.display()))?;
        write_atomic(&path, &bytes)?;
        self.written.push(name);
        Ok(())
    }

    /// Writes the sidecar listing the pictures written, removes pictures an earlier
    /// conversion listed that this one did not write, and returns how many were written.
    pub(crate) fn finish(self, mut sidecar: Sidecar) -> Result<usize> {
        if self.written.is_empty() {
            bail!("no pictures in the file");
        }
        sidecar.outputs = self.written;
        let path = self.dir.join(format!("{}.json", self.stem));
        let mut json = serde_json::to_vec_pretty(&sidecar)?;
        json.push(b'\n');
        write_atomic(&path, &json)?;
        for stale in self
            .previous
            .iter()
            .filter(|n| !sidecar.outputs.contains(*n))
        {
            let stale = self.dir.join(stale);
            if let Err(e) = std::fs::remove_file(&stale)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("{}: cannot remove stale output: {e}", stale.display());
            }
        }
        Ok(sidecar.outputs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_png_round_trip_and_refuses_16_bit_jpeg() {
        let pic = Picture {
            width: 2,
            height: 1,
            pixels: Pixels::Grey(Levels::Sixteen(vec![0, 65535])),
        };
        let png = pic.clone().encode(Format::Png, 90).unwrap();
        let back = image::load_from_memory(&png).unwrap().into_luma16();
        assert_eq!(back.into_raw(), vec![0, 65535]);
        let err = pic.encode(Format::Jpeg, 90).unwrap_err();
        assert!(err.to_string().contains("8-bit"), "{err}");
        let bad = Picture {
            width: 3,
            height: 3,
            pixels: Pixels::Rgb(Levels::Eight(vec![0; 3])),
        };
        assert!(bad.encode(Format::Png, 90).is_err());
    }
}
