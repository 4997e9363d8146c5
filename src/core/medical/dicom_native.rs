//! Pixel data that dicom-rs decodes wrongly or not at all, rewritten first as native
//! little-endian bytes (explicit VR little endian) so the rest of the pipeline reads it
//! like any uncompressed file:
//!
//! - RLE Lossless with 32 bits allocated (dicom-rs's decoder stops at 16): decoded here
//!   (PS3.5 Annex G: per frame a header of segment offsets, then one PackBits segment per
//!   byte of each sample, most significant byte first).
//! - Explicit VR big endian with 32 bits allocated in an OW element: the words arrive
//!   swapped one by one, so each sample's two halves are in the wrong order.
//! - JPEG with 12-bit precision (JPEG extended, process 4), which jpeg-decoder refuses:
//!   decoded by [`super::jpeg12`] (its components as coded: a YBR file stays YBR, now
//!   at full resolution, so YBR_FULL_422 becomes YBR_FULL).
//!
//! And one kept encapsulated: JPEG frames of a file whose Photometric Interpretation says
//! RGB (the components are red, green and blue, PS3.5 8.2.1) but that lack a complete
//! Adobe marker: the JPEG decoder would guess YCbCr (from a JFIF marker, the component
//! ids, or by default) and convert. An Adobe marker saying "no transform" is put after
//! each frame's start of image; pydicom likewise decodes the components as they are and
//! goes by the file's Photometric Interpretation.

use anyhow::{Result, bail};
use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

use crate::core::budget;

/// RLE Lossless.
const RLE: &str = "1.2.840.10008.1.2.5";
/// Explicit VR big endian (retired).
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// JPEG baseline and extended: the syntaxes whose JPEG decoder guesses the colour model.
const JPEG_DCT: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];
/// An Adobe APP14 segment with transform 0 (the components are RGB as they are).
const ADOBE_NO_TRANSFORM: [u8; 16] = [
    0xFF, 0xEE, 0, 14, b'A', b'd', b'o', b'b', b'e', 0, 0x65, 0, 0, 0, 0, 0,
];

/// `obj` with its pixel data rewritten, when dicom-rs would misread it.
pub(crate) fn rewrite(
    obj: &DefaultDicomObject,
    syntax: &str,
) -> Result<Option<DefaultDicomObject>> {
    if let Some(bytes) = native_bytes(obj, syntax)? {
        let mut native = obj.clone();
        if JPEG_DCT.contains(&syntax) && photometric(obj).as_deref() == Some("YBR_FULL_422") {
            native.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("YBR_FULL"),
            ));
        }
        native.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(bytes),
        ));
        if native.get(tags::PLANAR_CONFIGURATION).is_some() && syntax != BIG_ENDIAN {
            // Decoded RLE and JPEG are written interleaved.
            native.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
        native.update_meta(|m| m.set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN));
        return Ok(Some(native));
    }
    Ok(rgb_jpeg_without_adobe_marker(obj, syntax))
}

/// The file's Photometric Interpretation, without its padding.
pub(crate) fn photometric(obj: &DefaultDicomObject) -> Option<String> {
    let text = obj.get(tags::PHOTOMETRIC_INTERPRETATION)?.to_str().ok()?;
    Some(text.trim_end_matches([' ', '\0']).to_string())
}

/// The native little-endian pixel bytes of a file dicom-rs cannot decode or misreads.
fn native_bytes(obj: &DefaultDicomObject, syntax: &str) -> Result<Option<Vec<u8>>> {
    let int = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0)
    };
    let Some(pixel_data) = obj.get(tags::PIXEL_DATA) else {
        return Ok(None);
    };
    let frames = int(tags::NUMBER_OF_FRAMES).max(1) as usize;
    let shape = [
        int(tags::COLUMNS),
        int(tags::ROWS),
        int(tags::SAMPLES_PER_PIXEL).max(1),
    ];
    // The decoded bytes must fit mt's volume budget before any is allocated: a header
    // of a few bytes can claim gigabytes.
    let fits = |width: u64| {
        let dims = [
            frames as u64,
            shape[0].into(),
            shape[1].into(),
            shape[2].into(),
        ];
        budget::bytes("the decoded pixel data", &dims, width, budget::VOLUME_BYTES)
    };
    if JPEG_DCT.contains(&syntax) {
        let fragments = pixel_data.value().fragments().unwrap_or(&[]);
        if !fragments
            .first()
            .is_some_and(|f| super::jpeg12::is_12_bit(f))
        {
            return Ok(None);
        }
        if int(tags::BITS_ALLOCATED) != 16 {
            bail!(
                "12-bit JPEG needs BitsAllocated 16, the header says {}",
                int(tags::BITS_ALLOCATED)
            );
        }
        fits(2)?;
        return jpeg_12_bit(fragments, frames, shape).map(Some);
    }
    if int(tags::BITS_ALLOCATED) != 32 {
        return Ok(None);
    }
    fits(4)?;
    let bytes = match syntax {
        RLE => {
            let Some(fragments) = pixel_data.value().fragments() else {
                bail!("RLE Lossless pixel data is not encapsulated");
            };
            if fragments.len() != frames {
                bail!(
                    "RLE Lossless needs one fragment a frame: {} fragments for {frames} frames",
                    fragments.len()
                );
            }
            let pixels = shape[0] as usize * shape[1] as usize;
            let samples = shape[2] as usize;
            let mut bytes = Vec::with_capacity(frames * pixels * samples * 4);
            for (i, fragment) in fragments.iter().enumerate() {
                // PackBits turns two bytes into at most 128.
                if pixels * samples * 4 > 64 * fragment.len() {
                    bail!(
                        "RLE frame {i}: {} bytes cannot hold {pixels} pixels",
                        fragment.len()
                    );
                }
                let frame = decode_rle(fragment, pixels, samples, 4)
                    .map_err(|e| anyhow::anyhow!("RLE frame {i}: {e}"))?;
                bytes.extend_from_slice(&frame);
            }
            bytes
        }
        BIG_ENDIAN if pixel_data.vr() == VR::OW => {
            let mut bytes = pixel_data.to_bytes()?.into_owned();
            bytes.chunks_exact_mut(4).for_each(|c| c.rotate_left(2));
            bytes
        }
        _ => return Ok(None),
    };
    Ok(Some(bytes))
}

