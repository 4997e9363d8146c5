//! LLaVA conversation records (JSONL and JSON array) as the dataset reader and the
//! training data loader read them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::data::Flow;
use medtrinity::core::data::inputs::ImageStore;
use medtrinity::core::data::llava_records::{read_json_array, read_jsonl};
use medtrinity::core::train::data::load_records;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let store = ImageStore::None;
    let mut visit = |batch: anyhow::Result<medtrinity::core::data::Batch>| {
        if let Ok(b) = batch {
            for i in 0..b.len() {
                let _ = (b.id(i), b.caption(i), b.extra(i));
            }
        }
        Flow::Continue
    };
    let jsonl = common::file("records.jsonl", data);
    let _ = read_jsonl(0, &jsonl, &store, 16, &mut visit);
    let json = common::file("records.json", data);
    let _ = read_json_array(0, &json, &store, 16, &mut visit);
    let _ = load_records(&jsonl, None);
});
