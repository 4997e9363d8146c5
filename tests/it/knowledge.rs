//! `mt convert knowledge-index` end to end: the summary and run directory, --json,
//! up-to-date reruns, bad corpora, and a build killed with -9.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use medtrinity::core::knowledge::KnowledgeIndex;

use crate::common::{Run, kill_9_when, mt_in};

fn line(id: &str, title: &str, text: &str) -> String {
    serde_json::json!({"id": id, "title": title, "text": text, "source": "test"}).to_string() + "\n"
}

/// A folder with `kb.jsonl` holding a few passages.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        line(
            "1",
            "Pneumothorax",
            "Air in the pleural space collapses the lung.",
        ),
        line(
            "2",
            "Hepatic cyst",
            "A fluid-filled cyst of the liver, usually benign.",
        ),
        line(
            "3",
            "Renal calculus",
            "A stone in the kidney; CT shows a dense focus.",
        ),
    ]
    .concat();
    fs::write(dir.path().join("kb.jsonl"), text).unwrap();
    dir
}

fn index_cmd(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["convert", "knowledge-index"];
    args.extend_from_slice(extra);
    mt_in(dir, &args)
}

#[test]
fn builds_reports_and_skips_an_up_to_date_index() {
    let dir = workdir();
    let r = index_cmd(dir.path(), &["kb.jsonl", "--run-dir", "run1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("knowledge-index: 3 passages in"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("index at kb.jsonl.bm25"), "{}", r.stderr);
    let run: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("run1/run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["counts"]["passages"], 3);
    assert_eq!(run["counts"]["built"], 1);
    assert_eq!(run["counts"]["segments"], 1);
    assert!(dir.path().join("kb.jsonl.bm25/mt-knowledge.json").is_file());

    let index = KnowledgeIndex::open(&dir.path().join("kb.jsonl.bm25")).unwrap();
    let hits = index.search("kidney stones on CT", 2).unwrap();
    assert_eq!(hits[0].id, "3");
    assert_eq!(hits[0].source, "test");
    drop(index);

    let r = index_cmd(dir.path(), &["kb.jsonl", "--no-run-dir"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("kb.jsonl.bm25 is up to date (3 passages"),
        "{}",
        r.stderr
    );

    let r = index_cmd(dir.path(), &["kb.jsonl", "--no-run-dir", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(
        (j["built"].as_bool(), j["reason"].as_str()),
        (Some(false), Some("up to date"))
    );
    assert_eq!(j["passages"], 3);

    // A changed corpus, or --force, rebuilds; -o names another folder.
    let mut text = fs::read_to_string(dir.path().join("kb.jsonl")).unwrap();
    text.push_str(&line("4", "", "Pleural effusion."));
    fs::write(dir.path().join("kb.jsonl"), text).unwrap();
    let r = index_cmd(dir.path(), &["kb.jsonl", "--no-run-dir", "--json"]);
    let j = r.json();
    assert_eq!(
        (j["built"].as_bool(), j["passages"].as_u64()),
        (Some(true), Some(4))
    );
    assert!(
        j["reason"].as_str().unwrap().contains("changed size"),
        "{j}"
    );
    let r = index_cmd(
        dir.path(),
        &[
            "kb.jsonl",
            "--no-run-dir",
            "--json",
            "--force",
            "-o",
            "sub/idx",
            "--memory",
            "64MB",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(
        (j["built"].as_bool(), j["reason"].as_str()),
        (Some(true), Some("no index yet"))
    );
    assert!(j["bytes"].as_u64().unwrap() > 0);
    assert!(j["seconds"].as_f64().is_some());
    assert!(dir.path().join("sub/idx/mt-knowledge.json").is_file());
}

#[test]
fn bad_input_gets_one_line_naming_the_place() {
    let dir = workdir();
    let bad = [
        line("1", "", "fine"),
        "{\"id\": \"2\", \"text\": 5}\n".to_string(),
    ]
    .concat();
    fs::write(dir.path().join("bad.jsonl"), bad).unwrap();
    let r = index_cmd(dir.path(), &["bad.jsonl", "--no-run-dir"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("bad.jsonl:2: field `text` must be a string, got a number"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(!dir.path().join("bad.jsonl.bm25").exists());

    // A duplicate id in a second file names both places.
    fs::write(dir.path().join("more.jsonl"), line("2", "", "again")).unwrap();
    let r = index_cmd(dir.path(), &["kb.jsonl", "more.jsonl", "--no-run-dir"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("more.jsonl:1: duplicate id `2` (first at "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("kb.jsonl:2)"), "{}", r.stderr);

    let r = index_cmd(dir.path(), &["missing.jsonl", "--no-run-dir"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("missing.jsonl: no such file"),
        "{}",
        r.stderr
    );
    let r = index_cmd(dir.path(), &["kb.jsonl", "--no-run-dir", "--memory", "1MB"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = index_cmd(dir.path(), &["--no-run-dir"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    // An existing folder that is not an index is never overwritten.
    fs::create_dir(dir.path().join("notes")).unwrap();
    fs::write(dir.path().join("notes/a.txt"), "keep me").unwrap();
    let r = index_cmd(dir.path(), &["kb.jsonl", "--no-run-dir", "-o", "notes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not a knowledge index made by mt"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("notes/a.txt")).unwrap(),
        "keep me"
    );
}

/// Writes `big.jsonl` with `n` passages into `dir`.
fn big_corpus(dir: &Path, n: usize) {
    let words = [
        "lung", "liver", "nodule", "mass", "ct", "mri", "cyst", "edema", "rib",
    ];
    let mut text = String::new();
    for i in 0..n {
        let body: Vec<&str> = (0..40)
            .map(|j| words[(i * 7 + j * j) % words.len()])
            .collect();
        text.push_str(&line(&i.to_string(), "Finding", &body.join(" ")));
    }
    fs::write(dir.join("big.jsonl"), text).unwrap();
}

#[test]
fn a_build_killed_with_sigkill_leaves_nothing_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let tmp_dir = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".big.jsonl.bm25.tmp-")
            })
    };
    let out = dir.path().join("big.jsonl.bm25");
    // Kill the build once its temporary folder is there. If it finished before the kill
    // landed, start over with a corpus twice as big (a bounded number of times).
    let mut passages = None;
    for n in [60_000, 120_000, 240_000] {
        let _ = fs::remove_dir_all(&out).or_else(|_| fs::remove_file(&out));
        big_corpus(dir.path(), n);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mt"))
            .args(["--no-run-dir", "convert", "knowledge-index", "big.jsonl"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let Err(status) = kill_9_when(&mut child, Duration::from_secs(60), tmp_dir) else {
            passages = Some(n);
            break;
        };
        assert!(status.success(), "the build failed on its own: {status}");
        eprintln!("{n} passages: the build ended before it was killed; again, bigger");
    }
    let passages = passages.expect("every build ended before the kill landed");
    assert!(!out.exists(), "a killed build left its output");
    assert!(KnowledgeIndex::open(&out).is_err());

    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "--json",
            "convert",
            "knowledge-index",
            "big.jsonl",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["passages"], passages);
    assert!(!tmp_dir(), "the leftover was not removed");
    assert_eq!(KnowledgeIndex::open(&out).unwrap().len(), passages as u64);
}
