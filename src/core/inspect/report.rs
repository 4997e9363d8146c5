//! The inspection report: built from the merged tally and serialised for `--json`
//! (`render` turns it into the terminal table).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::dist::{CounterSummary, Dist, DistSummary};
use super::tally::{Examples, Tally};
use crate::core::caption_parts::PARTS;
use crate::core::data::{Dataset, Role};
use crate::core::extsort::KeyTally;

/// Histogram bins in reports.
const BINS: usize = 20;
/// Values listed per categorical column.
const TOP: usize = 25;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub inputs: Vec<InputReport>,
    pub totals: Totals,
    pub filter: Option<String>,
    pub schema: Option<SchemaReport>,
    pub nulls: BTreeMap<String, u64>,
    pub ids: Option<IdReport>,
    pub captions: CaptionReport,
    pub categories: Categories,
    pub images: Option<ImageReport>,
    pub archives: Option<ArchiveReport>,
    pub failures: Vec<FailureReport>,
    /// Errors beyond the first 1000, counted only.
    pub failures_suppressed: u64,
    /// `--against`: benchmark images found in the inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contamination: Option<super::contamination::Summary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct InputReport {
    pub path: String,
    pub format: &'static str,
    pub role: &'static str,
    pub layout: Option<&'static str>,
    pub rows: u64,
    pub row_groups: Option<usize>,
    pub bytes: Option<u64>,
    pub failed: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Totals {
    pub inputs: usize,
    pub failed_inputs: usize,
    pub rows: u64,
    pub matched_rows: u64,
    pub row_groups: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SchemaReport {
    pub fields: Vec<Field>,
    /// The `datasets` features from the `huggingface` metadata key.
    pub hf_features: Option<Value>,
    /// Parquet shards whose schema differs from the first one.
    pub mismatched_shards: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct IdReport {
    pub count: u64,
    pub distinct: u64,
    /// Ids that occur more than once.
    pub duplicated: u64,
    pub examples: Vec<ValueTimes>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ValueTimes {
    pub value: String,
    pub times: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Share {
    pub count: u64,
    pub fraction: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct PartShare {
    pub part: &'static str,
    pub count: u64,
    pub fraction: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct CaptionReport {
    pub count: u64,
    pub empty: u64,
    pub chars: DistSummary,
    pub words: DistSummary,
    /// Captions mentioning each MedTrinity part (see `mt inspect --help`), in order.
    pub parts: Vec<PartShare>,
    pub all_parts: Share,
}

#[derive(Debug, Serialize)]
pub(crate) struct Categories {
    pub source: CounterSummary,
    pub modality: CounterSummary,
    pub organ: CounterSummary,
}

#[derive(Debug, Serialize)]
pub(crate) struct Problem {
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Example {
    pub id: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ScaledSummary {
    pub min: f64,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
    pub histogram: Vec<ScaledBin>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ScaledBin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Duplicates {
    /// Distinct images that occur more than once.
    pub groups: u64,
    /// Copies beyond the first.
    pub extra_copies: u64,
    /// Ids of a few groups.
    pub examples: Vec<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ImageReport {
    pub count: u64,
    pub missing: Problem,
    pub undecodable: Problem,
    pub width: DistSummary,
    pub height: DistSummary,
    /// Width / height.
    pub aspect: ScaledSummary,
    pub bytes: DistSummary,
    pub formats: CounterSummary,
    pub modes: CounterSummary,
    pub duplicates: Duplicates,
}

#[derive(Debug, Serialize)]
pub(crate) struct ArchiveReport {
    pub members: u64,
    pub referenced_rows: u64,
    /// Manifest rows whose image is in no archive.
    pub missing_from_archives: Problem,
    /// Archive members no manifest row refers to.
    pub not_in_manifest: Problem,
    /// File names stored more than once across the archives.
    pub duplicate_members: Problem,
}

#[derive(Debug, Serialize)]
pub(crate) struct FailureReport {
    pub input: String,
    pub error: String,
}

fn problem(mut e: Examples) -> Problem {
    let examples = e
        .first
        .take()
        .into_iter()
        .map(|(id, detail)| Example { id, detail })
        .collect();
    Problem {
        count: e.count,
        examples,
    }
}

fn share(count: u64, of: u64) -> Share {
    Share {
        count,
        fraction: if of == 0 {
            0.0
        } else {
            count as f64 / of as f64
        },
    }
}

fn scaled(d: &Dist, scale: f64) -> ScaledSummary {
    let s = d.summary(BINS);
    let f = |v: u64| v as f64 * scale;
    ScaledSummary {
        min: f(s.min),
        mean: s.mean * scale,
        median: f(s.median),
        p95: f(s.p95),
        max: f(s.max),
        histogram: s
            .histogram
            .iter()
            .map(|b| ScaledBin {
                lo: f(b.lo),
                hi: f(b.hi),
                count: b.count,
            })
            .collect(),
    }
}

fn limited(examples: &mut Vec<Example>, id: String, detail: String) {
    if examples.len() < super::tally::EXAMPLES {
        examples.push(Example { id, detail });
    }
}

/// Builds the report. `failed` lists (input, error) for inputs that failed as a whole
/// or in part.
pub(crate) fn build(
    dataset: &Dataset,
    tally: Tally,
    filter: Option<&str>,
    images: bool,
) -> Result<Report> {
    let failed_inputs = &tally.failed_inputs;
    let inputs: Vec<InputReport> = dataset
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let shard = dataset.shards[i].as_ref();
            InputReport {
                path: input.display(),
                format: input.format.name(),
                role: match input.role {
                    Role::Records => "records",
                    Role::ImageShard => "images",
                },
                layout: shard.map(|s| s.layout()),
                rows: shard.map_or_else(
                    || tally.rows_per_input.get(&i).copied().unwrap_or(0),
                    |s| s.num_rows(),
                ),
                row_groups: shard.map(|s| s.num_row_groups()),
                bytes: std::fs::metadata(&input.path)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len()),
                failed: failed_inputs.contains(&i),
            }
        })
        .collect();
    let totals = Totals {
        inputs: inputs.len(),
        failed_inputs: failed_inputs.len(),
        rows: tally.rows,
        matched_rows: tally.matched,
        row_groups: inputs.iter().filter_map(|i| i.row_groups).sum(),
        bytes: inputs.iter().filter_map(|i| i.bytes).sum(),
    };
    let schema = schema_report(dataset);
    let ids = if tally.ids_counted > 0 {
        Some(id_report(tally.ids, tally.ids_counted)?)
    } else {
        None
    };

    let c = &tally.captions;
    let parts = PARTS
        .iter()
        .zip(c.parts)
        .map(|(part, n)| {
            let s = share(n, c.present);
            PartShare {
                part,
                count: s.count,
                fraction: s.fraction,
            }
        })
        .collect();
    let captions = CaptionReport {
        count: c.present,
        empty: c.empty,
        chars: c.chars.summary(BINS),
        words: c.words.summary(BINS),
        parts,
        all_parts: share(c.all_parts, c.present),
    };
    let categories = Categories {
        source: tally.sources.summary(TOP),
        modality: tally.modalities.summary(TOP),
        organ: tally.organs.summary(TOP),
    };
    let im = tally.images;
    let images = if images {
        let mut duplicates = Duplicates {
            groups: 0,
            extra_copies: 0,
            examples: Vec::new(),
        };
        im.hashes.groups(|g| {
            if g.counts[0] > 1 {
                duplicates.groups += 1;
                duplicates.extra_copies += g.counts[0] - 1;
                if duplicates.examples.len() < super::tally::EXAMPLES {
                    duplicates
                        .examples
                        .push(g.labels.into_iter().map(|(_, l)| l).collect());
                }
            }
        })?;
        Some(ImageReport {
            count: im.seen,
            missing: problem(im.missing),
            undecodable: problem(im.undecodable),
            width: im.width.summary(BINS),
            height: im.height.summary(BINS),
            aspect: scaled(&im.aspect, 0.01),
            bytes: im.bytes.summary(BINS),
            formats: im.formats.summary(TOP),
            modes: im.modes.summary(TOP),
            duplicates,
        })
    } else {
        None
    };
    let has_shards = dataset.inputs.iter().any(|i| i.role == Role::ImageShard);
    let archives = if has_shards || !tally.archive_names.is_empty() {
        Some(archive_report(tally.archive_names, tally.archive_members)?)
    } else {
        None
    };
    let failures = tally
        .failures
        .into_iter()
        .map(|(i, error)| FailureReport {
            input: dataset.inputs[i].display(),
            error,
        })
        .collect();
    Ok(Report {
        inputs,
        totals,
        filter: filter.map(str::to_string),
        schema,
        nulls: tally.nulls,
        ids,
        captions,
        categories,
        images,
        archives,
        failures,
        failures_suppressed: tally.failures_suppressed,
        contamination: None,
    })
}

fn schema_report(dataset: &Dataset) -> Option<SchemaReport> {
    let shards: Vec<_> = dataset.shards.iter().flatten().collect();
    let first = shards.first()?;
    let fields = first
        .schema()
        .fields()
        .iter()
        .map(|f| Field {
            name: f.name().clone(),
            kind: type_name(f.data_type()),
        })
        .collect();
    Some(SchemaReport {
        fields,
        hf_features: shards.iter().find_map(|s| s.hf_features().cloned()),
        mismatched_shards: shards
            .iter()
            .filter(|s| s.schema().fields() != first.schema().fields())
            .map(|s| s.path.display().to_string())
            .collect(),
    })
}

/// Arrow types in the short lowercase form `datasets` users know.
fn type_name(t: &arrow_schema::DataType) -> String {
    use arrow_schema::DataType as D;
    match t {
        D::Utf8 | D::Utf8View => "string".into(),
        D::LargeUtf8 => "large_string".into(),
        D::Binary | D::BinaryView => "binary".into(),
        D::LargeBinary => "large_binary".into(),
        D::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        D::List(f) | D::LargeList(f) => format!("list<{}>", type_name(f.data_type())),
        other => other.to_string().to_lowercase(),
    }
}

fn id_report(ids: KeyTally, count: u64) -> Result<IdReport> {
    let mut r = IdReport {
        count,
        distinct: 0,
        duplicated: 0,
        examples: Vec::new(),
    };
    ids.groups(|g| {
        r.distinct += 1;
        if g.counts[0] > 1 {
            r.duplicated += 1;
            if r.examples.len() < super::tally::EXAMPLES {
                r.examples.push(ValueTimes {
                    value: String::from_utf8_lossy(&g.key).into_owned(),
                    times: g.counts[0],
                });
            }
        }
    })?;
    Ok(r)
}

fn archive_report(names: KeyTally, members: u64) -> Result<ArchiveReport> {
    let mut r = ArchiveReport {
        members,
        referenced_rows: 0,
        missing_from_archives: Problem {
            count: 0,
            examples: Vec::new(),
        },
        not_in_manifest: Problem {
            count: 0,
            examples: Vec::new(),
        },
        duplicate_members: Problem {
            count: 0,
            examples: Vec::new(),
        },
    };
    names.groups(|g| {
        let name = String::from_utf8_lossy(&g.key).into_owned();
        let label = |tag: u8| {
            g.labels
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, l)| l.clone())
                .unwrap_or_default()
        };
        r.referenced_rows += g.counts[0];
        match g.counts {
            [rows, 0] => {
                r.missing_from_archives.count += rows;
                limited(
                    &mut r.missing_from_archives.examples,
                    label(0),
                    name.clone(),
                );
            }
            [0, _] => {
                r.not_in_manifest.count += 1;
                limited(&mut r.not_in_manifest.examples, label(1), name.clone());
            }
            _ => {}
        }
        if g.counts[1] > 1 {
            r.duplicate_members.count += 1;
            limited(
                &mut r.duplicate_members.examples,
                label(1),
                format!("{name} stored {} times", g.counts[1]),
            );
        }
    })?;
    Ok(r)
}
