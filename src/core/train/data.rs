//! Training records (LLaVA conversation JSON arrays or JSON Lines: `id`, `image`,
//! `conversations`; or a VQA benchmark's split through its loader) and the order they
//! are visited in: a seeded permutation per epoch, optionally grouped by modality and
//! length as LLaVA's `LengthGroupedSampler` does. Images are decoded and conversations
//! tokenised only when a batch needs them.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::conversation::Turn;
use crate::core::data::json_array::JsonArrayElements;
use crate::core::data::llava_records::kind;
use crate::core::hash::keyed;
use crate::core::vqa::Bench;
use crate::core::vqa::questions::{self as vqa, LoadOptions, QuestionImage};

/// A sample's image.
#[derive(Debug, Clone)]
pub enum RecordImage {
    /// A file (resolved against the image folder).
    File(PathBuf),
    /// Encoded bytes held in memory (benchmark copies that embed their images).
    Bytes(Arc<Vec<u8>>),
}

impl RecordImage {
    /// Decodes the image.
    pub(crate) fn open(&self) -> Result<image::DynamicImage> {
        match self {
            RecordImage::File(path) => crate::core::image::decode_file(path),
            RecordImage::Bytes(bytes) => crate::core::image::decode(bytes),
        }
    }
}

/// One training sample as stored.
#[derive(Debug, Clone)]
pub struct Record {
    /// `id` as text, else the record's position in its file.
    pub id: String,
    /// The sample's image, if it has one.
    pub image: Option<RecordImage>,
    /// `conversations`: the messages, in order.
    pub turns: Vec<Turn>,
    /// Where it came from, for error messages (`file:line` or `file: record N`).
    pub origin: String,
}

impl Record {
    /// The reference's `modality_lengths`: words in all turns, negative without an image.
    pub(crate) fn modality_length(&self) -> i64 {
        let words: usize = self
            .turns
            .iter()
            .map(|t| t.value.split_whitespace().count())
            .sum();
        if self.image.is_some() {
            words as i64
        } else {
            -(words as i64)
        }
    }
}

/// Reads every record of a `.json` array or `.jsonl` file; image paths resolve against
/// `image_folder` (default: the data file's folder). A malformed record is an error
/// naming its place: training on silently dropped samples is worse than stopping.
pub fn load_records(path: &Path, image_folder: Option<&Path>) -> Result<Vec<Record>> {
    let root = match image_folder {
        Some(dir) => dir.to_path_buf(),
        None => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let first = reader
        .fill_buf()?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    let mut records = Vec::new();
    if first == Some(b'[') {
        let mut elements = JsonArrayElements::new(reader);
        while let Some(element) = elements.next() {
            let index = elements.index.saturating_sub(1);
            let origin = format!("{}: record {index}", path.display());
            let bytes = element.map_err(|e| anyhow!("{origin}: {e}"))?;
            records.push(parse(&bytes, index, &root).with_context(|| origin.clone())?);
        }
    } else {
        for (n, line) in reader.lines().enumerate() {
            let origin = format!("{}:{}", path.display(), n + 1);
            let line = line.with_context(|| format!("{origin}: cannot read"))?;
            if line.trim().is_empty() {
                continue;
            }
            let record =
                parse(line.as_bytes(), records.len(), &root).with_context(|| origin.clone())?;
            records.push(Record { origin, ..record });
        }
    }
    if records.is_empty() {
        bail!("{}: no training records", path.display());
    }
    Ok(records)
}

fn parse(bytes: &[u8], index: usize, root: &Path) -> Result<Record> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        bail!("expected a JSON object, found {}", kind(&value));
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => index.to_string(),
        Some(v) => crate::core::data::id_text(v)
            .ok_or_else(|| anyhow!("field `id`: expected a string or number, found {}", kind(v)))?,
    };
    let image = match obj.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(RecordImage::File(root.join(s))),
        Some(other) => bail!("field `image`: expected a path, found {}", kind(other)),
    };
    let turns = match obj.get("conversations") {
        Some(v @ Value::Array(_)) => {
            serde_json::from_value::<Vec<Turn>>(v.clone()).map_err(|e| {
                anyhow!("field `conversations`: {e} (expected [{{\"from\", \"value\"}}, ...])")
            })?
        }
        Some(other) => bail!(
            "field `conversations`: expected a list of turns, found {}",
            kind(other)
        ),
        None => bail!("missing field `conversations`"),
    };
    Ok(Record {
        id,
        image,
        turns,
        origin: format!("record {index}"),
    })
}

/// The `split` of a VQA benchmark as training records: one `<image>\nQ` / `A` exchange
/// per question, as LLaVA's data files for these sets have them. Questions whose image
/// is missing are an error naming them.
pub(crate) fn load_bench(bench: Bench, input: &Path, split: &str) -> Result<Vec<Record>> {
    let loaded = vqa::load(bench, input, split, &LoadOptions::default())?;
    if let Some(bad) = loaded.rejected.first() {
        tracing::warn!(
            "{} rows of {} were rejected (first: {bad:?})",
            loaded.rejected.len(),
            input.display()
        );
    }
    let mut records = Vec::with_capacity(loaded.questions.len());
    for (i, q) in loaded.questions.into_iter().enumerate() {
        let image = match q.image {
            QuestionImage::File { root, name } => {
                let path = root.join(&name);
                if !path.is_file() {
                    bail!(
                        "{}: question {}: image {} does not exist",
                        input.display(),
                        q.id,
                        path.display()
                    );
                }
                RecordImage::File(path)
            }
            QuestionImage::Embedded { bytes, .. } => RecordImage::Bytes(bytes),
        };
        let turn = |from: &str, value: String| Turn {
            from: from.into(),
            value,
        };
        records.push(Record {
            id: q.id.to_string(),
            image: Some(image),
            turns: vec![
                turn("human", format!("<image>\n{}", q.question)),
                turn("gpt", q.answer),
            ],
            origin: format!("{} {split} question {i} (id {})", bench.name(), q.id),
        });
    }
    if records.is_empty() {
        bail!(
            "{}: no {} {split} questions found ({})",
            input.display(),
            bench.name(),
            loaded.layout
        );
    }
    Ok(records)
}

