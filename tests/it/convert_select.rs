//! `mt convert llava|parquet|wds` selection: `--filter` (caption parts too), `--split`
//! by id hash (stable as the dataset grows), `--stratify`, `--limit`, `--instructions`,
//! `--parts`, and their usage errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::common::{mt, testdata};

fn demo(file: usize) -> String {
    testdata(&format!(
        "medtrinity-demo/25M_demo/train-0000{file}-of-00002.parquet"
    ))
    .display()
    .to_string()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// `mt convert llava INPUTS... -o OUT --images-out IMAGES ARGS...`.
fn llava(inputs: &[String], out: &Path, args: &[&str], code: i32) -> crate::common::Run {
    let images = out.with_file_name("images");
    let mut all = vec!["convert", "llava"];
    all.extend(inputs.iter().map(String::as_str));
    let (out, images) = (out.display().to_string(), images.display().to_string());
    all.extend(["-o", &out, "--images-out", &images]);
    all.extend_from_slice(args);
    let run = mt(&all);
    assert_eq!(run.code, code, "mt {all:?}\n{}", run.stderr);
    run
}

/// The split hash as documented: FNV-1a of the id, then splitmix64, over 2^64.
fn fraction(id: &str) -> f64 {
    let fnv = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut x = fnv.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as f64 / 2f64.powi(64)
}

#[test]
fn splits_follow_the_id_hash_and_survive_a_grown_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small/demo.jsonl");
    let split = ["--split", "train:0.5,test:0.2"];
    llava(&[demo(0)], &out, &split, 0);
    let small = [
        jsonl(&dir.path().join("small/demo.train.jsonl")),
        jsonl(&dir.path().join("small/demo.test.jsonl")),
    ];
    assert!(!out.exists(), "no unsplit output");
    // Every record is where its hash puts it; the last 30% is left out.
    for r in &small[0] {
        assert!(fraction(r["id"].as_str().unwrap()) < 0.5, "{r}");
    }
    for r in &small[1] {
        let f = fraction(r["id"].as_str().unwrap());
        assert!((0.5..0.7).contains(&f), "{r}");
    }
    let written = small[0].len() + small[1].len();
    assert!(written < 17 && written > 8, "{written} of 17");

    // The grown dataset (both shards) keeps every earlier record in its split.
    let grown_out = dir.path().join("grown/demo.jsonl");
    let run = llava(&[demo(0), demo(1)], &grown_out, &split, 0);
    let grown = [
        ids(&jsonl(&dir.path().join("grown/demo.train.jsonl"))),
        ids(&jsonl(&dir.path().join("grown/demo.test.jsonl"))),
    ];
    for (earlier, now) in small.iter().zip(&grown) {
        assert!(ids(earlier).is_subset(now), "{:?} vs {now:?}", ids(earlier));
    }
    assert!(grown[0].is_disjoint(&grown[1]));
    assert!(run.stderr.contains("past the last split"), "{}", run.stderr);

    // A rerun finds everything there and writes nothing new.
    let again = llava(&[demo(0), demo(1)], &grown_out, &split, 0);
    assert!(
        again.stderr.contains("converted 0 records"),
        "{}",
        again.stderr
    );
}

#[test]
fn filters_on_caption_parts_limit_and_parts_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ct.jsonl");
    let args = ["--filter", "modality = 'CT'", "--limit", "4", "--parts"];
    llava(&[demo(0), demo(1)], &out, &args, 0);
    let records = jsonl(&out);
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["modality"], "CT", "{r}");
        let caption = r["conversations"][1]["value"].as_str().unwrap();
        for part in ["organ", "roi_location", "roi_area", "texture", "relations"] {
            match &r[part] {
                Value::String(text) if part != "organ" => {
                    assert!(caption.contains(text.as_str()), "{part}: {text}")
                }
                Value::String(_) | Value::Null => {}
                other => panic!("{part}: {other}"),
            }
        }
    }
    // Without --limit: the same first four, then the rest of the CT records.
    let all = dir.path().join("all.jsonl");
    llava(&[demo(0), demo(1)], &all, &args[..2], 0);
    let all = jsonl(&all);
    assert!(all.len() > 4 && all.len() < 33, "{}", all.len());
    assert_eq!(ids(&records), ids(&all[..4]));
    assert!(
        all.iter().all(|r| r.get("modality").is_none()),
        "no --parts"
    );
}

#[test]
fn stratified_splits_cut_every_modality_in_the_fractions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.jsonl");
    let args = [
        "--split",
        "a:0.5,b:0.5",
        "--stratify",
        "modality",
        "--parts",
    ];
    llava(&[demo(0), demo(1)], &out, &args, 0);
    let count = |name: &str| {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for r in jsonl(&dir.path().join(format!("s.{name}.jsonl"))) {
            *by.entry(r["modality"].to_string()).or_default() += 1;
        }
        by
    };
    let (a, b) = (count("a"), count("b"));
    let groups: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    assert!(groups.len() >= 2, "{a:?} {b:?}");
    for g in groups {
        let (x, y) = (
            a.get(g).copied().unwrap_or(0),
            b.get(g).copied().unwrap_or(0),
        );
        assert!(x.abs_diff(y) <= 1, "{g}: {x} vs {y}");
    }
    assert_eq!(a.values().sum::<usize>() + b.values().sum::<usize>(), 33);
}

