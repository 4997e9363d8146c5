//! Benchmark contamination: benchmark images inside a training set (`mt inspect TRAIN...
//! --against BENCH...`).
//!
//! Every image gets a perceptual hash: a 32x32 grey thumbnail (box averages of the
//! decoded image; JPEGs are decoded at a reduced DCT scale first, which is what makes a
//! million training images a matter of minutes) hashed by `image_hasher`'s pHash (DCT,
//! 8x8 low frequencies against their median: 64 bits). A training image whose hash is
//! within `NEAR_BITS` bits of one of a benchmark image's views (the whole picture, its
//! centre without 5% of each side, and the four pictures without 5% of two adjacent
//! sides, for cropped copies) is a candidate; it is then decoded
//! fully, and is an **exact** copy when its pixels (RGB, 8 bits) equal the benchmark
//! image's, whatever the file bytes, else a **near** copy (re-encoded, resized, slightly
//! cropped) when the details of the two thumbnails (levels minus their 3x3 mean) also
//! correlate (Pearson, best over shifts of up to 2 thumbnail pixels) at
//! `MIN_CORRELATION` or more: 64-bit hashes of a million images against ten thousand
//! collide by chance, detailed thumbnails that correlate do not. Benchmark images with
//! identical pixels count once. A flat picture (its thumbnail's grey levels within
//! `FLAT_LEVELS` of their mean) has no structure for the hash to describe, so it
//! matches only exactly.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use image::{GrayImage, ImageBuffer, Luma};
use image_hasher::{HashAlg, Hasher, HasherConfig};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::core::convert::each_batch;
use crate::core::data::inputs::{self, Role};
use crate::core::data::sample::ImageRef;
use crate::core::data::{Dataset, ReadOptions};
use crate::core::vqa::Bench;
use crate::core::vqa::questions::{self as vqa, LoadOptions};

/// The most pHash bits a training image may differ by from one of a benchmark image's
/// views and still be a candidate. Measured (bench/contamination.sh and the tests' real
/// images): re-encoded and resized copies differ by 0-2 bits, copies cropped by 5% on
/// one or two sides by 0-6 (their view), unrelated images that pass the thumbnail
/// check by 10 or more.
pub(crate) const NEAR_BITS: u32 = 8;

/// A thumbnail whose grey levels all lie this close to their mean is flat.
const FLAT_LEVELS: i32 = 2;

/// Side of the grey thumbnail the hash is taken from.
const THUMB: u32 = 32;

/// The least correlation of a near copy's thumbnail with one of the benchmark image's
/// views: the hash finds candidates, the thumbnails confirm them. Measured on the
/// [`detail`] of the thumbnails: re-encoded and resized copies 0.94-1.0, cropped ones
/// 0.92-1.0; unrelated pairs within the hash's reach at most 0.91 (one in 100,000
/// synthetic pictures, at 10 bits), nearly all under 0.84.
const MIN_CORRELATION: f64 = 0.9;

/// Thumbnail pixels (of [`THUMB`]) the confirming correlation may shift by.
const SHIFT: i64 = 2;

/// Share of a side the cropped [`VIEWS`] of a benchmark image leave out.
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
    prints: [Print; VIEWS],
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

/// What an image is compared by: its thumbnail, the thumbnail's 64-bit perceptual hash,
/// and whether it is flat.
struct Print {
    hash: u64,
    /// [`detail`] of the thumbnail.
    detail: Vec<f64>,
    flat: bool,
}

/// The print of a grey picture.
fn print(hasher: &Hasher, grey: &GrayImage) -> Print {
    let thumb = box_average(grey);
    let hash = hasher.hash_image(&thumb);
    let b = hash.as_bytes();
    let mut word = [0u8; 8];
    word[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    Print {
        hash: u64::from_le_bytes(word),
        flat: is_flat(&thumb),
        detail: detail(&thumb),
    }
}

/// The best Pearson correlation of two thumbnails' [`detail`] over shifts of up to
/// [`SHIFT`] pixels either way (a copy cropped on one side is a shifted, slightly scaled
/// picture); 0 where either is constant over the overlap.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let side = THUMB as i64;
    let mut best = f64::MIN;
    for dy in -SHIFT..=SHIFT {
        for dx in -SHIFT..=SHIFT {
            let (x0, x1) = (dx.max(0), side + dx.min(0));
            let (y0, y1) = (dy.max(0), side + dy.min(0));
            let pairs = (y0..y1).flat_map(|y| {
                (x0..x1).map(move |x| {
                    let p = a[(y * side + x) as usize];
                    let q = b[((y - dy) * side + x - dx) as usize];
                    (p, q)
                })
            });
            best = best.max(pearson(pairs));
        }
    }
    best
}

