//! `mt convert image`: DICOM / NIfTI -> PNG/JPEG against pydicom / nibabel references
//! (testdata/medical/make_fixtures.py), metadata sidecars, bad inputs, resume.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{self, expected, mt, mt_in, root, test_python, testdata};

fn dicom(name: &str) -> String {
    testdata(&format!("medical/dicom/{name}"))
        .display()
        .to_string()
}

fn nifti(name: &str) -> String {
    testdata(&format!("medical/nifti/{name}"))
        .display()
        .to_string()
}

fn reference(rel: &str) -> PathBuf {
    testdata(&format!("medical/expected/{rel}"))
}

/// Runs `mt --no-run-dir convert image ARGS... -o OUT` and checks the exit code.
fn convert(args: &[&str], out: &Path, code: i32) -> common::Run {
    let mut all = vec!["convert", "image"];
    all.extend_from_slice(args);
    let out = out.display().to_string();
    all.extend_from_slice(&["-o", &out]);
    let run = mt(&all);
    assert_eq!(run.code, code, "mt {all:?}\nstderr:\n{}", run.stderr);
    run
}

fn sidecar(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Asserts two grey pictures agree within one level on >= 99.9% of pixels; returns the
/// share of pixels within one level, for the report.
fn assert_close(got: &Path, want: &Path) -> f64 {
    let g = image::open(got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
    let w = image::open(want).unwrap().into_luma16();
    let g = g.into_luma16();
    assert_eq!(g.dimensions(), w.dimensions(), "{}", got.display());
    // 8-bit pictures widen by x257; one 8-bit level is 257 16-bit steps.
    let sixteen = image::open(want).unwrap().color() == image::ColorType::L16;
    let level = if sixteen { 1 } else { 257 };
    let pixels = g.pixels().zip(w.pixels());
    let total = g.len() as f64;
    let close = pixels
        .filter(|(a, b)| a.0[0].abs_diff(b.0[0]) <= level)
        .count() as f64;
    let share = close / total;
    assert!(
        share >= 0.999,
        "{} vs {}: only {:.4}% within one level",
        got.display(),
        want.display(),
        share * 100.0
    );
    share
}

fn assert_near(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!(
        (g - w).abs() <= 1e-6 * w.abs().max(1.0),
        "{what}: {g} vs {w}"
    );
}

#[test]
fn dicom_files_match_pydicom_and_carry_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "CT_small",
        "MR_small",
        "liver_1frame",
        "mono1",
        "multiframe",
    ];
    let inputs: Vec<String> = names.iter().map(|n| dicom(&format!("{n}.dcm"))).collect();
    let args: Vec<&str> = inputs.iter().map(String::as_str).collect();
    convert(&args, dir.path(), 0);
    let exp = expected("medical/expected.json");
    for name in names {
        let want = &exp[name];
        let meta = sidecar(&dir.path().join(format!("{name}.json")));
        let frames = want["frames"].as_u64().unwrap();
        let outputs: Vec<String> = (0..frames)
            .map(|f| match frames {
                1 => format!("{name}.png"),
                _ => format!("{name}_f{f:04}.png"),
            })
            .collect();
        assert_eq!(meta["outputs"], serde_json::json!(outputs), "{name}");
        for out in &outputs {
            assert_close(&dir.path().join(out), &reference(out));
        }
        for key in [
            "modality",
            "body_part",
            "series_description",
            "rows",
            "columns",
            "frames",
            "photometric_interpretation",
            "pixel_spacing",
            "slice_thickness",
            "rescale",
        ] {
            assert_eq!(meta[key], want[key], "{name}: {key}");
        }
        assert_eq!(
            meta["transfer_syntax"]["uid"], want["transfer_syntax"],
            "{name}"
        );
        assert_eq!(meta["kind"], "dicom");
        assert_eq!(meta["window"]["source"], want["window"]["source"], "{name}");
        assert_eq!(meta["window"]["function"], "LINEAR");
        for key in ["center", "width"] {
            assert_near(&meta["window"][key], &want["window"][key], key);
        }
        assert_eq!(meta["inverted"], name == "mono1", "{name}");
        assert!(
            meta["source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{name}.dcm"))
        );
    }
}

