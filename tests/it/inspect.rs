//! `mt inspect` end to end on the bundled samples and on broken inputs.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::common::{self, expected, mt, mt_stdin, testdata};

fn inspect_json(args: &[&str]) -> Value {
    let mut all = vec!["--json", "inspect"];
    all.extend_from_slice(args);
    let r = mt(&all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

fn top(report: &Value, pointer: &str) -> Vec<(String, u64)> {
    report
        .pointer(pointer)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Checks the numbers both MedTrinity layouts share against the fixture's reference.
fn check_common(r: &Value, exp: &Value) {
    assert_eq!(r["totals"]["rows"], exp["rows"]);
    let c = &r["captions"];
    assert_eq!(c["count"], exp["rows"]);
    for what in ["chars", "words"] {
        assert_eq!(c[what]["min"], exp[what]["min"], "{what}");
        assert_eq!(c[what]["max"], exp[what]["max"], "{what}");
        assert_eq!(c[what]["median"], exp[what]["median"], "{what}");
        let mean = exp[what]["sum"].as_f64().unwrap() / exp["rows"].as_f64().unwrap();
        assert!(
            (c[what]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{what}"
        );
        let hist: u64 = c[what]["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(hist, exp["rows"].as_u64().unwrap());
    }
    // Every fixture caption is written in the MedTrinity style with all six parts.
    for part in c["parts"].as_array().unwrap() {
        assert_eq!(part["count"], exp["rows"], "{}", part["part"]);
    }
    assert_eq!(c["all_parts"]["fraction"], 1.0);
    let im = &r["images"];
    assert_eq!(im["count"], exp["rows"]);
    assert_eq!(im["width"]["min"], exp["width"]["min"]);
    assert_eq!(im["width"]["max"], exp["width"]["max"]);
    assert_eq!(im["height"]["min"], exp["height"]["min"]);
    assert_eq!(im["height"]["max"], exp["height"]["max"]);
    let mean_bytes = exp["image_bytes"].as_f64().unwrap() / exp["rows"].as_f64().unwrap();
    assert!((im["bytes"]["mean"].as_f64().unwrap() - mean_bytes).abs() < 1e-6);
    let mut formats = top(r, "/images/formats/top");
    formats.sort();
    let mut want: Vec<(String, u64)> = exp["formats"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    want.sort();
    assert_eq!(formats, want);
    assert_eq!(im["undecodable"]["count"], 0);
    assert_eq!(im["missing"]["count"], 0);
    assert_eq!(im["duplicates"]["groups"], exp["duplicate_groups"]);
    let modalities: u64 = top(r, "/categories/modality/top").iter().map(|x| x.1).sum();
    assert_eq!(modalities, exp["rows"].as_u64().unwrap());
}

#[test]
fn demo_layout_matches_the_reference_numbers() {
    let r = inspect_json(&["testdata/medtrinity-demo"]);
    let exp = expected("medtrinity-demo/expected.json");
    check_common(&r, &exp);
    let inputs = r["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    for i in inputs {
        assert_eq!(i["layout"], "25M_demo");
        assert_eq!(i["format"], "parquet");
        assert_eq!(i["row_groups"], 3);
    }
    assert_eq!(r["totals"]["row_groups"], 6);
    let fields: Vec<&str> = r["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["image", "id", "caption"]);
    assert_eq!(
        r["schema"]["fields"][0]["type"],
        "struct<bytes: binary, path: string>"
    );
    assert_eq!(r["schema"]["hf_features"]["image"]["_type"], "Image");
    assert_eq!(r["ids"]["distinct"], exp["distinct_ids"]);
    assert_eq!(r["ids"]["duplicated"], 0);
    // The one repeated image is reported with both ids.
    assert_eq!(
        r["images"]["duplicates"]["examples"][0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(r["nulls"]["caption"], 0);
    assert!(r["archives"].is_null());
    assert!(r["failures"].as_array().unwrap().is_empty());
}

#[test]
fn full_layout_reads_manifests_and_image_shards() {
    let r = inspect_json(&["testdata/medtrinity-full"]);
    let exp = expected("medtrinity-full/expected.json");
    check_common(&r, &exp);
    assert_eq!(r["inputs"][0]["layout"], "25M_full");
    assert_eq!(r["inputs"][1]["role"], "images");
    assert_eq!(r["inputs"][2]["role"], "images");
    let members =
        r["inputs"][1]["rows"].as_u64().unwrap() + r["inputs"][2]["rows"].as_u64().unwrap();
    assert_eq!(
        members,
        exp["rows"].as_u64().unwrap(),
        "shard inputs count their members"
    );
    let a = &r["archives"];
    assert_eq!(a["members"], exp["rows"]);
    assert_eq!(a["referenced_rows"], exp["rows"]);
    assert_eq!(a["missing_from_archives"]["count"], 0);
    assert_eq!(a["not_in_manifest"]["count"], 0);
    let sources: Vec<(String, u64)> = {
        let mut s = top(&r, "/categories/source/top");
        s.sort();
        s
    };
    let want: Vec<(String, u64)> = exp["sources"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(sources, want);
    // file_name serves as the id.
    assert_eq!(r["ids"], Value::Null);
}

#[test]
fn full_layout_reports_images_missing_from_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let full = testdata("medtrinity-full");
    fs::create_dir_all(tmp.path().join("25M_full")).unwrap();
    fs::copy(
        full.join("25M_full/train-00000-of-00001.parquet"),
        tmp.path().join("25M_full/m.parquet"),
    )
    .unwrap();
    // Only the first image shard: the rows of the second are missing.
    fs::create_dir_all(tmp.path().join("img")).unwrap();
    fs::copy(
        full.join("25M_accessible/images_000.tar.zst"),
        tmp.path().join("img/images_000.tar.zst"),
    )
    .unwrap();
    let images = tmp.path().join("img");
    let r = inspect_json(&[
        tmp.path().join("25M_full").to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    let a = &r["archives"];
    assert_eq!(a["members"], 16);
    assert_eq!(a["missing_from_archives"]["count"], 16);
    assert!(
        a["missing_from_archives"]["examples"][0]["detail"]
            .as_str()
            .unwrap()
            .contains('_')
    );
    assert_eq!(r["images"]["count"], 16);
}

#[test]
fn full_layout_with_an_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let full = testdata("medtrinity-full");
    fs::copy(
        full.join("25M_full/train-00000-of-00001.parquet"),
        tmp.path().join("m.parquet"),
    )
    .unwrap();
    // Unpack the shards into images/, next to the manifest.
    let images = tmp.path().join("images");
    for shard in ["images_000.tar.zst", "images_001.tar.zst"] {
        let file = fs::File::open(full.join("25M_accessible").join(shard)).unwrap();
        tar::Archive::new(zstd::Decoder::new(file).unwrap())
            .unpack(&images)
            .unwrap();
    }
    let removed = fs::read_dir(&images)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_file(&removed).unwrap();
    let r = inspect_json(&[tmp.path().to_str().unwrap()]);
    let exp = expected("medtrinity-full/expected.json");
    let rows = exp["rows"].as_u64().unwrap();
    assert_eq!(r["images"]["count"].as_u64().unwrap(), rows - 1);
    assert_eq!(r["images"]["missing"]["count"], 1);
    let detail = r["images"]["missing"]["examples"][0]["detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains(removed.file_name().unwrap().to_str().unwrap()),
        "{detail}"
    );
    assert!(r["archives"].is_null());
}

/// The shape of the --json report (every key path) is part of the interface: a change
/// must be deliberate. Regenerate with `MT_BLESS=1 cargo test --test it inspect::json_shape`.
#[test]
fn json_shape_is_stable() {
    fn paths(v: &Value, prefix: String, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{prefix}.{k}");
                    out.insert(p.clone());
                    paths(x, p, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| paths(x, format!("{prefix}[]"), out)),
            _ => {}
        }
    }
    let mut all = std::collections::BTreeSet::new();
    for dir in ["testdata/medtrinity-demo", "testdata/medtrinity-full"] {
        paths(&inspect_json(&[dir]), String::new(), &mut all);
    }
    // Feature schemas and extra fields vary with the data; their insides are not interface.
    let listed: Vec<String> = all
        .into_iter()
        .filter(|p| !p.starts_with(".schema.hf_features."))
        .collect();
    let text = listed.join("\n") + "\n";
    common::check_snapshot(
        "tests/snapshots/inspect_json_keys.txt",
        text.as_bytes(),
        "cargo test --test it inspect::json_shape",
    );
}

#[test]
fn llava_json_jsonl_stdin_and_image_folders() {
    let json = inspect_json(&["testdata/llava/medtrinity_instruct.json"]);
    let jsonl = inspect_json(&["testdata/llava/medtrinity_instruct.jsonl"]);
    for r in [&json, &jsonl] {
        assert_eq!(r["totals"]["rows"], 8);
        assert_eq!(r["captions"]["count"], 8);
        assert_eq!(
            r["images"]["count"], 8,
            "images resolve next to the JSON file"
        );
        assert_eq!(r["images"]["missing"]["count"], 0);
        assert_eq!(r["ids"]["distinct"], 8);
    }
    assert_eq!(json["captions"], jsonl["captions"]);
    let folder = inspect_json(&["testdata/llava/images"]);
    assert_eq!(folder["images"]["count"], 8);
    assert_eq!(folder["inputs"][0]["format"], "images");
    assert_eq!(folder["images"]["width"], json["images"]["width"]);

    let text = fs::read(testdata("llava/medtrinity_instruct.jsonl")).unwrap();
    let r = mt_stdin(
        &[
            "--json",
            "inspect",
            "-",
            "--images",
            "testdata/llava/images",
        ],
        &text,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["images"]["count"], 8);
}

#[test]
fn head_sample_filter_and_columns() {
    let r = mt(&["inspect", "testdata/medtrinity-demo", "--head", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("── 1/2") && r.stdout.contains("── 2/2"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("caption: The image is"));

    let heads = mt(&[
        "--json",
        "inspect",
        "testdata/medtrinity-full",
        "--head",
        "3",
    ])
    .json_lines();
    assert_eq!(heads.len(), 3);
    assert_eq!(heads[0]["image"]["archived"], heads[0]["id"]);
    assert!(
        heads[0]["extra"]["bbox"].is_array(),
        "extra columns pass through: {}",
        heads[0]
    );
    assert!(heads[0]["extra"]["modality"].is_string());

    let sample = |seed: &str| {
        mt(&[
            "--json",
            "--seed",
            seed,
            "inspect",
            "testdata/medtrinity-demo",
            "--sample",
            "4",
        ])
        .stdout
    };
    let a = sample("7");
    assert_eq!(a, sample("7"), "same seed, same sample");
    assert_ne!(a, sample("8"));
    let picked: Vec<Value> = a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(picked.len(), 4);
    assert!(
        picked
            .iter()
            .all(|p| p["image"]["sha256"].as_str().unwrap().len() == 64)
    );

    let exp = expected("medtrinity-demo/expected.json");
    let r = inspect_json(&[
        "testdata/medtrinity-demo",
        "--filter",
        "caption ILIKE '%fundus%'",
    ]);
    assert_eq!(r["totals"]["matched_rows"], exp["fundus_captions"]);
    assert_eq!(r["totals"]["rows"], 33);
    assert_eq!(r["captions"]["count"], exp["fundus_captions"]);
    assert_eq!(
        top(&r, "/categories/modality/top"),
        vec![(
            "Fundus photography".to_string(),
            exp["fundus_captions"].as_u64().unwrap()
        )]
    );
    let filtered_heads = mt(&[
        "--json",
        "inspect",
        "testdata/medtrinity-demo",
        "--head",
        "50",
        "--filter",
        "caption ILIKE '%fundus%'",
    ])
    .json_lines();
    assert_eq!(
        filtered_heads.len() as u64,
        exp["fundus_captions"].as_u64().unwrap()
    );

    let r = inspect_json(&["testdata/medtrinity-demo", "--columns", "id,caption"]);
    assert!(r["images"].is_null());
    assert_eq!(r["captions"]["count"], 33);
    let r = mt(&["inspect", "testdata/medtrinity-demo", "--columns", "nope"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("no column `nope`"), "{}", r.stderr);
}

#[test]
fn text_report_is_readable() {
    let r = mt(&["inspect", "testdata/medtrinity-demo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "Inputs: 2 (0 failed), 33 rows",
        "25M_demo",
        "Captions: 33",
        "modality",
        "Images: 33",
        "exact duplicates: 1",
        "Ids: 33 distinct",
    ] {
        assert!(
            r.stdout.contains(needle),
            "`{needle}` missing:\n{}",
            r.stdout
        );
    }
}

#[test]
fn plots_are_real_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("figs");
    let r = mt(&[
        "inspect",
        "testdata/medtrinity-demo",
        "--plots",
        dir.to_str().unwrap(),
        "--contact-sheet",
        "8",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for name in [
        "caption_chars.png",
        "caption_words.png",
        "caption_parts.png",
        "modality.png",
        "organ.png",
        "image_width.png",
        "image_height.png",
        "image_aspect.png",
        "contact_sheet.png",
    ] {
        let img = image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            img.width() >= 800 && img.height() >= 300,
            "{name} is {}x{}",
            img.width(),
            img.height()
        );
        // Not a blank canvas.
        let rgb = img.to_rgb8();
        let dark = rgb
            .pixels()
            .filter(|p| p.0.iter().all(|c| *c < 128))
            .count();
        assert!(dark > 500, "{name} looks empty");
    }
    let sheet = image::open(dir.join("contact_sheet.png")).unwrap();
    assert_eq!(sheet.width(), 16 + 6 * (256 + 16));

    // Images that live in .tar.zst shards are shown too: no cell stays empty.
    let full = tmp.path().join("full");
    let r = mt(&[
        "inspect",
        "testdata/medtrinity-full",
        "--plots",
        full.to_str().unwrap(),
        "--contact-sheet",
        "6",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sheet = image::open(full.join("contact_sheet.png"))
        .unwrap()
        .to_rgb8();
    for cell in 0..6u32 {
        let (x0, y0) = (16 + cell * (256 + 16), 90);
        let drawn = (0..256)
            .flat_map(|dy| (0..256).map(move |dx| (dx, dy)))
            .filter(|&(dx, dy)| sheet.get_pixel(x0 + dx, y0 + dy).0 != [24, 24, 24])
            .count();
        assert!(drawn > 1000, "cell {cell} is empty");
    }
}

// ---------------------------------------------------------------------------
// Bad input

fn write_parquet(path: &Path, batch: RecordBatch, row_group: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut w =
        ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn demo_batch(ids: &[&str], images: Vec<Option<&[u8]>>) -> RecordBatch {
    let struct_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let bytes: ArrayRef = Arc::new(BinaryArray::from(images));
    let paths: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; ids.len()]));
    let image: ArrayRef = Arc::new(StructArray::new(
        struct_fields.clone(),
        vec![bytes, paths],
        None,
    ));
    let captions: ArrayRef = Arc::new(StringArray::from(vec![
        "A CT scan of the chest.";
        ids.len()
    ]));
    let schema = Schema::new(vec![
        Field::new("image", DataType::Struct(struct_fields), true),
        Field::new("id", DataType::Utf8, true),
        Field::new("caption", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![image, Arc::new(StringArray::from(ids.to_vec())), captions],
    )
    .unwrap()
}

fn png_bytes() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(20, 10, |x, _| {
        image::Luma([x as u8 * 10])
    }))
    .write_to(&mut out, image::ImageFormat::Png)
    .unwrap();
    out.into_inner()
}

#[test]
fn truncated_shards_fail_alone_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let good = testdata("medtrinity-demo/25M_demo/train-00000-of-00002.parquet");
    fs::copy(&good, tmp.path().join("a.parquet")).unwrap();
    let bytes = fs::read(testdata(
        "medtrinity-demo/25M_demo/train-00001-of-00002.parquet",
    ))
    .unwrap();
    fs::write(tmp.path().join("b.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let run_dir = tmp.path().join("run");
    let r = common::mt_in(
        tmp.path(),
        &[
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--json",
            "inspect",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("b.parquet") && r.stderr.contains("not a readable parquet file"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .last()
            .unwrap()
            .contains("1 of 2 inputs had errors"),
        "{}",
        r.stderr
    );
    let report = r.json();
    assert_eq!(
        report["totals"]["rows"], 17,
        "the good shard is still inspected"
    );
    assert_eq!(report["totals"]["failed_inputs"], 1);
    assert_eq!(report["inputs"][1]["failed"], true);
    let failures: Value =
        serde_json::from_slice(&fs::read(run_dir.join("failures.json")).unwrap()).unwrap();
    assert!(
        failures[0]["input"]
            .as_str()
            .unwrap()
            .ends_with("b.parquet")
    );
    let run: Value = serde_json::from_slice(&fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "partial");
    assert_eq!(run["exit_code"], 3);
}

#[test]
fn a_corrupt_row_group_fails_alone() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rg.parquet");
    let ids: Vec<String> = (0..12).map(|i| format!("id-{i}")).collect();
    let png = png_bytes();
    let batch = demo_batch(
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
        vec![Some(png.as_slice()); 12],
    );
    // Twelve one-row groups: with one thread they are read in runs of three, so the
    // reader must resume inside a run after the bad group.
    write_parquet(&path, batch, 1);
    // Overwrite the first data page header of row group 1's caption column.
    let offset = {
        let reader = SerializedFileReader::new(fs::File::open(&path).unwrap()).unwrap();
        let rg = reader.metadata().row_group(1);
        let caption = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "caption")
            .unwrap();
        caption
            .dictionary_page_offset()
            .unwrap_or(caption.data_page_offset()) as usize
    };
    let mut bytes = fs::read(&path).unwrap();
    bytes[offset..offset + 16].fill(0xff);
    fs::write(&path, &bytes).unwrap();
    let r = mt(&["--json", "inspect", path.to_str().unwrap(), "-j", "1"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("rg.parquet: row group 1: corrupt data"),
        "{}",
        r.stderr
    );
    let report = r.json();
    assert_eq!(
        report["totals"]["rows"], 11,
        "every other row group is still read"
    );
    assert_eq!(report["ids"]["distinct"], 11);
}

#[test]
fn corrupt_image_bytes_are_counted_with_their_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let png = png_bytes();
    let cut = &png[..png.len() - 10];
    let batch = demo_batch(
        &["ok-1", "garbage", "ok-2", "cut", "none"],
        vec![
            Some(&png),
            Some(b"not an image"),
            Some(&png),
            Some(cut),
            None,
        ],
    );
    write_parquet(&tmp.path().join("x.parquet"), batch, 2);
    let r = inspect_json(&[tmp.path().join("x.parquet").to_str().unwrap()]);
    let im = &r["images"];
    assert_eq!(im["count"], 4);
    assert_eq!(
        im["undecodable"]["count"], 1,
        "a header read does not see the cut"
    );
    assert_eq!(im["undecodable"]["examples"][0]["id"], "garbage");
    assert!(
        im["undecodable"]["examples"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("unrecognised image format")
    );
    assert_eq!(im["missing"]["count"], 1);
    assert_eq!(im["missing"]["examples"][0]["id"], "none");
    assert_eq!(im["duplicates"]["groups"], 1);
    assert_eq!(r["nulls"]["id"], 0);
    assert_eq!(
        r["nulls"]["image"], 0,
        "the struct itself is present; its bytes are null"
    );
    let decoded = inspect_json(&[tmp.path().join("x.parquet").to_str().unwrap(), "--decode"]);
    let ids: Vec<&str> = decoded["images"]["undecodable"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["garbage", "cut"],
        "--decode finds truncated pixel data, in row order"
    );
}

#[test]
fn wrong_schemas_name_the_file_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("caption", DataType::Int64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    write_parquet(&tmp.path().join("ints.parquet"), batch, 10);
    let r = mt(&[
        "inspect",
        tmp.path().join("ints.parquet").to_str().unwrap(),
        "--no-images",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "ints.parquet: row group 0: column `caption` has type Int64, expected a string"
        ),
        "{}",
        r.stderr
    );

    // A captions-only table inspected for images: a clear message, and a way out.
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["CT.", "MRI."])),
        ],
    )
    .unwrap();
    write_parquet(&tmp.path().join("noimg.parquet"), batch, 10);
    let r = mt(&[
        "inspect",
        tmp.path().join("noimg.parquet").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("noimg.parquet: no image column"),
        "{}",
        r.stderr
    );
    let r = mt(&[
        "inspect",
        tmp.path().join("noimg.parquet").to_str().unwrap(),
        "--no-images",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn truncated_archives_and_bad_json_lines_keep_what_was_read() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = fs::read(testdata(
        "medtrinity-full/25M_accessible/images_001.tar.zst",
    ))
    .unwrap();
    let cut = tmp.path().join("cut.tar.zst");
    fs::write(&cut, &shard[..shard.len() * 2 / 3]).unwrap();
    let r = mt(&["--json", "inspect", cut.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cut.tar.zst: archive truncated or corrupt after"),
        "{}",
        r.stderr
    );
    let report = r.json();
    let read = report["totals"]["rows"].as_u64().unwrap();
    assert!(read > 0 && read < 16, "{read}");
    assert_eq!(report["images"]["count"].as_u64().unwrap(), read);

    let jsonl = tmp.path().join("bad.jsonl");
    fs::write(&jsonl, "{\"id\": \"a\", \"caption\": \"CT of the chest.\"}\n{\"id\": \"b\", \"caption\": \n{\"id\": 3, \"caption\": \"MRI.\"}\n").unwrap();
    let r = mt(&["--json", "inspect", jsonl.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("bad.jsonl: line 2: invalid JSON"),
        "{}",
        r.stderr
    );
    assert_eq!(r.json()["captions"]["count"], 2);
}

#[test]
fn readme_quickstart_works() {
    let readme = fs::read_to_string(common::root().join("README.md")).unwrap();
    let inspect = "cargo run --release -- inspect testdata/medtrinity-demo";
    let test = "cargo test";
    assert!(
        readme.contains(inspect) && readme.contains(test),
        "README quickstart changed: update this test"
    );
    let ci = fs::read_to_string(common::root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == test),
        ".ci/run must run the README's test command"
    );
    let r = mt(&["inspect", "testdata/medtrinity-demo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn row_groups_over_the_memory_bound_are_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let demo = common::testdata("medtrinity-demo").display().to_string();
    let r = common::mt_env(
        dir.path(),
        &["--no-run-dir", "inspect", &demo],
        &[("MT_MAX_ROW_GROUP_BYTES", "1000")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("row group 0 claims") && r.stderr.contains("MT_MAX_ROW_GROUP_BYTES"),
        "{}",
        r.stderr
    );
    let ok = common::mt_env(dir.path(), &["--no-run-dir", "inspect", &demo], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}