#[test]
fn instructions_are_drawn_per_record_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.txt");
    std::fs::write(
        &pool,
        "Describe the image.\n\nWhat does this scan show?\nSummarise the findings.\n",
    )
    .unwrap();
    let human = |seed: &str, name: &str| -> Vec<String> {
        let out = dir.path().join(name);
        let pool = pool.display().to_string();
        llava(
            &[demo(0)],
            &out,
            &["--instructions", &pool, "--seed", seed],
            0,
        );
        jsonl(&out)
            .iter()
            .map(|r| r["conversations"][0]["value"].as_str().unwrap().to_string())
            .collect()
    };
    let first = human("3", "a.jsonl");
    assert_eq!(first, human("3", "b.jsonl"), "same seed, same draw");
    assert_ne!(first, human("4", "c.jsonl"), "another seed, another draw");
    let used: BTreeSet<&String> = first.iter().collect();
    assert!(used.len() >= 2, "{used:?}");
    assert!(
        first
            .iter()
            .all(|h| h.starts_with("<image>\n") && !h.ends_with('\n') && h.len() > 10)
    );
}

#[test]
fn parquet_and_wds_write_one_set_of_shards_per_split() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("pq");
    let split = ["--split", "train:0.7,test:0.3", "--parts"];
    let mut args = vec!["convert", "parquet"];
    let (d0, d1, pq_s) = (demo(0), demo(1), pq.display().to_string());
    args.extend([d0.as_str(), d1.as_str(), "-o", &pq_s]);
    args.extend(split);
    let run = mt(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut rows = 0;
    for name in ["train", "test"] {
        let shard = pq.join(format!("{name}-00000-of-00001.parquet"));
        let inspect = mt(&["--json", "inspect", shard.to_str().unwrap()]);
        assert_eq!(inspect.code, 0, "{}", inspect.stderr);
        let report: Value = serde_json::from_str(&inspect.stdout).unwrap();
        rows += report["totals"]["rows"].as_u64().unwrap();
        let schema = report["schema"].to_string();
        for part in ["modality", "organ", "roi_location", "relations"] {
            assert!(schema.contains(part), "{part} in {schema}");
        }
    }
    assert_eq!(rows, 33);

    let wds = dir.path().join("wds");
    let wds_s = wds.display().to_string();
    let run = mt(&[
        "convert",
        "wds",
        &d0,
        &d1,
        "-o",
        &wds_s,
        "--split",
        "train:0.7,test:0.3",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(wds.join("train-000000.tar").is_file() && wds.join("test-000000.tar").is_file());
}

#[test]
fn selection_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    for (args, says) in [
        (vec!["--split", "train:0.9,test:0.2"], "over 1"),
        (vec!["--split", "train,test"], "fraction"),
        (vec!["--stratify", "modality"], "--split"),
        (vec!["--filter", "scanner = 'x'"], "columns:"),
        (vec!["--instructions", "/nonexistent/pool.txt"], "pool.txt"),
        (vec!["--exclude-matches", "/nonexistent/c.jsonl"], "c.jsonl"),
    ] {
        let run = llava(&[demo(0)], &out, &args, 2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    let run = mt(&[
        "convert",
        "llava",
        &demo(0),
        "-o",
        "-",
        "--split",
        "a:0.5",
        "--images-out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn a_limited_25m_full_conversion_writes_the_members_its_records_name() {
    let dir = tempfile::tempdir().unwrap();
    let full = testdata("medtrinity-full").display().to_string();
    let out = dir.path().join("x.jsonl");
    llava(std::slice::from_ref(&full), &out, &["--limit", "3"], 0);
    let records = jsonl(&out);
    assert_eq!(records.len(), 3);
    let mut written: Vec<String> = std::fs::read_dir(dir.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut named: Vec<String> = records
        .iter()
        .map(|r| r["image"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert_eq!(written, named, "the three records' images, no other member");

    // --limit counts records written: a 50% sample limited to 5 writes 5.
    let sample = dir.path().join("s/s.jsonl");
    llava(
        &[full],
        &sample,
        &["--split", "half:0.5", "--limit", "5"],
        0,
    );
    assert_eq!(jsonl(&dir.path().join("s/s.half.jsonl")).len(), 5);
}

#[test]
fn parquet_refuses_to_resume_with_other_part_columns() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("pq").display().to_string();
    let d0 = demo(0);
    let run = mt(&["convert", "parquet", &d0, "-o", &pq]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = mt(&["convert", "parquet", &d0, &demo(1), "-o", &pq, "--parts"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--parts differs"), "{}", run.stderr);
}