/// The detail of a thumbnail: each level minus the mean of its 3x3 neighbourhood (edges
/// clamped), so that correlation compares structure, not the smooth shading most
/// pictures share.
fn detail(thumb: &GrayImage) -> Vec<f64> {
    let side = THUMB as i64;
    let at = |x: i64, y: i64| {
        let (x, y) = (x.clamp(0, side - 1) as u32, y.clamp(0, side - 1) as u32);
        f64::from(thumb.get_pixel(x, y)[0])
    };
    (0..side)
        .flat_map(|y| (0..side).map(move |x| (x, y)))
        .map(|(x, y)| {
            let around: f64 = (-1..=1)
                .flat_map(|j| (-1..=1).map(move |i| (i, j)))
                .map(|(i, j)| at(x + i, y + j))
                .sum();
            at(x, y) - around / 9.0
        })
        .collect()
}

/// Pearson correlation of paired values (0 when either side is constant).
fn pearson(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let (mut n, mut sa, mut sb) = (0.0f64, 0.0, 0.0);
    for (x, y) in pairs.clone() {
        (n, sa, sb) = (n + 1.0, sa + x, sb + y);
    }
    let (ma, mb) = (sa / n.max(1.0), sb / n.max(1.0));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        let (x, y) = (x - ma, y - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Whether every grey level of `thumb` is within [`FLAT_LEVELS`] of their mean.
fn is_flat(thumb: &GrayImage) -> bool {
    let n = thumb.len().max(1) as i64;
    let mean = (thumb.iter().map(|&v| i64::from(v)).sum::<i64>() / n) as i32;
    thumb
        .iter()
        .all(|&v| (i32::from(v) - mean).abs() <= FLAT_LEVELS)
}

/// Views of a benchmark image that are printed: the whole picture, its centre without
/// [`INSET`] of each side, and the four pictures without [`INSET`] of two adjacent sides
/// (a training copy cropped at its edges is nearer one of those).
const VIEWS: usize = 6;

/// Prints of a benchmark image's [`VIEWS`].
fn bench_prints(hasher: &Hasher, grey: &GrayImage) -> [Print; VIEWS] {
    let (w, h) = grey.dimensions();
    let (dx, dy) = ((w as f64 * INSET) as u32, (h as f64 * INSET) as u32);
    let view = |x: u32, y: u32, cw: u32, ch: u32| {
        let part = image::imageops::crop_imm(grey, x, y, cw, ch).to_image();
        print(hasher, &part)
    };
    let (cw, ch) = (w - dx, h - dy);
    [
        print(hasher, grey),
        view(dx, dy, w - 2 * dx, h - 2 * dy),
        view(0, 0, cw, ch),
        view(dx, 0, cw, ch),
        view(0, dy, cw, ch),
        view(dx, dy, cw, ch),
    ]
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

/// Luma with the weights the image crate's `to_luma8` uses (Rec. 709), so a reduced JPEG
/// and a fully decoded picture give the same grey.
fn luma(rgb: &[u8]) -> u8 {
    let [r, g, b] = [rgb[0], rgb[1], rgb[2]].map(u32::from);
    ((r * 2126 + g * 7152 + b * 722) / 10000) as u8
}

/// Averages `img` over a [`THUMB`] x [`THUMB`] grid of boxes.
fn box_average(img: &GrayImage) -> GrayImage {
    let (w, h) = (u64::from(img.width()), u64::from(img.height()));
    let span = |i: u32, len: u64| {
        let (i, t) = (u64::from(i), u64::from(THUMB));
        let start = i * len / t;
        (start, ((i + 1) * len / t).max(start + 1).min(len))
    };
    ImageBuffer::from_fn(THUMB, THUMB, |x, y| {
        let ((x0, x1), (y0, y1)) = (span(x, w), span(y, h));
        let (mut sum, mut n) = (0u64, 0u64);
        for yy in y0..y1 {
            for xx in x0..x1 {
                sum += u64::from(img.get_pixel(xx as u32, yy as u32)[0]);
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
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut add = |items: Vec<Item<'_>>, undecodable: &mut u64| {
        let done: Vec<Result<([Print; VIEWS], [u8; 32])>> = items
            .par_iter()
            .map(|it| {
                let prints = bench_prints(&hasher, &grey(&it.bytes)?);
                Ok((prints, pixel_key(&it.bytes)?))
            })
            .collect();
        for (item, result) in items.into_iter().zip(done) {
            let Ok((prints, pixels)) = result else {
                *undecodable += 1;
                continue;
            };
            if seen.insert(pixels) {
                images.push(BenchImage {
                    id: item.id,
                    input: item.input,
                    image: item.image,
                    prints,
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
                let mut by_image: HashSet<String> = HashSet::new();
                let mut items = Vec::new();
                for q in &loaded.questions {
                    let label = q.image.label().to_string();
                    if !by_image.insert(label.clone()) {
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
                *undecodable += for_each_image(&dataset, &read, &mut |items| {
                    add(items, undecodable);
                    Ok(())
                })?;
            }
        }
    }
    Ok(images)
}

/// Calls `f` with the images of each batch of `dataset`; returns how many records'
/// images could not be read (missing files, members no `.tar.zst` shard holds).
/// Manifest rows whose image is in a shard (`25M_full`) are held by member name until
/// the shards, which follow the manifests, bring the bytes; members no row names are
/// images of the set too, under their own name. Batches that fail to read are left to
/// mt inspect's own pass, which reports them.
fn for_each_image(
    dataset: &Dataset,
    read: &ReadOptions,
    f: &mut dyn FnMut(Vec<Item<'_>>) -> Result<()>,
) -> Result<u64> {
    /// A row waiting for its image: id, input, row.
    type Waiting = (String, String, u64);
    let mut archived: HashMap<String, Vec<Waiting>> = HashMap::new();
    let mut unreadable = 0;
    each_batch(
        dataset,
        read,
        true,
        &|_| {},
        &|| false,
        &mut |input, batch, _| {
            let mut items = Vec::with_capacity(batch.len());
            for i in 0..batch.len() {
                let image = batch.image(i);
                let name = image.name();
                let row = batch.first_row + i as u64;
                if let (ImageRef::Archived(member), Role::Records) = (&image, input.role) {
                    let waiting = (batch.id(i).into_owned(), input.display(), row);
                    archived
                        .entry(member.to_string())
                        .or_default()
                        .push(waiting);
                    continue;
                }
                let Ok(bytes) = image.bytes() else {
                    unreadable += u64::from(input.role == Role::Records);
                    continue;
                };
                let rows = match (input.role, name.as_ref().and_then(|n| archived.remove(n))) {
                    (Role::ImageShard, Some(rows)) => rows,
                    (Role::ImageShard, None) => {
                        let member = name.clone().unwrap_or_default();
                        vec![(member, input.display(), row)]
                    }
                    _ => vec![(batch.id(i).into_owned(), input.display(), row)],
                };
                // The bytes as the batch holds them; a copy only for a member several
                // manifest rows name.
                for (id, input, row) in rows {
                    items.push(Item {
                        id,
                        input,
                        row: Some(row),
                        image: name.clone(),
                        bytes: bytes.clone(),
                    });
                }
            }
            f(items)
        },
    )?;
    Ok(unreadable + archived.values().map(|rows| rows.len() as u64).sum::<u64>())
}

/// Benchmark images one of whose hashes is within `bits` of `hash`, with the smaller
/// distance.
fn near(hashes: &[[u64; VIEWS]], hash: u64, bits: u32) -> Vec<(usize, u32)> {
    let mut d = vec![0u8; hashes.len()];
    distances(hashes, hash, &mut d);
    d.iter()
        .enumerate()
        .filter(|&(_, &d)| u32::from(d) <= bits)
        .map(|(i, &d)| (i, u32::from(d)))
        .collect()
}

/// The Hamming distance of `hash` to the nearest view of each image, into `out` (a
/// branch-free loop the compiler vectorises: a million training images against ten
/// thousand benchmark images are 6e10 of these).
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn distances(hashes: &[[u64; VIEWS]], hash: u64, out: &mut [u8]) {
    for (o, views) in out.iter_mut().zip(hashes) {
        let mut d = 64;
        for v in views {
            d = d.min((v ^ hash).count_ones());
        }
        *o = d as u8;
    }
}

/// A match of a training image: the benchmark image's index, the hash distance, the
/// thumbnails' correlation, and the kind.
type Found = (usize, u32, f64, Kind);

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
    let hashes: Vec<[u64; VIEWS]> = bench
        .iter()
        .map(|b| b.prints.each_ref().map(|p| p.hash))
        .collect();
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
    let unreadable = for_each_image(dataset, &read, &mut |items| {
        let matched: Vec<Option<Vec<Found>>> = items
            .par_iter()
            .map(|it| {
                let train = print(&hasher, &grey(&it.bytes).ok()?);
                let candidates = near(&hashes, train.hash, NEAR_BITS);
                // Confirm by the thumbnails of the views within reach of the hash; decode
                // fully (for exact) only what is confirmed, or flat on both sides.
                let confirmed: Vec<(usize, u32, f64)> = candidates
                    .into_iter()
                    .filter_map(|(b, d)| {
                        let bench = &bench[b];
                        let r = (bench.prints.iter())
                            .filter(|p| (p.hash ^ train.hash).count_ones() <= NEAR_BITS)
                            .map(|p| correlation(&train.detail, &p.detail))
                            .fold(0.0, f64::max);
                        let flat = train.flat && bench.prints[0].flat;
                        (r >= MIN_CORRELATION || flat).then_some((b, d, r))
                    })
                    .collect();
                if confirmed.is_empty() {
                    return Some(Vec::new());
                }
                let pixels = pixel_key(&it.bytes).ok();
                Some(
                    confirmed
                        .into_iter()
                        .filter_map(|(b, d, r)| {
                            if pixels == Some(bench[b].pixels) {
                                Some((b, d, r, Kind::Exact))
                            } else {
                                let alike = !train.flat && !bench[b].prints[0].flat;
                                (alike && r >= MIN_CORRELATION).then_some((b, d, r, Kind::Near))
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
                .map(|m| m.3)
                .min_by_key(|k| *k != Kind::Exact);
            match best {
                Some(Kind::Exact) => summary.exact += 1,
                Some(Kind::Near) => summary.near += 1,
                None => {}
            }
            for (b, distance, r, kind) in matches {
                found[b] = true;
                if let Some(out) = &mut out {
                    let bench = &bench[b];
                    let line = json!({
                        "kind": kind,
                        "distance": distance,
                        "correlation": (r * 1e4).round() / 1e4,
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
    summary.undecodable += unreadable;
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
        let views = |a: u64, b: u64| [a, b, a, a, a, a];
        let hashes = [
            views(0, 0xFFFF),
            views(0xFF, 0xFF),
            views(u64::MAX, u64::MAX << 32),
        ];
        assert_eq!(near(&hashes, 0x1, 8), vec![(0, 1), (1, 7)]);
        assert_eq!(near(&hashes, u64::MAX, 0), vec![(2, 0)]);
        assert_eq!(
            near(&hashes, 0xFFFF, 0),
            vec![(0, 0)],
            "the centre's hash counts"
        );
    }

    #[test]
    fn detail_correlation_compares_structure_not_shading() {
        let dots = |shift: u32, gain: u32| {
            ImageBuffer::from_fn(32, 32, |x, y| {
                let dot = (x + shift).is_multiple_of(7) && y.is_multiple_of(5);
                Luma([(x * gain + if dot { 120 } else { 0 }).min(255) as u8])
            })
        };
        let a = detail(&dots(0, 2));
        // The same dots over other shading: alike; moved by a pixel: found by the shift.
        assert!(correlation(&a, &detail(&dots(0, 4))) > 0.95);
        assert!(correlation(&a, &detail(&dots(1, 2))) > 0.95);
        // The same shading without the dots: no structure in common.
        let shading = ImageBuffer::from_fn(32, 32, |x, _| Luma([(x * 2) as u8]));
        assert!(correlation(&a, &detail(&shading)) < 0.5);
        let flat = detail(&ImageBuffer::from_pixel(32, 32, Luma([3])));
        assert_eq!(correlation(&a, &flat), 0.0);
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
