//! The `multimedeval` scorer: `VQA.evaluate` of the multimedeval 1.0.0 package.
//! Both strings go through `clean_str`; precision and recall are over *sets* of words;
//! F1 has a 1e-8 guard; BLEU is torchmetrics' unigram BLEU (float32). A question is
//! closed when the cleaned reference is `yes` or `no`; it is right when at least 40% of
//! the reference words are predicted, with `not` added to a `no` reference (so "not"
//! alone counts as "no"). Open accuracy is the share of open questions with recall
//! >= 0.75.

use rustc_hash::FxHashSet as HashSet;

use serde::Serialize;

use rayon::prelude::*;

use super::answers::Aligned;
use super::bleu::torchmetrics_bleu1;
use super::normalize::{clean_str, py_split};
use crate::core::vqa::Id;

/// multimedeval's metrics, in percent, with the row counts.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// All rows: mean unigram BLEU (0 with no rows).
    pub bleu: f64,
    /// All rows: mean word-set F1 (0 with no rows).
    pub f1: f64,
    /// All rows: mean word-set recall (0 with no rows).
    pub recall: f64,
    /// Closed rows: share counted right (0 with no closed rows).
    pub closed_accuracy: f64,
    /// Open rows: mean word-set recall (0 with no open rows).
    pub open_recall: f64,
    /// Open rows: share with recall >= 0.75 (0 with no open rows).
    pub open_accuracy: f64,
    /// Rows whose cleaned reference is neither `yes` nor `no`.
    pub n_open: usize,
    /// Rows whose cleaned reference is `yes` or `no`.
    pub n_closed: usize,
}

/// The scores of one question.
#[derive(Debug, Clone, Serialize)]
pub struct RowScore {
    /// The question id.
    pub id: Id,
    /// The reference answer after `clean_str`.
    pub clean_correct: String,
    /// The model's answer after `clean_str`.
    pub clean_predicted: String,
    /// Word-set F1, as a fraction.
    pub f1: f64,
    /// Word-set recall, as a fraction.
    pub recall: f64,
    /// Unigram BLEU, as a fraction.
    pub bleu: f64,
    /// Whether the cleaned reference is `yes` or `no`.
    pub closed: bool,
    /// Closed questions: whether it counts as right (`None` for open questions).
    pub closed_correct: Option<bool>,
}

/// Scores aligned rows (every row counts; the answer type comes from the answer text).
pub fn score(aligned: &Aligned) -> (Scores, Vec<RowScore>) {
    let rows: Vec<RowScore> = aligned
        .pairs
        .par_iter()
        .map(|(truth, answer)| row(truth.id.clone(), &truth.answer, &answer.text))
        .collect();
    let mean = |xs: &mut dyn Iterator<Item = f64>| -> f64 {
        let (mut sum, mut n) = (0.0, 0usize);
        for x in xs {
            sum += x;
            n += 1;
        }
        if n == 0 { 0.0 } else { sum / n as f64 * 100.0 }
    };
    let closed: Vec<&RowScore> = rows.iter().filter(|r| r.closed).collect();
    let open: Vec<&RowScore> = rows.iter().filter(|r| !r.closed).collect();
    let share = |hits: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            hits as f64 / n as f64 * 100.0
        }
    };
    let scores = Scores {
        bleu: mean(&mut rows.iter().map(|r| r.bleu)),
        f1: mean(&mut rows.iter().map(|r| r.f1)),
        recall: mean(&mut rows.iter().map(|r| r.recall)),
        closed_accuracy: share(
            closed
                .iter()
                .filter(|r| r.closed_correct == Some(true))
                .count(),
            closed.len(),
        ),
        open_recall: mean(&mut open.iter().map(|r| r.recall)),
        open_accuracy: share(open.iter().filter(|r| r.recall >= 0.75).count(), open.len()),
        n_open: open.len(),
        n_closed: closed.len(),
    };
    (scores, rows)
}

fn row(id: Id, correct: &str, predicted: &str) -> RowScore {
    let clean_correct = clean_str(correct);
    let clean_predicted = clean_str(predicted);
    let pred: HashSet<&str> = py_split(&clean_predicted).collect();
    let mut truth: HashSet<&str> = py_split(&clean_correct).collect();
    let common = pred.intersection(&truth).count() as f64;
    let precision = if pred.is_empty() {
        0.0
    } else {
        common / pred.len() as f64
    };
    let recall = if truth.is_empty() {
        0.0
    } else {
        common / truth.len() as f64
    };
    let f1 = 2.0 * (precision * recall) / (precision + recall + 1e-8);
    let p_words: Vec<&str> = py_split(&clean_predicted).collect();
    let t_words: Vec<&str> = py_split(&clean_correct).collect();
    let bleu = torchmetrics_bleu1(&p_words, &t_words);
    let closed = clean_correct == "yes" || clean_correct == "no";
    let closed_correct = closed.then(|| {
        if truth.len() == 1 && truth.contains("no") {
            truth.insert("not");
        }
        let hit = pred.intersection(&truth).count() as f64 / truth.len() as f64;
        hit >= 0.4
    });
    RowScore {
        id,
        clean_correct: clean_correct.clone(),
        clean_predicted: clean_predicted.clone(),
        f1,
        recall,
        bleu,
        closed,
        closed_correct,
    }
}
