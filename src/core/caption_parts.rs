//! Which parts of a MedTrinity multigranular description a caption contains, by keyword
//! rules, plus the modality and organ it names first.
//!
//! MedTrinity-25M descriptions run modality -> organ/tissue -> ROI location -> ROI size
//! -> lesion texture -> relations to surrounding regions. A caption "mentions" a part
//! when it contains one of that part's terms as a whole word, case-insensitively
//! (terms ending in `*` match any word starting with them):
//!
//! | part | rule |
//! |---|---|
//! | modality | a term of [`MODALITIES`] (CT, MRI, X-ray, ultrasound, PET, ...) |
//! | organ | a term of [`ORGANS`] (brain, lung, liver, ..., cell, tissue) |
//! | roi_location | a position word: left, right, upper, lower, center, middle, quadrant, ... |
//! | roi_area | a number followed by `%`, or "percent" |
//! | texture | density / intensity / echo / opacity / texture words |
//! | relations | adjacent, surrounding, compared to, near, displacing, invading, ... |
//!
//! `modality` and `organ` values are the canonical name of the first term found.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// The six parts, in the order MedTrinity writes them.
pub(crate) const PARTS: [&str; 6] = [
    "modality",
    "organ",
    "roi_location",
    "roi_area",
    "texture",
    "relations",
];

const MODALITY: usize = 0;
const ORGAN: usize = 1;
const LOCATION: usize = 2;
const AREA: usize = 3;
const TEXTURE: usize = 4;
const RELATIONS: usize = 5;

/// Modality terms and their canonical names.
#[rustfmt::skip]
pub(crate) const MODALITIES: &[(&str, &[&str])] = &[
    ("CT", &["ct", "computed tomography", "cta", "cect", "ncct", "hrct", "tomograph*"]),
    ("MRI", &["mri", "mr", "magnetic resonance", "t1-weighted", "t2-weighted", "flair", "dwi", "diffusion-weighted"]),
    ("X-ray", &["x-ray*", "xray*", "radiograph*", "cxr", "mammogra*", "fluoroscop*"]),
    ("Ultrasound", &["ultrasound*", "ultrasonograph*", "sonograph*", "sonogram*", "echocardiogra*", "doppler"]),
    ("PET", &["pet", "positron emission"]),
    ("Nuclear medicine", &["spect", "scintigra*", "nuclear medicine"]),
    ("Endoscopy", &["endoscop*", "colonoscop*", "gastroscop*", "laparoscop*", "bronchoscop*"]),
    ("Dermoscopy", &["dermoscop*", "dermatoscop*"]),
    ("Histopathology", &["histopatholog*", "histolog*", "h&e", "hematoxylin", "haematoxylin", "immunohistochem*", "whole slide", "biopsy"]),
    ("Microscopy", &["microscop*", "micrograph*", "phase contrast", "fluorescence"]),
    ("Fundus photography", &["fundus", "fundoscop*", "retinal photograph*"]),
    ("OCT", &["optical coherence tomography", "oct"]),
];

/// Organ and tissue terms and their canonical names.
#[rustfmt::skip]
pub(crate) const ORGANS: &[(&str, &[&str])] = &[
    ("brain", &["brain*", "cerebr*", "cerebell*", "intracranial", "cranial", "skull"]),
    ("head and neck", &["head", "neck", "sinus*", "nasal", "oral", "jaw", "mandib*", "throat", "larynx", "pharynx"]),
    ("lung", &["lung*", "pulmonary", "bronch*", "pleura*"]),
    ("chest", &["chest", "thora*", "mediastin*"]),
    ("heart", &["heart", "cardiac", "myocard*", "aort*", "coronary"]),
    ("breast", &["breast*", "mammary"]),
    ("liver", &["liver", "hepat*"]),
    ("kidney", &["kidney*", "renal"]),
    ("abdomen", &["abdom*", "peritone*"]),
    ("pelvis", &["pelvi*"]),
    ("spine", &["spine", "spinal", "vertebra*", "lumbar"]),
    ("bone and joint", &["bone*", "femur", "femoral", "tibia*", "knee*", "shoulder*", "hip", "joint*", "skelet*", "fracture*"]),
    ("prostate", &["prostat*"]),
    ("bladder", &["bladder"]),
    ("pancreas", &["pancrea*"]),
    ("spleen", &["spleen", "splenic"]),
    ("stomach", &["stomach", "gastric"]),
    ("bowel", &["colon*", "colorectal", "bowel*", "intestin*", "rectum", "rectal", "duoden*"]),
    ("esophagus", &["esophag*", "oesophag*"]),
    ("eye", &["eye*", "retina*", "ocular", "optic disc", "macula*"]),
    ("skin", &["skin", "cutaneous", "derma*"]),
    ("thyroid", &["thyroid"]),
    ("uterus and ovary", &["uter*", "ovar*", "cervix", "endometri*"]),
    ("cell", &["cell", "cells", "cellular", "nucle*", "cytoplasm*"]),
    ("tissue", &["tissue*", "gland*", "stroma*"]),
];

