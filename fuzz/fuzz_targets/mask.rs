//! A mask image (PNG/TIFF/... label map) as `mt roi` reads it, then measured.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::roi::inputs::read_mask_image;
use medtrinity::core::roi::measure::{MeasureOptions, measure};

#[path = "common.rs"]
mod common;

fuzz_target!(init: medtrinity::core::error::quiet_contained_panics(), |data: &[u8]| {
    let path = common::file("mask.png", data);
    if let Ok(map) = read_mask_image(&path) {
        let _ = measure(&map, &MeasureOptions::default());
    }
});
