//! The medical VQA benchmarks as data, for every command that reads them (`mt eval`,
//! `mt finetune --bench`, `mt convert vqa`): which benchmark ([`Bench`]), question ids
//! ([`Id`]), rows that could not be used ([`Rejected`]), the loaders of every released
//! layout ([`questions`]), the export to the LLaVA eval layout (`export`) and the
//! lenient reader of that layout's ground truth ([`truth`]).

pub(crate) mod export;
pub mod questions;
pub mod truth;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

/// A question id: JSON integers and strings are different ids (`1` is not `"1"`), as
/// in the reference's Python sets. Integers sort before strings (Python cannot compare
/// them; files mixing both are rare).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Id {
    /// A JSON integer.
    Int(i64),
    /// A JSON string.
    Str(String),
}

impl Id {
    /// The id in `value`, the field called `field` (named in errors).
    pub(crate) fn from_json(value: &Value, field: &str) -> Result<Id> {
        match value {
            Value::String(s) => Ok(Id::Str(s.clone())),
            Value::Number(n) => n
                .as_i64()
                .map(Id::Int)
                .ok_or_else(|| anyhow!("`{field}` {n} is not an integer or a string")),
            Value::Null => bail!("no `{field}`"),
            other => bail!("`{field}` must be a string or an integer, not {other}"),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

/// A row that could not be used, with where it was and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    /// The file the row is in, as displayed.
    pub file: String,
    /// `line 12` (JSONL) or `record 12` (JSON array, zero-based).
    pub at: String,
    /// Why the row was rejected.
    pub error: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.at, self.error)
    }
}

/// The benchmarks LLaVA-Med++ reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    /// VQA-RAD (radiology), `vqa-rad`.
    VqaRad,
    /// SLAKE (radiology, English and Chinese), `slake`.
    Slake,
    /// PathVQA (pathology), `pathvqa`.
    Pathvqa,
}

impl Bench {
    /// Every benchmark, in the paper's order.
    pub(crate) const ALL: [Bench; 3] = [Bench::VqaRad, Bench::Slake, Bench::Pathvqa];

    /// The paper's LLaVA-Med++ results (MedTrinity-25M, Table 2): open (recall) and
    /// closed (yes/no accuracy), in percent.
    pub(crate) fn paper(self) -> (f64, f64) {
        match self {
            Bench::VqaRad => (65.1, 84.9),
            Bench::Slake => (86.4, 89.2),
            Bench::Pathvqa => (37.9, 92.7),
        }
    }

    /// The name in titles.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Bench::VqaRad => "VQA-RAD",
            Bench::Slake => "SLAKE",
            Bench::Pathvqa => "PathVQA",
        }
    }

    /// The name users type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Bench::VqaRad => "vqa-rad",
            Bench::Slake => "slake",
            Bench::Pathvqa => "pathvqa",
        }
    }
}

impl std::str::FromStr for Bench {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Bench> {
        Bench::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown benchmark `{s}` (vqa-rad, slake or pathvqa)"))
    }
}
