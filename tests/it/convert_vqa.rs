//! `mt convert vqa` on miniature copies of every benchmark layout (testdata/vqa, made by
//! testdata/vqa/make_fixtures.py with the real field names), and the round trip into
//! `mt eval score`.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{self, eval_score_json, mt, testdata};

fn vqa(rel: &str) -> String {
    testdata(&format!("vqa/{rel}")).display().to_string()
}

fn convert(args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec!["-q", "convert", "vqa", "-o", "-"];
    all.extend_from_slice(args);
    let r = mt(&all);
    let records = if r.stdout.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str::<Vec<Value>>(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    };
    (r.code, records, r.stderr)
}

fn question(r: &Value) -> &str {
    r["conversations"][0]["value"].as_str().unwrap()
}

#[test]
fn vqa_rad_released_json() {
    let (code, recs, err) = convert(&["--bench", "vqa-rad", "--input", &vqa("vqa-rad")]);
    // Record 5 has answer_type MAYBE; question 6's image is missing: both reported.
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("record 5: answer_type `MAYBE` is neither OPEN nor CLOSED"),
        "{err}"
    );
    assert!(
        err.contains("question 6: image") && err.contains("synpic9.jpg does not exist"),
        "{err}"
    );
    let ids: Vec<i64> = recs.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 3, 4, 6], "test = phrase_type test_*");
    assert_eq!(
        recs[1],
        json!({
            "id": 3, "image": "synpic2.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nHow many ribs are fractured?"},
                {"from": "gpt", "value": "2"}
            ],
            "answer_type": "OPEN", "image_organ": "CHEST", "question_type": "COUNT", "phrase_type": "test_para"
        })
    );
    let (code, train, _) = convert(&[
        "--bench",
        "vqa-rad",
        "--input",
        &vqa("vqa-rad"),
        "--split",
        "train",
    ]);
    assert_eq!((code, train.len()), (0, 2));
}