#[rustfmt::skip]
const LOCATION_TERMS: &[&str] = &[
    "left", "right", "upper", "lower", "center", "centre", "central", "centrally", "middle", "top",
    "bottom", "quadrant*", "upper-left", "upper-right", "lower-left", "lower-right", "left-center",
    "right-center",
];
#[rustfmt::skip]
const AREA_TERMS: &[&str] = &[
    "percent", "per cent", "percentage",
];
#[rustfmt::skip]
const TEXTURE_TERMS: &[&str] = &[
    "textur*", "densit*", "dense", "hypodens*", "hyperdens*", "isodens*", "intensit*",
    "hypointens*", "hyperintens*", "isointens*", "echogen*", "hypoechoic", "hyperechoic",
    "anechoic", "isoechoic", "homogeneous*", "heterogeneous*", "homogenous*", "heterogenous*",
    "opacit*", "opaque", "lucen*", "radiolucen*", "radiopaque", "enhanc*", "granular", "smooth",
    "irregular*", "attenuation", "mottled", "stain*", "signal", "calcifi*", "cystic", "speckled",
    "grainy", "coarse", "fibrous",
];
#[rustfmt::skip]
const RELATION_TERMS: &[&str] = &[
    "adjacent", "surround*", "relative to", "compared to", "compared with", "in comparison", "near",
    "nearby", "close to", "neighbo*", "border*", "compress*", "displac*", "invad*", "invasion",
    "extend*", "extension", "infiltrat*", "abut*", "contiguous", "encas*", "relationship*",
    "related to", "affect*", "involv*", "connect*", "between",
];

/// What one caption contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CaptionParts {
    /// Bit `i` set when part `PARTS[i]` is mentioned.
    pub mask: u8,
    /// Index into [`MODALITIES`] of the first modality named.
    pub modality: Option<u8>,
    /// Index into [`ORGANS`] of the first organ named.
    pub organ: Option<u8>,
}

impl CaptionParts {
    /// Whether part `i` (see [`PARTS`]) is mentioned.
    pub(crate) fn has(&self, i: usize) -> bool {
        self.mask & (1 << i) != 0
    }
}

struct Rules {
    automaton: AhoCorasick,
    /// Per pattern: (part, canonical index, matches word prefixes).
    meta: Vec<(usize, u8, bool)>,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    let mut patterns = Vec::new();
    let mut meta = Vec::new();
    let mut add = |part: usize, index: usize, term: &str| {
        let prefix = term.ends_with('*');
        patterns.push(term.trim_end_matches('*').to_string());
        meta.push((part, index as u8, prefix));
    };
    for (part, table) in [(MODALITY, MODALITIES), (ORGAN, ORGANS)] {
        for (i, (_, terms)) in table.iter().enumerate() {
            terms.iter().for_each(|t| add(part, i, t));
        }
    }
    for (part, terms) in [
        (LOCATION, LOCATION_TERMS),
        (AREA, AREA_TERMS),
        (TEXTURE, TEXTURE_TERMS),
        (RELATIONS, RELATION_TERMS),
    ] {
        terms.iter().for_each(|t| add(part, 0, t));
    }
    let automaton = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::DFA))
        .build(&patterns)
        .expect("keyword automaton builds");
    Rules { automaton, meta }
});

const ALL: u8 = (1 << PARTS.len()) - 1;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Finds the parts a caption mentions.
pub(crate) fn analyze(caption: &str) -> CaptionParts {
    let rules = &*RULES;
    let bytes = caption.as_bytes();
    let mut out = CaptionParts {
        mask: area_mask(bytes),
        ..Default::default()
    };
    for m in rules.automaton.find_iter(bytes) {
        let (part, index, prefix) = rules.meta[m.pattern().as_usize()];
        if m.start() > 0 && is_word(bytes[m.start() - 1]) {
            continue;
        }
        if !prefix && m.end() < bytes.len() && is_word(bytes[m.end()]) {
            continue;
        }
        out.mask |= 1 << part;
        match part {
            MODALITY if out.modality.is_none() => out.modality = Some(index),
            ORGAN if out.organ.is_none() => out.organ = Some(index),
            _ => {}
        }
        if out.mask == ALL && out.modality.is_some() && out.organ.is_some() {
            break;
        }
    }
    out
}

