//! The inference engine that captioning, evaluation and the coming chat and serve
//! share: image preprocessing, prompts and their tokens, batched generation with a KV
//! cache, the captioner that puts them together, and the caption run loop over a dataset.

pub(crate) mod batcher;
pub(crate) mod caption_run;
pub(crate) mod captioner;
pub(crate) mod chat_template;
pub(crate) mod conversation;
pub mod generate;
pub mod preprocess;
pub mod prompt;
pub(crate) mod sentencepiece;
