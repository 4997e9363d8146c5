//! Scores as a terminal table, with the paper's numbers beside ours when asked.

use std::fmt::Write as _;

use super::{Bench, llava_med, multimedeval};

/// One table line: the metric, our value, the paper's value.
type Line = (&'static str, Option<f64>, Option<f64>);

/// The `llava-med` scores as a table; with `bench`, the paper's open (recall) and
/// closed (yes/no accuracy) numbers sit beside ours.
pub fn llava_med_table(s: &llava_med::Scores, bench: Option<Bench>) -> String {
    let (open, closed) = bench.map(Bench::paper).unzip();
    let lines: [Line; 12] = [
        ("Exact match (open)", s.exact_match, None),
        ("F1 (open)", s.f1, None),
        ("Precision (open)", s.precision, None),
        ("Recall (open)", s.recall, open),
        ("BLEU (open)", s.bleu, None),
        ("BLEU-1 (open)", s.bleu_1, None),
        ("BLEU-2 (open)", s.bleu_2, None),
        ("BLEU-3 (open)", s.bleu_3, None),
        ("Yes/no accuracy (closed)", s.yes_no_accuracy, closed),
        ("F1 (closed)", s.closed_f1, None),
        ("Precision (closed)", s.closed_precision, None),
        ("Recall (closed)", s.closed_recall, None),
    ];
    let mut out = table(&lines, bench);
    let _ = writeln!(
        out,
        "\n{} open and {} closed questions scored; {} ground-truth and {} answer ids had no partner{}",
        s.n_open,
        s.n_closed,
        s.n_unmatched_gt,
        s.n_unmatched_pred,
        if s.n_other_type > 0 {
            format!(
                "; {} rows with another answer_type were skipped",
                s.n_other_type
            )
        } else {
            String::new()
        }
    );
    out
}

/// The `multimedeval` scores as a table (the paper used the llava-med scorer, so no
/// paper column).
pub fn multimedeval_table(s: &multimedeval::Scores) -> String {
    let lines: [Line; 6] = [
        ("BLEU-1", Some(s.bleu), None),
        ("F1", Some(s.f1), None),
        ("Recall", Some(s.recall), None),
        ("Closed accuracy", Some(s.closed_accuracy), None),
        ("Open recall", Some(s.open_recall), None),
        ("Open accuracy", Some(s.open_accuracy), None),
    ];
    let mut out = table(&lines, None);
    let _ = writeln!(
        out,
        "\n{} open and {} closed questions scored",
        s.n_open, s.n_closed
    );
    out
}

fn table(lines: &[Line], bench: Option<Bench>) -> String {
    let width = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = write!(out, "{:width$}  {:>9}", "Metric", "Score (%)");
    if let Some(b) = bench {
        let _ = write!(out, "  {:>9}", format!("{} paper", b.name()));
    }
    out.push('\n');
    for (name, ours, paper) in lines {
        let ours = ours.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        let _ = write!(out, "{name:width$}  {ours:>9}");
        if bench.is_some() {
            let paper = paper.map_or_else(String::new, |v| format!("{v:.1}"));
            let _ = write!(out, "  {paper:>9}");
        }
        out.push('\n');
    }
    out
}
