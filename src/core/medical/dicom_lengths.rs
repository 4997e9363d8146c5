//! A pass over a DICOM file's element headers before dicom-rs parses it: dicom-rs
//! reserves and zero-fills an element's declared length before reading it, so a 2 KB
//! file declaring a 4 GB element would cost 4 GB of memory. Every defined length must
//! fit in the bytes left in the file. Explicit and implicit VR little endian (the meta
//! group and nearly every file) are walked; other transfer syntaxes are left to dicom-rs.

use anyhow::{Result, bail};
use dicom_core::VR;

/// VRs whose explicit-VR header has two reserved bytes and a 4-byte length.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

const UNDEFINED: u32 = u32::MAX;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// Transfer syntaxes whose data set is not little endian as written: explicit big
/// endian, and those with a deflated data set (deflated explicit LE, JPIP referenced
/// deflate, JPIP HTJ2K referenced deflate), whose lengths are inside the compressed stream.
const NOT_WALKED: [&str; 4] = [
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.205",
];

/// Fails when an element of `bytes` (a whole Part 10 file) declares more bytes than the
/// file has left after it. The meta group is walked as dicom-rs reads it: its group
/// length first, then any elements (of any group) until that many bytes are consumed.
/// The data set is walked as implicit VR little endian for that transfer syntax, as
/// explicit VR little endian for every other one dicom-rs knows (encapsulated pixel
/// data included), except [`NOT_WALKED`].
///
/// Returns the offset of the data set when it is written in implicit VR although the
/// transfer syntax says explicit (its first element has no VR where one belongs; pydicom
/// reads such files with a warning): it is then walked, and must be read, as implicit VR.
pub(crate) fn check(bytes: &[u8]) -> Result<Option<usize>> {
    if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
        return Ok(None); // not Part 10: dicom-rs says why
    }
    let Some(length) = explicit(bytes, 132)? else {
        return Ok(None);
    };
    if length.tag != (2, 0) || length.len != 4 {
        return Ok(None); // dicom-rs refuses a meta group without its length
    }
    let meta_len = u32_at(bytes, length.value) as usize;
    let mut syntax = String::new();
    let mut pos = length.value + 4;
    let mut consumed = 0usize;
    while consumed < meta_len && pos + 8 <= bytes.len() {
        let Some(element) = explicit(bytes, pos)? else {
            return Ok(None);
        };
        if element.len == UNDEFINED {
            return Ok(None); // dicom-rs refuses it
        }
        if element.tag == (2, 0x10) {
            let value = &bytes[element.value..element.value + element.len as usize];
            syntax = String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        let next = element.value + element.len as usize;
        consumed += next - pos;
        pos = next;
    }
    if syntax.is_empty() || NOT_WALKED.contains(&syntax.as_str()) {
        return Ok(None);
    }
    let mislabelled = syntax != IMPLICIT_LE
        && bytes
            .get(pos + 4..pos + 6)
            .is_some_and(|vr| !vr.iter().all(u8::is_ascii_uppercase));
    let implicit = syntax == IMPLICIT_LE || mislabelled;
    let data_set = pos;
    let mut encapsulated = false;
    while pos + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let element = if implicit || group == 0xFFFE {
            if group == 0xFFFE && pos + 8 > bytes.len() {
                return Ok(None);
            }
            implicit_header(bytes, pos)?
        } else {
            match explicit(bytes, pos)? {
                Some(e) => e,
                None => return Ok(None),
            }
        };
        // Containers (sequences, items, undefined lengths) are walked into; other values
        // are stepped over, and so are the fragments of encapsulated pixel data (items
        // of compressed bytes, not data sets).
        let fragment = encapsulated && element.tag == (0xFFFE, 0xE000);
        let container =
            !fragment && (element.len == UNDEFINED || element.is_sequence || group == 0xFFFE);
        match element.tag {
            (0x7FE0, 0x0010) if element.len == UNDEFINED => encapsulated = true,
            (0xFFFE, 0xE0DD) => encapsulated = false,
            _ => {}
        }
        pos = if container {
            element.value
        } else {
            element.value + element.len as usize
        };
    }
    Ok(mislabelled.then_some(data_set))
}

