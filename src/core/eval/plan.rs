//! What a benchmark run answers and how, kept as `eval.json` in its run directory. A
//! rerun into the same directory (to resume, or as a chunk worker) must bring the same
//! plan: answers made with other settings, data or checkpoints are never mixed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::error::usage;
use crate::core::files::write_atomic;
use crate::core::hash::hex;
use crate::core::vqa::questions::{Question, QuestionImage};

/// The file name in the run directory.
pub(crate) const FILE: &str = "eval.json";

/// Decoding settings that change answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Decoding {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    /// `--conv-mode`, when given (absent: the checkpoint's template; plans written before
    /// the option have none, so they still match a run without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_mode: Option<String>,
}

impl Decoding {
    /// The reference's eval decoding (model_vqa.py via run_med_datasets_eval_batch.py):
    /// sampling at temperature 0.1 with `top_p=None` (no nucleus), and transformers'
    /// top-k: the checkpoint's `generation_config.json` `top_k`, else 50.
    pub(crate) fn reference(checkpoint: &Path, max_new_tokens: usize) -> Decoding {
        let top_k = std::fs::read_to_string(checkpoint.join("generation_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("top_k").and_then(Value::as_u64))
            .map_or(50, |k| k as usize);
        Decoding {
            max_new_tokens,
            temperature: 0.1,
            top_p: 1.0,
            top_k,
            conv_mode: None,
        }
    }

    /// In words, for reports.
    pub(crate) fn describe(&self) -> String {
        let mut text = if self.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!("sampling at temperature {}", self.temperature)
        };
        if self.temperature > 0.0 && self.top_k > 0 {
            text.push_str(&format!(", top-k {}", self.top_k));
        }
        if self.temperature > 0.0 && self.top_p < 1.0 {
            text.push_str(&format!(", top-p {}", self.top_p));
        }
        if let Some(mode) = &self.conv_mode {
            text.push_str(&format!(", template {mode}"));
        }
        text + &format!(", at most {} new tokens", self.max_new_tokens)
    }
}

/// The format of `eval.json`: 2 added the content identity of the checkpoint and of the
/// questions (1, without a `version` field, kept the checkpoint's path and the ids).
pub(crate) const VERSION: u32 = 2;

/// One benchmark run's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub version: u32,
    pub bench: String,
    pub split: String,
    pub data: String,
    pub image_folder: Option<String>,
    pub checkpoint: String,
    /// The checkpoint folder's files and their content digests
    /// ([`content_identity`](crate::core::model::load::checkpoint::content_identity)).
    pub checkpoint_files: BTreeMap<String, String>,
    pub vision_tower: Option<String>,
    pub vision_tower_files: Option<BTreeMap<String, String>>,
    pub questions: usize,
    pub question_digests: QuestionDigests,
    pub chunks: usize,
    pub decoding: Decoding,
    pub dtype: String,
    /// `--quantize` (`q4k`, ...), null for the checkpoint's own weights.
    #[serde(default)]
    pub quantize: Option<String>,
    pub seed: u64,
}

/// SHA-256 digests (first 16 hex digits) of every question's parts, in order: a rerun
/// with edited questions is told which part changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct QuestionDigests {
    pub ids: String,
    pub text: String,
    pub answers: String,
    pub answer_types: String,
    /// How each question names its image (file name; embedded: name and bytes).
    pub images: String,
}

/// The parts of [`QuestionDigests`] in words, by field name.
const QUESTION_PARTS: [(&str, &str); 5] = [
    ("ids", "ids"),
    ("text", "question text"),
    ("answers", "answers"),
    ("answer_types", "answer types"),
    ("images", "images"),
];

impl QuestionDigests {
    /// Digests `questions` in order.
    pub(crate) fn of(questions: &[Question]) -> Self {
        let digest = |part: &dyn Fn(&Question) -> String| {
            let mut h = Sha256::new();
            for q in questions {
                h.update(part(q).as_bytes());
                h.update(b"\n");
            }
            hex(&h.finalize())[..16].to_string()
        };
        Self {
            ids: digest(&|q| json(&q.id)),
            text: digest(&|q| json(&q.question)),
            answers: digest(&|q| json(&q.answer)),
            answer_types: digest(&|q| json(&q.answer_type)),
            images: digest(&|q| match &q.image {
                QuestionImage::File { name, .. } => json(&("file", name)),
                QuestionImage::Embedded { bytes, name } => {
                    let content = hex(&Sha256::digest(bytes.as_slice()));
                    json(&("embedded", name, content))
                }
            }),
        }
    }
}