/// The six parts of a caption as column values (`--parts`): the canonical modality and
/// organ names, and for the other four the caption's sentences that mention the part,
/// joined by a space; None where the caption has none.
pub(crate) fn part_columns(caption: &str) -> [Option<String>; 6] {
    let whole = analyze(caption);
    let mut columns: [Option<String>; 6] = Default::default();
    columns[MODALITY] = whole
        .modality
        .map(|i| MODALITIES[usize::from(i)].0.to_string());
    columns[ORGAN] = whole.organ.map(|i| ORGANS[usize::from(i)].0.to_string());
    for sentence in sentences(caption) {
        let parts = analyze(sentence);
        for part in [LOCATION, AREA, TEXTURE, RELATIONS] {
            if parts.has(part) {
                let text = columns[part].get_or_insert_with(String::new);
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(sentence);
            }
        }
    }
    columns
}

/// Sentences: text up to a `.`, `!`, `?` or `;` followed by whitespace (so `3.5 cm`
/// stays whole), trimmed, empty ones dropped.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        let end = matches!(b, b'.' | b'!' | b'?' | b';')
            && bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace);
        if end {
            cuts.push(&text[start..=i]);
            start = i + 1;
        }
    }
    cuts.push(&text[start..]);
    cuts.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

/// The area bit when a digit is followed (maybe after spaces) by `%`.
fn area_mask(bytes: &[u8]) -> u8 {
    let mut from = 0;
    while let Some(p) = bytes[from..].iter().position(|&b| b == b'%') {
        let at = from + p;
        let before = bytes[..at].iter().rev().find(|b| **b != b' ');
        if before.is_some_and(u8::is_ascii_digit) {
            return 1 << AREA;
        }
        from = at + 1;
    }
    0
}

/// Number of characters (Unicode scalar values).
pub(crate) fn char_count(s: &str) -> usize {
    s.chars().count()
}

/// Number of words: runs of non-whitespace separated by ASCII whitespace.
pub(crate) fn word_count(s: &str) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for &b in s.as_bytes() {
        let space = b.is_ascii_whitespace();
        words += usize::from(!space && !in_word);
        in_word = !space;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_columns_name_modality_and_organ_and_quote_sentences() {
        let caption = "Axial CT of the abdomen showing the liver. The lesion lies in the \
            upper left, about 3.5% of the image. It is hypodense; it abuts the kidney.";
        let [modality, organ, location, area, texture, relations] = part_columns(caption);
        assert_eq!(modality.as_deref(), Some("CT"));
        assert_eq!(organ.as_deref(), Some("abdomen"));
        let second = "The lesion lies in the upper left, about 3.5% of the image.";
        assert_eq!(location.as_deref(), Some(second));
        assert_eq!(area.as_deref(), Some(second));
        assert_eq!(texture.as_deref(), Some("It is hypodense;"));
        assert_eq!(relations.as_deref(), Some("it abuts the kidney."));
        assert_eq!(
            part_columns("A photograph."),
            <[Option<String>; 6]>::default()
        );
    }

    const MEDTRINITY: &str = "The image is an axial computed tomography (CT) scan of the abdomen, showing \
        the liver, kidneys and bowel loops. The region of interest is located in the left-center of the \
        image, occupying approximately 2.4% of the area. It appears hypodense with a heterogeneous texture \
        compared to the surrounding hepatic parenchyma, and is adjacent to the portal vein, which may \
        suggest a space-occupying lesion displacing nearby structures.";

    #[test]
    fn a_medtrinity_description_has_every_part() {
        let p = analyze(MEDTRINITY);
        assert_eq!(p.mask, ALL);
        assert_eq!(MODALITIES[p.modality.unwrap() as usize].0, "CT");
        assert_eq!(ORGANS[p.organ.unwrap() as usize].0, "abdomen");
    }

    #[test]
    fn words_must_match_whole() {
        // "ct" inside "structure", "mr" inside "mrs", "left" inside "leftover" do not count.
        let p = analyze("A structure, leftover from Mrs. Smith.");
        assert_eq!(p.mask, 0, "{p:?}");
        let p = analyze("Brain MR: midline shift");
        assert_eq!((p.has(0), p.has(1), p.has(2)), (true, true, false));
        assert_eq!(MODALITIES[p.modality.unwrap() as usize].0, "MRI");
        // Prefix terms match longer words.
        let p = analyze("Histopathological section with hyperintensity");
        assert_eq!(MODALITIES[p.modality.unwrap() as usize].0, "Histopathology");
        assert!(p.has(4));
    }

    #[test]
    fn area_needs_a_number_before_percent() {
        assert!(analyze("covers 12 % of the slice").has(3));
        assert!(analyze("about 3.5% of the field").has(3));
        assert!(analyze("roughly ten percent").has(3));
        assert_eq!(analyze("a % sign").mask, 0);
    }

    #[test]
    fn counting_characters_and_words() {
        assert_eq!(char_count("Ångström"), 8);
        assert_eq!(word_count("  two\twords\n"), 2);
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count("one"), 1);
    }
}
