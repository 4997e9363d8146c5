//! Knowledge retrieval for the caption pipeline: a corpus of passages (JSONL of
//! `{id, text, title?, source?}`) indexed once on disk with tantivy (BM25 over title and
//! text, English analysis), then searched with free text built from a coarse caption.
//!
//! ```text
//! build(&[corpus.jsonl], corpus.jsonl.bm25/, opts)   mt convert knowledge-index
//! KnowledgeIndex::open_or_build(corpus.jsonl)?.search("ct chest nodule", 5)?
//! ```

mod build;
mod corpus;
mod index;
mod manifest;
mod schema;

pub(crate) use build::BuildOptions;
pub(crate) use build::build;
pub use index::KnowledgeIndex;
pub(crate) use index::default_index_dir;
