//! Benchmark contamination: benchmark images inside a training set (`mt inspect TRAIN...
//! --against BENCH...`).
//!
//! Every image gets a perceptual hash: a 32x32 grey thumbnail (box averages of the
//! decoded image; JPEGs are decoded at a reduced DCT scale first, which is what makes a
//! million training images a matter of minutes) hashed by `image_hasher`'s pHash (DCT,
//! 8x8 low frequencies against their median: 64 bits). A training image whose hash is
//! within [`NEAR_BITS`] bits of a benchmark image's (of the whole picture, or of its
//! centre without 5% of each side, for cropped copies) is a candidate; it is then decoded
//! fully, and is an **exact** copy when its pixels (RGB, 8 bits) equal the benchmark
//! image's, whatever the file bytes, else a **near** copy (re-encoded, resized, slightly
//! cropped). Benchmark images with identical pixels count once. A flat picture (its
//! thumbnail's grey levels within [`FLAT_LEVELS`] of their mean) has no structure for
//! the hash to describe, so it matches only exactly.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use image::{GrayImage, ImageBuffer, Luma};
use image_hasher::{HashAlg, Hasher, HasherConfig};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::core::data::inputs::{self, Role};
use crate::core::data::sample::ImageRef;
use crate::core::data::{Dataset, Flow, ReadOptions};
use crate::core::vqa::Bench;
use crate::core::vqa::questions::{self as vqa, LoadOptions};

/// The most pHash bits two images may differ by and still be a near copy. Chosen on the
/// real images of the tests (CT, MR, ultrasound, fundus, histology, cells, a phantom):
/// copies re-encoded as JPEG (quality 60-90) or resized (0.5x, 2x) differ by 2-6 bits, a
/// copy cropped by 5% on two sides by 10, by 8% and re-encoded by 16 (not caught);
/// unrelated images by 20 or more.
pub(crate) const NEAR_BITS: u32 = 12;

/// A thumbnail whose grey levels all lie this close to their mean is flat.
const FLAT_LEVELS: i32 = 2;

/// Side of the grey thumbnail the hash is taken from.
const THUMB: u32 = 32;

/// Share of each side a benchmark image's second hash leaves out.
const INSET: f64 = 0.05;

/// One `--against` argument: a path mt reads, or `BENCH[:SPLIT]=PATH` for a benchmark
/// in one of its released or hub layouts (split `test` unless named).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgainstSpec {
    /// The benchmark and split of a benchmark layout.
    pub bench: Option<(String, String)>,
    /// The data.
    pub path: String,
}

impl std::str::FromStr for AgainstSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((head, path)) = text.split_once('=') else {
            return Ok(AgainstSpec {
                bench: None,
                path: text.to_string(),
            });
        };
        let (bench, split) = head.split_once(':').unwrap_or((head, "test"));
        bench
            .parse::<Bench>()
            .map_err(|e| format!("`{head}`: {e:#}"))?;
        Ok(AgainstSpec {
            bench: Some((bench.to_string(), split.to_string())),
            path: path.to_string(),
        })
    }
}

/// A benchmark image, by its hash and pixels.
struct BenchImage {
    id: String,
    input: String,
    image: Option<String>,
    phashes: [u64; 2],
    flat: bool,
    pixels: [u8; 32],
}

/// How a training image matches a benchmark image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Exact,
    Near,
}

/// What the scan found, for the summary and `--json` (`contamination`).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    /// Training images whose pixels equal a benchmark image's.
    pub exact: u64,
    /// Training images within the threshold of a benchmark image, not exact.
    pub near: u64,
    /// Distinct benchmark images found in the training set.
    pub bench_images_found: u64,
    /// Distinct benchmark images (by pixels) compared against.
    pub bench_images: u64,
    /// Training images compared.
    pub train_images: u64,
    /// Images that could not be decoded (not compared), both sides.
    pub undecodable: u64,
    /// The near-copy threshold, in pHash bits.
    pub near_bits: u32,
    /// The file with one line per match.
    pub pairs: Option<PathBuf>,
}

/// The pHash hasher.
fn hasher() -> Hasher {
    HasherConfig::new()
        .hash_size(8, 8)
        .hash_alg(HashAlg::Median)
        .preproc_dct()
        .to_hasher()
}

