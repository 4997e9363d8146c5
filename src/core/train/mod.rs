//! Training (`mt train`, `mt finetune`): the pieces of the loop, one file each.

pub mod adamw;
pub(crate) mod backward;
pub mod batch;
pub mod conversation;
pub mod data;
pub mod export;
pub(crate) mod memory;
pub(crate) mod merge;
pub mod parallel;
pub mod params;
pub(crate) mod plot;
pub(crate) mod presets;
pub(crate) mod schedule;
pub(crate) mod torch_save;
pub mod trainer;
pub(crate) mod zero;
