//! The VQA benchmarks in the layouts users have, read into one question type:
//! - VQA-RAD: the released `VQA_RAD Dataset Public.json` + image folder (test split =
//!   `phrase_type` test_freeform / test_para), or the hub parquet copy
//!   (`flaviagiammarino/vqa-rad`);
//! - SLAKE: `train.json` / `validate.json` (or `validation.json`) / `test.json` + `imgs/`,
//!   English questions unless asked otherwise;
//! - PathVQA: the released pickles `qas/<split>/<split>_qa.pkl` + `images/<split>/`,
//!   or the hub parquet copy (`flaviagiammarino/path-vqa`);
//! - any benchmark already in the LLaVA eval layout (a JSON array of {id, image,
//!   conversations, answer_type}).
//!
//! Closed or open comes from the dataset's `answer_type`; where it has none (PathVQA,
//! the hub parquet copies) a question is closed iff its answer is yes or no.
//! Questions without ids get their position in the split (0, 1, ...).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Bench;
use crate::core::data::inputs::{Format, ImageStore, Input, Role};
use crate::core::data::llava_records::kind;
use crate::core::data::sample::ImageRef;
use crate::core::data::{Dataset, Flow, ReadOptions};
use crate::core::error::usage;
use crate::core::vqa::{Id, Rejected};

/// Open-ended or yes/no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AnswerType {
    /// Open-ended (`OPEN`).
    #[serde(rename = "OPEN")]
    Open,
    /// Yes/no (`CLOSED`).
    #[serde(rename = "CLOSED")]
    Closed,
}

impl AnswerType {
    /// From a dataset's `answer_type` (case and surrounding blanks ignored).
    fn parse(s: &str) -> Option<AnswerType> {
        match s.trim().to_ascii_uppercase().as_str() {
            "OPEN" => Some(AnswerType::Open),
            "CLOSED" => Some(AnswerType::Closed),
            _ => None,
        }
    }

    /// The rule for datasets without answer types: closed iff the answer is yes/no.
    fn from_answer(answer: &str) -> AnswerType {
        match answer.trim().to_lowercase().as_str() {
            "yes" | "no" => AnswerType::Closed,
            _ => AnswerType::Open,
        }
    }
}

/// Where a question's image is.
#[derive(Debug, Clone)]
pub enum QuestionImage {
    /// A file: `root.join(name)`, where `name` is how the dataset refers to it.
    File {
        /// The image folder.
        root: PathBuf,
        /// The image's path relative to `root`, as the dataset names it.
        name: String,
    },
    /// Bytes embedded in a parquet copy, with the file name it had (if any).
    Embedded {
        /// The encoded image, shared by every question about it.
        bytes: Arc<Vec<u8>>,
        /// The file name stored with the bytes (`None`: the copy has none).
        name: Option<String>,
    },
}

impl QuestionImage {
    /// How outputs refer to the image: the dataset's file name, else the embedded
    /// image's original name (empty when it had none).
    pub(crate) fn label(&self) -> &str {
        match self {
            QuestionImage::File { name, .. } => name,
            QuestionImage::Embedded { name, .. } => name.as_deref().unwrap_or(""),
        }
    }

    /// The encoded image.
    pub(crate) fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            QuestionImage::File { root, name } => {
                let path = root.join(name);
                std::fs::read(&path)
                    .map(std::borrow::Cow::Owned)
                    .with_context(|| format!("cannot read image {}", path.display()))
            }
            QuestionImage::Embedded { bytes, .. } => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }
}

/// One benchmark question.
#[derive(Debug, Clone)]
pub struct Question {
    /// The dataset's question id (`qid`, `id`), else the position in the split.
    pub id: Id,
    /// The image asked about.
    pub image: QuestionImage,
    /// The question text (without LLaVA's `<image>` line).
    pub question: String,
    /// The reference answer.
    pub answer: String,
    /// The dataset's `answer_type`, else closed iff the answer is yes or no.
    pub answer_type: AnswerType,
    /// What the dataset says besides (SLAKE modality/location/content_type, VQA-RAD
    /// image_organ/question_type, ...), for breakdowns.
    pub meta: Map<String, Value>,
}

/// How to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// SLAKE: keep the Chinese questions too.
    pub all_languages: bool,
    /// LLaVA eval layout: folder the `image` paths are relative to (default: the file's).
    pub image_folder: Option<PathBuf>,
}

/// The questions of one split, the layout they came from and the rows that were bad.
#[derive(Debug)]
pub struct Loaded {
    /// The layout recognised, in words (e.g. `slake released json`, `hub parquet`).
    pub layout: &'static str,
    /// The questions read, in file order.
    pub questions: Vec<Question>,
    /// The rows that could not be read, with why.
    pub rejected: Vec<Rejected>,
}

