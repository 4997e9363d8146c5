//! DICOM and NIfTI files converted to pictures, as `mt convert image` does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::medical::jobs::{Job, Kind};
use medtrinity::core::medical::output::Format;
use medtrinity::core::medical::window::Depth;
use medtrinity::core::medical::{Options, WindowChoice, convert};

#[path = "common.rs"]
mod common;

fuzz_target!(init: medtrinity::core::error::quiet_contained_panics(), |data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let (name, kind) = match kind % 3 {
        0 => ("in/x.dcm", Kind::Dicom),
        1 => ("in/x.nii", Kind::Nifti),
        _ => ("in/x.nii.gz", Kind::Nifti),
    };
    let source = common::file(name, bytes);
    let out_dir = common::scratch().join("pictures");
    let _ = std::fs::remove_dir_all(&out_dir);
    let job = Job {
        source,
        kind,
        out_dir,
        stem: "x".into(),
    };
    let opts = Options {
        format: Format::Png,
        quality: 90,
        depth: Depth::Eight,
        window: WindowChoice::Default,
        percentiles: [0.5, 99.5],
        axis: 2,
    };
    let _ = convert(&job, &opts);
});
