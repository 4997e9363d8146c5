//! Where a model is right and wrong: the paper's two numbers (open recall, closed yes/no
//! accuracy, `llava-med` scorer) per answer type and per value of the fields a
//! benchmark carries (SLAKE modality / location / content type, VQA-RAD organ and
//! question type), and the open answers with the lowest recall.

use std::collections::BTreeMap;

use serde::Serialize;

use super::answers::Answer;
use super::llava_med::RowScore;
use crate::core::vqa::Id;
use crate::core::vqa::truth::Truth;

/// The fields broken down when a benchmark has them, with their titles.
pub(crate) const FIELDS: [(&str, &str); 5] = [
    ("modality", "Modality"),
    ("location", "Organ / location"),
    ("image_organ", "Organ"),
    ("content_type", "Content type"),
    ("question_type", "Question type"),
];

/// One value of a field.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Group {
    pub value: String,
    pub open: usize,
    /// Mean recall of the open questions, in percent.
    pub open_recall: Option<f64>,
    pub closed: usize,
    /// Share of closed questions answered right, in percent.
    pub closed_accuracy: Option<f64>,
}

/// The groups of one field, largest first.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Breakdown {
    pub field: String,
    pub title: String,
    pub groups: Vec<Group>,
}

/// An open question the model got (most) wrong.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Miss {
    pub id: Id,
    pub question: String,
    pub reference: String,
    pub answer: String,
    pub recall: f64,
    pub f1: f64,
}

/// One scored question: its truth, answer and `llava-med` row.
pub(crate) type Scored<'a> = (&'a Truth, &'a Answer, &'a RowScore);

/// Pairs each row score with its truth and answer (rows are scored from `pairs`, in
/// order, skipping answer types the scorer ignores).
pub(crate) fn scored<'a>(pairs: &'a [(Truth, Answer)], rows: &'a [RowScore]) -> Vec<Scored<'a>> {
    let mut rows = rows.iter().peekable();
    pairs
        .iter()
        .filter_map(|(t, a)| {
            let r = rows.next_if(|r| r.id == t.id)?;
            Some((t, a, r))
        })
        .collect()
}

/// The breakdown by answer type, then by every field in [`FIELDS`] that some question has.
pub(crate) fn breakdowns(scored: &[Scored]) -> Vec<Breakdown> {
    let mut out = vec![Breakdown {
        field: "answer_type".into(),
        title: "Answer type".into(),
        groups: group_by(scored, |(_, _, r)| Some(r.answer_type.clone())),
    }];
    for (field, title) in FIELDS {
        let groups = group_by(scored, |(t, _, _)| t.meta.get(field).map(value_text));
        if !groups.is_empty() {
            out.push(Breakdown {
                field: field.into(),
                title: title.into(),
                groups,
            });
        }
    }
    out
}

/// The `n` open answers with the lowest recall (then F1, then id).
pub(crate) fn worst_open(scored: &[Scored], n: usize) -> Vec<Miss> {
    let mut open: Vec<&Scored> = scored
        .iter()
        .filter(|(_, _, r)| r.exact_match.is_some())
        .collect();
    open.sort_by(|a, b| {
        (a.2.recall, a.2.f1)
            .partial_cmp(&(b.2.recall, b.2.f1))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    open.into_iter()
        .take(n)
        .map(|(t, a, r)| Miss {
            id: t.id.clone(),
            question: t.question.clone(),
            reference: t.answer.clone(),
            answer: a.text.clone(),
            recall: r.recall * 100.0,
            f1: r.f1 * 100.0,
        })
        .collect()
}

fn group_by(scored: &[Scored], key: impl Fn(&Scored) -> Option<String>) -> Vec<Group> {
    let mut groups: BTreeMap<String, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    for s in scored {
        let Some(value) = key(s) else { continue };
        let (open, closed) = groups.entry(value).or_default();
        match s.2.correct {
            Some(right) => closed.push(right),
            None => open.push(s.2.recall),
        }
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(value, (open, closed))| Group {
            value,
            open: open.len(),
            open_recall: mean(&open),
            closed: closed.len(),
            closed_accuracy: mean(
                &closed
                    .iter()
                    .map(|&c| f64::from(u8::from(c)))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.open + g.closed));
    out
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64 * 100.0)
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::eval::answers::{Aligned, align};
    use crate::core::eval::llava_med;
    use serde_json::json;

    fn truth(id: i64, answer: &str, kind: &str, modality: Option<&str>) -> Truth {
        let mut meta = serde_json::Map::new();
        if let Some(m) = modality {
            meta.insert("modality".into(), json!(m));
        }
        Truth {
            id: Id::Int(id),
            question: format!("<image>\nq{id}"),
            answer: answer.into(),
            answer_type: Some(kind.into()),
            image: None,
            meta,
        }
    }

    fn answer(id: i64, text: &str) -> Answer {
        Answer {
            question_id: Id::Int(id),
            text: text.into(),
        }
    }

    fn aligned() -> Aligned {
        align(
            vec![
                truth(1, "left lung", "OPEN", Some("CT")),
                truth(2, "yes", "CLOSED", Some("CT")),
                truth(3, "liver", "OPEN", Some("MRI")),
                truth(4, "no", "CLOSED", Some("MRI")),
                truth(5, "brain", "OPEN", None),
            ],
            vec![
                answer(1, "the left lung"),
                answer(2, "no"),
                answer(3, "kidney"),
                answer(4, "no"),
                answer(5, "brain"),
            ],
        )
    }

    #[test]
    fn groups_carry_open_recall_and_closed_accuracy() {
        let a = aligned();
        let (_, rows) = llava_med::score(&a);
        let s = scored(&a.pairs, &rows);
        let b = breakdowns(&s);
        assert_eq!(b.len(), 2, "answer type and modality only");
        let kinds = &b[0].groups;
        assert_eq!(kinds[0].value, "OPEN");
        assert_eq!((kinds[0].open, kinds[0].closed), (3, 0));
        // Recall: "left lung" in "the left lung" = 1, "liver" vs "kidney" = 0, "brain" = 1.
        assert!((kinds[0].open_recall.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(kinds[1].closed_accuracy, Some(50.0));
        let by_modality: Vec<_> = b[1]
            .groups
            .iter()
            .map(|g| (g.value.as_str(), g.open_recall, g.closed_accuracy))
            .collect();
        assert_eq!(
            by_modality,
            [
                ("CT", Some(100.0), Some(0.0)),
                ("MRI", Some(0.0), Some(100.0))
            ]
        );
    }

    #[test]
    fn the_worst_open_answers_come_first() {
        let a = aligned();
        let (_, rows) = llava_med::score(&a);
        let worst = worst_open(&scored(&a.pairs, &rows), 2);
        assert_eq!(worst.len(), 2);
        assert_eq!(worst[0].id, Id::Int(3));
        assert_eq!(worst[0].answer, "kidney");
        assert_eq!(worst[0].recall, 0.0);
    }
}