/// The 64-bit perceptual hash of a grey picture, and whether the picture is flat.
fn phash(hasher: &Hasher, grey: &GrayImage) -> (u64, bool) {
    let thumb = box_average(grey);
    let hash = hasher.hash_image(&thumb);
    let b = hash.as_bytes();
    let mut word = [0u8; 8];
    word[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    (u64::from_le_bytes(word), is_flat(&thumb))
}

/// Whether every grey level of `thumb` is within [`FLAT_LEVELS`] of their mean.
fn is_flat(thumb: &GrayImage) -> bool {
    let n = thumb.len().max(1) as i64;
    let mean = (thumb.iter().map(|&v| i64::from(v)).sum::<i64>() / n) as i32;
    thumb
        .iter()
        .all(|&v| (i32::from(v) - mean).abs() <= FLAT_LEVELS)
}

/// Hashes of a benchmark image: the whole picture, and its centre without [`INSET`] of
/// each side (a training copy cropped at its edges is nearer that one); and whether the
/// picture is flat.
fn bench_hashes(hasher: &Hasher, grey: &GrayImage) -> ([u64; 2], bool) {
    let (w, h) = grey.dimensions();
    let (dx, dy) = ((w as f64 * INSET) as u32, (h as f64 * INSET) as u32);
    let centre = image::imageops::crop_imm(grey, dx, dy, w - 2 * dx, h - 2 * dy).to_image();
    let (whole, flat) = phash(hasher, grey);
    ([whole, phash(hasher, &centre).0], flat)
}

/// A grey picture of the image, small when it is a JPEG (decoded at the smallest DCT
/// scale that keeps at least 64 pixels a side).
fn grey(bytes: &[u8]) -> Result<GrayImage> {
    if bytes.starts_with(&[0xFF, 0xD8])
        && let Ok(grey) = jpeg_reduced(bytes)
    {
        return Ok(grey);
    }
    let img = image::load_from_memory(bytes).context("cannot decode the image")?;
    Ok(img.to_luma8())
}

/// A JPEG decoded at a reduced scale, as grey.
fn jpeg_reduced(bytes: &[u8]) -> Result<GrayImage> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info()?;
    let info = decoder.info().context("no JPEG header")?;
    let side = |v: u16| v.clamp(1, 64);
    decoder.scale(side(info.width), side(info.height))?;
    let pixels = decoder.decode()?;
    let info = decoder.info().context("no JPEG header")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let grey: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => pixels,
        jpeg_decoder::PixelFormat::L16 => pixels.chunks_exact(2).map(|c| c[0]).collect(),
        jpeg_decoder::PixelFormat::RGB24 => pixels.chunks_exact(3).map(luma).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => bail!("CMYK JPEG"),
    };
    ImageBuffer::from_raw(w, h, grey).context("JPEG size does not match its pixels")
}

/// Rec. 601 luma, as the image crate computes it.
fn luma(rgb: &[u8]) -> u8 {
    let [r, g, b] = [rgb[0], rgb[1], rgb[2]].map(u32::from);
    ((r * 2126 + g * 7152 + b * 722) / 10000) as u8
}

/// Averages `img` over a [`THUMB`] x [`THUMB`] grid of boxes.
fn box_average(img: &GrayImage) -> GrayImage {
    let (w, h) = img.dimensions();
    ImageBuffer::from_fn(THUMB, THUMB, |x, y| {
        let (x0, x1) = (x * w / THUMB, ((x + 1) * w / THUMB).max(x * w / THUMB + 1));
        let (y0, y1) = (y * h / THUMB, ((y + 1) * h / THUMB).max(y * h / THUMB + 1));
        let (mut sum, mut n) = (0u64, 0u64);
        for yy in y0..y1.min(h) {
            for xx in x0..x1.min(w) {
                sum += u64::from(img.get_pixel(xx, yy)[0]);
                n += 1;
            }
        }
        Luma([(sum / n.max(1)) as u8])
    })
}

/// SHA-256 of the image's size and 8-bit RGB pixels, fully decoded.
fn pixel_key(bytes: &[u8]) -> Result<[u8; 32]> {
    let rgb = image::load_from_memory(bytes)
        .context("cannot decode the image")?
        .to_rgb8();
    let mut h = Sha256::new();
    h.update(rgb.width().to_le_bytes());
    h.update(rgb.height().to_le_bytes());
    h.update(rgb.as_raw());
    Ok(h.finalize().into())
}

/// A benchmark image's two hashes and flatness (see [`bench_hashes`]), and its pixel key.
type BenchPrint = (([u64; 2], bool), [u8; 32]);

/// One image to fingerprint: where it is from, and its bytes.
struct Item<'a> {
    id: String,
    input: String,
    row: Option<u64>,
    image: Option<String>,
    bytes: Cow<'a, [u8]>,
}

