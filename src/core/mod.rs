//! Everything reusable: no clap types in here. `cmd` wires these pieces together.

pub mod budget;
pub mod caption_parts;
pub mod convert;
pub mod data;
pub mod display;
pub mod error;
pub mod eval;
pub mod extsort;
pub mod hash;
pub mod hub;
pub mod image;
pub mod inspect;
pub mod jsonl_output;
pub mod knowledge;
pub mod logging;
pub mod medical;
pub mod model;
pub mod pickle;
pub mod pipeline;
pub mod plotting;
pub mod progress;
pub mod records;
pub mod roi;
pub mod run;
pub mod shard;
pub mod train;
