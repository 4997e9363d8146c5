//! What a benchmark run answers and how, kept as `eval.json` in its run directory. A
//! rerun into the same directory (to resume, or as a chunk worker) must bring the same
//! plan: answers made with other settings, data or checkpoints are never mixed.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::vqa::Question;
use crate::core::error::usage;
use crate::core::hash::hex;
use crate::core::run::write_atomic;

/// The file name in the run directory.
pub const FILE: &str = "eval.json";

/// Decoding settings that change answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decoding {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
}

impl Decoding {
    /// The reference's eval decoding (model_vqa.py via run_med_datasets_eval_batch.py):
    /// sampling at temperature 0.1 with `top_p=None` (no nucleus), and transformers'
    /// top-k: the checkpoint's `generation_config.json` `top_k`, else 50.
    pub fn reference(checkpoint: &Path, max_new_tokens: usize) -> Decoding {
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
        }
    }

    /// In words, for reports.
    pub fn describe(&self) -> String {
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
        text + &format!(", at most {} new tokens", self.max_new_tokens)
    }
}

/// One benchmark run's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub bench: String,
    pub split: String,
    pub data: String,
    pub image_folder: Option<String>,
    pub checkpoint: String,
    pub vision_tower: Option<String>,
    pub questions: usize,
    /// SHA-256 (first 16 hex digits) of the question ids in order.
    pub question_ids: String,
    pub chunks: usize,
    pub decoding: Decoding,
    pub dtype: String,
    pub seed: u64,
}

/// The plan a run directory already has, if it has a readable one.
pub fn previous(root: &Path) -> Option<Plan> {
    let text = std::fs::read_to_string(root.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A digest of the question ids, in order.
pub fn ids_digest(questions: &[Question]) -> String {
    let mut h = Sha256::new();
    for q in questions {
        h.update(serde_json::to_string(&q.id).unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())[..16].to_string()
}

impl Plan {
    /// Writes the plan into the run directory `root`, or checks it against the plan
    /// already there (a usage error names the first setting that differs).
    pub fn check_or_write(&self, root: &Path) -> Result<()> {
        let path = root.join(FILE);
        let ours = serde_json::to_value(self)?;
        let Ok(text) = std::fs::read_to_string(&path) else {
            let mut bytes = serde_json::to_vec_pretty(&ours)?;
            bytes.push(b'\n');
            return write_atomic(&path, &bytes);
        };
        let theirs: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON; is this an mt eval run?", path.display()))?;
        let Value::Object(fields) = &ours else {
            unreachable!("a struct serialises to an object")
        };
        for (key, value) in fields {
            let before = &theirs[key.as_str()];
            if before != value {
                return Err(usage(format!(
                    "{}: this run directory answers with {key} = {before}, this command with {value}; \
                     use another --run-dir, or the same settings to resume",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            bench: "slake".into(),
            split: "test".into(),
            data: "/d".into(),
            image_folder: None,
            checkpoint: "/c".into(),
            vision_tower: None,
            questions: 3,
            question_ids: "ab".into(),
            chunks: 2,
            decoding: Decoding {
                max_new_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
            },
            dtype: "f32".into(),
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
    fn decoding_in_words() {
        assert_eq!(plan().decoding.describe(), "greedy, at most 8 new tokens");
        let d = Decoding {
            max_new_tokens: 1024,
            temperature: 0.1,
            top_p: 1.0,
            top_k: 50,
        };
        assert_eq!(
            d.describe(),
            "sampling at temperature 0.1, top-k 50, at most 1024 new tokens"
        );
    }
}
