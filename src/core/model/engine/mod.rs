//! The inference engine that captioning, evaluation and the coming chat and serve
//! share: image preprocessing, prompts and their tokens, batched generation with a KV
//! cache, and the captioner that puts them together.

pub mod captioner;
pub mod generate;
pub mod preprocess;
pub mod prompt;