/// The frames of a 12-bit JPEG as little-endian u16 samples: one fragment a frame, or one
/// frame in any number of fragments. Each frame must have the `[columns, rows, samples]`
/// the header gives.
fn jpeg_12_bit(fragments: &[Vec<u8>], frames: usize, shape: [u32; 3]) -> Result<Vec<u8>> {
    let streams: Vec<std::borrow::Cow<'_, [u8]>> = if fragments.len() == frames {
        fragments.iter().map(|f| f.as_slice().into()).collect()
    } else if frames == 1 {
        vec![fragments.concat().into()]
    } else {
        bail!(
            "{} fragments for {frames} 12-bit JPEG frames (one a frame is supported)",
            fragments.len()
        );
    };
    let mut bytes = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let frame =
            super::jpeg12::decode(stream).map_err(|e| anyhow::anyhow!("frame {i}: {e:#}"))?;
        let got = [frame.width, frame.height, u32::from(frame.components)];
        if got != shape {
            bail!(
                "frame {i}: the JPEG is {}x{} with {} components, the header says {}x{} with {}",
                got[0],
                got[1],
                got[2],
                shape[0],
                shape[1],
                shape[2]
            );
        }
        bytes.extend(frame.samples.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(bytes)
}

/// `obj` with an Adobe "no transform" marker in each JPEG frame, when the file says RGB
/// and its JPEG has no complete Adobe marker.
fn rgb_jpeg_without_adobe_marker(
    obj: &DefaultDicomObject,
    syntax: &str,
) -> Option<DefaultDicomObject> {
    if !JPEG_DCT.contains(&syntax) {
        return None;
    }
    if photometric(obj)? != "RGB" {
        return None;
    }
    let pixel_data = obj.get(tags::PIXEL_DATA)?;
    let fragments = pixel_data.value().fragments()?;
    if fragments.first().is_none_or(|f| has_adobe_marker(f)) {
        return None;
    }
    let fragments: Vec<Vec<u8>> = fragments
        .iter()
        .map(|f| match f.strip_prefix(&[0xFF, 0xD8]) {
            Some(rest) => [&[0xFF, 0xD8], &ADOBE_NO_TRANSFORM[..], rest].concat(),
            None => f.clone(),
        })
        .collect();
    let offsets = pixel_data.value().offset_table().unwrap_or(&[]);
    // Each frame grew by one marker: the offsets of the later frames move with it.
    let offsets: Vec<u32> = offsets
        .iter()
        .enumerate()
        .map(|(i, &o)| o.wrapping_add((i * ADOBE_NO_TRANSFORM.len()) as u32))
        .collect();
    let mut rewritten = obj.clone();
    rewritten.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(offsets, fragments),
    ));
    Some(rewritten)
}

/// Whether a JPEG stream has a complete Adobe (APP14) marker, with its transform byte,
/// before its scan.
fn has_adobe_marker(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while let Some(&[0xFF, marker, hi, lo]) = jpeg.get(i..i + 4) {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let body = jpeg.get(i + 4..).unwrap_or(&[]);
        match marker {
            0xEE if body.starts_with(b"Adobe") && len >= 14 => return true,
            0xDA | 0xD9 => return false,
            _ => i += 2 + len,
        }
    }
    false
}

