//! The integration tests: one test binary (`cargo test --test it`), as ripgrep's
//! `tests/tests.rs`, so candle, polars, arrow and tantivy are linked once, not once per
//! file. Each module is one area (mostly one `mt` command) and was a binary of its own;
//! run one module with `cargo test --test it MODULE::` (e.g. `cargo test --test it
//! download::`) or one test with `cargo test --test it MODULE::NAME -- --exact`.
//!
//! Helpers: `common` (running the real `mt` binary, fixtures, snapshots, the interop
//! Python) and `hub_server` (a fake Hugging Face Hub on 127.0.0.1, also served by
//! `examples/fake_hub.rs`). Assets stay beside this folder: `tests/interop/` (the Python
//! scripts of the `interop` module), `tests/snapshots/`.

mod common;
mod hub_server;

mod caption;
mod chat;
mod cli;
mod contamination;
mod convert_data;
mod convert_image;
mod convert_select;
mod convert_vqa;
mod download;
mod eval;
mod eval_bench;
mod extract;
mod hub_server_selftest;
mod inspect;
mod interop;
mod knowledge;
mod model;
mod pipeline;
mod qlora;
mod quantize;
mod roi;
mod roi_inputs;
mod serve;
mod train;
mod train_fidelity;
