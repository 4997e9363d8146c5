//! `mt caption --pipeline medtrinity` end to end: `mt roi` output joined by id, `bbox`
//! fields, coarse captions from metadata, knowledge retrieved from a passage corpus,
//! prompts pinned by a golden file (`--dry-run`), captions with the tiny random model
//! carrying their audit columns, and sharding: every id captioned exactly once across
//! shard outputs after kill -9, merged by `mt convert merge`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use medtrinity::core::records::for_each_record;
use medtrinity::core::shard::{marker, owner};

use crate::common::{Run, check_snapshot, kill_9_when, mt_env, mt_in, testdata};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A scratch folder with the pipeline fixtures copied in (the knowledge index is built
/// beside the corpus) and the ROIs made by `mt roi`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["cases.jsonl", "regions.jsonl", "passages.jsonl"] {
        let text = std::fs::read_to_string(testdata(&format!("pipeline/{name}"))).unwrap();
        let images = testdata("images").display().to_string();
        std::fs::write(dir.path().join(name), text.replace("../images", &images)).unwrap();
    }
    let r = mt_in(
        dir.path(),
        &["--no-run-dir", "roi", "regions.jsonl", "-o", "rois.jsonl"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    dir
}

fn pipeline_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "caption",
        "cases.jsonl",
        "--pipeline",
        "medtrinity",
        "--rois",
        "rois.jsonl",
        "--knowledge",
        "passages.jsonl",
    ];
    args.extend_from_slice(extra);
    args
}

fn model() -> String {
    testdata("models/tiny-llava").display().to_string()
}

