//! Parquet shards as `mt inspect` and `mt convert` read them (footer, column roles, every
//! row group, every field of every row, embedded image bytes), then as the record reader
//! behind resumed `.parquet` outputs and `mt convert merge` reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::data::inputs::resolve;
use medtrinity::core::data::{Batch, Dataset, Flow, ReadOptions};
use medtrinity::core::records::for_each_record;

#[path = "common.rs"]
mod common;

fn touch(batch: &Batch) {
    for i in 0..batch.len() {
        let _ = (batch.id(i), batch.caption(i), batch.source(i), batch.extra(i));
        let _ = batch.image(i).bytes();
    }
    let _ = batch.null_counts(None);
}

fuzz_target!(init: medtrinity::core::error::quiet_contained_panics(), |data: &[u8]| {
    let path = common::file("shard.parquet", data);
    let options = ReadOptions { columns: None, batch_rows: 8 };
    if let Ok(inputs) = resolve(&[path.to_string_lossy().into_owned()], None) {
        let (dataset, failed) = Dataset::open(inputs, &options);
        let failed: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        for unit in dataset.units(&failed, 2) {
            let _ = dataset.read(&unit, &options, &mut |batch| {
                if let Ok(b) = &batch {
                    touch(b);
                }
                Flow::Continue
            });
        }
    }
    let _ = for_each_record(&path, &mut |_, _| Ok(()));
});
