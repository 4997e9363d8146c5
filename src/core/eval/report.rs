//! Scores as a terminal table, with the paper's numbers beside ours when asked.

use std::fmt::Write as _;

use super::{breakdown, llava_med, multimedeval};
use crate::core::vqa::Bench;

/// One table line: the metric, our value, the paper's value.
type Line = (&'static str, Option<f64>, Option<f64>);

/// The `llava-med` scores as a table; with `bench`, the paper's open (recall) and
/// closed (yes/no accuracy) numbers sit beside ours.
pub(crate) fn llava_med_table(s: &llava_med::Scores, bench: Option<Bench>) -> String {
    let (open, closed) = bench.map(Bench::paper).unzip();
    let lines = llava_med_metrics(s).map(|(name, ours)| {
        let paper = match name {
            "Recall (open)" => open,
            "Yes/no accuracy (closed)" => closed,
            _ => None,
        };
        (name, ours, paper)
    });
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
pub(crate) fn multimedeval_table(s: &multimedeval::Scores) -> String {
    let lines = multimedeval_metrics(s).map(|(name, ours)| (name, ours, None));
    let mut out = table(&lines, None);
    let _ = writeln!(
        out,
        "\n{} open and {} closed questions scored",
        s.n_open, s.n_closed
    );
    out
}

/// Every `llava-med` metric, named as the tables show it.
fn llava_med_metrics(s: &llava_med::Scores) -> [(&'static str, Option<f64>); 12] {
    [
        ("Exact match (open)", s.exact_match),
        ("F1 (open)", s.f1),
        ("Precision (open)", s.precision),
        ("Recall (open)", s.recall),
        ("BLEU (open)", s.bleu),
        ("BLEU-1 (open)", s.bleu_1),
        ("BLEU-2 (open)", s.bleu_2),
        ("BLEU-3 (open)", s.bleu_3),
        ("Yes/no accuracy (closed)", s.yes_no_accuracy),
        ("F1 (closed)", s.closed_f1),
        ("Precision (closed)", s.closed_precision),
        ("Recall (closed)", s.closed_recall),
    ]
}

/// Every `multimedeval` metric, named as the tables show it.
fn multimedeval_metrics(s: &multimedeval::Scores) -> [(&'static str, Option<f64>); 6] {
    [
        ("BLEU-1", Some(s.bleu)),
        ("F1", Some(s.f1)),
        ("Recall", Some(s.recall)),
        ("Closed accuracy", Some(s.closed_accuracy)),
        ("Open recall", Some(s.open_recall)),
        ("Open accuracy", Some(s.open_accuracy)),
    ]
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

/// What `report.md` describes besides the scores.
pub(crate) struct ReportHeader<'a> {
    pub bench: Bench,
    pub split: &'a str,
    pub model: &'a str,
    pub checkpoint: &'a str,
    pub data: &'a str,
    pub questions: usize,
    pub answered: usize,
    pub decoding: &'a str,
}

/// `report.md`: the paper's two numbers beside ours, every metric of both scorers, the
/// breakdowns and the worst open answers.
pub(crate) fn markdown(
    h: &ReportHeader,
    s: &llava_med::Scores,
    m: &multimedeval::Scores,
    breakdowns: &[breakdown::Breakdown],
    worst: &[breakdown::Miss],
) -> String {
    let mut out = String::new();
    let (paper_open, paper_closed) = h.bench.paper();
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "# {} ({}): {}\n",
        h.bench.title(),
        h.split,
        cell(h.model)
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| checkpoint | {} |", cell(h.checkpoint));
    let _ = writeln!(out, "| data | {} |", cell(h.data));
    let _ = writeln!(
        out,
        "| questions | {} ({} answered) |",
        h.questions, h.answered
    );
    let _ = writeln!(out, "| decoding | {} |", cell(h.decoding));
    let _ = writeln!(out, "| mt | {} |\n", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "## Overall\n");
    let _ = writeln!(
        out,
        "| | questions | this model | LLaVA-Med++ (paper) |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| Open: recall (%) | {} | {} | {paper_open:.1} |",
        s.n_open,
        pct(s.recall)
    );
    let _ = writeln!(
        out,
        "| Closed: yes/no accuracy (%) | {} | {} | {paper_closed:.1} |\n",
        s.n_closed,
        pct(s.yes_no_accuracy)
    );
    let _ = writeln!(
        out,
        "Scorer `llava-med` (the reference's run_eval_nocandi.py; the paper's numbers):\n"
    );
    metric_table(&mut out, &llava_med_metrics(s), pct);
    let _ = writeln!(
        out,
        "Scorer `multimedeval` (VQA.evaluate of multimedeval 1.0.0):\n"
    );
    metric_table(&mut out, &multimedeval_metrics(m), pct);
    for b in breakdowns {
        let _ = writeln!(out, "## By {}\n", b.title.to_lowercase());
        let _ = writeln!(
            out,
            "| {} | open | open recall (%) | closed | closed accuracy (%) |\n|---|---:|---:|---:|---:|",
            b.title
        );
        for g in &b.groups {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&g.value),
                g.open,
                pct(g.open_recall),
                g.closed,
                pct(g.closed_accuracy)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## The {} worst open answers\n", worst.len());
    if worst.is_empty() {
        let _ = writeln!(out, "No open questions were answered.");
        return out;
    }
    let _ = writeln!(
        out,
        "| id | question | reference | answer | recall (%) | F1 (%) |\n|---|---|---|---|---:|---:|"
    );
    for w in worst {
        let question = w.question.strip_prefix("<image>\n").unwrap_or(&w.question);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            cell(&w.id.to_string()),
            cell(question),
            cell(&w.reference),
            cell(&w.answer),
            w.recall,
            w.f1
        );
    }
    out
}

fn metric_table(
    out: &mut String,
    rows: &[(&str, Option<f64>)],
    pct: impl Fn(Option<f64>) -> String,
) {
    let _ = writeln!(out, "| metric | % |\n|---|---:|");
    for (name, v) in rows {
        let _ = writeln!(out, "| {name} | {} |", pct(*v));
    }
    out.push('\n');
}

/// Text made safe for one Markdown table cell: pipes escaped, line breaks and other
/// control characters as spaces, long text cut at 200 characters.
fn cell(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut: String = flat.chars().take(200).collect();
    if flat.chars().count() > 200 {
        cut.push('…');
    }
    cut.replace('|', "\\|")
}