/// Loads `split` (`train`, `validation`/`validate`/`val`, `test`) of `bench` from
/// `input`, a dataset folder or file in any supported layout.
pub fn load(bench: Bench, input: &Path, split: &str, opts: &LoadOptions) -> Result<Loaded> {
    if !input.exists() {
        bail!("{}: no such file or folder", input.display());
    }
    if input.is_file() && has_ext(input, "json") && is_llava_eval(input)? {
        return llava_eval(input, opts);
    }
    match bench {
        Bench::VqaRad => {
            if let Some(json) = find_file(input, "VQA_RAD Dataset Public.json") {
                return vqa_rad_released(&json, split);
            }
        }
        Bench::Slake => return slake(input, split, opts),
        Bench::Pathvqa => {
            let dir = if input.join("pvqa").is_dir() {
                input.join("pvqa")
            } else {
                input.to_path_buf()
            };
            let split_dir = split_name(split, &["train", "val", "test"])?;
            let pkl = dir
                .join("qas")
                .join(split_dir)
                .join(format!("{split_dir}_qa.pkl"));
            if pkl.is_file() {
                return pathvqa_pickle(&pkl, &dir.join("images").join(split_dir));
            }
        }
    }
    hub_parquet(bench, input, split)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// `input` itself when it is the file called `name`, else `input/name`.
fn find_file(input: &Path, name: &str) -> Option<PathBuf> {
    if input.is_file() {
        return (input.file_name()? == name).then(|| input.to_path_buf());
    }
    let p = input.join(name);
    p.is_file().then_some(p)
}

/// Whether `split` names the validation split (each release spells it its own way).
fn is_validation(split: &str) -> bool {
    matches!(split, "validation" | "validate" | "val" | "dev")
}

/// The dataset's own name for `split`, from its candidates.
fn split_name<'a>(split: &str, names: &[&'a str]) -> Result<&'a str> {
    let want = if is_validation(split) { "val" } else { split };
    names.iter().find(|n| **n == want).copied().ok_or_else(|| {
        usage(format!(
            "unknown split `{split}` (this benchmark has {})",
            names.join(", ")
        ))
    })
}

fn reject(file: &Path, at: String, error: impl std::fmt::Display) -> Rejected {
    Rejected {
        file: file.display().to_string(),
        at,
        error: error.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    serde_json::from_reader(BufReader::new(file))
        .with_context(|| format!("{}: invalid JSON", path.display()))
}

/// A JSON value as answer text (VQA-RAD has some numeric answers).
fn text(v: &Value, field: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => bail!("no `{field}`"),
        other => bail!("`{field}` must be text, not {other}"),
    }
}

fn meta_of(record: &Value, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|f| {
            record
                .get(*f)
                .filter(|v| !v.is_null())
                .map(|v| (f.to_string(), v.clone()))
        })
        .collect()
}

/// The array of records of a released JSON file.
fn records(path: &Path) -> Result<Vec<Value>> {
    match read_json(path)? {
        Value::Array(a) => Ok(a),
        other => bail!(
            "{}: expected a JSON array of questions, found {}",
            path.display(),
            kind(&other)
        ),
    }
}

fn vqa_rad_released(json: &Path, split: &str) -> Result<Loaded> {
    let root = json.parent().unwrap_or(Path::new("."));
    let images = ["VQA_RAD Image Folder", "images", "VQA_RAD_Image_Folder"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.to_path_buf());
    let test = match split {
        "test" => true,
        "train" => false,
        other => {
            return Err(usage(format!(
                "unknown split `{other}` (VQA-RAD has train and test)"
            )));
        }
    };
    let mut out = Loaded {
        layout: "vqa-rad released json",
        questions: Vec::new(),
        rejected: Vec::new(),
    };
    for (i, r) in records(json)?.iter().enumerate() {
        let phrase = r.get("phrase_type").and_then(Value::as_str).unwrap_or("");
        if phrase.starts_with("test") != test {
            continue;
        }
        let parsed = (|| -> Result<Question> {
            let answer = text(&r["answer"], "answer")?;
            let kind = text(&r["answer_type"], "answer_type")?;
            Ok(Question {
                id: Id::from_json(&r["qid"], "qid")?,
                image: QuestionImage::File {
                    root: images.clone(),
                    name: text(&r["image_name"], "image_name")?,
                },
                question: text(&r["question"], "question")?,
                answer_type: AnswerType::parse(&kind)
                    .ok_or_else(|| anyhow!("answer_type `{kind}` is neither OPEN nor CLOSED"))?,
                answer,
                meta: meta_of(r, &["image_organ", "question_type", "phrase_type"]),
            })
        })();
        match parsed {
            Ok(q) => out.questions.push(q),
            Err(e) => out.rejected.push(reject(json, format!("record {i}"), e)),
        }
    }
    Ok(out)
}