/// The order of sample indices in `epoch`: a seeded Fisher–Yates permutation, or with
/// `group_by_modality = Some(mega)` an order modelled on LLaVA's
/// `get_modality_length_grouped_indices` (mega = batch x accumulation x processes): image
/// and text-only samples shuffled separately and cut into mega-batches, each sorted
/// longest first; the mega-batches shuffled together, except each modality's last one,
/// which go to the end together, in index order. (The reference also balances lengths
/// across ranks inside a mega-batch; this order does not.)
pub(crate) fn epoch_order(
    records: &[Record],
    seed: u64,
    epoch: u64,
    group_by_modality: Option<usize>,
) -> Vec<usize> {
    let Some(mega) = group_by_modality else {
        return permutation(records.len(), keyed(seed, epoch, 0));
    };
    let mega = mega.max(1);
    let lengths: Vec<i64> = records.iter().map(Record::modality_length).collect();
    let (mm, lang): (Vec<usize>, Vec<usize>) =
        (0..records.len()).partition(|&i| records[i].image.is_some());
    let chunks = |ids: &[usize], salt: u64| -> Vec<Vec<usize>> {
        permutation(ids.len(), keyed(seed, epoch, salt))
            .chunks(mega)
            .map(|c| {
                let mut c: Vec<usize> = c.iter().map(|&k| ids[k]).collect();
                c.sort_by_key(|&i| std::cmp::Reverse(lengths[i].unsigned_abs()));
                c
            })
            .collect()
    };
    let (mut mm_chunks, mut lang_chunks) = (chunks(&mm, 1), chunks(&lang, 2));
    let mut tail = Vec::new();
    for chunks in [&mut mm_chunks, &mut lang_chunks] {
        tail.extend(chunks.pop().unwrap_or_default());
    }
    tail.sort_unstable();
    let mut all: Vec<Vec<usize>> = mm_chunks.into_iter().chain(lang_chunks).collect();
    let order = permutation(all.len(), keyed(seed, epoch, 3));
    let mut out: Vec<usize> = order
        .into_iter()
        .flat_map(|k| std::mem::take(&mut all[k]))
        .collect();
    out.extend(tail);
    out
}

/// A permutation of `0..n` from a 64-bit key (Fisher–Yates over splitmix64 draws).
fn permutation(n: usize, key: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (keyed(key, i as u64, 0) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_decoded_by_their_bytes_not_their_name() {
        let dir = tempfile::tempdir().unwrap();
        // A PNG saved under a .jpg name, as dataset exports often have.
        let png = dir.path().join("scan.jpg");
        image::GrayImage::new(7, 3)
            .write_to(
                &mut std::io::BufWriter::new(std::fs::File::create(&png).unwrap()),
                image::ImageFormat::Png,
            )
            .unwrap();
        let img = RecordImage::File(png).open().unwrap();
        assert_eq!((img.width(), img.height()), (7, 3));
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not an image").unwrap();
        let e = format!("{:#}", RecordImage::File(junk).open().unwrap_err());
        assert!(
            e.contains("junk.png") && e.contains("unrecognised image format"),
            "{e}"
        );
    }

    fn record(id: usize, image: bool, words: usize) -> Record {
        Record {
            id: id.to_string(),
            image: image.then(|| RecordImage::File(PathBuf::from("x.png"))),
            turns: vec![Turn {
                from: "human".into(),
                value: vec!["w"; words].join(" "),
            }],
            origin: String::new(),
        }
    }

    #[test]
    fn orders_are_permutations_that_depend_on_seed_and_epoch() {
        let records: Vec<Record> = (0..50).map(|i| record(i, i % 3 != 0, i + 1)).collect();
        let a = epoch_order(&records, 7, 0, None);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(&records, 7, 0, None));
        assert_ne!(a, epoch_order(&records, 7, 1, None));
        assert_ne!(a, epoch_order(&records, 8, 0, None));

        let g = epoch_order(&records, 7, 0, Some(8));
        let mut sorted = g.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        // Every full mega-batch holds one modality, longest first.
        for chunk in g[..g.len() - 16].chunks(8) {
            let with_image = chunk
                .iter()
                .filter(|&&i| records[i].image.is_some())
                .count();
            assert!(with_image == 0 || with_image == chunk.len(), "{chunk:?}");
        }
    }

    #[test]
    fn bad_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"id\": 1, \"image\": \"a.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nQ\"}, {\"from\": \"gpt\", \"value\": \"A\"}]}\n\n{\"id\": 2, \"conversations\": [{\"from\": \"human\"}]}\n",
        )
        .unwrap();
        let err = load_records(&path, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("d.jsonl:3: field `conversations`"),
            "{err:#}"
        );
        let json = dir.path().join("d.json");
        std::fs::write(
            &json,
            "[{\"id\": \"x\", \"image\": \"i/a.png\", \"conversations\": []}]",
        )
        .unwrap();
        let records = load_records(&json, Some(Path::new("/imgs"))).unwrap();
        assert!(
            matches!(&records[0].image, Some(RecordImage::File(p)) if p == Path::new("/imgs/i/a.png"))
        );
    }
}