#[test]
fn hub_parquet_needs_images_out_and_writes_each_image_once() {
    let (code, _, err) = convert(&["--bench", "vqa-rad", "--input", &vqa("vqa-rad-hub")]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("--images-out"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("imgs");
    let args = [
        "--bench",
        "vqa-rad",
        "--input",
        &vqa("vqa-rad-hub"),
        "--images-out",
        images.to_str().unwrap(),
    ];
    let (code, recs, err) = convert(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 3);
    let kinds: Vec<&str> = recs
        .iter()
        .map(|r| r["answer_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["OPEN", "CLOSED", "OPEN"], "closed iff yes/no");
    // Rows 1 and 2 share an image: one file, named by content.
    assert_eq!(recs[1]["image"], recs[2]["image"]);
    assert_eq!(std::fs::read_dir(&images).unwrap().count(), 2);
    for r in &recs {
        let bytes = std::fs::read(images.join(r["image"].as_str().unwrap())).unwrap();
        assert!(image::load_from_memory(&bytes).is_ok());
    }
    // Idempotent: the same names, nothing rewritten.
    let before = std::fs::metadata(images.join(recs[0]["image"].as_str().unwrap()))
        .unwrap()
        .modified()
        .unwrap();
    let (_, again, _) = convert(&args);
    assert_eq!(again, recs);
    let after = std::fs::metadata(images.join(recs[0]["image"].as_str().unwrap()))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn slake_english_by_default_with_its_metadata() {
    let (code, recs, _) = convert(&["--bench", "slake", "--input", &vqa("slake")]);
    assert_eq!(code, 0);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["image"], "xmlab1/source.jpg");
    assert_eq!(
        (
            recs[2]["location"].as_str(),
            recs[2]["content_type"].as_str()
        ),
        (Some("Chest"), Some("Position"))
    );
    let (_, all, _) = convert(&[
        "--bench",
        "slake",
        "--input",
        &vqa("slake"),
        "--all-languages",
    ]);
    assert_eq!(all.len(), 4);
    assert!(all.iter().any(|r| r["q_lang"] == "zh"));
    let (_, val, _) = convert(&[
        "--bench",
        "slake",
        "--input",
        &vqa("slake"),
        "--split",
        "validation",
    ]);
    assert_eq!(question(&val[0]), "<image>\nIs this a CT image?");
}

#[test]
fn pathvqa_pickles_and_parquet() {
    // Pickle protocol 4 (test) and 2 (train), images by name without extension.
    let (code, recs, _) = convert(&["--bench", "pathvqa", "--input", &vqa("pathvqa")]);
    assert_eq!(code, 0);
    let got: Vec<(i64, &str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["image"].as_str().unwrap(),
                r["answer_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, "test_0001.jpg", "CLOSED"),
            (1, "test_0001.jpg", "OPEN"),
            (2, "test_0002.jpg", "CLOSED")
        ]
    );
    let (_, train, _) = convert(&[
        "--bench",
        "pathvqa",
        "--input",
        &vqa("pathvqa"),
        "--split",
        "train",
    ]);
    assert_eq!(train[0]["conversations"][1]["value"], "granuloma");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let (code, hub, _) = convert(&[
        "--bench",
        "pathvqa",
        "--input",
        &vqa("path-vqa-hub"),
        "--images-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!((code, hub.len()), (0, 2));
    let (code, _, err) = convert(&[
        "--bench",
        "pathvqa",
        "--input",
        &vqa("pathvqa"),
        "--split",
        "bogus",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// What `mt convert vqa` writes is what `mt eval score` (and the reference scripts) read:
/// scoring the ground truth against itself gives 100%; converting it again changes
/// nothing.
#[test]
fn converted_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("slake_test.json");
    let r = mt(&[
        "-q",
        "convert",
        "vqa",
        "--bench",
        "slake",
        "--input",
        &vqa("slake"),
        "-o",
        gt.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recs: Vec<Value> = serde_json::from_slice(&std::fs::read(&gt).unwrap()).unwrap();
    let answers: String = recs
        .iter()
        .map(|r| {
            json!({"question_id": r["id"], "prompt": question(r), "text": r["conversations"][1]["value"],
                   "answer_id": "a", "model_id": "gt", "metadata": {}})
            .to_string()
                + "\n"
        })
        .collect();
    let pred = dir.path().join("answers.jsonl");
    std::fs::write(&pred, answers).unwrap();
    let r = eval_score_json(&gt, &pred, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = r.json();
    assert_eq!(
        (s["recall"].as_f64(), s["yes_no_accuracy"].as_f64()),
        (Some(100.0), Some(100.0))
    );
    assert_eq!(
        (s["n_open"].as_u64(), s["n_closed"].as_u64()),
        (Some(2), Some(1))
    );
    // The LLaVA eval layout is itself an input (images relative to the file's folder).
    copy_dir(&testdata("vqa/slake/imgs"), dir.path());
    let (code, again, err) = convert(&["--bench", "slake", "--input", gt.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, recs);
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn image_names_never_leave_images_out() {
    let dir = tempfile::tempdir().unwrap();
    let slake = dir.path().join("slake");
    std::fs::create_dir_all(slake.join("imgs/a")).unwrap();
    std::fs::copy(
        testdata("vqa/slake/imgs/xmlab1/source.jpg"),
        slake.join("secret.jpg"),
    )
    .unwrap();
    std::fs::copy(
        testdata("vqa/slake/imgs/xmlab1/source.jpg"),
        slake.join("imgs/a/ok.jpg"),
    )
    .unwrap();
    let rec = |qid: u32, img: &str| {
        json!({"img_id": 1, "img_name": img, "question": "Q?", "answer": "yes", "q_lang": "en",
               "answer_type": "CLOSED", "qid": qid})
    };
    std::fs::write(
        slake.join("test.json"),
        json!([rec(1, "a/ok.jpg"), rec(2, "../secret.jpg")]).to_string(),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, recs, err) = convert(&[
        "--bench",
        "slake",
        "--input",
        slake.to_str().unwrap(),
        "--images-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("question 2: image name `../secret.jpg` would leave --images-out"),
        "{err}"
    );
    assert_eq!(recs.len(), 2);
    assert!(out.join("a/ok.jpg").is_file());
    assert!(
        !dir.path().join("secret.jpg").exists(),
        "nothing written outside --images-out"
    );
}

/// Found by fuzzing (fuzz/regressions/vqa/nested-lists.pkl.input, a selector byte and
/// then a 20 KB pickle of lists nested 10,000 deep): reading it overflowed the stack and
/// aborted mt. Now a one-line error naming the file.
#[test]
fn a_pickle_nested_too_deep_is_an_error_not_a_crash() {
    let input =
        std::fs::read(common::root().join("fuzz/regressions/vqa/nested-lists.pkl.input")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let qas = dir.path().join("qas/test");
    std::fs::create_dir_all(&qas).unwrap();
    std::fs::create_dir_all(dir.path().join("images/test")).unwrap();
    std::fs::write(qas.join("test_qa.pkl"), &input[1..]).unwrap();
    let input = dir.path().display().to_string();
    let (code, recs, err) = convert(&["--bench", "pathvqa", "--input", &input]);
    assert_eq!(code, 1, "{err}");
    assert!(recs.is_empty());
    assert!(
        err.contains(
            "test_qa.pkl: not a readable pickle of plain data: nests containers 10000 deep"
        ),
        "{err}"
    );
}