fn slake(input: &Path, split: &str, opts: &LoadOptions) -> Result<Loaded> {
    let names: &[&str] = match split {
        "train" => &["train.json"],
        "test" => &["test.json"],
        s if is_validation(s) => &["validate.json", "validation.json"],
        other => {
            return Err(usage(format!(
                "unknown split `{other}` (SLAKE has train, validation and test)"
            )));
        }
    };
    let (json, root) = if input.is_file() {
        (
            input.to_path_buf(),
            input.parent().unwrap_or(Path::new(".")).to_path_buf(),
        )
    } else {
        let json = names
            .iter()
            .map(|n| input.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "{}: no {} (the SLAKE release layout)",
                    input.display(),
                    names.join(" or ")
                )
            })?;
        (json, input.to_path_buf())
    };
    let images = if root.join("imgs").is_dir() {
        root.join("imgs")
    } else {
        root
    };
    let mut out = Loaded {
        layout: "slake released json",
        questions: Vec::new(),
        rejected: Vec::new(),
    };
    for (i, r) in records(&json)?.iter().enumerate() {
        let lang = r.get("q_lang").and_then(Value::as_str).unwrap_or("en");
        if lang != "en" && !opts.all_languages {
            continue;
        }
        let parsed = (|| -> Result<Question> {
            let kind = text(&r["answer_type"], "answer_type")?;
            Ok(Question {
                id: Id::from_json(&r["qid"], "qid")?,
                image: QuestionImage::File {
                    root: images.clone(),
                    name: text(&r["img_name"], "img_name")?,
                },
                question: text(&r["question"], "question")?,
                answer: text(&r["answer"], "answer")?,
                answer_type: AnswerType::parse(&kind)
                    .ok_or_else(|| anyhow!("answer_type `{kind}` is neither OPEN nor CLOSED"))?,
                meta: meta_of(
                    r,
                    &[
                        "modality",
                        "location",
                        "content_type",
                        "base_type",
                        "q_lang",
                    ],
                ),
            })
        })();
        match parsed {
            Ok(q) => out.questions.push(q),
            Err(e) => out.rejected.push(reject(&json, format!("record {i}"), e)),
        }
    }
    Ok(out)
}

/// PathVQA's released pickle: a list of dicts with `image` (name without extension),
/// `question`, `answer`. Read with a pickle decoder that never imports or calls
/// anything.
fn pathvqa_pickle(pkl: &Path, images: &Path) -> Result<Loaded> {
    use serde_pickle::{DeOptions, HashableValue, Value as P};
    let bytes = std::fs::read(pkl).with_context(|| format!("{}: cannot open", pkl.display()))?;
    let unreadable = || format!("{}: not a readable pickle of plain data", pkl.display());
    // serde_pickle, and the walk below, recurse once per level.
    crate::core::pickle::nesting::check(&bytes, crate::core::pickle::nesting::MAX_DEPTH)
        .with_context(unreadable)?;
    let value =
        serde_pickle::value_from_slice(&bytes, DeOptions::new()).with_context(unreadable)?;
    let P::List(items) = value else {
        bail!("{}: expected a list of questions", pkl.display());
    };
    let field = |d: &std::collections::BTreeMap<HashableValue, P>, k: &str| -> Result<String> {
        match d.get(&HashableValue::String(k.to_string())) {
            Some(P::String(s)) => Ok(s.clone()),
            Some(P::Bytes(b)) => {
                String::from_utf8(b.clone()).map_err(|_| anyhow!("`{k}` is not UTF-8"))
            }
            Some(P::I64(n)) => Ok(n.to_string()),
            Some(other) => bail!("`{k}` must be text, not {other:?}"),
            None => bail!("no `{k}`"),
        }
    };
    let mut out = Loaded {
        layout: "pathvqa released pickle",
        questions: Vec::new(),
        rejected: Vec::new(),
    };
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| -> Result<Question> {
            let P::Dict(d) = item else {
                bail!("expected a dict")
            };
            let answer = field(d, "answer")?;
            Ok(Question {
                id: Id::Int(i as i64),
                image: QuestionImage::File {
                    root: images.to_path_buf(),
                    name: format!("{}.jpg", field(d, "image")?),
                },
                question: field(d, "question")?,
                answer_type: AnswerType::from_answer(&answer),
                answer,
                meta: Map::new(),
            })
        })();
        match parsed {
            Ok(q) => out.questions.push(q),
            Err(e) => out.rejected.push(reject(pkl, format!("item {i}"), e)),
        }
    }
    Ok(out)
}

