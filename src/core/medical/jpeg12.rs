//! A decoder for 12-bit "JPEG Extended" streams (ITU T.81 process 4: sequential DCT with
//! Huffman coding; SOF1, or SOF0 declaring 12-bit precision), the frames of DICOM transfer
//! syntax 1.2.840.10008.1.2.4.51 (12-bit grey CT and MR). It exists because the
//! `jpeg-decoder` crate refuses 12-bit precision.
//!
//! Up to 3 components with sampling factors up to 2x2 are decoded, in one interleaved scan
//! or in several; subsampled components are upsampled by pixel replication and no colour
//! transform is applied. Progressive, lossless, hierarchical and arithmetic-coded streams,
//! other precisions and entropy-coded data that ends early are refused.

use std::ops::Range;
use std::sync::LazyLock;

use anyhow::{Context, Result, bail, ensure};

/// A decoded 12-bit JPEG frame: samples row-major, components interleaved.
pub(crate) struct Decoded {
    /// Samples per row.
    pub(crate) width: u32,
    /// Rows.
    pub(crate) height: u32,
    /// Components per pixel (1 to 3).
    pub(crate) components: u8,
    /// `width * height * components` values in 0..=4095, the components as coded.
    pub(crate) samples: Vec<u16>,
}

/// The most samples a frame may decode to (512 MiB of output).
const MAX_SAMPLES: usize = 1 << 28;