/// The images of every `--against` argument, one entry per distinct picture.
fn load_bench(specs: &[AgainstSpec], undecodable: &mut u64) -> Result<Vec<BenchImage>> {
    let hasher = hasher();
    let mut images: Vec<BenchImage> = Vec::new();
    let mut seen: HashMap<[u8; 32], usize> = HashMap::new();
    let mut add = |items: Vec<Item<'_>>, undecodable: &mut u64| {
        let done: Vec<Result<BenchPrint>> = items
            .par_iter()
            .map(|it| {
                let hashes = bench_hashes(&hasher, &grey(&it.bytes)?);
                Ok((hashes, pixel_key(&it.bytes)?))
            })
            .collect();
        for (item, result) in items.into_iter().zip(done) {
            let Ok(((phashes, flat), pixels)) = result else {
                *undecodable += 1;
                continue;
            };
            if seen.insert(pixels, images.len()).is_none() {
                images.push(BenchImage {
                    id: item.id,
                    input: item.input,
                    image: item.image,
                    phashes,
                    flat,
                    pixels,
                });
            }
        }
    };
    for spec in specs {
        match &spec.bench {
            Some((bench, split)) => {
                let bench: Bench = bench.parse()?;
                let opts = LoadOptions {
                    all_languages: false,
                    image_folder: None,
                };
                let loaded = vqa::load(bench, Path::new(&spec.path), split, &opts)
                    .with_context(|| format!("--against {}", spec.path))?;
                let mut by_image: HashMap<String, usize> = HashMap::new();
                let mut items = Vec::new();
                for q in &loaded.questions {
                    let label = q.image.label().to_string();
                    if by_image.insert(label.clone(), items.len()).is_some() {
                        continue;
                    }
                    match q.image.bytes() {
                        Ok(bytes) => items.push(Item {
                            id: format!("{}:{split}:{label}", bench.name()),
                            input: spec.path.clone(),
                            row: None,
                            image: Some(label),
                            bytes,
                        }),
                        Err(_) => *undecodable += 1,
                    }
                }
                add(items, undecodable);
            }
            None => {
                let read = ReadOptions {
                    columns: None,
                    batch_rows: 256,
                };
                let resolved = inputs::resolve(std::slice::from_ref(&spec.path), None)
                    .with_context(|| format!("--against {}", spec.path))?;
                let (dataset, failures) = Dataset::open(resolved, &read);
                if let Some((_, e)) = failures.first() {
                    bail!("--against {}: {e:#}", spec.path);
                }
                for_each_image(&dataset, &read, &mut |items| {
                    add(items, undecodable);
                    Ok(())
                })?;
            }
        }
    }
    Ok(images)
}

/// Calls `f` with the images of each batch of `dataset` (records with image bytes).
fn for_each_image(
    dataset: &Dataset,
    read: &ReadOptions,
    f: &mut dyn FnMut(Vec<Item<'_>>) -> Result<()>,
) -> Result<()> {
    for unit in dataset.units(&[], 1) {
        let input = &dataset.inputs[unit.input];
        if input.role == Role::ImageShard {
            continue;
        }
        let mut fatal = None;
        dataset.read(&unit, read, &mut |batch| {
            let Ok(batch) = batch else {
                return Flow::Continue; // mt inspect's own pass reports the input
            };
            let items = (0..batch.len())
                .filter_map(|i| {
                    let image = batch.image(i);
                    let name = match &image {
                        ImageRef::Bytes { path, .. } => path.map(str::to_string),
                        ImageRef::File(p) => Some(p.to_string_lossy().into_owned()),
                        _ => None,
                    };
                    let bytes = image.bytes().ok()?;
                    Some(Item {
                        id: batch.id(i).into_owned(),
                        input: input.display(),
                        row: Some(batch.first_row + i as u64),
                        image: name,
                        bytes: Cow::Owned(bytes.into_owned()),
                    })
                })
                .collect();
            match f(items) {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    fatal = Some(e);
                    Flow::Stop
                }
            }
        })?;
        if let Some(e) = fatal {
            return Err(e);
        }
    }
    Ok(())
}

/// Benchmark images one of whose hashes is within `bits` of `hash`, with the smaller
/// distance.
fn near(hashes: &[[u64; 2]], hash: u64, bits: u32) -> Vec<(usize, u32)> {
    let mut d = vec![0u8; hashes.len()];
    distances(hashes, hash, &mut d);
    d.iter()
        .enumerate()
        .filter(|&(_, &d)| u32::from(d) <= bits)
        .map(|(i, &d)| (i, u32::from(d)))
        .collect()
}

/// The Hamming distance of `hash` to the nearer of each pair, into `out` (a branch-free
/// loop the compiler vectorises: a million training images against ten thousand
/// benchmark images are 2e10 of these).
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn distances(hashes: &[[u64; 2]], hash: u64, out: &mut [u8]) {
    for (o, [a, b]) in out.iter_mut().zip(hashes) {
        *o = (a ^ hash).count_ones().min((b ^ hash).count_ones()) as u8;
    }
}

