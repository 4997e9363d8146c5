//! `mt eval score` against numbers produced by the reference Python scorers
//! (testdata/eval/make_fixtures.py: MedTrinity-25M's run_eval_nocandi.py with NLTK, and
//! multimedeval 1.0.0's VQA.evaluate with torchmetrics).

use std::path::Path;

use serde_json::Value;

use crate::common::{self, eval_score_json, mt, mt_in, testdata};

fn eval_file(name: &str) -> String {
    testdata(&format!("eval/{name}")).display().to_string()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every number in `want` matches `got` within 1e-9 relative (so the ~1e-150 BLEU
/// values of short answers are checked too, and 0 must be 0);
/// other values must be equal. Keys of `want` only: the fixtures carry extras.
fn assert_close(got: &Value, want: &Value, skip: &[&str], at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-9 * w.abs(), "{at}: {g} != {w}");
        }
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                if skip.contains(&k.as_str()) {
                    continue;
                }
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}: no `{k}` in {got}"));
                assert_close(gv, wv, skip, &format!("{at}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: lengths");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_close(gv, wv, skip, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// Scores `gt`/`pred` with `scorer` into a run dir; returns (summary, rows).
fn score(gt: &str, pred: &str, scorer: &str) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (
        testdata(&format!("eval/{gt}")),
        testdata(&format!("eval/{pred}")),
    );
    let r = score_in_run(dir.path(), &gt, &pred, &["--scorer", scorer]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (r.json(), jsonl(&dir.path().join("run/rows.jsonl")))
}

/// `mt --json eval score` with its run directory at `dir/run`.
fn score_in_run(dir: &Path, gt: &Path, pred: &Path, extra: &[&str]) -> common::Run {
    let run = dir.join("run");
    let mut args = vec![
        "--json",
        "--run-dir",
        run.to_str().unwrap(),
        "eval",
        "score",
    ];
    args.extend([
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    mt_in(dir, &args)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(eval_file(name)).unwrap()).unwrap()
}

#[test]
fn llava_med_scorer_matches_run_eval_nocandi() {
    for (gt, pred, suffix) in [
        ("gt.json", "pred.jsonl", ""),
        ("gt-no-type.json", "pred-no-type.jsonl", "-no-type"),
    ] {
        let (summary, rows) = score(gt, pred, "llava-med");
        let want = expected(&format!("expected-llava-med{suffix}.json"));
        assert_close(&summary, &want, &[], suffix);
        if suffix == "-no-type" {
            // The reference prints no closed metrics when the last row has no answer_type.
            assert!(summary["yes_no_accuracy"].is_null() && summary["closed_f1"].is_null());
        }
        let want_rows = jsonl(&testdata(&format!(
            "eval/expected-llava-med{suffix}-rows.jsonl"
        )));
        assert_close(&Value::from(rows), &Value::from(want_rows), &[], "rows");
    }
}

#[test]
fn multimedeval_scorer_matches_the_package() {
    for (gt, pred, suffix) in [
        ("gt.json", "pred.jsonl", ""),
        ("gt-no-type.json", "pred-no-type.jsonl", "-no-type"),
    ] {
        let (summary, rows) = score(gt, pred, "multimedeval");
        let want = expected(&format!("expected-multimedeval{suffix}.json"));
        assert_close(&summary, &want, &["bleu_f64"], suffix);
        let want_rows = jsonl(&testdata(&format!(
            "eval/expected-multimedeval{suffix}-rows.jsonl"
        )));
        assert_close(
            &Value::from(rows),
            &Value::from(want_rows),
            &["bleu_f64"],
            "rows",
        );
    }
}

#[test]
fn normalisation_matches_the_glossary_on_every_fixture_string() {
    for case in jsonl(&testdata("eval/expected-normalize.jsonl")) {
        let input = case["input"].as_str().unwrap();
        assert_eq!(
            medtrinity::core::eval::normalize::normalize_word(input),
            case["normalized"].as_str().unwrap(),
            "{input:?}"
        );
    }
}

#[test]
fn table_shows_the_paper_beside_ours() {
    let r = mt(&[
        "eval",
        "score",
        "--gt",
        &eval_file("gt.json"),
        "--pred",
        &eval_file("pred.jsonl"),
        "--bench",
        "slake",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recall = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Recall (open)"))
        .unwrap();
    assert!(
        recall.contains("70.08") && recall.ends_with("86.4"),
        "{recall}"
    );
    let closed = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Yes/no accuracy"))
        .unwrap();
    assert!(
        closed.contains("71.00") && closed.ends_with("89.2"),
        "{closed}"
    );
    assert!(r.stdout.contains(
        "200 open and 100 closed questions scored; 8 ground-truth and 8 answer ids had no partner"
    ));
}

#[test]
fn bad_rows_are_named_and_the_rest_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    let pred = dir.path().join("pred.jsonl");
    let item = |id: &str, answer: &str, kind: &str| {
        format!(
            r#"{{"id": "{id}", "conversations": [{{"from": "human", "value": "<image>\nQ"}}, {{"from": "gpt", "value": "{answer}"}}], "answer_type": "{kind}"}}"#
        )
    };
    std::fs::write(
        &gt,
        format!(
            "[{}, {}, {}, {{\"id\": \"4\"}}]",
            item("1", "yes", "CLOSED"),
            item("2", "left lung", "OPEN"),
            item("2", "dup", "OPEN")
        ),
    )
    .unwrap();
    std::fs::write(
        &pred,
        "{\"question_id\": \"1\", \"text\": \"Yes.\"}\n{not json\n\n{\"question_id\": \"2\", \"text\": \"the left lung\"}\n{\"question_id\": \"2\", \"text\": \"again\"}\n{\"question_id\": 3}\n",
    )
    .unwrap();
    let r = score_in_run(dir.path(), &gt, &pred, &[]);
    let run = dir.path().join("run");
    assert_eq!(r.code, 3, "{}", r.stderr);
    let s = r.json();
    assert_eq!(
        (s["n_open"].as_u64(), s["n_closed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["yes_no_accuracy"], 100.0);
    assert_eq!(s["recall"], 100.0);
    for needle in [
        "gt.json: record 2: duplicate id 2",
        "gt.json: record 3: no `conversations` array",
        "pred.jsonl: line 2: invalid JSON",
        "pred.jsonl: line 5: duplicate question_id 2",
        "pred.jsonl: line 6: no `text`",
        "5 of 9 inputs had errors",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            r.stderr
        );
    }
    let failures: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("failures.json")).unwrap()).unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 5);
}

#[test]
fn files_without_common_ids_and_benchmark_runs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pred = dir.path().join("p.jsonl");
    std::fs::write(&pred, "{\"question_id\": \"zzz\", \"text\": \"x\"}\n").unwrap();
    let r = mt(&[
        "eval",
        "score",
        "--gt",
        &eval_file("gt.json"),
        "--pred",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no id is in both"), "{}", r.stderr);
}

/// Whole-file cases the reference crashes on (or handles oddly), from
/// expected-crashes.json: where a reference scorer returned numbers we match them; where
/// it raised, mt's outcome is pinned case by case (`where_the_reference_raised`); no
/// common id is an error where the reference prints zeros.
#[test]
fn whole_file_edge_cases() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_file("expected-crashes.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let gt = dir.path().join("gt.json");
        let pred = dir.path().join("pred.jsonl");
        std::fs::write(&gt, case["gt"].to_string()).unwrap();
        let lines: Vec<String> = case["pred"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        std::fs::write(&pred, lines.join("\n")).unwrap();
        for (scorer, key) in [
            ("llava-med", "medtrinity"),
            ("multimedeval", "multimedeval"),
        ] {
            let r = eval_score_json(&gt, &pred, &["--scorer", scorer]);
            assert!(!r.stderr.contains("panicked"), "{name}: {}", r.stderr);
            match case[key].get("ok") {
                // Nothing to score: the reference prints zeros, mt says why it cannot score.
                Some(want) if want["n_open"] == 0 && want["n_closed"] == 0 => {
                    assert_eq!(r.code, 1, "{name} ({scorer})");
                    assert!(r.stderr.contains("no id is in both"), "{}", r.stderr);
                }
                Some(want) => {
                    assert_eq!(r.code, 0, "{name} ({scorer}): {}", r.stderr);
                    assert_close(&r.json(), want, &["bleu_f64"], name);
                }
                // The reference raised: mt's own outcome, pinned.
                None => {
                    let (code, says, scores) = where_the_reference_raised(name, scorer);
                    let at = format!("{name} ({scorer})");
                    assert_eq!(r.code, code, "{at}: {}", r.stderr);
                    for needle in says {
                        assert!(
                            r.stderr.contains(needle),
                            "{at}: {needle:?} not in {}",
                            r.stderr
                        );
                    }
                    if scores.is_null() {
                        assert_eq!(r.stdout, "", "{at}");
                    } else {
                        let got = r.json();
                        let keys =
                            |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
                        assert_eq!(keys(&got), keys(&scores), "{at}");
                        assert_close(&got, &scores, &[], &at);
                    }
                }
            }
        }
    }
}

/// What `mt --json eval score` does with a case of expected-crashes.json where the
/// reference scorer raised: the exit code, what stderr says, and every score printed
/// (null: nothing on stdout). Null metrics are those the reference would divide by zero
/// for; a file of which no record can be read is a usage error naming it and its first
/// bad record; files without a common id are an error; bad rows are skipped (exit 3).
fn where_the_reference_raised(name: &str, scorer: &str) -> (i32, Vec<&'static str>, Value) {
    let llava = scorer == "llava-med";
    // Every OPEN row right, one word each: the llava-med scorer's numbers.
    let open_right = |n_open: u64, yes_no: Value| {
        serde_json::json!({
            "exact_match": 100.0, "f1": 100.0, "precision": 100.0, "recall": 100.0,
            "bleu": 1.821831989445342e-229, "bleu_1": 100.0,
            "bleu_2": 10.000000000000002, "bleu_3": 10.000000000000002,
            "yes_no_accuracy": yes_no, "closed_f1": null, "closed_precision": null,
            "closed_recall": null, "n_open": n_open, "n_closed": 0, "n_other_type": 0,
            "n_unmatched_gt": 0, "n_unmatched_pred": 0,
        })
    };
    let multimedeval_open_right = |n_open: u64| {
        serde_json::json!({
            "bleu": 100.0, "f1": 99.9999995, "recall": 100.0, "closed_accuracy": 0.0,
            "open_recall": 100.0, "open_accuracy": 100.0, "n_open": n_open, "n_closed": 0,
        })
    };
    let both_right = |n_open| {
        if llava {
            open_right(n_open, Value::Null)
        } else {
            multimedeval_open_right(n_open)
        }
    };
    let no_common = |ids: &'static [&'static str]| (1, ids.to_vec(), Value::Null);
    match name {
        // ZeroDivisionError on the OPEN means: they are null, the CLOSED ones stand.
        "no OPEN item (all CLOSED)" => (
            0,
            vec![],
            serde_json::json!({
                "exact_match": null, "f1": null, "precision": null, "recall": null,
                "bleu": null, "bleu_1": null, "bleu_2": null, "bleu_3": null,
                "yes_no_accuracy": 100.0, "closed_f1": 100.0, "closed_precision": 100.0,
                "closed_recall": 100.0, "n_open": 0, "n_closed": 2, "n_other_type": 0,
                "n_unmatched_gt": 0, "n_unmatched_pred": 0,
            }),
        ),
        // ZeroDivisionError on the CLOSED means; its yes/no accuracy is 0 (guarded there).
        "answer_type present on the last item but no CLOSED item (all answer_type OPEN)" => {
            (0, vec![], open_right(2, serde_json::json!(0.0)))
        }
        "no common id" | "gt ids int, pred ids str (no common id)" => no_common(&[
            "no id is in both ",
            "gt.json (1 ids) and ",
            "pred.jsonl (1 ids)",
        ]),
        "empty gt and pred" => no_common(&[
            "no id is in both ",
            "gt.json (0 ids) and ",
            "pred.jsonl (0 ids)",
        ]),
        "duplicate id in gt only" => (
            3,
            vec![
                "gt.json: record 1: duplicate id 1 (the first one is kept)",
                "1 of 3 inputs had errors",
            ],
            both_right(1),
        ),
        // Ids pair by value and type: 1 with 1, "2" with "2".
        "mixed int/str ids" => (0, vec![], both_right(2)),
        "pred text null" => (
            2,
            vec![
                "pred.jsonl: none of its records could be read (1 rejected; first: ",
                "pred.jsonl: line 1: no `text`",
            ],
            Value::Null,
        ),
        "gt conversations with one turn" => (
            2,
            vec![
                "gt.json: none of its records could be read (1 rejected; first: ",
                "gt.json: record 0: `conversations` has no turn 1",
            ],
            Value::Null,
        ),
        other => panic!("{other}: no outcome is pinned for it here"),
    }
}

/// `"answer_type": null` is present but neither OPEN nor CLOSED: the reference skips the
/// row and still reports the closed metrics (checked with run_eval_nocandi.py: recall 100,
/// yes/no accuracy 100).
#[test]
fn null_answer_type_is_skipped_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    let pred = dir.path().join("pred.jsonl");
    let conv = |a: &str| serde_json::json!([{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": a}]);
    let rows = serde_json::json!([
        {"id": "a", "conversations": conv("left lung"), "answer_type": "OPEN"},
        {"id": "b", "conversations": conv("yes"), "answer_type": "CLOSED"},
        {"id": "c", "conversations": conv("the heart"), "answer_type": null},
    ]);
    std::fs::write(&gt, rows.to_string()).unwrap();
    std::fs::write(
        &pred,
        "{\"question_id\": \"a\", \"text\": \"left lung\"}\n{\"question_id\": \"b\", \"text\": \"yes\"}\n{\"question_id\": \"c\", \"text\": \"liver\"}\n",
    )
    .unwrap();
    let r = eval_score_json(&gt, &pred, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = r.json();
    assert_eq!(
        (s["recall"].as_f64(), s["yes_no_accuracy"].as_f64()),
        (Some(100.0), Some(100.0))
    );
    assert_eq!(s["n_other_type"], 1);
}
