//! Answers in the LLaVA answer JSONL, read leniently (a bad row is named and skipped, the
//! rest is scored), then aligned with the ground truth ([`crate::core::vqa::truth`]) the
//! way `run_eval_nocandi.py` does: on the ids both sides have, each side sorted by id.

use rustc_hash::FxHashSet as HashSet;
use std::cmp::Ordering;
use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::core::vqa::truth::{Truth, for_each_record};
use crate::core::vqa::{Id, Rejected};

/// One model answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// `question_id`: the id of the question answered.
    pub question_id: Id,
    /// `text`: the model's answer.
    pub text: String,
}

/// Reads answers (LLaVA answer JSONL; a JSON array works too).
pub fn read_answers(path: &Path, rejected: &mut Vec<Rejected>) -> Result<Vec<Answer>> {
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    for_each_record(path, rejected, |value| {
        let question_id = Id::from_json(&value["question_id"], "question_id")?;
        let text = match &value["text"] {
            Value::String(s) => s.clone(),
            Value::Null => bail!("no `text`"),
            other => bail!("`text` must be a string, not {other}"),
        };
        if !seen.insert(question_id.clone()) {
            bail!("duplicate question_id {question_id} (the first one is kept)");
        }
        out.push(Answer { question_id, text });
        Ok(())
    })?;
    Ok(out)
}

/// Ground truth and answers paired on their common ids, sorted by id, plus how many
/// ids only one side had.
#[derive(Debug, Default)]
pub struct Aligned {
    /// Ground truth and answer with the same id, in id order.
    pub pairs: Vec<(Truth, Answer)>,
    /// Ground-truth ids with no answer.
    pub unmatched_truth: usize,
    /// Answer ids with no ground truth.
    pub unmatched_answers: usize,
}

/// Pairs `truth` and `answers` on common ids, in id order.
pub fn align(mut truth: Vec<Truth>, mut answers: Vec<Answer>) -> Aligned {
    truth.sort_by(|a, b| a.id.cmp(&b.id));
    answers.sort_by(|a, b| a.question_id.cmp(&b.question_id));
    let mut out = Aligned::default();
    let mut answers = answers.into_iter().peekable();
    for t in truth {
        loop {
            match answers.peek().map(|a| a.question_id.cmp(&t.id)) {
                Some(Ordering::Less) => {
                    answers.next();
                    out.unmatched_answers += 1;
                }
                Some(Ordering::Equal) => {
                    let a = answers.next().expect("peeked");
                    out.pairs.push((t, a));
                    break;
                }
                _ => {
                    out.unmatched_truth += 1;
                    break;
                }
            }
        }
    }
    out.unmatched_answers += answers.count();
    out
}
