//! Evaluation on the medical VQA benchmarks: answer files, the two reference scorers
//! (`llava-med`, `multimedeval`) reproduced exactly, and the paper's numbers.

pub mod answering;
pub mod answers;
pub mod bleu;
pub mod breakdown;
pub mod chunk_run;
pub mod chunks;
pub mod llava_med;
pub mod multimedeval;
pub mod normalize;
pub mod plan;
pub mod report;
pub mod vqa;
pub mod vqa_export;
pub mod workers;

/// The benchmarks LLaVA-Med++ reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    VqaRad,
    Slake,
    Pathvqa,
}

impl Bench {
    /// Every benchmark, in the paper's order.
    pub const ALL: [Bench; 3] = [Bench::VqaRad, Bench::Slake, Bench::Pathvqa];

    /// The paper's LLaVA-Med++ results (MedTrinity-25M, Table 2): open (recall) and
    /// closed (yes/no accuracy), in percent.
    pub fn paper(self) -> (f64, f64) {
        match self {
            Bench::VqaRad => (65.1, 84.9),
            Bench::Slake => (86.4, 89.2),
            Bench::Pathvqa => (37.9, 92.7),
        }
    }

    /// The name in titles.
    pub fn title(self) -> &'static str {
        match self {
            Bench::VqaRad => "VQA-RAD",
            Bench::Slake => "SLAKE",
            Bench::Pathvqa => "PathVQA",
        }
    }

    /// The name users type.
    pub fn name(self) -> &'static str {
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
