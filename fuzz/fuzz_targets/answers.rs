//! Ground truth (LLaVA eval JSON / JSONL) and answer JSONL readers, then the scorers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::eval::answers::{align, read_answers};
use medtrinity::core::vqa::truth::read_truth;
use medtrinity::core::eval::{llava_med, multimedeval};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::file("answers.jsonl", data);
    let mut rejected = Vec::new();
    let truth = read_truth(&path, &mut rejected).unwrap_or_default();
    let answers = read_answers(&path, &mut rejected).unwrap_or_default();
    let aligned = align(truth, answers);
    let _ = llava_med::score(&aligned);
    let _ = multimedeval::score(&aligned);
});
