//! Training (`mt train`, `mt finetune`): the pieces of the loop, one file each.

pub mod schedule;
