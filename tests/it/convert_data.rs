//! `mt convert llava` and `mt convert parquet` on the bundled MedTrinity samples
//! (25M_demo parquet with embedded images; 25M_full manifest + .tar.zst shards): the
//! round trip parquet -> llava -> parquet keeps ids, captions and image bytes; both
//! outputs resume after a crash without duplicates.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::StructArray;
use arrow_array::cast::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::common::{mt, testdata};

/// id -> (caption, image bytes) of every parquet file under `dir`.
fn parquet_rows(dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut rows = BTreeMap::new();
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    for f in files {
        for batch in ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap()
        {
            let b = batch.unwrap();
            let ids = b.column_by_name("id").unwrap().as_string::<i32>().clone();
            let caps = b
                .column_by_name("caption")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let img: &StructArray = b.column_by_name("image").unwrap().as_struct();
            let bytes = img
                .column_by_name("bytes")
                .unwrap()
                .as_binary::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                let old = rows.insert(
                    ids.value(i).to_string(),
                    (caps.value(i).to_string(), bytes.value(i).to_vec()),
                );
                assert!(old.is_none(), "duplicate id {}", ids.value(i));
            }
        }
    }
    rows
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn demo_parquet_round_trips_through_llava() {
    let dir = tempfile::tempdir().unwrap();
    let (out, images, back) = (
        dir.path().join("demo.jsonl"),
        dir.path().join("imgs"),
        dir.path().join("back"),
    );
    let demo = testdata("medtrinity-demo");
    let r = mt(&[
        "convert",
        "llava",
        s(&demo),
        "-o",
        s(&out),
        "--images-out",
        s(&images),
        "--instruction",
        "Describe.",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recs = jsonl(&out);
    assert_eq!(recs.len(), 33);
    assert_eq!(recs[0]["conversations"][0]["value"], "<image>\nDescribe.");
    assert!(images.join(recs[0]["image"].as_str().unwrap()).is_file());

    let r = mt(&[
        "convert",
        "parquet",
        s(&out),
        "--images",
        s(&images),
        "-o",
        s(&back),
        "--shard-size",
        "100KB",
        "--row-group-size",
        "30KB",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shards: Vec<String> = std::fs::read_dir(&back)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        shards.len() > 1 && shards.iter().all(|n| n.contains("-of-")),
        "{shards:?}"
    );
    let original = parquet_rows(&demo);
    assert_eq!(original.len(), 33);
    assert_eq!(
        parquet_rows(&back),
        original,
        "ids, captions and image bytes survive the round trip"
    );
}

#[test]
fn full_manifest_with_archives_writes_each_member() {
    let dir = tempfile::tempdir().unwrap();
    let (out, images) = (dir.path().join("full.json"), dir.path().join("imgs"));
    let r = mt(&[
        "convert",
        "llava",
        s(&testdata("medtrinity-full")),
        "-o",
        s(&out),
        "--images-out",
        s(&images),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recs: Vec<Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(recs.len(), 32);
    assert!(
        recs.iter().all(|r| r["source"].is_string()),
        "manifest fields are kept"
    );
    for r in &recs {
        let img = images.join(r["image"].as_str().unwrap());
        assert!(image::open(&img).is_ok(), "{}", img.display());
    }
}

#[test]
fn llava_output_resumes_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (out, images) = (dir.path().join("demo.jsonl"), dir.path().join("imgs"));
    let args = [
        "convert",
        "llava",
        &testdata("medtrinity-demo").display().to_string(),
        "-o",
        s(&out),
        "--images-out",
        s(&images),
    ]
    .map(|a| a.to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(mt(&argv).code, 0);
    let full = std::fs::read_to_string(&out).unwrap();
    // A crash after 10 lines and part of the 11th, with one image never written.
    let cut: usize = full.lines().take(10).map(|l| l.len() + 1).sum::<usize>() + 25;
    std::fs::write(&out, &full[..cut]).unwrap();
    let victim = full
        .lines()
        .nth(20)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap();
    std::fs::remove_file(images.join(&victim)).unwrap();
    let r = mt(&argv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        full,
        "same lines, none twice"
    );
    assert!(images.join(&victim).is_file());
}

#[test]
fn parquet_output_resumes_from_complete_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pq");
    let demo = testdata("medtrinity-demo").display().to_string();
    let argv = [
        "convert",
        "parquet",
        &demo,
        "-o",
        s(&out),
        "--shard-size",
        "60KB",
        "--row-group-size",
        "20KB",
    ];
    assert_eq!(mt(&argv).code, 0);
    let whole = parquet_rows(&out);
    let mut shards: Vec<_> = walk(&out);
    shards.sort();
    assert!(shards.len() >= 3);
    // A crash: the last shard never completed (a partial file is left instead).
    let last = shards.pop().unwrap();
    std::fs::rename(&last, out.join("train-00099.parquet.partial")).unwrap();
    let r = mt(&argv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("already there"), "{}", r.stderr);
    assert_eq!(parquet_rows(&out), whole);
    assert!(
        walk(&out)
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "parquet")),
        "no partial file left"
    );
}

#[test]
fn records_without_caption_or_image_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let img = testdata("images").join(
        std::fs::read_dir(testdata("images"))
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "png"))
            .unwrap()
            .file_name(),
    );
    std::fs::write(
        &input,
        format!(
            "{{\"id\": \"ok\", \"image\": \"{}\", \"caption\": \"a scan\"}}\n{{\"id\": \"nocap\", \"image\": \"{}\"}}\n{{\"id\": \"noimg\", \"caption\": \"x\"}}\n{{\"id\": \"gone\", \"image\": \"missing.png\", \"caption\": \"x\"}}\n",
            img.display(),
            img.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("pq");
    let r = mt(&["convert", "parquet", s(&input), "-o", s(&out)]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    for needle in [
        "row 1 (id nocap): no caption",
        "row 2 (id noimg): the record has no image",
        "row 3 (id gone)",
        "3 of 4",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    }
    assert_eq!(parquet_rows(&out).len(), 1);
    // --json: the same run summarised on stdout, failures included.
    let out2 = dir.path().join("pq2");
    let r = mt(&["--json", "convert", "parquet", s(&input), "-o", s(&out2)]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let summary = r.json();
    assert_eq!(
        (summary["records"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(3))
    );
    let failures = summary["failures"].as_array().unwrap();
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("no caption")
    );
}

#[test]
fn webdataset_shards_round_trip_and_resume() {
    let demo = testdata("medtrinity-demo");
    let original = parquet_rows(&demo);
    for zstd in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (wds, back) = (dir.path().join("wds"), dir.path().join("back"));
        let mut argv = wds_args(&demo, &wds);
        if zstd {
            argv.push("--zstd");
        }
        assert_eq!(mt(&argv).code, 0);
        let mut shards = walk(&wds);
        shards.sort();
        assert_eq!(shards.len(), 4, "33 records, 10 per shard");
        // A crash while writing the last shard, then a rerun.
        let last = shards.pop().unwrap();
        std::fs::rename(&last, format!("{}.partial", last.display())).unwrap();
        let r = mt(&argv);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            walk(&wds).len(),
            4,
            "the partial shard is gone, the last one rewritten"
        );
        // mt reads the shards back with the original ids.
        let r = mt(&["convert", "parquet", s(&wds), "-o", s(&back)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(parquet_rows(&back), original, "zstd: {zstd}");
    }
}

/// Two different images with the same file name in different folders keep their own
/// paths (a basename would make one overwrite the other).
#[test]
fn images_with_the_same_name_in_different_folders_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    let pngs: Vec<_> = walk(&testdata("images"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .take(2)
        .collect();
    for (sub, src) in ["a", "b"].iter().zip(&pngs) {
        std::fs::create_dir_all(imgs.join(sub)).unwrap();
        std::fs::copy(src, imgs.join(sub).join("source.png")).unwrap();
    }
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"r1\", \"image\": \"a/source.png\", \"caption\": \"one\"}\n{\"id\": \"r2\", \"image\": \"b/source.png\", \"caption\": \"two\"}\n",
    )
    .unwrap();
    let (out, images) = (dir.path().join("out.jsonl"), dir.path().join("out_imgs"));
    let r = mt(&[
        "convert",
        "llava",
        s(&input),
        "--images",
        s(&imgs),
        "-o",
        s(&out),
        "--images-out",
        s(&images),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recs = jsonl(&out);
    assert_eq!(
        (recs[0]["image"].as_str(), recs[1]["image"].as_str()),
        (Some("a/source.png"), Some("b/source.png"))
    );
    for (rec, src) in recs.iter().zip(&pngs) {
        assert_eq!(
            std::fs::read(images.join(rec["image"].as_str().unwrap())).unwrap(),
            std::fs::read(src).unwrap()
        );
    }
}

/// A complete shard removed by hand (say it was corrupt) is rewritten under a new
/// number; no existing shard is overwritten and no record is lost.
#[test]
fn a_removed_middle_shard_is_rewritten_without_overwriting_others() {
    let demo = testdata("medtrinity-demo");
    let dir = tempfile::tempdir().unwrap();
    let (wds, back) = (dir.path().join("wds"), dir.path().join("back"));
    let argv = wds_args(&demo, &wds);
    assert_eq!(mt(&argv).code, 0);
    std::fs::remove_file(wds.join("train-000001.tar")).unwrap();
    let r = mt(&argv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(wds.join("train-000004.tar").is_file());
    assert_eq!(walk(&wds).len(), 4);
    assert_eq!(mt(&["convert", "parquet", s(&wds), "-o", s(&back)]).code, 0);
    assert_eq!(parquet_rows(&back), parquet_rows(&demo));
}

/// `mt convert wds INPUT -o OUT --shard-records 10`.
fn wds_args<'a>(input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "convert",
        "wds",
        s(input),
        "-o",
        s(out),
        "--shard-records",
        "10",
    ]
}

#[test]
fn oversized_row_groups_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = mt(&[
        "convert",
        "parquet",
        s(&testdata("medtrinity-demo")),
        "-o",
        s(&dir.path().join("pq")),
        "--row-group-size",
        "3GB",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("at most 1GB"), "{}", r.stderr);
}
