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
pub mod workers;