/// One RLE frame of `pixels` pixels, `samples` samples of `width` bytes each ->
/// interleaved little-endian samples.
fn decode_rle(fragment: &[u8], pixels: usize, samples: usize, width: usize) -> Result<Vec<u8>> {
    let word = |i: usize| -> Result<usize> {
        let b = fragment
            .get(4 * i..4 * i + 4)
            .ok_or_else(|| anyhow::anyhow!("header cut short"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let segments = word(0)?;
    if segments != samples * width || segments > 15 {
        bail!(
            "{segments} segments for {samples} samples of {} bits",
            8 * width
        );
    }
    let mut out = vec![0u8; pixels * samples * width];
    for segment in 0..segments {
        let start = word(1 + segment)?;
        let end = if segment + 1 < segments {
            word(2 + segment)?
        } else {
            fragment.len()
        };
        let Some(data) = fragment.get(start..end.max(start)) else {
            bail!("segment {segment} at {start}..{end} lies outside the fragment");
        };
        let plane = unpack_bits(data, pixels)
            .ok_or_else(|| anyhow::anyhow!("segment {segment} holds fewer than {pixels} bytes"))?;
        let (sample, byte) = (segment / width, width - 1 - segment % width);
        for (p, v) in plane.into_iter().enumerate() {
            out[(p * samples + sample) * width + byte] = v;
        }
    }
    Ok(out)
}

/// The first `len` bytes of a PackBits run (`n` >= 0: n + 1 literal bytes; -127..=-1:
/// the next byte 1 - n times; -128: nothing), or None when it holds fewer.
fn unpack_bits(data: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < data.len() {
        let n = data[i] as i8;
        i += 1;
        match n {
            0.. => {
                let run = data.get(i..i + n as usize + 1)?;
                out.extend_from_slice(run);
                i += run.len();
            }
            -128 => {}
            _ => {
                let v = *data.get(i)?;
                out.extend(std::iter::repeat_n(v, (1 - isize::from(n)) as usize));
                i += 1;
            }
        }
    }
    (out.len() >= len).then(|| {
        out.truncate(len);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RLE file of 32-bit samples with one tiny fragment per frame.
    fn rle_object(rows: u16, columns: u16, samples: u16) -> DefaultDicomObject {
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::ROWS, rows));
        obj.put(us(tags::COLUMNS, columns));
        obj.put(us(tags::SAMPLES_PER_PIXEL, samples));
        obj.put(us(tags::BITS_ALLOCATED, 32));
        let fragment = vec![0u8; 80];
        let pixels = PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, pixels));
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .transfer_syntax(RLE)
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("1.2.3");
        obj.with_meta(meta).unwrap()
    }

    #[test]
    fn headers_claiming_more_than_the_data_holds_are_refused_before_allocating() {
        let err = format!(
            "{:#}",
            rewrite(&rle_object(65535, 65535, 3), RLE).unwrap_err()
        );
        assert!(err.contains("budget"), "{err}");
        let err = format!("{:#}", rewrite(&rle_object(512, 512, 1), RLE).unwrap_err());
        assert!(err.contains("cannot hold"), "{err}");
    }

    #[test]
    fn packbits_literals_runs_and_no_ops() {
        // 2 literals, -128 no-op, a run of 3, then padding past the length wanted.
        let data = [1, 7, 8, 0x80, 0xFE, 9, 0];
        assert_eq!(unpack_bits(&data, 5).unwrap(), vec![7, 8, 9, 9, 9]);
        assert!(unpack_bits(&data, 9).is_none());
        assert!(unpack_bits(&[5, 1], 2).is_none(), "a literal run cut short");
    }

    #[test]
    fn rle_segments_become_little_endian_samples() {
        // Two 32-bit grey pixels 0x01020304 and 0x0A0B0C0D: four segments, MSB first.
        let mut fragment = vec![0u8; 64];
        fragment[..4].copy_from_slice(&4u32.to_le_bytes());
        let planes = [[1, 10], [2, 11], [3, 12], [4, 13]];
        for (i, plane) in planes.iter().enumerate() {
            let offset = fragment.len() as u32;
            fragment[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
            fragment.extend_from_slice(&[1, plane[0], plane[1]]);
        }
        let out = decode_rle(&fragment, 2, 1, 4).unwrap();
        let values: Vec<u32> = out
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, vec![0x01020304, 0x0A0B0C0D]);
        assert!(decode_rle(&fragment, 2, 3, 4).is_err(), "segment count");
        assert!(decode_rle(&fragment[..70], 2, 1, 4).is_err(), "cut short");
    }

    #[test]
    fn complete_adobe_markers_are_found_before_the_scan_only() {
        let dqt = [0xFF, 0xDB, 0, 4, 0, 0];
        let sos = [0xFF, 0xDA, 0, 2];
        let soi = [0xFF, 0xD8];
        let adobe = &ADOBE_NO_TRANSFORM[..];
        // Without the transform byte (a 12-byte segment, as in pydicom's SC_rgb_jpeg.dcm).
        let short = [&[0xFF, 0xEE, 0, 12][..], b"Adobe", &[0; 5]].concat();
        assert!(!has_adobe_marker(&[&soi[..], &dqt, &sos].concat()));
        assert!(has_adobe_marker(&[&soi[..], &dqt, adobe, &sos].concat()));
        assert!(!has_adobe_marker(&[&soi[..], &short, &sos].concat()));
        assert!(!has_adobe_marker(&[&soi[..], &sos, adobe].concat()));
        assert!(!has_adobe_marker(&soi[..1]), "cut short");
    }
}
