//! Step 4 of the MedTrinity pipeline: the captioner's instruction, built from the
//! coarse caption, the regions of interest (drawn on the image as green boxes) and the
//! retrieved knowledge, asking for the description in the MedTrinity order: modality
//! and organ, where the region lies and how large it is, what is unusual about it, how
//! it relates to its surroundings, then one merged paragraph. The model is told to say
//! "region of interest", never "green box".
//!
//! Pure functions of their inputs; testdata/pipeline/dry-run.golden.jsonl (checked by
//! tests/it/pipeline.rs) pins the text.

use std::fmt::Write as _;

use crate::core::caption_parts::{MODALITIES, ORGANS, analyze};
use crate::core::roi::Roi;

/// Words kept of each knowledge passage in the prompt.
pub(crate) const PASSAGE_WORDS: usize = 80;

/// A retrieved passage as the prompt shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Passage {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// Everything the instruction is built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PromptInput<'a> {
    pub coarse: &'a str,
    pub rois: &'a [Roi],
    pub passages: &'a [Passage],
}

/// The captioner's instruction (the user turn, starting with `<image>`).
pub(crate) fn medtrinity_prompt(input: &PromptInput<'_>) -> String {
    let PromptInput {
        coarse,
        rois,
        passages,
    } = *input;
    let mut p = String::from("<image>\nYou are looking at a medical image");
    p.push_str(match rois.len() {
        0 => ".",
        1 => " in which the region of interest is marked with a green box.",
        _ => " in which the regions of interest are marked with green boxes.",
    });
    p.push_str(" Use the information below together with what you see.\n");
    if !coarse.is_empty() {
        let _ = write!(p, "\nCoarse caption: {coarse}\n");
    }
    match rois {
        [] => {}
        [roi] => {
            let _ = writeln!(
                p,
                "\nRegion of interest: it lies in the {} part of the image and covers {} of the image area{}.",
                roi.position,
                percent(roi.area_pct),
                label_note(roi)
            );
        }
        _ => {
            p.push_str("\nRegions of interest:\n");
            for (i, roi) in rois.iter().enumerate() {
                let _ = writeln!(
                    p,
                    "{}. in the {} part of the image, covering {} of the image area{}",
                    i + 1,
                    roi.position,
                    percent(roi.area_pct),
                    label_note(roi)
                );
            }
        }
    }
    if !passages.is_empty() {
        p.push_str("\nMedical knowledge (use only what agrees with the image):\n");
        for (i, passage) in passages.iter().enumerate() {
            let text = first_words(&passage.text, PASSAGE_WORDS);
            match passage.title.trim() {
                "" => {
                    let _ = writeln!(p, "[{}] {text}", i + 1);
                }
                title => {
                    let _ = writeln!(p, "[{}] {title}: {text}", i + 1);
                }
            }
        }
    }
    p.push_str("\nWrite a detailed description of the image in this order:\n");
    p.push_str("1. The imaging modality and the organ or tissue shown.\n");
    if rois.is_empty() {
        p.push_str(
            "2. Any region that looks abnormal: where it lies in the image and how much of it it covers.\n\
             3. What is unusual about that region: colour, intensity, texture, shape or size compared with normal tissue.\n\
             4. How that region relates to the structures around it.\n\
             Then merge these points into one fluent paragraph.",
        );
    } else {
        let (what, lies, pos, covers, relates, them, marked) = if rois.len() == 1 {
            let w = "the region of interest";
            (
                w,
                "lies",
                "its position",
                "it covers",
                "relates",
                "it",
                "area",
            )
        } else {
            let w = "the regions of interest";
            (
                w,
                "lie",
                "their positions",
                "they cover",
                "relate",
                "them",
                "areas",
            )
        };
        let _ = write!(
            p,
            "2. Where {what} {lies}, {pos} relative to the whole image, and how much of the image {covers}.\n\
             3. What is unusual about {what}: colour, intensity, texture, shape or size compared with normal tissue.\n\
             4. How {what} {relates} to the structures around {them}.\n\
             Then merge these points into one fluent paragraph. Call the marked {marked} \"{what}\"; \
             do not mention a green box or a bounding box.",
        );
    }
    p
}

