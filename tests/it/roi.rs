//! `mt roi` end to end on real images (testdata/images) with masks the tests draw:
//! exact boxes, areas, components and position words, overlays, resume, bad rows.

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, Rgb};

use crate::common::{mt_in, testdata};

/// A 400x400 mask (phantom.png's size) with two rectangles of label 255:
/// [40, 60) x [300, 340) and [100, 110) x [320, 330).
fn draw_mask(path: &Path) {
    let mut m = GrayImage::new(400, 400);
    for y in 300..340 {
        for x in 40..60 {
            m.put_pixel(x, y, Luma([255]));
        }
    }
    for y in 320..330 {
        for x in 100..110 {
            m.put_pixel(x, y, Luma([255]));
        }
    }
    m.save(path).unwrap();
}

/// A folder with the drawn mask and phantom.png.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    draw_mask(&dir.path().join("mask.png"));
    fs::copy(
        testdata("images/phantom.png"),
        dir.path().join("phantom.png"),
    )
    .unwrap();
    dir
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn masks_give_exact_boxes_areas_components_and_words() {
    let dir = workdir();
    fs::write(
        dir.path().join("cases.jsonl"),
        "{\"id\": \"p1\", \"image\": \"phantom.png\", \"mask\": \"mask.png\"}\n",
    )
    .unwrap();
    let run = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "roi",
            "cases.jsonl",
            "-o",
            "rois.jsonl",
            "--overlay",
            "over",
            "--orientation",
            "anatomical",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = lines(&dir.path().join("rois.jsonl"));
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (
            row["id"].as_str(),
            row["width"].as_u64(),
            row["height"].as_u64()
        ),
        (Some("p1"), Some(400), Some(400))
    );
    let rois = row["rois"].as_array().unwrap();
    assert_eq!(rois.len(), 1);
    let roi = &rois[0];
    // Hand-computed: 20*40 + 10*10 = 900 pixels; box [40, 300, 110, 340).
    assert_eq!(roi["area"], 900);
    assert_eq!(roi["bbox"], serde_json::json!([40, 300, 110, 340]));
    assert_eq!(roi["components"], 2);
    assert!((roi["area_pct"].as_f64().unwrap() - 900.0 * 100.0 / 160_000.0).abs() < 1e-12);
    // Centroid x = (800*50 + 100*105) / 900, y = (800*320 + 100*325) / 900.
    let c = roi["centroid"].as_array().unwrap();
    assert!((c[0].as_f64().unwrap() - (800.0 * 50.0 + 100.0 * 105.0) / 900.0).abs() < 1e-9);
    assert!((c[1].as_f64().unwrap() - (800.0 * 320.0 + 100.0 * 325.0) / 900.0).abs() < 1e-9);
    assert_eq!(roi["position"], "left lower");
    // The overlay is the phantom with a green frame on the box edge.
    let over = image::open(dir.path().join("over/p1.png"))
        .unwrap()
        .to_rgb8();
    let phantom = image::open(testdata("images/phantom.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(*over.get_pixel(40, 300), Rgb([0, 255, 0]));
    assert_eq!(*over.get_pixel(109, 339), Rgb([0, 255, 0]));
    assert_eq!(over.get_pixel(75, 320), phantom.get_pixel(75, 320));
    assert_eq!(over.get_pixel(200, 200), phantom.get_pixel(200, 200));

    // Radiological orientation swaps the side; one ROI per component on request.
    let run = mt_in(
        dir.path(),
        &["--no-run-dir", "roi", "cases.jsonl", "--split-components"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let areas: Vec<u64> = row["rois"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["area"].as_u64().unwrap())
        .collect();
    assert_eq!(areas.iter().sum::<u64>(), 900);
    assert_eq!(areas.len(), 2);
    assert!(
        row["rois"][0]["position"]
            .as_str()
            .unwrap()
            .starts_with("right"),
        "{row}"
    );
    // --min-size drops the small square.
    let run = mt_in(
        dir.path(),
        &["--no-run-dir", "roi", "cases.jsonl", "--min-size", "101"],
    );
    let row: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(row["rois"][0]["area"], 800);
    assert_eq!(row["rois"][0]["components"], 1);
}

#[test]
fn bad_rows_are_listed_and_the_rest_resumes() {
    let dir = workdir();
    fs::copy(
        testdata("images/microaneurysms.png"),
        dir.path().join("small.png"),
    )
    .unwrap();
    GrayImage::new(400, 400)
        .save(dir.path().join("empty.png"))
        .unwrap();
    let cases = [
        r#"{"id": "ok", "image": "phantom.png", "mask": "mask.png"}"#,
        r#"{"id": "missing", "image": "phantom.png", "mask": "nope.png"}"#,
        r#"{"id": "mismatch", "image": "small.png", "mask": "mask.png"}"#,
        r#"{"id": "empty", "image": "phantom.png", "mask": "empty.png"}"#,
        r#"{"id": "box", "image": "phantom.png", "bbox": [10, 20, 110, 60], "label": "lesion"}"#,
        "not json",
    ];
    fs::write(dir.path().join("cases.jsonl"), cases.join("\n") + "\n").unwrap();
    let args = ["roi", "cases.jsonl", "-o", "rois.jsonl", "--run-dir", "run"];
    let run = mt_in(dir.path(), &args);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let rows = lines(&dir.path().join("rois.jsonl"));
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ok", "empty", "box"]);
    assert_eq!(rows[1]["rois"], serde_json::json!([]));
    let boxed = &rows[2]["rois"][0];
    assert_eq!(
        (boxed["label"].as_str(), boxed["area"].as_u64()),
        (Some("lesion"), Some(4000))
    );
    let failures = fs::read_to_string(dir.path().join("run/failures.json")).unwrap();
    for needle in ["nope.png", "but image 102x102", "line 6: invalid JSON"] {
        assert!(
            failures.contains(needle) || run.stderr.contains(needle),
            "{needle}: {failures}\n{}",
            run.stderr
        );
    }
    // A rerun writes nothing twice.
    let again = mt_in(
        dir.path(),
        &[
            "roi",
            "cases.jsonl",
            "-o",
            "rois.jsonl",
            "--run-dir",
            "run2",
        ],
    );
    assert_eq!(again.code, 3);
    assert_eq!(lines(&dir.path().join("rois.jsonl")).len(), 3);
}

/// The rows of a parquet file as JSON objects (nulls written out, as in the JSONL).
fn parquet_rows(path: &Path) -> Vec<serde_json::Value> {
    let file = fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(Vec::new());
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.finish().unwrap();
    String::from_utf8(writer.into_inner())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn parquet_output_has_the_jsonl_rows_and_a_rerun_appends() {
    let dir = workdir();
    GrayImage::new(400, 400)
        .save(dir.path().join("empty.png"))
        .unwrap();
    let cases = [
        r#"{"id": "ok", "image": "phantom.png", "mask": "mask.png"}"#,
        r#"{"id": "maskonly", "mask": "mask.png"}"#,
        r#"{"id": "missing", "image": "phantom.png", "mask": "nope.png"}"#,
        r#"{"id": "empty", "image": "phantom.png", "mask": "empty.png"}"#,
        r#"{"id": "box", "image": "phantom.png", "bbox": [10, 20, 110, 60], "label": "lesion"}"#,
    ];
    fs::write(dir.path().join("first.jsonl"), cases[..3].join("\n") + "\n").unwrap();
    fs::write(dir.path().join("all.jsonl"), cases.join("\n") + "\n").unwrap();
    let roi = |input: &str, output: &str| {
        mt_in(dir.path(), &["--no-run-dir", "roi", input, "-o", output])
    };
    let ids = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The same two runs into JSONL and into parquet; one item fails in both (exit 3),
    // which does not keep the finished rows out of the parquet file.
    for output in ["rois.jsonl", "rois.parquet"] {
        let run = roi("first.jsonl", output);
        assert_eq!(run.code, 3, "{}", run.stderr);
        if output == "rois.parquet" {
            let rows = parquet_rows(&dir.path().join(output));
            assert_eq!(ids(&rows), ["ok", "maskonly"]);
        }
        let run = roi("all.jsonl", output);
        assert_eq!(run.code, 3, "{}", run.stderr);
    }
    let expected = lines(&dir.path().join("rois.jsonl"));
    let rows = parquet_rows(&dir.path().join("rois.parquet"));
    assert_eq!(ids(&rows), ["ok", "maskonly", "empty", "box"]);
    assert_eq!(rows, expected);
    assert_eq!(rows[1]["image"], serde_json::Value::Null);
    assert!(!dir.path().join("rois.parquet.partial.jsonl").exists());

    // Typed columns: rois is a list of structs with integer and float fields.
    let file = fs::File::open(dir.path().join("rois.parquet")).unwrap();
    let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .schema()
        .clone();
    let arrow_schema::DataType::List(item) = schema.field_with_name("rois").unwrap().data_type()
    else {
        panic!("rois: {schema:?}");
    };
    let arrow_schema::DataType::Struct(fields) = item.data_type() else {
        panic!("rois item: {item:?}");
    };
    let type_of = |name: &str| fields.find(name).unwrap().1.data_type().clone();
    assert_eq!(type_of("area"), arrow_schema::DataType::Int64);
    assert_eq!(type_of("area_pct"), arrow_schema::DataType::Float64);
    assert_eq!(type_of("label"), arrow_schema::DataType::Utf8);
}

#[test]
fn an_overlay_over_the_budget_fails_its_item_and_json_summarises_the_run() {
    let dir = workdir();
    let cases = [
        r#"{"id": "ok", "image": "phantom.png", "bbox": [10, 20, 110, 60]}"#,
        r#"{"id": "vast", "bbox": [0, 0, 10, 10], "width": 100000, "height": 100000}"#,
    ];
    fs::write(dir.path().join("cases.jsonl"), cases.join("\n") + "\n").unwrap();
    let args = [
        "--json",
        "roi",
        "cases.jsonl",
        "-o",
        "rois.jsonl",
        "--overlay",
        "overlays",
        "--run-dir",
        "run",
    ];
    let run = mt_in(dir.path(), &args);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let ids: Vec<String> = lines(&dir.path().join("rois.jsonl"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["ok"]);
    let summary = run.json();
    assert_eq!(
        (summary["items"].as_u64(), summary["written"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(summary["failures"][0]["input"], "cases.jsonl:2");
    let error = summary["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("the overlay (100000x100000) would take") && error.contains("budget"),
        "{error}"
    );
}