/// The hub parquet copies: `image` (struct of bytes and path), `question`, `answer`,
/// one or more files per split named `<split>-*.parquet` (in `input`, `input/data`,
/// or `input` itself when it is a file).
fn hub_parquet(bench: Bench, input: &Path, split: &str) -> Result<Loaded> {
    let files = parquet_files(input, split)?;
    if files.is_empty() {
        bail!(
            "{}: not a {} layout mt knows (released files or hub parquet `{split}-*.parquet`); see `mt convert vqa --help`",
            input.display(),
            bench.name()
        );
    }
    let inputs: Vec<Input> = files
        .iter()
        .map(|p| Input {
            path: p.clone(),
            format: Format::Parquet,
            role: Role::Records,
            store: Arc::new(ImageStore::None),
        })
        .collect();
    let read = ReadOptions {
        columns: None,
        batch_rows: 256,
    };
    let (dataset, failures) = Dataset::open(inputs, &read);
    if let Some((i, e)) = failures.into_iter().next() {
        return Err(e.context(format!("{}", files[i].display())));
    }
    // The hub copies repeat an image's bytes in every row that asks about it; identical
    // images are held once.
    let mut shared = SharedImages::default();
    let mut out = Loaded {
        layout: "hub parquet",
        questions: Vec::new(),
        rejected: Vec::new(),
    };
    let mut error = None;
    for unit in dataset.units(&[], 1) {
        dataset.read(&unit, &read, &mut |batch| {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    error = Some(e);
                    return Flow::Stop;
                }
            };
            for i in 0..batch.len() {
                let row = out.questions.len() + out.rejected.len();
                let extra = batch.extra(i);
                let parsed = (|| -> Result<Question> {
                    let answer = text(extra.get("answer").unwrap_or(&Value::Null), "answer")?;
                    let image = match batch.image(i) {
                        ImageRef::Bytes { bytes, path } => QuestionImage::Embedded {
                            bytes: shared.intern(bytes),
                            name: path.map(str::to_string),
                        },
                        _ => bail!("no image bytes"),
                    };
                    Ok(Question {
                        id: Id::Int(row as i64),
                        image,
                        question: text(extra.get("question").unwrap_or(&Value::Null), "question")?,
                        answer_type: AnswerType::from_answer(&answer),
                        answer,
                        meta: Map::new(),
                    })
                })();
                match parsed {
                    Ok(q) => out.questions.push(q),
                    Err(e) => {
                        out.rejected
                            .push(reject(&files[unit.input], format!("row {row}"), e))
                    }
                }
            }
            Flow::Continue
        })?;
        if let Some(e) = error.take() {
            return Err(e);
        }
    }
    Ok(out)
}

/// Image bytes held once per distinct content.
#[derive(Default)]
struct SharedImages(HashMap<[u8; 32], Arc<Vec<u8>>>);

impl SharedImages {
    fn intern(&mut self, bytes: &[u8]) -> Arc<Vec<u8>> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        self.0
            .entry(key)
            .or_insert_with(|| Arc::new(bytes.to_vec()))
            .clone()
    }
}

/// `<split>-*.parquet` files (any of the split's names) in `input` or `input/data`.
fn parquet_files(input: &Path, split: &str) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(if has_ext(input, "parquet") {
            vec![input.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let prefixes: &[&str] = if is_validation(split) {
        &["validation", "valid", "val"]
    } else {
        &[split][..]
    };
    let mut files = Vec::new();
    for dir in [input.to_path_buf(), input.join("data")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet")
                && prefixes
                    .iter()
                    .any(|p| name.starts_with(&format!("{p}-")) || name == format!("{p}.parquet"))
            {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a JSON file is in the LLaVA eval layout (its first record has `conversations`).
fn is_llava_eval(path: &Path) -> Result<bool> {
    let head = {
        use std::io::Read;
        let mut buf = vec![0u8; 64 << 10];
        let n = File::open(path)?.read(&mut buf)?;
        buf.truncate(n);
        buf
    };
    let text = String::from_utf8_lossy(&head);
    Ok(text.trim_start().starts_with('[') && text.contains("\"conversations\""))
}

fn llava_eval(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let root = opts
        .image_folder
        .clone()
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let mut rejected = Vec::new();
    let truths = super::truth::read_truth(path, &mut rejected)?;
    let mut questions = Vec::with_capacity(truths.len());
    for t in truths {
        let question = t
            .question
            .strip_prefix("<image>\n")
            .unwrap_or(&t.question)
            .to_string();
        let answer_type = t
            .answer_type
            .as_deref()
            .and_then(AnswerType::parse)
            .unwrap_or_else(|| AnswerType::from_answer(&t.answer));
        questions.push(Question {
            id: t.id,
            image: QuestionImage::File {
                root: root.clone(),
                name: t.image.unwrap_or_default(),
            },
            question,
            answer: t.answer,
            answer_type,
            meta: t.meta,
        });
    }
    Ok(Loaded {
        layout: "llava eval json",
        questions,
        rejected,
    })
}