struct Element {
    tag: (u16, u16),
    /// Offset of the value.
    value: usize,
    len: u32,
    is_sequence: bool,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// An explicit-VR header at `pos` (None when it runs past the end). A VR dicom-rs does
/// not know (`VR::from_binary`: not only "a1" but also unassigned capitals such as "QS")
/// is read as UN, with the long header, as dicom-rs reads it.
fn explicit(b: &[u8], pos: usize) -> Result<Option<Element>> {
    let tag = (u16_at(b, pos), u16_at(b, pos + 2));
    let vr = [b[pos + 4], b[pos + 5]];
    let long = VR::from_binary(vr).is_none() || LONG_VRS.contains(&&vr);
    let (value, len) = if long {
        if pos + 12 > b.len() {
            return Ok(None);
        }
        (pos + 12, u32_at(b, pos + 8))
    } else {
        (pos + 8, u32::from(u16_at(b, pos + 6)))
    };
    let element = Element {
        tag,
        value,
        len,
        is_sequence: &vr == b"SQ",
    };
    fits(b, &element)?;
    Ok(Some(element))
}

fn implicit_header(b: &[u8], pos: usize) -> Result<Element> {
    let element = Element {
        tag: (u16_at(b, pos), u16_at(b, pos + 2)),
        value: pos + 8,
        len: u32_at(b, pos + 4),
        is_sequence: false,
    };
    fits(b, &element)?;
    Ok(element)
}

fn fits(b: &[u8], e: &Element) -> Result<()> {
    let left = b.len().saturating_sub(e.value);
    if e.len != UNDEFINED && e.len as usize > left {
        bail!(
            "element ({:04X},{:04X}) declares {} bytes but only {left} follow in the file \
             (truncated or hostile)",
            e.tag.0,
            e.tag.1,
            e.len
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn testdata(name: &str) -> Vec<u8> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/medical/dicom");
        std::fs::read(root.join(name)).unwrap()
    }

    #[test]
    fn real_files_pass() {
        for f in [
            "CT_small.dcm",
            "MR_small.dcm",
            "mono1.dcm",
            "multiframe.dcm",
            "rgb.dcm",
            "JPEG-lossy.dcm",
            "liver_1frame.dcm",
        ] {
            let mislabelled = check(&testdata(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(mislabelled, None, "{f}");
        }
    }

    /// An input that fuzzing found (`fuzz/regressions/medical/`), without the fuzz
    /// target's selector byte.
    fn regression(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/medical")
            .join(name);
        std::fs::read(path).unwrap()[1..].to_vec()
    }

    #[test]
    fn a_length_past_the_end_is_refused_before_any_allocation() {
        let input = regression("huge-element-length.dcm.input");
        let err = check(&input).unwrap_err().to_string();
        assert!(err.contains("declares 2718593034 bytes"), "{err}");
        // Found by fuzzing: an element of another group inside the meta group made the
        // walk stop there (dicom-rs reads on by the group length), and the data set's
        // 4 GB element cost 4.2 GB of memory and 40 s.
        let input = regression("off-group-meta-element.dcm.input");
        let err = check(&input).unwrap_err().to_string();
        assert!(
            err.contains("(00AF,00CA) declares 4294966952 bytes"),
            "{err}"
        );
        // Found by fuzzing: an element with the unassigned VR "QS" was walked with the
        // short header, while dicom-rs reads an unknown VR as UN (long header) and so took
        // the next bytes as a length: 4.2 GB of memory for a 2.5 KB file.
        let input = regression("unknown-vr-long-length.dcm.input");
        let err = check(&input).unwrap_err().to_string();
        assert!(err.contains("declares"), "{err}");
        // A truncated file: the pixel data declares more than is left.
        let mut cut = testdata("MR_small.dcm");
        cut.truncate(cut.len() - 100);
        let err = check(&cut).unwrap_err().to_string();
        assert!(
            err.contains("declares") && err.contains("follow in the file"),
            "{err}"
        );
    }
}
