//! The `llava-med` scorer: `llava/eval/run_eval_nocandi.py` of the MedTrinity-25M
//! repository with its `eval_metrics` package, quirks included:
//! - both strings are lower-cased first; OPEN rows get exact match, F1, precision and
//!   recall on normalised words, and four BLEU scores on the raw whitespace tokens
//!   (NLTK `sentence_bleu` with default weights and no smoothing, then unigram,
//!   bigram and trigram weights with smoothing `method1`);
//! - CLOSED rows get F1, precision, recall and "yes/no accuracy", which is the raw
//!   substring test `gt in pred` (so "no" is found in "not" and "nodule");
//! - a row without `answer_type` counts as OPEN; other answer types count nowhere;
//! - the closed metrics are reported only when the *last* aligned row (in id order)
//!   has an `answer_type` field, as the reference's `if 'answer_type' in gt_item` does.
//!
//! Where the reference divides by zero (no OPEN or no CLOSED rows) the metric is `None`.

use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;

use rayon::prelude::*;

use super::answers::Aligned;
use super::bleu::{Smoothing, sentence_bleu};
use super::normalize::{normalize_word, py_split};
use crate::core::vqa::Id;
use crate::core::vqa::truth::Truth;

/// The reference's averages, in percent, with the row counts.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// OPEN rows: mean exact match (`None`: no OPEN rows).
    pub exact_match: Option<f64>,
    /// OPEN rows: mean word F1 (`None`: no OPEN rows).
    pub f1: Option<f64>,
    /// OPEN rows: mean word precision (`None`: no OPEN rows).
    pub precision: Option<f64>,
    /// OPEN rows: mean word recall (`None`: no OPEN rows).
    pub recall: Option<f64>,
    /// OPEN rows: mean BLEU with default weights, unsmoothed (`None`: no OPEN rows).
    pub bleu: Option<f64>,
    /// OPEN rows: mean BLEU-1, smoothed (`None`: no OPEN rows).
    pub bleu_1: Option<f64>,
    /// OPEN rows: mean BLEU-2, smoothed (`None`: no OPEN rows).
    pub bleu_2: Option<f64>,
    /// OPEN rows: mean BLEU-3, smoothed (`None`: no OPEN rows).
    pub bleu_3: Option<f64>,
    /// CLOSED rows: share whose reference answer occurs in the prediction (0 with no
    /// CLOSED rows; `None`: the closed metrics are not reported).
    pub yes_no_accuracy: Option<f64>,
    /// CLOSED rows: mean word F1 (`None`: no CLOSED rows or not reported).
    pub closed_f1: Option<f64>,
    /// CLOSED rows: mean word precision (`None`: no CLOSED rows or not reported).
    pub closed_precision: Option<f64>,
    /// CLOSED rows: mean word recall (`None`: no CLOSED rows or not reported).
    pub closed_recall: Option<f64>,
    /// Aligned rows scored as OPEN (including those without `answer_type`).
    pub n_open: usize,
    /// Aligned rows scored as CLOSED.
    pub n_closed: usize,
    /// Rows whose `answer_type` is neither OPEN nor CLOSED (the reference skips them).
    pub n_other_type: usize,
    /// Ground-truth ids with no answer.
    pub n_unmatched_gt: usize,
    /// Answer ids with no ground truth.
    pub n_unmatched_pred: usize,
}