/// Converts every file a reference library's corpus script lists (`SCRIPT list`) with
/// `--window auto --bits 16` and has the script check mt's pictures (`SCRIPT check`).
fn convert_corpus(script: &str, modules: &[&str], at_least: usize) {
    let Some(py) = test_python(modules) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("tests/interop").join(script);
    let listing = dir.path().join("list.json");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(&py)
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    run(&["list".as_ref(), listing.as_os_str()]);
    let files: Vec<Value> = serde_json::from_slice(&std::fs::read(&listing).unwrap()).unwrap();
    assert!(files.len() >= at_least, "only {} files listed", files.len());
    let out = dir.path().join("out");
    let mut args = vec!["--window", "auto", "--bits", "16"];
    args.extend(files.iter().map(|f| f["path"].as_str().unwrap()));
    let conversion = convert(&args, &out, 0);
    let report = run(&["check".as_ref(), listing.as_os_str(), out.as_os_str()]);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{report}\n{}",
        conversion.stderr
    );
}

/// Every file of pydicom's own test data (in its wheel) that pydicom with the pylibjpeg
/// plugins decodes: JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE (8 to 32
/// bits), big and little endian, RGB/YBR/PALETTE COLOR, multi-frame. mt must convert
/// each one, equal to pydicom's pixels for lossless syntaxes and within decoder tolerance
/// for lossy ones (tests/interop/dicom_corpus.py says how).
#[test]
fn pydicom_test_files_convert_like_pydicom_decodes_them() {
    let modules = [
        "pydicom",
        "pylibjpeg",
        "openjpeg",
        "libjpeg",
        "rle",
        "numpy",
    ];
    convert_corpus("dicom_corpus.py", &modules, 80);
}

/// nibabel's own single-file NIfTI test images: NIfTI-1, NIfTI-2 and a CIFTI-2 matrix
/// (tests/interop/nifti_corpus.py), equal to nibabel's values.
#[test]
fn nibabel_test_files_convert_like_nibabel_reads_them() {
    convert_corpus("nifti_corpus.py", &["nibabel", "numpy"], 8);
}

#[test]
fn window_option_auto_and_16_bit() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    convert(&[&dicom("CT_small.dcm"), "--window", "40,400"], &fixed, 0);
    assert_close(
        &fixed.join("CT_small.png"),
        &reference("CT_small_w40_400.png"),
    );
    let meta = sidecar(&fixed.join("CT_small.json"));
    assert_eq!(
        meta["window"],
        serde_json::json!({"source": "option", "center": 40.0, "width": 400.0, "function": "LINEAR"})
    );

    let auto = dir.path().join("auto");
    convert(&[&dicom("MR_small.dcm"), "--window", "auto"], &auto, 0);
    assert_close(&auto.join("MR_small.png"), &reference("MR_small_auto.png"));
    assert_eq!(
        sidecar(&auto.join("MR_small.json"))["window"]["source"],
        "min-max"
    );

    let deep = dir.path().join("deep");
    convert(&[&dicom("MR_small.dcm"), "--bits", "16"], &deep, 0);
    let png = image::open(deep.join("MR_small.png")).unwrap();
    assert_eq!(png.color(), image::ColorType::L16);
    assert_close(&deep.join("MR_small.png"), &reference("MR_small_16.png"));
}

#[test]
fn rgb_is_written_as_it_is_and_jpeg_works() {
    let dir = tempfile::tempdir().unwrap();
    convert(&[&dicom("rgb.dcm")], dir.path(), 0);
    let got = image::open(dir.path().join("rgb.png")).unwrap().into_rgb8();
    let want = image::open(reference("rgb.png")).unwrap().into_rgb8();
    assert_eq!(got, want);
    assert_eq!(
        sidecar(&dir.path().join("rgb.json"))["window"]["source"],
        "none"
    );

    let jpg = dir.path().join("jpg");
    convert(&[&dicom("multiframe.dcm"), "--format", "jpeg"], &jpg, 0);
    for f in 0..3 {
        let img = image::open(jpg.join(format!("multiframe_f{f:04}.jpg"))).unwrap();
        assert_eq!((img.width(), img.height()), (20, 16));
    }
}

