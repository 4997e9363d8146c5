//! Evaluation on the medical VQA benchmarks: answer files, the two reference scorers
//! (`llava-med`, `multimedeval`) reproduced exactly, and the paper's numbers.

pub(crate) mod answering;
pub mod answers;
pub(crate) mod bleu;
pub(crate) mod breakdown;
pub(crate) mod chunk_run;
pub(crate) mod chunks;
pub mod llava_med;
pub mod multimedeval;
pub mod normalize;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod workers;
