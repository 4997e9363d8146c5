//! Step 1 of the MedTrinity pipeline: a coarse caption from a sample's metadata.
//!
//! A record that carries `coarse_caption` uses it as is. Otherwise a template is filled
//! in: the template of the record's `source` dataset (built-in ones for well-known
//! sources, overridable with a JSON file), else [`GENERIC`]. Templates name fields in
//! braces and mark optional parts with square brackets:
//!
//! ```text
//! {modality} image[ of the {organ}][, showing {labels}].[ {report}]
//! ```
//!
//! A bracketed part is dropped when any field inside it is empty. The derived fields are
//! `modality`, `organ`, `labels` and `report` (found under several usual column names,
//! else the source's defaults); any other name is the record's own field of that name.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

/// The template for sources without one of their own.
pub(crate) const GENERIC: &str =
    "{modality} image[ of the {organ}][, showing {labels}].[ {report}]";

/// What a known source dataset contributes when its records do not say.
struct SourceDefaults {
    /// Lower-case prefixes of `source` values that name the dataset.
    names: &'static [&'static str],
    modality: &'static str,
    organ: &'static str,
    labels: &'static str,
}

/// Public datasets of the kinds MedTrinity-25M was built from.
#[rustfmt::skip]
const SOURCES: &[SourceDefaults] = &[
    SourceDefaults { names: &["brats"], modality: "MRI", organ: "brain", labels: "glioma" },
    SourceDefaults { names: &["lidc"], modality: "CT", organ: "lung", labels: "pulmonary nodule" },
    SourceDefaults { names: &["kits"], modality: "CT", organ: "kidney", labels: "kidney tumor" },
    SourceDefaults { names: &["lits"], modality: "CT", organ: "liver", labels: "liver tumor" },
    SourceDefaults { names: &["deeplesion"], modality: "CT", organ: "body", labels: "lesion" },
    SourceDefaults { names: &["totalsegmentator", "amos", "flare"], modality: "CT", organ: "abdomen", labels: "" },
    SourceDefaults { names: &["acdc", "mnms"], modality: "MRI", organ: "heart", labels: "" },
    SourceDefaults { names: &["chexpert", "mimic-cxr", "chestx-ray", "chestxray", "nih-cxr", "vindr-cxr"], modality: "X-ray", organ: "chest", labels: "" },
    SourceDefaults { names: &["isic", "ham10000"], modality: "Dermoscopy", organ: "skin", labels: "skin lesion" },
    SourceDefaults { names: &["kvasir", "cvc-clinicdb"], modality: "Endoscopy", organ: "gastrointestinal tract", labels: "polyp" },
    SourceDefaults { names: &["busi"], modality: "Ultrasound", organ: "breast", labels: "breast lesion" },
    SourceDefaults { names: &["camelyon", "pcam"], modality: "Histopathology", organ: "lymph node", labels: "metastatic tumor tissue" },
    SourceDefaults { names: &["tcga"], modality: "Histopathology", organ: "tissue", labels: "" },
    SourceDefaults { names: &["cellpose", "livecell"], modality: "Microscopy", organ: "cells", labels: "" },
    SourceDefaults { names: &["drive", "idrid", "messidor", "aptos"], modality: "Fundus photography", organ: "retina", labels: "" },
];

/// Column names that carry each derived field, in the order they are tried.
const MODALITY_FIELDS: &[&str] = &["modality", "image_modality"];
const ORGAN_FIELDS: &[&str] = &["organ", "body_part", "anatomy", "image_organ", "location"];
const LABEL_FIELDS: &[&str] = &[
    "labels",
    "label",
    "disease",
    "diagnosis",
    "findings_labels",
    "class",
];
const REPORT_FIELDS: &[&str] = &["report", "findings", "impression"];

/// Per-source templates: built-in [`GENERIC`] for all, replaced per source by a file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Templates {
    /// Lower-case source name -> template; `*` replaces the generic one.
    by_source: BTreeMap<String, String>,
}

impl Templates {
    /// Reads `{"source name": "template", ...}` (`"*"` = every other source).
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let map: BTreeMap<String, String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON object of source name -> template",
                path.display()
            )
        })?;
        for (source, template) in &map {
            check_template(template)
                .with_context(|| format!("{}: template for `{source}`", path.display()))?;
        }
        let mut by_source = BTreeMap::new();
        for (source, template) in map {
            if by_source.insert(source.to_lowercase(), template).is_some() {
                bail!(
                    "{}: two templates for `{source}` (source names are matched ignoring case)",
                    path.display()
                );
            }
        }
        Ok(Self { by_source })
    }

    /// The template used for a source.
    fn for_source(&self, source: &str) -> &str {
        let source = source.to_lowercase();
        self.by_source
            .get(&source)
            .or_else(|| self.by_source.get("*"))
            .map_or(GENERIC, String::as_str)
    }
}

