//! BLEU as the reference scorers compute it: NLTK 3.9's `sentence_bleu` (the
//! llava-med scorer) and torchmetrics' `BLEUScore(n_gram=1)` called on one sentence
//! (multimedeval), each with its own edge cases.

use rustc_hash::FxHashMap as HashMap;

/// NLTK smoothing: `method0` (none) or `method1` (epsilon 0.1 added to zero counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Smoothing {
    None,
    Epsilon,
}

/// `nltk.translate.bleu_score.sentence_bleu([reference], hypothesis, weights,
/// smoothing_function)` for one reference. Orders up to `weights.len()`; no
/// auto-reweighing. Zero unigram matches give 0; with no smoothing a zero higher-order
/// count contributes `log(sys.float_info.min)`, as NLTK does.
pub(crate) fn sentence_bleu(
    reference: &[&str],
    hypothesis: &[&str],
    weights: &[f64],
    smoothing: Smoothing,
) -> f64 {
    let precisions: Vec<(usize, usize)> = (1..=weights.len())
        .map(|n| modified_precision(reference, hypothesis, n))
        .collect();
    if precisions[0].0 == 0 {
        return 0.0;
    }
    let bp = brevity_penalty(reference.len(), hypothesis.len());
    let terms: Vec<f64> = weights
        .iter()
        .zip(&precisions)
        .map(|(w, &(num, den))| {
            let p = match (num, smoothing) {
                (0, Smoothing::None) => f64::MIN_POSITIVE,
                (0, Smoothing::Epsilon) => 0.1 / den as f64,
                _ => num as f64 / den as f64,
            };
            w * p.ln()
        })
        .collect();
    bp * fsum(&terms).exp()
}

/// Clipped n-gram matches and the hypothesis n-gram count (at least 1).
fn modified_precision(reference: &[&str], hypothesis: &[&str], n: usize) -> (usize, usize) {
    let hyp = ngram_counts(hypothesis, n);
    let refs = ngram_counts(reference, n);
    let matched = hyp
        .iter()
        .map(|(g, &c)| c.min(refs.get(g).copied().unwrap_or(0)))
        .sum();
    (matched, hyp.values().sum::<usize>().max(1))
}

fn ngram_counts<'a>(words: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::default();
    if words.len() >= n {
        for g in words.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
    }
    counts
}

/// NLTK's brevity penalty for one reference.
fn brevity_penalty(ref_len: usize, hyp_len: usize) -> f64 {
    if hyp_len > ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    }
}

/// Python's `math.fsum`: Shewchuk's exact partials, then CPython's correctly rounded
/// final step (sum the partials from the top until a step is inexact, then the
/// half-even correction). Inputs here are finite.
fn fsum(xs: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &x in xs {
        let mut x = x;
        let mut kept = 0;
        for i in 0..partials.len() {
            let mut y = partials[i];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    let Some(mut n) = partials.len().checked_sub(1) else {
        return 0.0;
    };
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    // Half-even: when the rest lies exactly half an ulp away in the same direction.
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

/// torchmetrics `BLEUScore(n_gram=1)` on one prediction and one target, computed in
/// float32 as torchmetrics does (its state tensors are float32), returned widened.
/// Words are `str.split()` pieces; an empty string is no words.
pub(crate) fn torchmetrics_bleu1(prediction: &[&str], target: &[&str]) -> f64 {
    let pred = ngram_counts(prediction, 1);
    let tgt = ngram_counts(target, 1);
    let matched: usize = pred
        .iter()
        .map(|(g, &c)| c.min(tgt.get(g).copied().unwrap_or(0)))
        .sum();
    if matched == 0 {
        return 0.0;
    }
    let precision = matched as f32 / prediction.len() as f32;
    let mean = (1.0f32 * precision.ln()).exp();
    let (pl, tl) = (prediction.len() as f32, target.len() as f32);
    let bp = if pl > tl { 1.0 } else { (1.0 - tl / pl).exp() };
    f64::from(bp * mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn nltk_values() {
        // Values printed by NLTK 3.9.1 for these pairs.
        let r = words("the cat is on the mat");
        let h = words("the cat the mat");
        let unigram = sentence_bleu(&r, &h, &[1.0, 0.0, 0.0, 0.0], Smoothing::Epsilon);
        // p1 = 4/4, bp = exp(1 - 6/4).
        assert!((unigram - (1.0f64 - 1.5).exp()).abs() < 1e-15);
        let bigram = sentence_bleu(&r, &h, &[0.0, 1.0, 0.0, 0.0], Smoothing::Epsilon);
        // bigrams: the cat, cat the, the mat -> 2 of 3 match.
        assert!((bigram - (1.0f64 - 1.5).exp() * 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(sentence_bleu(&r, &[], &[0.25; 4], Smoothing::None), 0.0);
        assert_eq!(
            sentence_bleu(&r, &words("dog"), &[0.25; 4], Smoothing::None),
            0.0
        );
        // Default weights, no smoothing, zero 4-gram matches: effectively 0 but not 0.
        let tiny = sentence_bleu(&r, &h, &[0.25; 4], Smoothing::None);
        assert!(tiny > 0.0 && tiny < 1e-100);
    }

    #[test]
    fn fsum_is_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100, 1e-100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        // math.fsum gives -354.60056874424055 here; summing the partials plainly is 1 ulp off.
        let xs = [
            0.0,
            -0.40235947810852507,
            -177.09910463306602,
            -177.09910463306602,
        ];
        assert_eq!(fsum(&xs), -354.60056874424055);
        assert_eq!(fsum(&[]), 0.0);
    }

    #[test]
    fn torchmetrics_unigram() {
        assert_eq!(torchmetrics_bleu1(&[], &words("yes")), 0.0);
        assert_eq!(torchmetrics_bleu1(&words("yes"), &words("yes")), 1.0);
        let short = torchmetrics_bleu1(&words("left lung"), &words("the left lung"));
        assert!((short - f64::from((1.0f32 - 1.5).exp())).abs() < 1e-7);
    }
}
