//! The inspection report as a readable table for the terminal.

use std::fmt::Write as _;

use serde_json::Value;

use super::dist::{Bin, CounterSummary, DistSummary};
use super::report::{Problem, Report, Share};
use crate::core::display::human_bytes;

fn pct(s: &Share) -> String {
    format!("{:5.1}%", s.fraction * 100.0)
}

/// A one-line histogram with block characters.
fn sparkline(bins: &[Bin]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = bins.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    bins.iter()
        .map(|b| {
            if b.count == 0 {
                ' '
            } else {
                BARS[((b.count * 7 + max / 2) / max) as usize]
            }
        })
        .collect()
}

fn dist_row(out: &mut String, name: &str, d: &DistSummary, fmt: &dyn Fn(u64) -> String) {
    if d.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<8} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
        fmt(d.min),
        fmt(d.mean.round() as u64),
        fmt(d.median),
        fmt(d.p95),
        fmt(d.max),
        sparkline(&d.histogram)
    );
}

fn counts_line(c: &CounterSummary, total: u64, limit: usize) -> String {
    let mut parts: Vec<String> = c
        .top
        .iter()
        .take(limit)
        .map(|v| {
            format!(
                "{} {} ({:.1}%)",
                v.value,
                v.count,
                100.0 * v.count as f64 / total.max(1) as f64
            )
        })
        .collect();
    if c.distinct > limit {
        parts.push(format!("... {} more", c.distinct - limit));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn problem_lines(out: &mut String, name: &str, p: &Problem) {
    if p.count == 0 {
        return;
    }
    let _ = writeln!(out, "  {name}: {}", p.count);
    for e in p.examples.iter().take(5) {
        let _ = writeln!(out, "    {}  {}", e.id, e.detail);
    }
    if p.count > 5 {
        let _ = writeln!(
            out,
            "    ... ({} in the --json report)",
            p.examples.len().min(p.count as usize)
        );
    }
}

/// The report as a readable table.
pub(crate) fn table(r: &Report) -> String {
    let mut out = String::new();
    let t = &r.totals;
    let _ = writeln!(
        out,
        "Inputs: {} ({} failed), {} rows, {} row groups, {}",
        t.inputs,
        t.failed_inputs,
        t.rows,
        t.row_groups,
        human_bytes(t.bytes)
    );
    let width = r
        .inputs
        .iter()
        .map(|i| i.path.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 70);
    let _ = writeln!(
        out,
        "  {:<width$}  {:<8} {:<9} {:>10} {:>6} {:>10}",
        "path", "format", "layout", "rows", "groups", "size"
    );
    for i in &r.inputs {
        let layout = i
            .layout
            .unwrap_or(if i.role == "images" { "images" } else { "-" });
        let status = if i.failed { "  FAILED" } else { "" };
        let path: String = if i.path.chars().count() > width {
            format!(
                "...{}",
                i.path
                    .chars()
                    .skip(i.path.chars().count() - width + 3)
                    .collect::<String>()
            )
        } else {
            i.path.clone()
        };
        let _ = writeln!(
            out,
            "  {path:<width$}  {:<8} {layout:<9} {:>10} {:>6} {:>10}{status}",
            i.format,
            i.rows,
            i.row_groups.map_or("-".into(), |g| g.to_string()),
            i.bytes.map_or("-".into(), human_bytes),
        );
    }
    if let Some(f) = &r.filter {
        let _ = writeln!(
            out,
            "Filter: {f}  ->  {} of {} rows match",
            t.matched_rows, t.rows
        );
    }
    if let Some(s) = &r.schema {
        let fields: Vec<String> = s
            .fields
            .iter()
            .map(|f| format!("{}: {}", f.name, f.kind))
            .collect();
        let _ = writeln!(out, "\nSchema: {}", fields.join(", "));
        if let Some(Value::Object(features)) = &s.hf_features {
            let names: Vec<String> = features
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}: {}",
                        v.get("_type").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect();
            let _ = writeln!(out, "HF features: {}", names.join(", "));
        }
        if !s.mismatched_shards.is_empty() {
            let _ = writeln!(
                out,
                "Schema differs in {} shard(s), e.g. {}",
                s.mismatched_shards.len(),
                s.mismatched_shards[0]
            );
        }
    }
    let nulls: Vec<String> = r
        .nulls
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "Nulls: {}",
        if nulls.is_empty() {
            "none".to_string()
        } else {
            nulls.join(", ")
        }
    );
    if let Some(ids) = &r.ids {
        let _ = write!(out, "Ids: {} distinct of {}", ids.distinct, ids.count);
        if ids.duplicated == 0 {
            let _ = writeln!(out, " (all unique)");
        } else {
            let ex: Vec<String> = ids
                .examples
                .iter()
                .take(5)
                .map(|v| format!("{} x{}", v.value, v.times))
                .collect();
            let _ = writeln!(
                out,
                "; {} duplicated, e.g. {}",
                ids.duplicated,
                ex.join(", ")
            );
        }
    }

    let c = &r.captions;
    if c.count > 0 {
        let _ = writeln!(out, "\nCaptions: {} ({} empty)", c.count, c.empty);
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>10} {:>10} {:>10}  histogram",
            "", "min", "mean", "median", "p95", "max"
        );
        dist_row(&mut out, "chars", &c.chars, &|v| v.to_string());
        dist_row(&mut out, "words", &c.words, &|v| v.to_string());
        let _ = writeln!(out, "  MedTrinity parts mentioned:");
        for p in &c.parts {
            let bar = "█".repeat((p.fraction * 30.0).round() as usize);
            let _ = writeln!(
                out,
                "    {:<13} {:>10} {:5.1}%  {bar}",
                p.part,
                p.count,
                p.fraction * 100.0
            );
        }
        let _ = writeln!(
            out,
            "    {:<13} {:>10} {}",
            "all six",
            c.all_parts.count,
            pct(&c.all_parts)
        );
        let _ = writeln!(
            out,
            "  modality: {}",
            counts_line(&r.categories.modality, c.count, 8)
        );
        let _ = writeln!(
            out,
            "  organ:    {}",
            counts_line(&r.categories.organ, c.count, 8)
        );
    }
    let sources = &r.categories.source;
    if sources.distinct > 0 {
        let total = sources.top.iter().map(|v| v.count).sum::<u64>() + sources.untracked;
        let _ = writeln!(
            out,
            "Sources ({} distinct): {}",
            sources.distinct,
            counts_line(sources, total, 10)
        );
    }

    if let Some(im) = &r.images {
        let _ = writeln!(out, "\nImages: {}", im.count);
        if im.width.count > 0 {
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>10} {:>10} {:>10} {:>10}  histogram",
                "", "min", "mean", "median", "p95", "max"
            );
            dist_row(&mut out, "width", &im.width, &|v| v.to_string());
            dist_row(&mut out, "height", &im.height, &|v| v.to_string());
            dist_row(&mut out, "bytes", &im.bytes, &human_bytes);
            let a = &im.aspect;
            let _ = writeln!(
                out,
                "  {:<8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                "aspect", a.min, a.mean, a.median, a.p95, a.max
            );
            let _ = writeln!(
                out,
                "  formats: {}",
                counts_line(&im.formats, im.width.count, 8)
            );
            let _ = writeln!(
                out,
                "  modes:   {}",
                counts_line(&im.modes, im.width.count, 8)
            );
        }
        problem_lines(&mut out, "missing", &im.missing);
        problem_lines(&mut out, "undecodable", &im.undecodable);
        let d = &im.duplicates;
        if d.groups > 0 {
            let ex: Vec<String> = d.examples.iter().take(3).map(|g| g.join(" = ")).collect();
            let _ = writeln!(
                out,
                "  exact duplicates: {} images repeated ({} extra copies), e.g. {}",
                d.groups,
                d.extra_copies,
                ex.join("; ")
            );
        } else if im.count > 0 {
            let _ = writeln!(out, "  exact duplicates: none");
        }
    }
    if let Some(a) = &r.archives {
        let _ = writeln!(
            out,
            "\nImage archives: {} members, {} manifest rows refer to them",
            a.members, a.referenced_rows
        );
        problem_lines(
            &mut out,
            "rows whose image is missing from the archives",
            &a.missing_from_archives,
        );
        problem_lines(&mut out, "members no row refers to", &a.not_in_manifest);
        problem_lines(&mut out, "file names stored twice", &a.duplicate_members);
    }
    if let Some(c) = &r.contamination {
        let _ = writeln!(
            out,
            "\nContamination: {} exact and {} near copies (pHash within {} bits) of {} \
             benchmark images ({} of them found) among {} training images{}{}",
            c.exact,
            c.near,
            c.near_bits,
            c.bench_images,
            c.bench_images_found,
            c.train_images,
            match c.undecodable {
                0 => String::new(),
                n => format!("; {n} images undecodable"),
            },
            match &c.pairs {
                Some(p) if c.exact + c.near > 0 => format!("; pairs in {}", p.display()),
                _ => String::new(),
            }
        );
    }
    if !r.failures.is_empty() {
        let more = match r.failures_suppressed {
            0 => String::new(),
            n => format!(" (and {n} more, not listed)"),
        };
        let _ = writeln!(out, "\nFailures: {}{more}", r.failures.len());
        for f in &r.failures {
            let _ = writeln!(out, "  {}", f.error);
        }
    }
    out
}