/// `value` as JSON text.
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The plan a run directory already has, if it has a readable one of this format.
pub(crate) fn previous(root: &Path) -> Option<Plan> {
    let text = std::fs::read_to_string(root.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

impl Plan {
    /// Whether `other` evaluated the same checkpoint files, questions, decoding, dtype
    /// and seed, whatever its quantization and chunking.
    pub(crate) fn same_but_quantization(&self, other: &Plan) -> bool {
        let strip = |p: &Plan| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let Value::Object(fields) = &mut v {
                for key in ["quantize", "chunks", "checkpoint", "data", "image_folder"] {
                    fields.remove(key);
                }
            }
            v
        };
        strip(self) == strip(other)
    }

    /// Writes the plan into the run directory `root`, or checks it against the plan
    /// already there (a usage error names the first setting that differs).
    pub(crate) fn check_or_write(&self, root: &Path) -> Result<()> {
        let path = root.join(FILE);
        let ours = serde_json::to_value(self)?;
        let Ok(text) = std::fs::read_to_string(&path) else {
            let mut bytes = serde_json::to_vec_pretty(&ours)?;
            bytes.push(b'\n');
            return write_atomic(&path, &bytes);
        };
        let theirs: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON; is this an mt eval run?", path.display()))?;
        if theirs.get("version").is_none() {
            return Err(usage(format!(
                "{}: written by an older mt that kept only the checkpoint's path and the question \
                 ids, so it cannot tell whether the checkpoint's files or the questions changed \
                 since; use another --run-dir, or, if neither changed, delete {} and rerun the \
                 same command to resume",
                path.display(),
                path.display()
            )));
        }
        let Value::Object(fields) = &ours else {
            unreachable!("a struct serialises to an object")
        };
        for (key, value) in fields {
            let before = &theirs[key.as_str()];
            if before != value {
                return Err(usage(format!(
                    "{}: {}; use another --run-dir, or the same settings to resume",
                    path.display(),
                    difference(key, before, value)
                )));
            }
        }
        Ok(())
    }
}

/// What differs between the run directory's `before` and this command's `now` for `key`.
fn difference(key: &str, before: &Value, now: &Value) -> String {
    let since = "since this run directory was made";
    match key {
        "checkpoint_files" | "vision_tower_files" => {
            let what = match key {
                "checkpoint_files" => "checkpoint",
                _ => "vision tower",
            };
            let files = changed_parts(before, now, |name| format!("`{name}`"));
            format!("the {what} at the same path has other files {since} ({files})")
        }
        "question_digests" => {
            let parts: Vec<String> = QUESTION_PARTS
                .iter()
                .filter(|(field, _)| before.get(field) != now.get(field))
                .map(|(_, words)| format!("{words} changed"))
                .collect();
            format!("the questions were edited {since} ({})", parts.join(", "))
        }
        _ => format!("this run directory answers with {key} = {before}, this command with {now}"),
    }
}

/// The keys of two JSON objects whose values differ, in words: `X changed`, `X added`,
/// `X removed`.
fn changed_parts(before: &Value, now: &Value, name: impl Fn(&str) -> String) -> String {
    let empty = serde_json::Map::new();
    let (old, new) = (
        before.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut parts = Vec::new();
    for key in keys {
        let how = match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a != b => "changed",
            (Some(_), None) => "removed",
            (None, Some(_)) => "added",
            _ => continue,
        };
        parts.push(format!("{} {how}", name(key)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vqa::Id;
    use crate::core::vqa::questions::AnswerType;

    fn plan() -> Plan {
        Plan {
            version: VERSION,
            bench: "slake".into(),
            split: "test".into(),
            data: "/d".into(),
            image_folder: None,
            checkpoint: "/c".into(),
            checkpoint_files: [("config.json", "c1"), ("model.safetensors", "w1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            vision_tower: None,
            vision_tower_files: None,
            questions: 3,
            question_digests: QuestionDigests::of(&[]),
            chunks: 2,
            decoding: Decoding {
                max_new_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                conv_mode: None,
            },
            dtype: "f32".into(),
            quantize: None,
            seed: 0,
        }
    }

    #[test]
    fn a_rerun_must_bring_the_same_plan() {
        let dir = tempfile::tempdir().unwrap();
        plan().check_or_write(dir.path()).unwrap();
        plan().check_or_write(dir.path()).unwrap();
        let mut other = plan();
        other.decoding.temperature = 0.1;
        let err = other.check_or_write(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("decoding") && err.contains("eval.json"),
            "{err}"
        );
        assert_eq!(previous(dir.path()).unwrap().chunks, 2);
        let mut other = plan();
        other.chunks = 4;
        let err = other.check_or_write(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chunks = 2"), "{err}");

        // The checkpoint's files at the same path: each difference named.
        let mut other = plan();
        let files = &mut other.checkpoint_files;
        files.insert("config.json".into(), "c2".into());
        files.remove("model.safetensors");
        files.insert("model-00001-of-00002.safetensors".into(), "w2".into());
        let err = other.check_or_write(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(
                "the checkpoint at the same path has other files since this run directory was \
                 made (`config.json` changed, `model-00001-of-00002.safetensors` added, \
                 `model.safetensors` removed)"
            ),
            "{err}"
        );
        let mut other = plan();
        other.question_digests.text = "x".into();
        other.question_digests.images = "y".into();
        let err = other.check_or_write(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("the questions were edited since this run directory was made (question text changed, images changed)"),
            "{err}"
        );
    }

    #[test]
    fn a_run_directory_of_the_old_format_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = serde_json::to_value(plan()).unwrap();
        let fields = old.as_object_mut().unwrap();
        for key in [
            "version",
            "checkpoint_files",
            "vision_tower_files",
            "question_digests",
        ] {
            fields.remove(key);
        }
        fields.insert("question_ids".into(), "0123456789abcdef".into());
        std::fs::write(dir.path().join(FILE), old.to_string()).unwrap();
        assert!(previous(dir.path()).is_none());
        let err = plan().check_or_write(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("written by an older mt"), "{msg}");
        assert!(msg.contains("delete") && msg.contains("eval.json"), "{msg}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }

    fn question(id: &str, text: &str, answer: &str, image: QuestionImage) -> Question {
        Question {
            id: Id::Str(id.into()),
            image,
            question: text.into(),
            answer: answer.into(),
            answer_type: AnswerType::Open,
            meta: Default::default(),
        }
    }

    #[test]
    fn question_digests_follow_each_part() {
        let file = |name: &str| QuestionImage::File {
            root: "/r".into(),
            name: name.into(),
        };
        let base = vec![
            question("1", "Where?", "lung", file("a.jpg")),
            question("2", "What?", "cyst", file("b.jpg")),
        ];
        let d = QuestionDigests::of(&base);
        assert_eq!(QuestionDigests::of(&base.clone()), d);
        let with = |f: &dyn Fn(&mut Vec<Question>)| {
            let mut qs = base.clone();
            f(&mut qs);
            QuestionDigests::of(&qs)
        };
        let text = with(&|qs| qs[1].question.push('!'));
        assert_eq!((text.ids == d.ids, text.text == d.text), (true, false));
        let answer = with(&|qs| qs[0].answer = "liver".into());
        assert_eq!(
            (answer.text == d.text, answer.answers == d.answers),
            (true, false)
        );
        let image = with(&|qs| qs[0].image = file("c.jpg"));
        assert_ne!(image.images, d.images);
        // Another root is --image-folder's business, not the questions'.
        let root = with(&|qs| {
            qs[0].image = QuestionImage::File {
                root: "/elsewhere".into(),
                name: "a.jpg".into(),
            }
        });
        assert_eq!(root, d);
        let embedded = |bytes: &[u8]| QuestionImage::Embedded {
            bytes: std::sync::Arc::new(bytes.to_vec()),
            name: Some("a.jpg".into()),
        };
        let e1 = with(&|qs| qs[0].image = embedded(b"png1"));
        let e2 = with(&|qs| qs[0].image = embedded(b"png2"));
        assert_ne!(e1.images, e2.images);
        assert_ne!(e1.images, d.images);
        let swapped = with(&|qs| qs.swap(0, 1));
        assert_ne!(swapped.ids, d.ids);
        let kind = with(&|qs| qs[0].answer_type = AnswerType::Closed);
        assert_ne!(kind.answer_types, d.answer_types);
    }

    #[test]
    fn reference_decoding_takes_top_k_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Decoding::reference(dir.path(), 1024).top_k, 50);
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"top_k": 20, "top_p": 0.9}"#,
        )
        .unwrap();
        let d = Decoding::reference(dir.path(), 1024);
        assert_eq!((d.top_k, d.top_p, d.temperature), (20, 1.0, 0.1));
    }

    #[test]
    fn a_plan_without_conv_mode_matches_one_written_before_the_option() {
        let json = serde_json::to_value(plan()).unwrap();
        assert!(json["decoding"].get("conv_mode").is_none(), "{json}");
        let mut with = plan();
        with.decoding.conv_mode = Some("llava_v1".into());
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["decoding"]["conv_mode"], "llava_v1");
    }

    #[test]
    fn decoding_in_words() {
        assert_eq!(plan().decoding.describe(), "greedy, at most 8 new tokens");
        let d = Decoding {
            max_new_tokens: 1024,
            temperature: 0.1,
            top_p: 1.0,
            top_k: 50,
            conv_mode: None,
        };
        assert_eq!(
            d.describe(),
            "sampling at temperature 0.1, top-k 50, at most 1024 new tokens"
        );
        let d = Decoding {
            conv_mode: Some("llava_v1".into()),
            ..d
        };
        assert_eq!(
            d.describe(),
            "sampling at temperature 0.1, top-k 50, template llava_v1, at most 1024 new tokens"
        );
    }
}