#[test]
fn dry_run_prompts_match_the_golden_file() {
    let dir = setup();
    let mut args = vec!["--no-run-dir"];
    args.extend(pipeline_args(&["--dry-run"]));
    let r = mt_in(dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = r.json_lines();
    let ids: Vec<&str> = records.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ct-head-1", "fundus-7", "ihc-3", "cell-2", "mri-9"]);
    let by_id: BTreeMap<&str, &serde_json::Value> = ids.iter().copied().zip(&records).collect();

    // ROIs: joined from `mt roi` output, from the record's bbox, or none.
    let sources: Vec<&str> = records
        .iter()
        .map(|v| v["roi_source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["rois", "bbox", "rois", "none", "rois"]);
    let ct = by_id["ct-head-1"];
    assert_eq!(
        ct["rois"][0]["bbox"],
        serde_json::json!([60, 150, 140, 230])
    );
    assert_eq!(ct["rois"][0]["area_pct"], 4.0);
    assert_eq!(
        ct["coarse_caption"],
        "CT image of the brain, showing intracranial hemorrhage."
    );
    let prompt = ct["prompt"].as_str().unwrap();
    assert!(prompt.contains("right center part of the image and covers about 4.0%"));
    assert!(prompt.contains("\"the region of interest\""));
    // Knowledge: the passage on the case's disease is retrieved first and quoted.
    assert_eq!(ct["passages"][0], "kb-001", "{ct}");
    assert!(prompt.contains("[1] Intracranial hemorrhage: Intracranial hemorrhage is bleeding"));
    assert!(
        by_id["fundus-7"]["knowledge_query"]
            .as_str()
            .unwrap()
            .contains("diabetic retinopathy")
    );
    assert_eq!(by_id["fundus-7"]["passages"][0], "kb-003");
    assert_eq!(
        by_id["mri-9"]["coarse_caption"],
        "MRI image of the brain, showing glioma."
    );
    assert_eq!(by_id["mri-9"]["passages"][0], "kb-002");
    assert!(
        by_id["cell-2"]["prompt"]
            .as_str()
            .unwrap()
            .contains("Any region that looks abnormal")
    );

    // The whole output, with this machine's paths taken out, is pinned.
    let images = testdata("images").display().to_string();
    let golden = r.stdout.replace(&images, "<testdata>/images");
    check_snapshot(
        "testdata/pipeline/dry-run.golden.jsonl",
        golden.as_bytes(),
        "cargo test --test it pipeline::dry_run",
    );
}

#[test]
fn the_pipeline_captions_with_each_record_s_own_prompt_and_keeps_the_audit() {
    let dir = setup();
    let m = model();
    let mut args = vec!["--run-dir", "run"];
    args.extend(pipeline_args(&[
        "--model",
        &m,
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
        "-o",
        "captions.jsonl",
    ]));
    let r = mt_in(dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = lines(&dir.path().join("captions.jsonl"));
    assert_eq!(out.len(), 5);
    for line in &out {
        for key in [
            "id",
            "image",
            "caption",
            "model",
            "prompt_tokens",
            "new_tokens",
            "coarse_caption",
            "rois",
            "roi_source",
            "knowledge_query",
            "passages",
            "prompt",
        ] {
            assert!(line.get(key).is_some(), "{key} missing from {line}");
        }
    }
    // Each record's prompt was tokenised on its own: lengths differ with the text.
    let mut tokens: Vec<u64> = out
        .iter()
        .map(|l| l["prompt_tokens"].as_u64().unwrap())
        .collect();
    tokens.dedup();
    assert!(tokens.len() > 2, "{tokens:?}");
    let knowledge: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/knowledge.json")).unwrap(),
    )
    .unwrap();
    assert!(
        knowledge.to_string().contains("passages.jsonl"),
        "{knowledge}"
    );

    // Rerun: nothing left to do.
    let r = mt_in(dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines(&dir.path().join("captions.jsonl")).len(), 5);
}

#[test]
fn pipeline_input_problems_are_clear() {
    let dir = setup();
    let cases = |extra: &[&str]| {
        let mut args = vec!["--no-run-dir"];
        args.extend(pipeline_args(extra));
        mt_in(dir.path(), &args)
    };
    std::fs::write(
        dir.path().join("bad-rois.jsonl"),
        "{\"id\": \"a\"}\n{\"id\": \"b\", \"rois\": 5}\n",
    )
    .unwrap();
    let r = cases(&["--dry-run", "--rois", "bad-rois.jsonl"]);
    assert_eq!(r.code, 2, "clap: --rois given twice: {}", r.stderr);
    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "caption",
            "cases.jsonl",
            "--pipeline",
            "medtrinity",
            "--rois",
            "bad-rois.jsonl",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("bad-rois.jsonl:2: not an `mt roi` record"),
        "{}",
        r.stderr
    );
    let r = mt_in(
        dir.path(),
        &[
            "caption",
            "cases.jsonl",
            "--knowledge",
            "passages.jsonl",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 2, "--knowledge needs --pipeline: {}", r.stderr);
    let r = mt_in(dir.path(), &["--no-run-dir", "caption", "cases.jsonl"]);
    assert_eq!(r.code, 2, "no --model without --dry-run: {}", r.stderr);
    assert!(r.stderr.contains("--model"), "{}", r.stderr);
    let r = cases(&["--dry-run", "--shard", "2/2", "-o", "x.jsonl"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--shard: `2/2` is not a shard"),
        "{}",
        r.stderr
    );
    let r = cases(&["--dry-run", "--shard", "0/2"]);
    assert_eq!(r.code, 2, "a shard needs a file: {}", r.stderr);
    // Captions never resume into a file of --dry-run prompts (every id would be skipped).
    let r = cases(&["--dry-run", "-o", "prompts.jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = model();
    let r = cases(&["--model", &m, "-o", "prompts.jsonl"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("holds --dry-run prompts, not captions"),
        "{}",
        r.stderr
    );
    // A record with a broken bbox is reported and skipped, the others go on (exit 3).
    std::fs::write(
        dir.path().join("bad-bbox.jsonl"),
        format!(
            "{{\"id\": \"b\", \"image\": \"{}\", \"bbox\": [1, 2]}}\n{{\"id\": \"c\", \"image\": \"{0}\"}}\n",
            testdata("images/cell.png").display()
        ),
    )
    .unwrap();
    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "caption",
            "bad-bbox.jsonl",
            "--pipeline",
            "medtrinity",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("b: field `bbox`"), "{}", r.stderr);
    assert_eq!(r.json_lines().len(), 1);
}

#[test]
fn parquet_shards_of_dry_run_prompts_merge_into_one_parquet_file() {
    let dir = setup();
    for i in 0..2 {
        let shard = format!("{i}/2");
        let mut args = vec!["--no-run-dir"];
        args.extend(pipeline_args(&[
            "--dry-run",
            "--shard",
            &shard,
            "-o",
            "p.parquet",
        ]));
        let r = mt_in(dir.path(), &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let shards: Vec<String> = (0..2)
        .map(|i| format!("p-{i:05}-of-00002.parquet"))
        .collect();
    for s in &shards {
        assert!(marker(&dir.path().join(s)).exists(), "{s}");
    }
    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "convert",
            "merge",
            &shards[0],
            &shards[1],
            "-o",
            "all.parquet",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut ids = Vec::new();
    for_each_record(&dir.path().join("all.parquet"), &mut |_, v| {
        assert!(v["prompt"].as_str().unwrap().starts_with("<image>"));
        assert!(v["rois"].is_array() && v["passages"].is_array());
        ids.push(v["id"].as_str().unwrap().to_string());
        Ok(())
    })
    .unwrap();
    ids.sort();
    assert_eq!(ids, ["cell-2", "ct-head-1", "fundus-7", "ihc-3", "mri-9"]);
}

/// 24 records over the fixture images, for sharding.
fn many_cases(dir: &Path) -> Vec<String> {
    let images = ["phantom.png", "cell.png", "ihc.png", "microaneurysms.png"];
    let ids: Vec<String> = (0..24).map(|i| format!("case-{i:02}")).collect();
    let text: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let image = testdata(&format!("images/{}", images[i % images.len()]));
            format!(
                "{{\"id\": \"{id}\", \"image\": \"{}\", \"modality\": \"CT\", \"bbox\": [10, 10, 60, 60]}}\n",
                image.display()
            )
        })
        .collect();
    std::fs::write(dir.join("many.jsonl"), text).unwrap();
    ids
}

fn shard_command(dir: &Path, shard: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mt"));
    cmd.args([
        "--no-run-dir",
        "caption",
        "many.jsonl",
        "--pipeline",
        "medtrinity",
    ])
    .args([
        "--model",
        &model(),
        "--max-new-tokens",
        "3",
        "--batch-size",
        "1",
    ])
    .args(["-o", "caps.jsonl"])
    .current_dir(dir)
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd.args(["--shard", shard]).envs(env.iter().copied());
    cmd
}

/// The complete (newline-ended) lines of `path` while another process appends to it.
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn shard_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("caps-{i:05}-of-00002.jsonl"))
}

#[test]
fn shards_caption_every_id_exactly_once_through_kill_9_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let ids = many_cases(dir.path());
    let owned_by_0: Vec<&String> = ids.iter().filter(|id| owner(id, 2) == 0).collect();
    // A marker left by an earlier run must go when a new run of the shard starts.
    std::fs::write(shard_file(dir.path(), 0), "").unwrap();
    std::fs::write(marker(&shard_file(dir.path(), 0)), "{}").unwrap();
    // Shard 0 is killed a few times, each time once it has written one or two more
    // captions but never its last, so that the kill lands mid-run; the status shows it
    // did. A run that finished first starts the shard over with earlier kills, at most
    // twice.
    let file = shard_file(dir.path(), 0);
    let owned = owned_by_0.len();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut kills, mut finished_first, mut last) = (0, 0, owned - 1);
    while kills < 4 {
        let before = complete_lines(&file);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let target = (before + 1 + (seed % 2) as usize).min(last);
        if target <= before {
            break;
        }
        let log = dir.path().join("killed.log");
        let mut child = shard_command(dir.path(), "0/2", &[])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let limit = Duration::from_secs(120);
        let killed = kill_9_when(&mut child, limit, || complete_lines(&file) >= target);
        if let Err(status) = killed {
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "shard 0 failed ({status}): {stderr}");
            finished_first += 1;
            assert!(
                finished_first <= 2,
                "shard 0 finished before the kill {finished_first} times"
            );
        } else {
            kills += 1;
        }
        let done = lines(&file);
        let mut seen: Vec<&str> = done.iter().map(|v| v["id"].as_str().unwrap()).collect();
        seen.sort();
        let n = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), n, "no id written twice");
        assert!(seen.iter().all(|id| owned_by_0.iter().any(|o| o == id)));
        if marker(&file).exists() {
            assert_eq!(n, owned, "a .done marker means every owned id is there");
        }
        if killed.is_ok() {
            continue;
        }
        // Finished before the kill: start the shard over, killing earlier.
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_file(marker(&file)).unwrap();
        last = (last / 2).max(1);
    }
    assert!(kills >= 3, "only {kills} kills landed");
    // Merging now fails: shard 1 has not run, shard 0 may be unfinished.
    let merge = |extra: &[&str]| -> Run {
        let mut args = vec![
            "--no-run-dir",
            "convert",
            "merge",
            "caps-00000-of-00002.jsonl",
            "caps-00001-of-00002.jsonl",
        ];
        args.extend_from_slice(extra);
        mt_in(dir.path(), &args)
    };
    let r = merge(&["-o", "all.jsonl"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Finish both shards; shard 1 through the Slurm array variables.
    let r = shard_command(dir.path(), "0/2", &[]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let r = shard_command(dir.path(), "slurm", &slurm).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for i in 0..2 {
        assert!(marker(&shard_file(dir.path(), i)).exists());
    }
    let r = merge(&["-o", "all.jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let merged = lines(&dir.path().join("all.jsonl"));
    let mut got: Vec<String> = merged
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ids, "each id exactly once");
    // The shards hold disjoint ids: nothing was captioned twice.
    let (a, b) = (
        lines(&shard_file(dir.path(), 0)),
        lines(&shard_file(dir.path(), 1)),
    );
    assert_eq!(a.len() + b.len(), 24);
    assert!(!a.is_empty() && !b.is_empty());
}

#[test]
fn merge_checks_that_each_id_is_in_its_own_shard_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Owners of 2 shards: a -> 1; b, c -> 0 (pinned in core::shard's tests).
    let write = |shard0: &str, shard1: &str| {
        for (i, body) in [(0, shard0), (1, shard1)] {
            let f = d.join(format!("x-{i:05}-of-00002.jsonl"));
            std::fs::write(&f, body).unwrap();
            std::fs::write(marker(&f), "{}").unwrap();
        }
    };
    let merge = || {
        let args = [
            "--no-run-dir",
            "convert",
            "merge",
            "x-00000-of-00002.jsonl",
            "x-00001-of-00002.jsonl",
            "-o",
            "x.jsonl",
        ];
        mt_env(d, &args, &[])
    };
    write(
        "{\"id\": \"b\"}\n{\"id\": \"c\"}\n",
        "{\"id\": \"a\"}\n{\"id\": \"c\"}\n",
    );
    let r = merge();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("x-00001-of-00002.jsonl:2: id `c` belongs to shard 0, not 1"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(d.join("x.jsonl")).unwrap();
    write("{\"id\": \"b\"}\n{\"id\": \"b\", \"v\": 2}\n", "");
    let r = merge();
    assert!(
        r.stderr
            .contains("x-00000-of-00002.jsonl:2: id `b` appears twice"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(d.join("x.jsonl")).unwrap();
    write(
        "{\"id\": \"b\"}\n{\"id\": \"c\"}\n",
        "{\"id\": \"a\", \"n\": 1}\n",
    );
    for _ in 0..2 {
        let r = merge();
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(lines(&d.join("x.jsonl")).len(), 3, "a rerun adds nothing");
    }
    assert_eq!(
        lines(&d.join("x.jsonl"))[2],
        serde_json::json!({"id": "a", "n": 1})
    );
    // A shard file that lost records after its marker was written is refused.
    std::fs::write(
        marker(&d.join("x-00001-of-00002.jsonl")),
        "{\"records\": 5}",
    )
    .unwrap();
    std::fs::remove_file(d.join("x.jsonl")).unwrap();
    let r = merge();
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("1 records but its .done marker says 5"),
        "{}",
        r.stderr
    );
}