/// Compares every training image of `dataset` with the `--against` images; writes one
/// JSON line per match into `pairs` (when given).
pub(crate) fn scan(
    dataset: &Dataset,
    against: &[AgainstSpec],
    pairs: Option<&Path>,
) -> Result<Summary> {
    let mut summary = Summary {
        near_bits: NEAR_BITS,
        pairs: pairs.map(Path::to_path_buf),
        ..Summary::default()
    };
    let bench = load_bench(against, &mut summary.undecodable)?;
    if bench.is_empty() {
        return Err(anyhow!(
            "--against: no decodable benchmark images in {}",
            against
                .iter()
                .map(|a| a.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    summary.bench_images = bench.len() as u64;
    let hashes: Vec<[u64; 2]> = bench.iter().map(|b| b.phashes).collect();
    let mut out = match pairs {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        )),
        None => None,
    };
    let mut found = vec![false; bench.len()];
    let hasher = hasher();
    let read = ReadOptions {
        columns: None,
        batch_rows: 512,
    };
    for_each_image(dataset, &read, &mut |items| {
        let matched: Vec<Option<Vec<(usize, u32, Kind)>>> = items
            .par_iter()
            .map(|it| {
                let (hash, flat) = phash(&hasher, &grey(&it.bytes).ok()?);
                let candidates = near(&hashes, hash, NEAR_BITS);
                if candidates.is_empty() {
                    return Some(Vec::new());
                }
                let pixels = pixel_key(&it.bytes).ok();
                Some(
                    candidates
                        .into_iter()
                        .filter_map(|(b, d)| {
                            if pixels == Some(bench[b].pixels) {
                                Some((b, d, Kind::Exact))
                            } else {
                                (!flat && !bench[b].flat).then_some((b, d, Kind::Near))
                            }
                        })
                        .collect(),
                )
            })
            .collect();
        for (item, matches) in items.iter().zip(matched) {
            let Some(matches) = matches else {
                summary.undecodable += 1;
                continue;
            };
            summary.train_images += 1;
            let best = matches
                .iter()
                .map(|m| m.2)
                .min_by_key(|k| *k != Kind::Exact);
            match best {
                Some(Kind::Exact) => summary.exact += 1,
                Some(Kind::Near) => summary.near += 1,
                None => {}
            }
            for (b, distance, kind) in matches {
                found[b] = true;
                if let Some(out) = &mut out {
                    let bench = &bench[b];
                    let line = json!({
                        "kind": kind,
                        "distance": distance,
                        "train": {"id": item.id, "input": item.input, "row": item.row, "image": item.image},
                        "bench": {"id": bench.id, "input": bench.input, "image": bench.image},
                    });
                    serde_json::to_writer(&mut *out, &line)?;
                    out.write_all(b"\n")?;
                }
            }
        }
        Ok(())
    })?;
    if let Some(mut out) = out {
        out.flush()?;
    }
    summary.bench_images_found = found.iter().filter(|f| **f).count() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn against_specs_name_benchmarks_or_paths() {
        let plain: AgainstSpec = "data/bench.parquet".parse().unwrap();
        assert_eq!(plain.bench, None);
        let rad: AgainstSpec = "vqa-rad=data/VQA_RAD".parse().unwrap();
        assert_eq!(rad.bench, Some(("vqa-rad".into(), "test".into())));
        assert_eq!(rad.path, "data/VQA_RAD");
        let slake: AgainstSpec = "slake:train=x".parse().unwrap();
        assert_eq!(slake.bench, Some(("slake".into(), "train".into())));
        assert!("mimic=x".parse::<AgainstSpec>().is_err());
    }

    #[test]
    fn near_finds_hashes_within_the_bits() {
        let hashes = [[0u64, 0xFFFF], [0xFF, 0xFF], [u64::MAX, u64::MAX << 32]];
        assert_eq!(near(&hashes, 0x1, 8), vec![(0, 1), (1, 7)]);
        assert_eq!(near(&hashes, u64::MAX, 0), vec![(2, 0)]);
        assert_eq!(
            near(&hashes, 0xFFFF, 0),
            vec![(0, 0)],
            "the centre's hash counts"
        );
    }

    #[test]
    fn flat_pictures_are_told_apart_from_structured_ones() {
        assert!(is_flat(&ImageBuffer::from_pixel(32, 32, Luma([90u8]))));
        let ramp = ImageBuffer::from_fn(32, 32, |x, _| Luma([(x * 8) as u8]));
        assert!(!is_flat(&ramp));
    }

    #[test]
    fn box_averages_cover_every_pixel_once() {
        let img = ImageBuffer::from_fn(64, 64, |x, _| Luma([if x < 32 { 0 } else { 200 }]));
        let t = box_average(&img);
        assert_eq!(t.dimensions(), (THUMB, THUMB));
        assert_eq!((t.get_pixel(0, 0)[0], t.get_pixel(31, 31)[0]), (0, 200));
        let tiny = ImageBuffer::from_pixel(3, 2, Luma([9u8]));
        assert!(box_average(&tiny).pixels().all(|p| p[0] == 9));
    }
}
