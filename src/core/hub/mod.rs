//! Hugging Face Hub client: repository ids, API listing, the shared cache layout,
//! resumable verified downloads and image-shard extraction.
//!
//! The hf-hub crate gives the cache folder naming; it has no resume across processes,
//! no sha256 checks, no tree pagination, no retries on 429/5xx with `RateLimit`, no
//! stall detection and no `--local-dir` metadata, so those live here.

pub mod api;
pub mod checksum;
pub mod download;
pub mod extract;
pub mod http;
pub mod layout;
pub mod repo;
pub mod select;
pub mod settings;
pub mod transfer;
pub mod unpack;