/// The natural (row-major) index of each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The 1-D IDCT basis: `BASIS[x][u] = C(u) / 2 * cos((2x + 1) u pi / 16)`, C(0) = 1/sqrt(2).
static BASIS: LazyLock<[[f32; 8]; 8]> = LazyLock::new(|| {
    std::array::from_fn(|x| {
        std::array::from_fn(|u| {
            let c = if u == 0 { 0.5f64.sqrt() } else { 1.0 };
            let angle = (2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0;
            (c / 2.0 * angle.cos()) as f32
        })
    })
});

/// Whether `jpeg` is a sequential DCT stream with 12-bit precision (SOF1 or SOF0 marker
/// with P=12) — cheap marker scan.
pub(crate) fn is_12_bit(jpeg: &[u8]) -> bool {
    let mut pos = 2;
    while jpeg.starts_with(&[0xFF, 0xD8]) {
        match segment(jpeg, pos) {
            Ok((0xC0 | 0xC1, body, _)) => return body.first() == Some(&12),
            Ok((marker, _, next)) if !is_frame(marker) && marker != 0xDA => pos = next,
            _ => break,
        }
    }
    false
}

/// Whether `marker` is a start of frame (SOF0 to SOF15; not DHT, JPG or DAC).
fn is_frame(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// The marker at or after `pos` (skipping stray and fill bytes), its segment's body (empty
/// for a marker without one) and the position after it.
fn segment(jpeg: &[u8], mut pos: usize) -> Result<(u8, &[u8], usize)> {
    while jpeg.get(pos).is_some_and(|&b| b != 0xFF) || jpeg.get(pos + 1) == Some(&0xFF) {
        pos += 1;
    }
    let marker = part(jpeg, pos..pos + 2)?[1];
    if matches!(marker, 0x01 | 0xD0..=0xD9) {
        return Ok((marker, &[], pos + 2));
    }
    let end = pos + 2 + be16(jpeg, pos + 2)?;
    Ok((marker, part(jpeg, pos + 4..end)?, end))
}

/// The bytes of `range` in `b`.
fn part(b: &[u8], range: Range<usize>) -> Result<&[u8]> {
    b.get(range).context("JPEG data cut short")
}

/// The big-endian 16-bit number at `at` in `b`.
fn be16(b: &[u8], at: usize) -> Result<usize> {
    let b = part(b, at..at + 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

/// One component of the frame and its decoded plane (whole MCUs; empty until scanned).
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    plane: Vec<u16>,
}

/// The frame header: size, largest sampling factors and components.
struct Frame {
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    comps: Vec<Component>,
}

impl Frame {
    /// The row length of component `c`'s plane.
    fn stride(&self, c: &Component) -> usize {
        self.width.div_ceil(8 * self.hmax) * c.h * 8
    }
}

/// A Huffman table in canonical form: per code length, the first code, the number of
/// codes and the index of the first one's value.
#[derive(Default)]
struct Huffman {
    first: [i32; 17],
    count: [i32; 17],
    offset: [usize; 17],
    values: Vec<u8>,
}

/// The tables and restart interval in force.
#[derive(Default)]
struct Tables {
    quant: [Option<[f32; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    interval: usize,
}

/// Decodes one 12-bit sequential Huffman DCT JPEG stream.
pub(crate) fn decode(jpeg: &[u8]) -> Result<Decoded> {
    ensure!(jpeg.starts_with(&[0xFF, 0xD8]), "not a JPEG stream");
    let (mut t, mut frame, mut pos) = (Tables::default(), None, 2);
    loop {
        let (marker, body, next) = segment(jpeg, pos)?;
        pos = next;
        match marker {
            0xC0 | 0xC1 => {
                ensure!(frame.is_none(), "JPEG stream of more than one frame");
                frame = Some(read_frame(body, jpeg.len())?);
            }
            _ if is_frame(marker) => {
                let kind = ["hierarchical or arithmetic", "progressive", "lossless"];
                let kind = kind[usize::from(marker & 3) - 1];
                bail!("{kind} JPEG (SOF{}) is not supported", marker - 0xC0)
            }
            0xC4 => read_huffman(body, &mut t)?,
            0xDB => read_quant(body, &mut t)?,
            0xDD => t.interval = be16(body, 0)?,
            0xDA => {
                let f = frame.as_mut().context("JPEG scan before its frame")?;
                let mut bits = Bits {
                    data: jpeg,
                    pos,
                    byte: 0,
                    left: 0,
                };
                scan(body, f, &t, &mut bits)?;
                pos = bits.pos;
            }
            0xD9 => break,
            0xD0..=0xD8 => bail!("unexpected JPEG marker FF{marker:02X}"),
            _ => {} // APPn, COM and others.
        }
    }
    let f = frame.context("JPEG stream without a frame")?;
    let strides: Vec<usize> = f.comps.iter().map(|c| f.stride(c)).collect();
    let mut samples = Vec::with_capacity(f.width * f.height * f.comps.len());
    for y in 0..f.height {
        for x in 0..f.width {
            for (c, stride) in f.comps.iter().zip(&strides) {
                let at = y * c.v / f.vmax * stride + x * c.h / f.hmax;
                samples.push(*c.plane.get(at).context("JPEG component not coded")?);
            }
        }
    }
    let (width, height) = (f.width as u32, f.height as u32);
    let components = f.comps.len() as u8;
    Ok(Decoded {
        width,
        height,
        components,
        samples,
    })
}

/// Reads a SOF0/SOF1 segment.
fn read_frame(b: &[u8], stream_len: usize) -> Result<Frame> {
    let (p, n) = (part(b, 0..6)?[0], usize::from(b[5]));
    let (height, width) = (be16(b, 1)?, be16(b, 3)?);
    ensure!(p == 12, "JPEG precision {p} is not supported (only 12)");
    ensure!(matches!(n, 1..=3), "{n}-component JPEG is not supported");
    ensure!(width * height > 0, "JPEG of no width or height (DNL)");
    // A coded block takes at least 2 bits: a frame much larger than its data is corrupt.
    let fits = width * height * n <= MAX_SAMPLES && width * height <= 1024 * stream_len;
    ensure!(fits, "JPEG frame too large for its data");
    let mut comps: Vec<Component> = Vec::with_capacity(n);
    for c in part(b, 6..6 + 3 * n)?.chunks_exact(3) {
        let (id, h, v) = (c[0], usize::from(c[1] >> 4), usize::from(c[1] & 15));
        ensure!(matches!((h, v), (1..=2, 1..=2)), "JPEG sampling over 2x2");
        let unique = comps.iter().all(|o| o.id != id);
        ensure!(unique && c[2] < 4, "bad JPEG component {id}");
        let quant = c[2].into();
        comps.push(Component {
            id,
            h,
            v,
            quant,
            plane: Vec::new(),
        });
    }
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    Ok(Frame {
        width,
        height,
        hmax,
        vmax,
        comps,
    })
}

/// Reads a DHT segment (one or more tables).
fn read_huffman(mut b: &[u8], t: &mut Tables) -> Result<()> {
    while let [class_id, rest @ ..] = b {
        let counts = part(rest, 0..16)?;
        let total = counts.iter().map(|&c| usize::from(c)).sum::<usize>();
        let values = part(rest, 16..16 + total)?.to_vec();
        let mut h = Huffman {
            values,
            ..Huffman::default()
        };
        let (mut code, mut k) = (0, 0);
        for l in 1..=16 {
            (h.first[l], h.count[l], h.offset[l]) = (code, counts[l - 1].into(), k);
            (code, k) = (code + h.count[l], k + usize::from(counts[l - 1]));
            ensure!(code <= 1 << l, "bad JPEG Huffman table");
            code <<= 1;
        }
        match class_id {
            0..=3 => t.dc[usize::from(*class_id)] = Some(h),
            0x10..=0x13 => t.ac[usize::from(class_id & 3)] = Some(h),
            _ => bail!("bad JPEG Huffman table class or id {class_id:#04x}"),
        }
        b = &rest[16 + total..];
    }
    Ok(())
}

/// Reads a DQT segment (8- or 16-bit tables, kept in zigzag order).
fn read_quant(mut b: &[u8], t: &mut Tables) -> Result<()> {
    while let [precision_id, rest @ ..] = b {
        let (wide, id) = (precision_id >> 4, usize::from(precision_id & 15));
        ensure!(wide <= 1 && id < 4, "bad JPEG quantisation table");
        let table = part(rest, 0..64 << wide)?;
        t.quant[id] = Some(std::array::from_fn(|k| match wide {
            1 => f32::from(u16::from_be_bytes([table[2 * k], table[2 * k + 1]])),
            _ => f32::from(table[k]),
        }));
        b = &rest[64 << wide..];
    }
    Ok(())
}

/// Decodes the scan of SOS segment `b`, whose data `bits` holds, into the frame's planes.
fn scan(b: &[u8], f: &mut Frame, t: &Tables, bits: &mut Bits) -> Result<()> {
    let n = usize::from(*b.first().context("JPEG data cut short")?);
    ensure!((1..=f.comps.len()).contains(&n), "bad JPEG scan");
    let sequential = part(b, 1 + 2 * n..4 + 2 * n)? == [0, 63, 0];
    ensure!(sequential, "JPEG scan is not sequential DCT");
    let mut comps = Vec::with_capacity(n);
    for s in b[1..1 + 2 * n].chunks_exact(2) {
        let i = f.comps.iter().position(|c| c.id == s[0]);
        let i = i.context("JPEG scan of an unknown component")?;
        let dc = &t.dc[usize::from(s[1] >> 4) & 3];
        let ac = &t.ac[usize::from(s[1] & 3)];
        let (Some(dc), Some(ac), Some(q)) = (dc, ac, &t.quant[f.comps[i].quant]) else {
            bail!("JPEG scan without its Huffman or quantisation table");
        };
        let rows = f.height.div_ceil(8 * f.vmax) * f.comps[i].v * 8;
        f.comps[i].plane = vec![0; f.stride(&f.comps[i]) * rows];
        comps.push((i, dc, ac, q, 0i32));
    }
    // MCUs across and down; in a scan of one component, an MCU is one block.
    let (mx, my) = match comps[..] {
        [(i, ..)] => {
            let c = &f.comps[i];
            let w = (f.width * c.h).div_ceil(f.hmax);
            (w.div_ceil(8), (f.height * c.v).div_ceil(f.vmax).div_ceil(8))
        }
        _ => (f.width.div_ceil(8 * f.hmax), f.height.div_ceil(8 * f.vmax)),
    };
    for m in 0..mx * my {
        if t.interval > 0 && m > 0 && m % t.interval == 0 {
            bits.restart((m / t.interval - 1) % 8)?;
            comps.iter_mut().for_each(|c| c.4 = 0);
        }
        for (i, dc, ac, q, pred) in &mut comps {
            let stride = f.stride(&f.comps[*i]);
            let c = &mut f.comps[*i];
            let (bh, bv) = if n == 1 { (1, 1) } else { (c.h, c.v) };
            for b in 0..bh * bv {
                let mut coef = [0.0f32; 64];
                let size = bits.huffman(dc)?;
                ensure!(size <= 15, "bad JPEG DC difference size");
                *pred = pred.wrapping_add(bits.receive(size)?);
                coef[0] = *pred as f32 * q[0];
                let mut k = 1;
                while k < 64 {
                    let rs = bits.huffman(ac)?;
                    if rs & 15 == 0 && rs != 0xF0 {
                        break; // End of block.
                    }
                    k += usize::from(rs >> 4);
                    ensure!(k < 64, "bad JPEG AC run");
                    coef[usize::from(ZIGZAG[k])] = bits.receive(rs & 15)? as f32 * q[k];
                    k += 1;
                }
                let (x, y) = ((m % mx * bh + b % bh) * 8, (m / mx * bv + b / bh) * 8);
                idct(&coef, &mut c.plane[y * stride + x..], stride);
            }
        }
    }
    Ok(())
}

/// Entropy-coded data, read bit by bit with stuffed zero bytes dropped.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    byte: u8,
    left: u8,
}

impl Bits<'_> {
    /// The next bit; an error at a marker or at the end of the data.
    fn bit(&mut self) -> Result<i32> {
        if self.left == 0 {
            let b = part(self.data, self.pos..self.pos + 1)?[0];
            self.pos += 1;
            if b == 0xFF {
                let stuffed = self.data.get(self.pos) == Some(&0);
                ensure!(stuffed, "JPEG scan data ends early");
                self.pos += 1;
            }
            (self.byte, self.left) = (b, 8);
        }
        self.left -= 1;
        Ok(i32::from(self.byte >> self.left) & 1)
    }

    /// The next value coded with Huffman table `h`.
    fn huffman(&mut self, h: &Huffman) -> Result<u8> {
        let mut code = 0;
        for l in 1..=16 {
            code = code << 1 | self.bit()?;
            let i = code - h.first[l];
            if (0..h.count[l]).contains(&i) {
                return Ok(h.values[h.offset[l] + i as usize]);
            }
        }
        bail!("bad JPEG Huffman code")
    }

    /// The next `size`-bit value, sign-extended (T.81 RECEIVE and EXTEND).
    fn receive(&mut self, size: u8) -> Result<i32> {
        let mut v = 0;
        for _ in 0..size {
            v = v << 1 | self.bit()?;
        }
        let half = (1 << size) >> 1;
        Ok(if v < half { v - 2 * half + 1 } else { v })
    }

    /// Drops the bits left of the byte and reads restart marker RSTn.
    fn restart(&mut self, n: usize) -> Result<()> {
        self.left = 0;
        while self.data.get(self.pos..self.pos + 2) == Some(&[0xFF, 0xFF]) {
            self.pos += 1;
        }
        let found = self.data.get(self.pos..self.pos + 2) == Some(&[0xFF, 0xD0 + n as u8]);
        ensure!(found, "JPEG restart marker RST{n} missing");
        self.pos += 2;
        Ok(())
    }
}

/// Inverse DCT of `coef` (natural order), level-shifted, rounded and clamped to 12 bits,
/// into the 8x8 block at the start of `out` (rows `stride` apart).
fn idct(coef: &[f32; 64], out: &mut [u16], stride: usize) {
    let mut rows = [[0.0f32; 8]; 8];
    for (y, row) in rows.iter_mut().enumerate() {
        for (u, r) in row.iter_mut().enumerate() {
            *r = (0..8).map(|v| BASIS[y][v] * coef[v * 8 + u]).sum();
        }
    }
    for (y, row) in rows.iter().enumerate() {
        for x in 0..8 {
            let s: f32 = (0..8).map(|u| BASIS[x][u] * row[u]).sum();
            out[y * stride + x] = (s + 2048.0).round().clamp(0.0, 4095.0) as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of a DC difference and an end of block, with the tables of `stream`: DC codes
    /// "0" (size 0) and "10" (size 10), AC code "0" (end of block).
    const PLUS_800: &str = "10 1100100000 0";
    const SAME: &str = "0 0";
    /// Frame markers and precisions.
    const SOF0: [u8; 2] = [0xC0, 12];
    const SOF1: [u8; 2] = [0xC1, 12];
    /// One component, sampling 1x1.
    const GREY: &[(u8, u8)] = &[(1, 0x11)];

    /// Bits ("0"/"1", spaces ignored) padded with 1s into bytes.
    fn pack(bits: &str) -> Vec<u8> {
        let mut bits: String = bits.split_whitespace().collect();
        bits.extend(std::iter::repeat_n('1', (8 - bits.len() % 8) % 8));
        let byte = |b: &[u8]| b.iter().fold(0, |a, c| a << 1 | (c - b'0'));
        bits.as_bytes().chunks(8).map(byte).collect()
    }

    /// A `w` x `h` stream with quantisation 1, the tables above and restart interval `ri`.
    fn stream(sof: [u8; 2], (w, h): (u8, u8), comps: &[(u8, u8)], ri: u8, data: &[u8]) -> Vec<u8> {
        let n = comps.len() as u8;
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 0xFF, 0xDB, 0, 67, 0];
        s.extend([1; 64]);
        s.extend([0xFF, 0xC4, 0, 39, 0x00, 1, 1].iter().chain(&[0; 14]));
        s.extend([0, 10, 0x10, 1].iter().chain(&[0; 15]).chain(&[0]));
        s.extend([0xFF, sof[0], 0, 8 + 3 * n, sof[1], 0, h, 0, w, n]);
        s.extend(comps.iter().flat_map(|&(id, hv)| [id, hv, 0]));
        s.extend([0xFF, 0xDD, 0, 4, 0, ri, 0xFF, 0xDA, 0, 6 + 2 * n, n]);
        s.extend(comps.iter().flat_map(|&(id, _)| [id, 0]));
        s.extend([0, 63, 0].iter().chain(data).chain(&[0xFF, 0xD9]));
        s
    }

    /// The message of `decode`'s error.
    fn error(jpeg: &[u8]) -> String {
        decode(jpeg).err().expect("an error").to_string()
    }

    #[test]
    fn one_dc_block_decodes_flat() {
        let jpeg = stream(SOF1, (8, 8), GREY, 0, &pack(PLUS_800));
        assert!(is_12_bit(&jpeg));
        let d = decode(&jpeg).unwrap();
        assert_eq!((d.width, d.height, d.components), (8, 8, 1));
        assert_eq!(d.samples, vec![2148; 64]);
    }

    #[test]
    fn stuffed_bytes_and_dc_prediction() {
        // Differences -1023 and +1023: the second block's bits hold 0xFF, stuffed with 0x00.
        let jpeg = stream(SOF0, (16, 8), GREY, 0, &[0x80, 5, 0xFF, 0, 0xBF]);
        assert!(is_12_bit(&jpeg));
        let d = decode(&jpeg).unwrap();
        assert_eq!(d.samples, [[1920; 8], [2048; 8]].repeat(8).concat());
    }

    #[test]
    fn restart_markers_reset_prediction() {
        let mut data = pack(&format!("{PLUS_800} {PLUS_800}"));
        let jpeg = stream(SOF1, (16, 8), GREY, 0, &data);
        assert_eq!(decode(&jpeg).unwrap().samples[7..9], [2148, 2248]);
        data = pack(PLUS_800);
        data.extend([0xFF, 0xFF, 0xD0].iter().chain(&pack(PLUS_800)));
        let jpeg = stream(SOF1, (16, 8), GREY, 1, &data);
        assert_eq!(decode(&jpeg).unwrap().samples, vec![2148; 128]);
        data[4] = 0xD1;
        assert!(error(&stream(SOF1, (16, 8), GREY, 1, &data)).contains("RST0"));
    }

    #[test]
    fn subsampled_components_are_replicated() {
        // Y blocks 2148, 2248, 2348, 2448 (left to right, top to bottom); Cb 1948; Cr 2048.
        let bits = format!("{0} {0} {0} {0} 10 0011011111 0 {SAME}", PLUS_800);
        let comps = [(1, 0x22), (2, 0x11), (3, 0x11)];
        let d = decode(&stream(SOF1, (16, 16), &comps, 0, &pack(&bits))).unwrap();
        assert_eq!((d.components, d.samples.len()), (3, 16 * 16 * 3));
        for (x, y, luma) in [(0, 0, 2148), (15, 0, 2248), (0, 15, 2348), (15, 15, 2448)] {
            assert_eq!(d.samples[(y * 16 + x) * 3..][..3], [luma, 1948, 2048]);
        }
    }

    #[test]
    fn refusals_are_errors() {
        let data = pack(PLUS_800);
        let refused = [([0xC2, 12], "progressive"), ([0xC3, 12], "lossless")];
        for (sof, want) in refused.into_iter().chain([([0xC1, 8], "precision 8")]) {
            let jpeg = stream(sof, (8, 8), GREY, 0, &data);
            assert!(!is_12_bit(&jpeg));
            assert!(error(&jpeg).contains(want));
        }
        let four = [(1, 0x11), (2, 0x11), (3, 0x11), (4, 0x11)];
        assert!(error(&stream(SOF1, (8, 8), &four, 0, &data)).contains("4-component"));
        let jpeg = stream(SOF1, (16, 8), GREY, 0, &pack(&format!("{PLUS_800} {SAME}")));
        for end in 0..jpeg.len() {
            assert!(decode(&jpeg[..end]).is_err(), "cut at {end}");
        }
        assert!(!is_12_bit(b"not a jpeg") && !is_12_bit(&[0xFF, 0xD8, 0xFF]));
    }
}