/// The coarse caption of one record (`source` may be empty).
pub(crate) fn coarse_caption(
    record: &Map<String, Value>,
    source: &str,
    templates: &Templates,
) -> String {
    if let Some(text) = record.get("coarse_caption").and_then(text_of) {
        return text;
    }
    let defaults = source_defaults(source);
    let field = |name: &str| -> String {
        let derived = |names: &[&str], default: Option<&str>| {
            names
                .iter()
                .find_map(|n| record.get(*n).and_then(text_of))
                .or_else(|| default.filter(|d| !d.is_empty()).map(str::to_string))
                .unwrap_or_default()
        };
        match name {
            "modality" => derived(MODALITY_FIELDS, defaults.map(|d| d.modality)),
            "organ" => derived(ORGAN_FIELDS, defaults.map(|d| d.organ)),
            "labels" => derived(LABEL_FIELDS, defaults.map(|d| d.labels)),
            "report" => derived(REPORT_FIELDS, None),
            "source" => source.to_string(),
            other => record.get(other).and_then(text_of).unwrap_or_default(),
        }
    };
    let known = std::cell::Cell::new(false);
    let tracked = |name: &str| {
        let value = field(name);
        // The source's name alone says nothing about the image.
        known.set(known.get() || (!value.is_empty() && name != "source"));
        value
    };
    let text = render(templates.for_source(source), &tracked);
    if !known.get() {
        return String::new(); // nothing about the sample: no caption rather than "Image."
    }
    capitalise(text.trim())
}

/// The built-in defaults of a source, matched by prefix (`BraTS2021` -> `brats`).
fn source_defaults(source: &str) -> Option<&'static SourceDefaults> {
    let source = source.to_lowercase();
    SOURCES
        .iter()
        .find(|s| s.names.iter().any(|n| source.starts_with(n)))
}

/// A field's text: strings trimmed, numbers written out, arrays joined with ", ".
fn text_of(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(text_of)
            .collect::<Vec<_>>()
            .join(", "),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// Fills `template`; bracketed parts with an empty field are dropped.
fn render(template: &str, field: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut optional: Option<(String, bool)> = None; // (text so far, all fields filled)
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '[' => optional = Some((String::new(), true)),
            ']' => {
                if let Some((text, filled)) = optional.take()
                    && filled
                {
                    out.push_str(&text);
                }
            }
            '{' => {
                let end = rest.find('}').unwrap_or(rest.len());
                let value = field(&rest[..end]);
                rest = rest.get(end + 1..).unwrap_or("");
                match &mut optional {
                    Some((text, filled)) => {
                        *filled &= !value.is_empty();
                        text.push_str(&value);
                    }
                    None => out.push_str(&value),
                }
            }
            c => match &mut optional {
                Some((text, _)) => text.push(c),
                None => out.push(c),
            },
        }
    }
    out
}

/// Rejects unbalanced braces and brackets.
fn check_template(template: &str) -> Result<()> {
    let (mut brace, mut bracket) = (false, false);
    for c in template.chars() {
        match (c, brace, bracket) {
            ('{', false, _) => brace = true,
            ('}', true, _) => brace = false,
            ('[', false, false) => bracket = true,
            (']', false, true) => bracket = false,
            ('{' | '}' | '[' | ']', ..) => bail!("misplaced `{c}` in `{template}`"),
            _ => {}
        }
    }
    if brace || bracket {
        bail!("unclosed `{{` or `[` in `{template}`");
    }
    Ok(())
}

/// The text with its first letter in upper case.
fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn fields_fill_the_generic_template() {
        let r = record(json!({"modality": "CT", "organ": "liver", "label": ["tumor", "cyst"]}));
        assert_eq!(
            coarse_caption(&r, "", &Templates::default()),
            "CT image of the liver, showing tumor, cyst."
        );
        let r = record(json!({"modality": "computed tomography", "report": "Hypodense lesion."}));
        assert_eq!(
            coarse_caption(&r, "x", &Templates::default()),
            "Computed tomography image. Hypodense lesion."
        );
        let r = record(json!({"organ": "knee", "modality": ""}));
        assert_eq!(
            coarse_caption(&r, "", &Templates::default()),
            "Image of the knee."
        );
    }

    #[test]
    fn known_sources_supply_defaults_and_records_override_them() {
        let t = Templates::default();
        assert_eq!(
            coarse_caption(&Map::new(), "BraTS2021", &t),
            "MRI image of the brain, showing glioma."
        );
        let r = record(json!({"labels": "edema"}));
        assert_eq!(
            coarse_caption(&r, "brats", &t),
            "MRI image of the brain, showing edema."
        );
        assert_eq!(
            coarse_caption(&Map::new(), "CheXpert", &t),
            "X-ray image of the chest."
        );
    }

    #[test]
    fn a_given_coarse_caption_wins() {
        let r = record(json!({"coarse_caption": " As given. ", "modality": "CT"}));
        assert_eq!(
            coarse_caption(&r, "brats", &Templates::default()),
            "As given."
        );
    }

    #[test]
    fn templates_from_a_file_replace_per_source_and_star() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(
            &path,
            r#"{"ROCO": "{caption}", "*": "{source}: {modality}[ ({labels})]"}"#,
        )
        .unwrap();
        let t = Templates::load(&path).unwrap();
        let r = record(json!({"caption": "chest radiograph, right effusion", "modality": "X-ray"}));
        assert_eq!(
            coarse_caption(&r, "roco", &t),
            "Chest radiograph, right effusion"
        );
        assert_eq!(coarse_caption(&r, "other", &t), "Other: X-ray");
        std::fs::write(&path, r#"{"x": "{modality"}"#).unwrap();
        let err = format!("{:#}", Templates::load(&path).unwrap_err());
        assert!(
            err.contains("template for `x`") && err.contains("unclosed"),
            "{err}"
        );
    }

    #[test]
    fn nothing_known_gives_an_empty_caption() {
        assert_eq!(coarse_caption(&Map::new(), "", &Templates::default()), "");
    }
}
