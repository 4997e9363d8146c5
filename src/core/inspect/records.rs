//! Printing records for `--head` / `--sample`: JSON Lines, or readable blocks.

use std::fmt::Write as _;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::data::{ImageSource, Sample};
use crate::core::display::{ellipsize, human_bytes};
use crate::core::hash::hex;
use crate::core::image;

/// The image of a record described as JSON (bytes are summarised, not dumped).
pub(crate) fn image_json(source: &ImageSource) -> Value {
    match source {
        ImageSource::None => Value::Null,
        ImageSource::Bytes { bytes, path } => {
            let mut v = json!({"embedded": true, "path": path, "bytes": bytes.len(), "sha256": hex(&Sha256::digest(bytes))});
            match image::probe(bytes) {
                Ok(info) => {
                    v["format"] = json!(info.format);
                    v["width"] = json!(info.width);
                    v["height"] = json!(info.height);
                    v["mode"] = json!(info.mode);
                }
                Err(e) => v["error"] = json!(format!("{e:#}")),
            }
            v
        }
        ImageSource::File(p) => json!({"file": p}),
        ImageSource::Archived(name) => json!({"archived": name}),
    }
}

/// One record as a JSON object.
pub(crate) fn record_json(s: &Sample) -> Value {
    json!({
        "id": s.id,
        "source": s.source,
        "caption": s.caption,
        "image": image_json(&s.image),
        "extra": s.extra,
    })
}

/// One record as a readable block, captions wrapped at `width` columns.
pub(crate) fn render_record(n: usize, total: usize, s: &Sample, width: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "── {n}/{total}  {}", s.id);
    if let Some(src) = &s.source {
        let _ = writeln!(out, "source:  {src}");
    }
    let image = match &s.image {
        ImageSource::None => "none".to_string(),
        ImageSource::Bytes { bytes, path } => {
            let what = image::probe(bytes)
                .map(|i| format!("{} {}x{} {}", i.format, i.width, i.height, i.mode))
                .unwrap_or_else(|e| format!("undecodable: {e:#}"));
            let name = path
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            format!("embedded {what}, {}{name}", human_bytes(bytes.len() as u64))
        }
        ImageSource::File(p) => p.display().to_string(),
        ImageSource::Archived(name) => format!("{name} (in the image archives)"),
    };
    let _ = writeln!(out, "image:   {image}");
    if let Some(c) = &s.caption {
        let _ = writeln!(
            out,
            "caption: {}",
            wrap(c, width.saturating_sub(9).max(20), 9)
        );
    }
    for (k, v) in &s.extra {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{k}: {}", ellipsize(&text, 301));
    }
    out
}

/// Greedy word wrap; continuation lines are indented by `indent` spaces.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc dd", 5, 2), "aa bb\n  cc dd");
        assert_eq!(wrap("", 5, 0), "");
    }

    #[test]
    fn records_summarise_embedded_bytes() {
        let s = Sample {
            id: "x".into(),
            image: ImageSource::Bytes {
                bytes: b"junk".to_vec(),
                path: Some("x.png".into()),
            },
            caption: Some("A CT.".into()),
            source: None,
            extra: Default::default(),
        };
        let v = record_json(&s);
        assert_eq!(v["image"]["bytes"], 4);
        assert_eq!(v["image"]["sha256"].as_str().unwrap().len(), 64);
        assert!(
            v["image"]["error"]
                .as_str()
                .unwrap()
                .contains("unrecognised")
        );
        assert!(render_record(1, 1, &s, 80).contains("undecodable"));
    }
}
