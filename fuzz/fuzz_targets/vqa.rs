//! The VQA benchmark loaders on a file in each released layout: the PathVQA pickle, the
//! SLAKE and VQA-RAD JSON files, and the LLaVA eval JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::vqa::Bench;
use medtrinity::core::vqa::questions::{LoadOptions, load};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let root = common::scratch().join("bench");
    let _ = std::fs::remove_dir_all(&root);
    let (bench, name) = match kind % 4 {
        0 => (Bench::Pathvqa, "bench/qas/test/test_qa.pkl"),
        1 => (Bench::Slake, "bench/test.json"),
        2 => (Bench::VqaRad, "bench/VQA_RAD Dataset Public.json"),
        _ => (Bench::Slake, "bench/llava_eval.json"),
    };
    let path = common::file(name, bytes);
    let input = if kind % 4 == 3 { path } else { root };
    let _ = load(bench, &input, "test", &LoadOptions::default());
});
