//! `mt inspect TRAIN --against BENCH`: exact copies (same pixels, other bytes) and near
//! copies (re-encoded, resized, cropped) of benchmark images are found, unrelated real
//! images are not, the pairs land in contamination.jsonl, and `mt convert llava
//! --exclude-matches` leaves those records out.

use std::collections::BTreeMap;
use std::path::Path;

use image::imageops::FilterType;
use serde_json::{Value, json};

use crate::common::{mt_in, testdata};

/// Saves `img` as `dir/name` (format by extension; JPEG at `quality`).
fn save(img: &image::DynamicImage, dir: &Path, name: &str, quality: u8) {
    let path = dir.join(name);
    if name.ends_with(".jpg") {
        let file = std::fs::File::create(&path).unwrap();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(file, quality);
        img.to_rgb8().write_with_encoder(encoder).unwrap();
    } else {
        img.save(&path).unwrap();
    }
}

fn open(rel: &str) -> image::DynamicImage {
    image::open(testdata(rel)).unwrap()
}

#[test]
fn benchmark_copies_are_found_and_unrelated_images_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (bench, train) = (dir.path().join("bench"), dir.path().join("train"));
    std::fs::create_dir_all(&bench).unwrap();
    std::fs::create_dir_all(&train).unwrap();
    for name in ["cell.png", "ihc.png", "retina.jpg", "phantom.png"] {
        std::fs::copy(testdata(&format!("images/{name}")), bench.join(name)).unwrap();
    }
    let liver = open("medical/expected/liver_1frame.png");
    save(&liver, &bench, "liver.png", 0);

    // Copies: the same pixels in other bytes, and altered ones.
    save(&open("images/cell.png"), &train, "cell.bmp", 0);
    save(&open("images/ihc.png"), &train, "ihc_q60.jpg", 60);
    let retina = open("images/retina.jpg");
    let half = retina.resize_exact(
        retina.width() / 2,
        retina.height() / 2,
        FilterType::Triangle,
    );
    save(&half, &train, "retina_half.png", 0);
    let phantom = open("images/phantom.png");
    let double = phantom.resize_exact(800, 800, FilterType::Triangle);
    save(&double, &train, "phantom_2x.jpg", 90);
    save(
        &liver.crop_imm(26, 26, 460, 460),
        &train,
        "liver_crop.png",
        0,
    );
    std::fs::copy(
        testdata("vqa/slake/imgs/xmlab1/source.jpg"),
        train.join("slake_copy.jpg"),
    )
    .unwrap();
    // Unrelated real images (CT, MR, retina lesions, a brain slice).
    for rel in [
        "images/microaneurysms.png",
        "medical/expected/CT_small.png",
        "medical/expected/MR_small.png",
        "medical/expected/anatomical/anatomical_y0012.png",
    ] {
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        std::fs::copy(testdata(rel), train.join(name)).unwrap();
    }
    // The training set as LLaVA records over those files.
    let mut names: Vec<String> = std::fs::read_dir(&train)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let records: String = names
        .iter()
        .map(|n| {
            let r = json!({"id": format!("t-{n}"), "image": n, "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": format!("A picture, {n}.")}]});
            format!("{r}\n")
        })
        .collect();
    std::fs::write(dir.path().join("train.jsonl"), records).unwrap();

    let slake = format!("slake={}", testdata("vqa/slake").display());
    let run = mt_in(
        dir.path(),
        &[
            "--json",
            "--run-dir",
            "run",
            "inspect",
            "train.jsonl",
            "--image-folder",
            "train",
            "--against",
            "bench",
            &slake,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let c = &report["contamination"];
    assert_eq!(c["exact"], 2, "{c}");
    assert_eq!(c["near"], 4, "{c}");
    assert_eq!(c["train_images"], 10, "{c}");
    assert_eq!(c["bench_images"], 7, "5 files and 2 SLAKE test images: {c}");
    assert_eq!(c["bench_images_found"], 6, "{c}");

    let pairs: Vec<Value> = std::fs::read_to_string(dir.path().join("run/contamination.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: BTreeMap<String, (String, String)> = pairs
        .iter()
        .map(|p| {
            let train = p["train"]["id"].as_str().unwrap().to_string();
            let bench = p["bench"]["id"].as_str().unwrap().to_string();
            (train, (bench, p["kind"].as_str().unwrap().to_string()))
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("t-cell.bmp", "cell.png", "exact"),
        ("t-slake_copy.jpg", "slake:test:xmlab1/source.jpg", "exact"),
        ("t-ihc_q60.jpg", "ihc.png", "near"),
        ("t-retina_half.png", "retina.jpg", "near"),
        ("t-phantom_2x.jpg", "phantom.png", "near"),
        ("t-liver_crop.png", "liver.png", "near"),
    ]
    .into_iter()
    .map(|(t, b, k)| (t.to_string(), (b.to_string(), k.to_string())))
    .collect();
    assert_eq!(found, want, "{pairs:#?}");
    assert_eq!(pairs.len(), 6, "no unrelated pair: {pairs:#?}");
    for p in &pairs {
        assert!(p["distance"].as_u64().unwrap() <= 8, "{p}");
        if p["kind"] == "near" {
            assert!(p["correlation"].as_f64().unwrap() >= 0.9, "{p}");
        }
        assert_eq!(p["train"]["input"].as_str().unwrap(), "train.jsonl");
    }

    // The training set without them.
    let out = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "convert",
            "llava",
            "train.jsonl",
            "--image-folder",
            "train",
            "-o",
            "clean.jsonl",
            "--exclude-matches",
            "run/contamination.jsonl",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let kept: Vec<String> = std::fs::read_to_string(dir.path().join("clean.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.iter().all(|id| !want.contains_key(id)), "{kept:?}");
}

#[test]
fn against_inputs_that_hold_no_images_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    std::fs::write(dir.path().join("empty/notes.txt"), "no images").unwrap();
    let images = testdata("images").display().to_string();
    let run = mt_in(
        dir.path(),
        &["--no-run-dir", "inspect", &images, "--against", "empty"],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    let run = mt_in(
        dir.path(),
        &["--no-run-dir", "inspect", &images, "--against", "mimic=x"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn images_in_tar_zst_shards_are_compared_under_their_manifest_ids() {
    let dir = tempfile::tempdir().unwrap();
    let full = testdata("medtrinity-full").display().to_string();
    // The shards' members, written out by mt itself; one becomes the benchmark.
    let out = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "convert",
            "llava",
            &full,
            "-o",
            "all.jsonl",
            "--images-out",
            "img",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::create_dir_all(dir.path().join("bench")).unwrap();
    let member = "nema-mr_00012.png";
    std::fs::copy(
        dir.path().join("img").join(member),
        dir.path().join("bench").join(member),
    )
    .unwrap();
    let run = mt_in(
        dir.path(),
        &[
            "--json",
            "--run-dir",
            "run",
            "inspect",
            &full,
            "--against",
            "bench",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["contamination"]["exact"], 1,
        "{}",
        report["contamination"]
    );
    assert_eq!(report["contamination"]["undecodable"], 0);
    let pair: Value = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("run/contamination.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(pair["train"]["id"], member, "{pair}");
    assert!(
        pair["train"]["input"]
            .as_str()
            .unwrap()
            .ends_with(".parquet"),
        "the manifest row, not the shard: {pair}"
    );
}