#[test]
fn bad_inputs_are_listed_and_the_others_converted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (good, lossy, cut) = (
        dicom("CT_small.dcm"),
        dicom("JPEG-lossy.dcm"),
        dicom("MR_truncated.dcm"),
    );
    let run = mt_in(
        dir.path(),
        &[
            "--run-dir",
            "run",
            "convert",
            "image",
            &lossy,
            &good,
            &cut,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(out.join("CT_small.png").is_file());
    assert!(!out.join("JPEG-lossy.json").exists());
    let lines: Vec<&str> = run.stderr.lines().collect();
    let lossy_line = lines
        .iter()
        .find(|l| l.contains("JPEG-lossy.dcm:"))
        .expect("the lossy JPEG file is reported");
    // pydicom's JPEG-lossy.dcm holds a broken 12-bit stream (libjpeg refuses it too).
    assert!(
        lossy_line.contains("cannot decode pixel data")
            && lossy_line.contains("1.2.840.10008.1.2.4.51")
            && lossy_line.contains("JPEG Extended"),
        "{lossy_line}"
    );
    assert!(
        lines.iter().any(|l| l.contains("MR_truncated.dcm:")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
    let failures: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/failures.json")).unwrap())
            .unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 2);
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(record["counts"]["converted"], 1);
    assert_eq!(record["counts"]["failed"], 2);
    assert_eq!(record["exit_code"], 3);
}

#[test]
fn rerun_skips_complete_outputs_and_redoes_changed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [dicom("MR_small.dcm"), nifti("standard.nii.gz")];
    let summary = |extra: &[&str]| -> Value {
        let mut args = vec!["--json", inputs[0].as_str(), inputs[1].as_str()];
        args.extend_from_slice(extra);
        convert(&args, dir.path(), 0).json()
    };
    assert_eq!(summary(&[])["converted"], 2);
    let png = dir.path().join("MR_small.png");
    let written = std::fs::metadata(&png).unwrap().modified().unwrap();
    let again = summary(&[]);
    assert_eq!(
        (
            again["converted"].clone(),
            again["skipped_existing"].clone()
        ),
        (0.into(), 2.into())
    );
    assert_eq!(
        std::fs::metadata(&png).unwrap().modified().unwrap(),
        written
    );
    // A missing picture makes its file incomplete.
    std::fs::remove_file(dir.path().join("standard_z0003.png")).unwrap();
    assert_eq!(summary(&[])["converted"], 1);
    assert!(dir.path().join("standard_z0003.png").is_file());
    // Other settings convert again; pictures no longer produced are removed.
    assert_eq!(summary(&["--axis", "0"])["converted"], 2);
    assert!(!dir.path().join("standard_z0003.png").exists());
    assert!(dir.path().join("standard_x0003.png").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn nifti_slices_along_each_axis_match_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let exp = expected("medical/expected.json");
    for (axis, letter, count) in [(0, 'x', 33), (1, 'y', 41), (2, 'z', 25)] {
        let out = dir.path().join(format!("axis{axis}"));
        convert(
            &[&nifti("anatomical.nii"), "--axis", &axis.to_string()],
            &out,
            0,
        );
        let meta = sidecar(&out.join("anatomical.json"));
        assert_eq!(meta["outputs"].as_array().unwrap().len(), count);
        assert_eq!(meta["frames"], count);
        for k in 0..count {
            let name = format!("anatomical_{letter}{k:04}.png");
            assert_close(&out.join(&name), &reference(&format!("anatomical/{name}")));
        }
        assert_eq!(meta["axis"], axis);
    }
    let meta = sidecar(&dir.path().join("axis2/anatomical.json"));
    let want = &exp["anatomical"];
    assert_eq!(meta["kind"], "nifti");
    assert_eq!(
        (&meta["shape"], &meta["pixdim"]),
        (&want["shape"], &want["pixdim"])
    );
    assert_eq!(
        (meta["rows"].clone(), meta["columns"].clone()),
        (41.into(), 33.into())
    );
    assert_eq!(meta["spacing_unit"], "mm");
    assert_eq!(meta["rescale"], Value::Null);
    assert_eq!(meta["window"]["source"], "percentile");
    assert_near(&meta["window"]["lo"], &want["percentile_lo"], "lo");
    assert_near(&meta["window"]["hi"], &want["percentile_hi"], "hi");

    // Gzipped, and a scaled 4D file: volumes become _tNNNN.
    convert(
        &[&nifti("standard.nii.gz"), &nifti("tiny4d.nii.gz")],
        dir.path(),
        0,
    );
    for k in 0..7 {
        let name = format!("standard_z{k:04}.png");
        assert_close(
            &dir.path().join(&name),
            &reference(&format!("standard/{name}")),
        );
    }
    let meta = sidecar(&dir.path().join("tiny4d.json"));
    assert_eq!(meta["frames"], 6);
    assert_eq!(meta["rescale"], exp["tiny4d"]["rescale"]);
    assert_near(&meta["window"]["lo"], &exp["tiny4d"]["percentile_lo"], "lo");
    for t in 0..2 {
        for k in 0..3 {
            let name = format!("tiny4d_t{t:04}_z{k:04}.png");
            assert_close(
                &dir.path().join(&name),
                &reference(&format!("tiny4d/{name}")),
            );
        }
    }
}

#[test]
fn folders_are_walked_and_their_layout_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("series1")).unwrap();
    std::fs::create_dir_all(input.join("series2")).unwrap();
    // A DICOM without extension is found by its DICM marker; the notes are ignored.
    std::fs::copy(dicom("MR_small.dcm"), input.join("series1/IM0001")).unwrap();
    std::fs::copy(dicom("MR_small.dcm"), input.join("series2/IM0001")).unwrap();
    std::fs::copy(nifti("standard.nii.gz"), input.join("standard.nii.gz")).unwrap();
    std::fs::write(input.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("out");
    convert(&[input.to_str().unwrap()], &out, 0);
    assert!(out.join("series1/IM0001.png").is_file());
    assert!(out.join("series2/IM0001.json").is_file());
    assert!(out.join("standard_z0006.png").is_file());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mr = dicom("MR_small.dcm");
    for args in [
        vec![mr.as_str(), "--format", "jpeg", "--bits", "16"],
        vec![mr.as_str(), "--window", "40"],
        vec![mr.as_str(), "--window", "40,0.5"],
        vec![mr.as_str(), "--percentile", "99,1"],
        vec![mr.as_str(), "--axis", "3"],
        vec!["does/not/exist.dcm"],
    ] {
        let run = convert(&args, dir.path(), 2);
        assert!(run.stderr.contains("error"), "{}", run.stderr);
    }
    let help = mt(&["convert", "image", "--help"]);
    assert!(
        help.stdout.contains("Examples:\n  mt convert image"),
        "{}",
        help.stdout
    );
}

/// Found by fuzzing (fuzz/regressions/medical/): a NIfTI header whose dim promises more
/// voxels than the file holds made the slicer index past the data and panic.
#[test]
fn a_nifti_promising_more_voxels_than_it_holds_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read(
        common::root().join("fuzz/regressions/medical/nifti-dim-beyond-data.nii.input"),
    )
    .unwrap();
    let nii = dir.path().join("x.nii");
    std::fs::write(&nii, &input[1..]).unwrap(); // byte 0 is the fuzz target's selector
    let out = dir.path().join("out");
    let r = common::mt(&[
        "convert",
        "image",
        nii.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("x.nii") && !r.stderr.contains("panicked"),
        "{}",
        r.stderr
    );
}
