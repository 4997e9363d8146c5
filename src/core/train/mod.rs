//! Training (`mt train`, `mt finetune`): the pieces of the loop, one file each.

pub mod adamw;
pub mod backward;
pub mod batch;
pub mod conversation;
pub mod data;
pub mod export;
pub mod merge;
pub mod parallel;
pub mod params;
pub mod plot;
pub mod presets;
pub mod schedule;
pub mod torch_save;
pub mod trainer;