/// The scores of one question.
#[derive(Debug, Clone, Serialize)]
pub struct RowScore {
    /// The question id.
    pub id: Id,
    /// `OPEN` or `CLOSED` (a row without `answer_type` is `OPEN`).
    pub answer_type: String,
    /// Word F1 of the lower-cased, normalised answers, as a fraction.
    pub f1: f64,
    /// Word precision, as a fraction.
    pub precision: f64,
    /// Word recall, as a fraction.
    pub recall: f64,
    /// OPEN rows: exact match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// OPEN rows: BLEU (default weights), BLEU-1, BLEU-2, BLEU-3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<[f64; 4]>,
    /// CLOSED rows: whether the reference answer occurs in the prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

/// Scores aligned rows; returns the summary and the per-row scores (OPEN and CLOSED
/// rows only).
pub fn score(aligned: &Aligned) -> (Scores, Vec<RowScore>) {
    let scored: Vec<Option<RowScore>> = aligned
        .pairs
        .par_iter()
        .map(|(truth, answer)| row(truth, &answer.text))
        .collect();
    let other = scored.iter().filter(|r| r.is_none()).count();
    let rows: Vec<RowScore> = scored.into_iter().flatten().collect();
    let open: Vec<&RowScore> = rows.iter().filter(|r| r.exact_match.is_some()).collect();
    let closed: Vec<&RowScore> = rows.iter().filter(|r| r.correct.is_some()).collect();
    let with_closed = aligned
        .pairs
        .last()
        .is_some_and(|(t, _)| t.answer_type.is_some());
    let closed_mean = |f: fn(&RowScore) -> f64| with_closed.then(|| percent(&closed, f)).flatten();
    let scores = Scores {
        exact_match: percent(&open, |r| r.exact_match.unwrap_or(0.0)),
        f1: percent(&open, |r| r.f1),
        precision: percent(&open, |r| r.precision),
        recall: percent(&open, |r| r.recall),
        bleu: percent(&open, |r| r.bleu.map_or(0.0, |b| b[0])),
        bleu_1: percent(&open, |r| r.bleu.map_or(0.0, |b| b[1])),
        bleu_2: percent(&open, |r| r.bleu.map_or(0.0, |b| b[2])),
        bleu_3: percent(&open, |r| r.bleu.map_or(0.0, |b| b[3])),
        // The reference reports 0 accuracy (not an error) when nothing is CLOSED.
        yes_no_accuracy: with_closed.then(|| {
            let right = closed.iter().filter(|r| r.correct == Some(true)).count();
            if closed.is_empty() {
                0.0
            } else {
                right as f64 / closed.len() as f64 * 100.0
            }
        }),
        closed_f1: closed_mean(|r| r.f1),
        closed_precision: closed_mean(|r| r.precision),
        closed_recall: closed_mean(|r| r.recall),
        n_open: open.len(),
        n_closed: closed.len(),
        n_other_type: other,
        n_unmatched_gt: aligned.unmatched_truth,
        n_unmatched_pred: aligned.unmatched_answers,
    };
    (scores, rows)
}

/// One row's scores; `None` for an answer type the reference ignores.
fn row(truth: &Truth, text: &str) -> Option<RowScore> {
    let gt = truth.answer.to_lowercase();
    let pred = text.to_lowercase();
    let kind = truth.answer_type.as_deref().unwrap_or("OPEN");
    // Both metrics normalise the same strings; do it once.
    let (cand, refs) = (normalized(&pred), normalized(&gt));
    let (f1, precision, recall) = f1_score(&cand, &refs);
    let mut row = RowScore {
        id: truth.id.clone(),
        answer_type: kind.to_string(),
        f1,
        precision,
        recall,
        exact_match: None,
        bleu: None,
        correct: None,
    };
    match kind {
        "OPEN" => {
            row.exact_match = Some(exact_match(&cand, &refs));
            row.bleu = Some(bleu_scores(&pred, &gt));
        }
        "CLOSED" => row.correct = Some(pred.contains(&gt)),
        _ => return None,
    }
    Some(row)
}

/// `sum(values) / len(values) * 100` in row order, `None` for no rows.
fn percent(rows: &[&RowScore], f: fn(&RowScore) -> f64) -> Option<f64> {
    if rows.is_empty() {
        return None;
    }
    let sum: f64 = rows.iter().map(|r| f(r)).sum();
    Some(sum / rows.len() as f64 * 100.0)
}

/// Word counts of `split_sentence(s, 1)`, in first-seen order.
fn word_counts(s: &str) -> Vec<(&str, usize)> {
    let mut index: HashMap<&str, usize> = HashMap::default();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for w in py_split(s) {
        match index.get(w) {
            Some(&i) => counts[i].1 += 1,
            None => {
                index.insert(w, counts.len());
                counts.push((w, 1));
            }
        }
    }
    counts
}

/// `normalize_word(s)` lower-cased, as `split_sentence` sees it.
fn normalized(s: &str) -> String {
    normalize_word(s).to_lowercase()
}

/// `calculate_exactmatch(candidate, reference)` on [`normalized`] strings: distinct
/// reference words found in the candidate, over the candidate's word count.
fn exact_match(c: &str, r: &str) -> f64 {
    let cand = word_counts(c);
    let total: usize = cand.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return 0.0;
    }
    let found = word_counts(r)
        .iter()
        .filter(|(w, _)| cand.iter().any(|(c, _)| c == w))
        .count();
    found as f64 / total as f64
}

/// `calculate_f1score(candidate, reference)` on [`normalized`] strings -> (f1,
/// precision, recall) from word counts; zeros when either side is empty or nothing
/// matches.
fn f1_score(c: &str, r: &str) -> (f64, f64, f64) {
    let cand: HashMap<&str, usize> = word_counts(c).into_iter().collect();
    let refs: HashMap<&str, usize> = word_counts(r).into_iter().collect();
    if cand.is_empty() || refs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (w, &n) in &cand {
        if refs.contains_key(w) {
            tp += n;
        } else {
            fp += n;
        }
    }
    for (w, &n) in &refs {
        if !cand.contains_key(w) {
            fn_ += n;
        }
    }
    if tp == 0 {
        return (0.0, 0.0, 0.0);
    }
    let precision = tp as f64 / (tp + fp) as f64;
    let recall = tp as f64 / (tp + fn_) as f64;
    (
        2.0 * precision * recall / (precision + recall),
        precision,
        recall,
    )
}

/// The four BLEU scores of an OPEN row on raw whitespace tokens.
fn bleu_scores(pred: &str, gt: &str) -> [f64; 4] {
    let (p, g): (Vec<&str>, Vec<&str>) = (py_split(pred).collect(), py_split(gt).collect());
    [
        sentence_bleu(&g, &p, &[0.25; 4], Smoothing::None),
        sentence_bleu(&g, &p, &[1.0, 0.0, 0.0, 0.0], Smoothing::Epsilon),
        sentence_bleu(&g, &p, &[0.0, 1.0, 0.0, 0.0], Smoothing::Epsilon),
        sentence_bleu(&g, &p, &[0.0, 0.0, 1.0, 0.0], Smoothing::Epsilon),
    ]
}