/// The retrieval query for a sample: the canonical modality and organ named in the
/// coarse caption (so "computed tomography" also asks for "CT"), the caption's own
/// words and the regions' text labels.
pub(crate) fn knowledge_query(coarse: &str, rois: &[Roi]) -> String {
    let parts = analyze(coarse);
    let mut terms: Vec<&str> = Vec::new();
    if let Some(m) = parts.modality {
        terms.push(MODALITIES[usize::from(m)].0);
    }
    if let Some(o) = parts.organ {
        terms.push(ORGANS[usize::from(o)].0);
    }
    // The caption's words, less the template's own ("image", "showing"), which would
    // otherwise pull in every passage about imaging.
    terms.extend(
        coarse
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .filter(|w| !w.is_empty() && !GENERIC_WORDS.iter().any(|g| g.eq_ignore_ascii_case(w))),
    );
    terms.extend(
        rois.iter()
            .filter(|r| is_text_label(&r.label))
            .map(|r| r.label.trim()),
    );
    terms.retain(|t| !t.trim().is_empty());
    terms.join(" ")
}

/// Words of coarse captions that say nothing about the case.
const GENERIC_WORDS: &[&str] = &[
    "image", "images", "imaging", "picture", "photo", "scan", "view", "showing", "shows", "shown",
    "medical",
];

/// Whether a modality is shown in the radiological convention (patient's right on the
/// image's left): CT, MRI, X-ray, PET and nuclear medicine.
pub(crate) fn is_radiological(coarse: &str) -> bool {
    analyze(coarse).modality.is_some_and(|m| {
        matches!(
            MODALITIES[usize::from(m)].0,
            "CT" | "MRI" | "X-ray" | "PET" | "Nuclear medicine"
        )
    })
}

/// `"about 2.1%"`, or `"less than 0.1%"` for slivers.
fn percent(pct: f64) -> String {
    if pct < 0.05 {
        "less than 0.1%".to_string()
    } else {
        format!("about {pct:.1}%")
    }
}

/// `" (labelled tumor)"` for a named region; nothing for a bare label value like `1`.
fn label_note(roi: &Roi) -> String {
    if is_text_label(&roi.label) {
        format!(" (labelled {})", roi.label.trim())
    } else {
        String::new()
    }
}

/// A label that says something (not a number from a label map).
fn is_text_label(label: &str) -> bool {
    let label = label.trim();
    !label.is_empty() && label.parse::<f64>().is_err()
}

/// The first `n` words of `text`, with "..." when cut.
fn first_words(text: &str, n: usize) -> String {
    let mut words = text.split_whitespace();
    let kept: Vec<&str> = words.by_ref().take(n).collect();
    let mut out = kept.join(" ");
    if words.next().is_some() {
        out.push_str(" ...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roi(label: &str, position: &str, area_pct: f64) -> Roi {
        Roi {
            label: label.into(),
            bbox: [0, 0, 1, 1],
            bbox_norm: [0.0; 4],
            area: 1,
            area_pct,
            centroid: [0.5, 0.5],
            components: 1,
            position: position.into(),
        }
    }

    #[test]
    fn the_query_names_canonical_modality_organ_and_text_labels() {
        let q = knowledge_query(
            "Computed tomography image of the liver, showing a hypodense lesion.",
            &[
                roi("1", "center", 1.0),
                roi("metastasis", "left upper", 2.0),
            ],
        );
        assert_eq!(
            q,
            "CT liver Computed tomography of the liver a hypodense lesion metastasis"
        );
        assert_eq!(knowledge_query("", &[]), "");
    }

    #[test]
    fn radiological_modalities_are_told_apart() {
        assert!(is_radiological("MRI image of the brain."));
        assert!(is_radiological("A chest radiograph."));
        assert!(!is_radiological("Histopathology image of the colon."));
        assert!(!is_radiological(""));
    }

    #[test]
    fn passages_are_cut_and_areas_rounded() {
        let long = vec!["word"; PASSAGE_WORDS + 5].join(" ");
        assert!(first_words(&long, PASSAGE_WORDS).ends_with("word ..."));
        assert_eq!(first_words("a  b\nc", 5), "a b c");
        assert_eq!(percent(2.06), "about 2.1%");
        assert_eq!(percent(0.01), "less than 0.1%");
    }

    #[test]
    fn the_instruction_keeps_the_medtrinity_order_and_wording() {
        let rois = [roi("tumor", "left upper", 3.26)];
        let p = medtrinity_prompt(&PromptInput {
            coarse: "MRI image of the brain.",
            rois: &rois,
            passages: &[],
        });
        let at = |s: &str| {
            p.find(s)
                .unwrap_or_else(|| panic!("{s:?} missing from {p}"))
        };
        assert!(p.starts_with("<image>\n"));
        assert!(at("modality") < at("2. Where the region of interest lies"));
        assert!(at("2. Where") < at("3. What is unusual"));
        assert!(at("3. What") < at("4. How the region of interest relates"));
        assert!(at("4. How") < at("merge"));
        assert!(p.contains(
            "left upper part of the image and covers about 3.3% of the image area (labelled tumor)."
        ));
        assert!(p.contains("\"the region of interest\""));
        assert!(!p.contains("Medical knowledge"));
    }
}
