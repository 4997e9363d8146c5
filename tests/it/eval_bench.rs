//! `mt eval slake|vqa-rad|pathvqa` end to end on the tiny random checkpoint and the
//! miniature benchmark layouts: the files it writes and their formats, the breakdowns,
//! chunk workers, `--chunk K/N`, resume after a cut or kill -9, and refused reruns.
//! (Random weights: the scores are whatever they are; the plumbing must be right.)

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{self, kill_9_when, mt_in, testdata};

fn model() -> String {
    testdata("models/tiny-llava").display().to_string()
}

fn data(rel: &str) -> String {
    testdata(&format!("vqa/{rel}")).display().to_string()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fields scores.json breaks down by, in order.
fn breakdown_fields(scores: &Value) -> Vec<&str> {
    scores["breakdowns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["field"].as_str().unwrap())
        .collect()
}

/// question_id (as JSON text) -> answer text.
fn answers(path: &Path) -> BTreeMap<String, String> {
    lines(path)
        .iter()
        .map(|v| {
            (
                v["question_id"].to_string(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `mt --run-dir RUN eval BENCH --ckpt tiny --data DATA --max-new-tokens 6 EXTRA...` in `dir`.
fn eval(dir: &Path, run: &str, bench: &str, data: &str, extra: &[&str]) -> common::Run {
    let model = model();
    let mut args = vec![
        "--run-dir",
        run,
        "eval",
        bench,
        "--ckpt",
        &model,
        "--data",
        data,
        "--max-new-tokens",
        "6",
    ];
    args.extend_from_slice(extra);
    mt_in(dir, &args)
}

#[test]
fn slake_writes_answers_scores_breakdowns_and_a_report_the_python_scorer_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let r = eval(dir.path(), "run", "slake", &data("slake"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = dir.path().join("run");
    assert!(
        r.stdout.contains("Recall (open)") && r.stdout.contains("86.4"),
        "{}",
        r.stdout
    );

    // answers.jsonl: the LLaVA answer format, English questions, in question order.
    let answers = lines(&run.join("answers.jsonl"));
    let ids: Vec<i64> = answers
        .iter()
        .map(|a| a["question_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [11934, 11936, 11937]);
    let keys: Vec<&str> = answers[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "question_id",
            "prompt",
            "text",
            "answer_id",
            "model_id",
            "metadata"
        ]
    );
    assert_eq!(answers[0]["prompt"], "Which organ is abnormal?\n<image>");
    assert_eq!(answers[0]["model_id"], "tiny-llava");
    assert_eq!(answers[0]["answer_id"].as_str().unwrap().len(), 22);
    assert!(answers[0]["metadata"]["new_tokens"].as_u64().unwrap() <= 6);

    // scores.json: both scorers, the paper's numbers, the SLAKE breakdowns.
    let scores = json(&run.join("scores.json"));
    assert_eq!(scores["questions"], 3);
    assert_eq!(scores["answered"], 3);
    assert_eq!(scores["llava_med"]["n_open"], 2);
    assert_eq!(scores["llava_med"]["n_closed"], 1);
    assert!(scores["multimedeval"]["f1"].is_number());
    assert_eq!(scores["paper"]["open_recall"], 86.4);
    let fields = breakdown_fields(&scores);
    assert_eq!(
        fields,
        ["answer_type", "modality", "location", "content_type"]
    );
    let modality = &scores["breakdowns"][1]["groups"];
    let counts: Vec<(String, u64)> = modality
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let n = g["open"].as_u64().unwrap() + g["closed"].as_u64().unwrap();
            (g["value"].as_str().unwrap().to_string(), n)
        })
        .collect();
    assert_eq!(counts, [("X-Ray".to_string(), 2), ("MRI".to_string(), 1)]);

    // rows.jsonl: one per question with both scorers' rows.
    let rows = lines(&run.join("rows.jsonl"));
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(
            |r| r["llava_med"]["recall"].is_number() && r["multimedeval"]["recall"].is_number()
        )
    );

    // report.md: the sections the issue asks for.
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for section in [
        "# SLAKE (test): tiny-llava",
        "| Open: recall (%) | 2 |",
        "| Closed: yes/no accuracy (%) | 1 |",
        "## By answer type",
        "## By modality",
        "## By organ / location",
        "## By content type",
        "## The 2 worst open answers",
        "| 11934 | Which organ is abnormal? | Brain |",
    ] {
        assert!(report.contains(section), "{section} missing from\n{report}");
    }

    // questions.json + answers.jsonl are what `mt eval score` (and the Python scorer)
    // read; scoring them again gives the numbers in scores.json.
    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "--json",
            "eval",
            "score",
            "--gt",
            "run/questions.json",
            "--pred",
            "run/answers.jsonl",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), scores["llava_med"]);
}

#[test]
fn chunk_workers_give_the_answers_of_one_process_and_list_unreadable_images() {
    let dir = tempfile::tempdir().unwrap();
    let vqa_rad = data("vqa-rad");
    let one = eval(dir.path(), "one", "vqa-rad", &vqa_rad, &[]);
    let two = eval(
        dir.path(),
        "two",
        "vqa-rad",
        &vqa_rad,
        &["--chunks", "2", "--json"],
    );
    for r in [&one, &two] {
        // Question 6's image is missing and record 5 has a bad answer type.
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(
            r.stderr.contains("synpic9.jpg") && r.stderr.contains("MAYBE"),
            "{}",
            r.stderr
        );
    }
    let (one, two_dir) = (dir.path().join("one"), dir.path().join("two"));
    assert_eq!(
        answers(&one.join("answers.jsonl")),
        answers(&two_dir.join("answers.jsonl"))
    );
    assert_eq!(answers(&one.join("answers.jsonl")).len(), 3);
    for k in 0..2 {
        let chunk = two_dir.join(format!("chunks/chunk-{k}-of-2"));
        assert!(chunk.join("answers.jsonl").is_file() && chunk.join("run.json").is_file());
    }
    // Chunks of ceil(4 / 2): questions 0, 1 | 4, 6 (6 has no image).
    assert_eq!(
        lines(&two_dir.join("chunks/chunk-1-of-2/answers.jsonl")).len(),
        1
    );
    let failures = json(&two_dir.join("failures.json"));
    let inputs: Vec<&str> = failures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs.len(), 2, "{failures}");
    assert_eq!(inputs[1], "6");
    // --json prints scores.json; VQA-RAD breaks down by organ and question type.
    let scores = two.json();
    assert_eq!(scores, json(&two_dir.join("scores.json")));
    let fields = breakdown_fields(&scores);
    assert_eq!(fields, ["answer_type", "image_organ", "question_type"]);
}

#[test]
fn pathvqa_in_both_layouts_and_reference_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let pickles = eval(dir.path(), "pkl", "pathvqa", &data("pathvqa"), &[]);
    assert_eq!(pickles.code, 0, "{}", pickles.stderr);
    let hub = eval(
        dir.path(),
        "hub",
        "pathvqa",
        &data("path-vqa-hub"),
        &["--reference-decoding"],
    );
    assert_eq!(hub.code, 0, "{}", hub.stderr);
    for run in ["pkl", "hub"] {
        let scores = json(&dir.path().join(run).join("scores.json"));
        assert_eq!(scores["answered"], scores["questions"], "{run}");
        assert!(scores["questions"].as_u64().unwrap() >= 2);
    }
    // The reference samples at 0.1 with transformers' top-k 50 and no top-p.
    let generation = json(&dir.path().join("hub/generation.json"));
    assert_eq!(generation["temperature"], 0.1);
    assert_eq!(generation["top_k"], 50);
    assert_eq!(generation["top_p"], 1.0);
    let report = std::fs::read_to_string(dir.path().join("hub/report.md")).unwrap();
    assert!(
        report.contains("sampling at temperature 0.1, top-k 50"),
        "{report}"
    );
}

/// A LLaVA eval JSON of `n` questions over the SLAKE fixture's images.
fn many_questions(dir: &Path, n: usize) -> String {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("q{i:03}"),
                "image": format!("xmlab{}/source.jpg", 1 + i % 2),
                "conversations": [
                    {"from": "human", "value": format!("<image>\nQuestion number {i}?")},
                    {"from": "gpt", "value": if i % 3 == 0 { "yes" } else { "lung" }},
                ],
                "answer_type": if i % 3 == 0 { "CLOSED" } else { "OPEN" },
            })
        })
        .collect();
    let path = dir.join("questions.json");
    std::fs::write(&path, serde_json::to_string(&records).unwrap()).unwrap();
    path.display().to_string()
}

#[test]
fn a_run_killed_or_cut_resumes_without_duplicates_and_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let questions = many_questions(dir.path(), 24);
    let images = data("slake/imgs");
    let extra = ["--image-folder", images.as_str(), "--batch-size", "1"];
    let whole = eval(dir.path(), "whole", "slake", &questions, &extra);
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let expected = answers(&dir.path().join("whole/answers.jsonl"));
    assert_eq!(expected.len(), 24);

    // kill -9 once the first answers are on disk; the status must say the kill landed.
    // A run that finished first is started over, killed after fewer answers.
    let model = model();
    let chunk = dir.path().join("killed/chunks/chunk-0-of-1/answers.jsonl");
    let mut landed = false;
    for wait_for in [2, 1] {
        let _ = std::fs::remove_dir_all(dir.path().join("killed"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mt"))
            .current_dir(dir.path())
            .args([
                "-q",
                "--run-dir",
                "killed",
                "eval",
                "slake",
                "--ckpt",
                &model,
            ])
            .args(["--data", &questions, "--max-new-tokens", "6"])
            .args(["--image-folder", &images, "--batch-size", "1"])
            .spawn()
            .unwrap();
        let answered = || std::fs::read_to_string(&chunk).map_or(0, |t| t.lines().count());
        let limit = std::time::Duration::from_secs(120);
        let Err(status) = kill_9_when(&mut child, limit, || answered() >= wait_for) else {
            landed = true;
            break;
        };
        assert!(status.success(), "the run failed on its own: {status}");
        eprintln!("the run finished before the kill at {wait_for} answers; again, earlier");
    }
    assert!(landed, "every run finished before the kill");
    // Also cut the last complete line short, as a crash mid-write would.
    let text = std::fs::read_to_string(&chunk).unwrap();
    let complete = &text[..text.rfind('\n').unwrap() + 1];
    let last_start = complete[..complete.len() - 1]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let before = complete.lines().count();
    std::fs::write(&chunk, &complete[..last_start + 5]).unwrap();

    let resumed = eval(dir.path(), "killed", "slake", &questions, &extra);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let chunk_ids: Vec<String> = lines(&chunk)
        .iter()
        .map(|v| v["question_id"].to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = chunk_ids.iter().collect();
    assert_eq!(chunk_ids.len(), 24, "every question once");
    assert_eq!(unique.len(), 24);
    assert_eq!(answers(&dir.path().join("killed/answers.jsonl")), expected);
    let run = json(&dir.path().join("killed/run.json"));
    assert_eq!(
        run["counts"]["resumed"],
        (before - 1) as u64,
        "only the missing ones were answered"
    );
    assert_eq!(
        std::fs::read(dir.path().join("killed/answers.jsonl")).unwrap(),
        std::fs::read(dir.path().join("whole/answers.jsonl")).unwrap(),
        "same bytes as an uninterrupted run"
    );
}

#[test]
fn workers_take_every_flag_along_and_a_bos_adding_tokenizer_gets_the_references_double_bos() {
    let dir = tempfile::tempdir().unwrap();
    let questions = many_questions(dir.path(), 10);
    let images = data("slake/imgs");
    let extra = [
        "--image-folder",
        images.as_str(),
        "--limit",
        "7",
        "--seed",
        "3",
    ];
    let sampled = [&extra[..], &["--temperature", "0.8", "--top-k", "20"]].concat();
    let one = eval(dir.path(), "one", "slake", &questions, &sampled);
    let three = eval(
        dir.path(),
        "three",
        "slake",
        &questions,
        &[&sampled[..], &["--chunks", "3"]].concat(),
    );
    for r in [&one, &three] {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let expected = answers(&dir.path().join("one/answers.jsonl"));
    assert_eq!(expected.len(), 7);
    assert_eq!(answers(&dir.path().join("three/answers.jsonl")), expected);

    // The tiny checkpoint with a tokenizer that adds <|begin_of_text|> (as Meta-Llama-3's
    // does): model_vqa.py's tokenizer_image_token then starts the prompt with two BOS.
    let bos_model = common::copy_checkpoint("tiny-llava", &dir.path().join("tiny-bos"));
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(testdata("train/tokenizer-bos").join(f), bos_model.join(f)).unwrap();
    }
    let slake = data("slake");
    let plain = eval(dir.path(), "plain", "slake", &slake, &[]);
    let bos_model = bos_model.display().to_string();
    let tower = testdata("models/tiny-clip").display().to_string();
    let r = mt_in(
        dir.path(),
        &[
            "--run-dir",
            "bos",
            "eval",
            "slake",
            "--ckpt",
            &bos_model,
            "--data",
            &slake,
            "--max-new-tokens",
            "6",
            "--vision-tower",
            &tower,
        ],
    );
    assert_eq!((plain.code, r.code), (0, 0), "{}", r.stderr);
    let tokens = |run: &str| -> Vec<u64> {
        lines(&dir.path().join(run).join("answers.jsonl"))
            .iter()
            .map(|l| l["metadata"]["prompt_tokens"].as_u64().unwrap())
            .collect()
    };
    // tokenizer_image_token: with a BOS-adding tokenizer, one BOS more than the template
    // has; with the plain one, the first token after the image dropped (the reference's
    // quirk with a template that writes its own BOS). Two tokens apart.
    let with_bos: Vec<u64> = tokens("plain").iter().map(|n| n + 2).collect();
    assert_eq!(tokens("bos"), with_bos);
}

#[test]
fn chunks_answered_separately_are_merged_and_scored_by_a_run_without_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let slake = data("slake");
    for k in ["1/2", "0/2"] {
        let r = eval(dir.path(), "shared", "slake", &slake, &["--chunk", k]);
        assert_eq!(r.code, 0, "{k}: {}", r.stderr);
        assert!(
            !dir.path().join("shared/scores.json").exists(),
            "a chunk does not score"
        );
    }
    let chunk_run = json(&dir.path().join("shared/chunks/chunk-1-of-2/run.json"));
    assert_eq!(chunk_run["counts"]["answered_now"], 1);
    // No --chunks: the run continues the directory's plan, and starts no worker for
    // chunks that are complete.
    let merged = eval(dir.path(), "shared", "slake", &slake, &[]);
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let merge_run = json(&dir.path().join("shared/run.json"));
    assert_eq!(merge_run["counts"]["answered"], 3);
    assert_eq!(
        json(&dir.path().join("shared/chunks/chunk-1-of-2/run.json"))["counts"]["answered_now"],
        1,
        "chunk 1's own record is untouched: no worker ran again"
    );
    let single = eval(dir.path(), "single", "slake", &slake, &[]);
    assert_eq!(single.code, 0, "{}", single.stderr);
    assert_eq!(
        answers(&dir.path().join("shared/answers.jsonl")),
        answers(&dir.path().join("single/answers.jsonl"))
    );
    assert!(dir.path().join("shared/report.md").is_file());
}

#[test]
fn reruns_with_other_settings_and_runs_without_a_run_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let slake = data("slake");
    assert_eq!(eval(dir.path(), "r", "slake", &slake, &[]).code, 0);
    let scores = std::fs::read(dir.path().join("r/scores.json")).unwrap();
    // A finished run rescored: no model is loaded, the same scores come out.
    let again = eval(dir.path(), "r", "slake", &slake, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        !again.stderr.contains("model tiny-llava loaded"),
        "{}",
        again.stderr
    );
    let run = json(&dir.path().join("r/run.json"));
    assert_eq!(run["counts"]["answered_now"], 0);
    assert_eq!(run["counts"]["resumed"], 3);
    assert_eq!(
        std::fs::read(dir.path().join("r/scores.json")).unwrap(),
        scores
    );
    let other = eval(dir.path(), "r", "slake", &slake, &["--temperature", "0.5"]);
    assert_eq!(other.code, 2, "{}", other.stderr);
    assert!(
        other.stderr.contains("eval.json") && other.stderr.contains("decoding"),
        "{}",
        other.stderr
    );
    let chunks = eval(dir.path(), "r", "slake", &slake, &["--chunks", "3"]);
    assert_eq!(chunks.code, 2);
    assert!(chunks.stderr.contains("chunks = 1"), "{}", chunks.stderr);

    let model = model();
    let base = ["eval", "slake", "--ckpt", &model, "--data", &slake];
    let no_dir = mt_in(dir.path(), &[&["--no-run-dir"], &base[..]].concat());
    assert_eq!(no_dir.code, 2);
    assert!(no_dir.stderr.contains("--no-run-dir"), "{}", no_dir.stderr);
    let chunk = mt_in(dir.path(), &[&base[..], &["--chunk", "0/2"]].concat());
    assert_eq!(chunk.code, 2);
    assert!(
        chunk.stderr.contains("--chunk needs --run-dir"),
        "{}",
        chunk.stderr
    );
    let bad = mt_in(
        dir.path(),
        &[&base[..], &["--chunk", "2/2", "--run-dir", "x"]].concat(),
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let missing = mt_in(
        dir.path(),
        &[
            "--run-dir",
            "m",
            "eval",
            "slake",
            "--ckpt",
            &model,
            "--data",
            "nowhere",
        ],
    );
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("nowhere"), "{}", missing.stderr);
}

/// A copy of the tiny checkpoint in `dir/name`.
fn copy_model(dir: &Path, name: &str) -> String {
    common::copy_checkpoint("tiny-llava", &dir.join(name))
        .display()
        .to_string()
}

#[test]
fn a_rerun_with_a_changed_checkpoint_or_edited_questions_is_refused_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = copy_model(dir.path(), "ckpt");
    let questions = many_questions(dir.path(), 4);
    let images = data("slake/imgs");
    let tower = testdata("models/tiny-clip").display().to_string();
    let run = |extra: &[&str]| {
        let base = [
            "--run-dir",
            "r",
            "eval",
            "slake",
            "--ckpt",
            &ckpt,
            "--data",
            &questions,
            "--image-folder",
            &images,
            "--vision-tower",
            &tower,
            "--max-new-tokens",
            "4",
        ];
        mt_in(dir.path(), &[&base[..], extra].concat())
    };
    // Only chunk 0 of 2 is answered: the reruns below find unanswered questions.
    let first = run(&["--chunk", "0/2"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let plan = json(&dir.path().join("r/eval.json"));
    assert_eq!(plan["version"], 2);
    assert!(
        plan["checkpoint_files"]["config.json"].is_string(),
        "{plan}"
    );

    let refused = |what: &str| {
        let r = run(&[]);
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("loaded"), "{}", r.stderr);
        assert!(
            !dir.path()
                .join("r/chunks/chunk-1-of-2/answers.jsonl")
                .exists(),
            "{what}: nothing was answered"
        );
        r.stderr
    };
    // The same path, other content: a config edited, a weight shard replaced.
    let config = Path::new(&ckpt).join("config.json");
    let original = std::fs::read(&config).unwrap();
    let mut edited: Value = serde_json::from_slice(&original).unwrap();
    edited["note"] = "retrained".into();
    std::fs::write(&config, edited.to_string()).unwrap();
    let msg = refused("config");
    assert!(
        msg.contains("eval.json: the checkpoint at the same path has other files")
            && msg.contains("(`config.json` changed)"),
        "{msg}"
    );
    std::fs::write(&config, &original).unwrap();
    let shard = Path::new(&ckpt).join("model-00002-of-00002.safetensors");
    let weights = std::fs::read(&shard).unwrap();
    let mut other = weights.clone();
    let last = other.len() - 1;
    other[last] ^= 0x40;
    std::fs::write(&shard, &other).unwrap();
    let msg = refused("weights");
    assert!(
        msg.contains("(`model-00002-of-00002.safetensors` changed)"),
        "{msg}"
    );
    std::fs::write(&shard, &weights).unwrap();

    // The same ids, one question's text edited.
    let original = std::fs::read_to_string(&questions).unwrap();
    std::fs::write(
        &questions,
        original.replace("Question number 3?", "Question number three?"),
    )
    .unwrap();
    let msg = refused("text");
    assert!(
        msg.contains(
            "the questions were edited since this run directory was made (question text changed)"
        ),
        "{msg}"
    );
    std::fs::write(&questions, &original).unwrap();

    // Unchanged: the rerun resumes, answering only chunk 1.
    let resumed = run(&[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let counts = &json(&dir.path().join("r/run.json"))["counts"];
    assert_eq!(
        (counts["answered"].as_u64(), counts["questions"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(
        json(&dir.path().join("r/chunks/chunk-0-of-2/run.json"))["counts"]["answered_now"],
        2,
        "chunk 0 was not answered again"
    );

    // A run directory of the older format (no content identity) is refused with a way out.
    let path = dir.path().join("r/eval.json");
    let mut old = json(&path);
    old.as_object_mut().unwrap().remove("version");
    std::fs::write(&path, old.to_string()).unwrap();
    let r = run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("written by an older mt") && r.stderr.contains("delete"),
        "{}",
        r.stderr
    );
}

/// `--conv-mode` reaches the answers (another template, other prompts) and the resume
/// guard: a rerun with another template is refused, one with the same resumes.
#[test]
fn the_conversation_template_shapes_the_prompts_and_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let slake = data("slake");
    let v0 = eval(
        dir.path(),
        "v0",
        "slake",
        &slake,
        &["--conv-mode", "llava_v0"],
    );
    assert_eq!(v0.code, 0, "{}", v0.stderr);
    let plan = json(&dir.path().join("v0/eval.json"));
    assert_eq!(plan["decoding"]["conv_mode"], "llava_v0");
    let default = eval(dir.path(), "d", "slake", &slake, &[]);
    assert_eq!(default.code, 0, "{}", default.stderr);
    let prompt_tokens = |run: &str| -> Vec<u64> {
        lines(&dir.path().join(run).join("answers.jsonl"))
            .iter()
            .map(|a| a["metadata"]["prompt_tokens"].as_u64().unwrap())
            .collect()
    };
    assert_ne!(prompt_tokens("v0"), prompt_tokens("d"));
    let other = eval(
        dir.path(),
        "v0",
        "slake",
        &slake,
        &["--conv-mode", "llava_v1"],
    );
    assert_eq!(other.code, 2, "{}", other.stderr);
    assert!(other.stderr.contains("decoding"), "{}", other.stderr);
    let same = eval(
        dir.path(),
        "v0",
        "slake",
        &slake,
        &["--conv-mode", "llava_v0"],
    );
    assert_eq!(same.code, 0, "{}", same.stderr);
}

/// `--quantize` is part of the plan (a run directory answered unquantized refuses it),
/// and a quantized run reports the scores of the same evaluation without it from the run
/// directory beside it.
#[test]
fn a_quantized_eval_reports_the_unquantized_score_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let slake = data("slake");
    let plain = eval(dir.path(), "plain", "slake", &slake, &[]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let mixed = eval(
        dir.path(),
        "plain",
        "slake",
        &slake,
        &["--quantize", "q8_0"],
    );
    assert_eq!(mixed.code, 2, "{}", mixed.stderr);
    assert!(mixed.stderr.contains("quantize"), "{}", mixed.stderr);

    let q = eval(dir.path(), "q8", "slake", &slake, &["--quantize", "q8_0"]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    let plain_dir = dir.path().join("plain").canonicalize().unwrap();
    assert!(
        q.stdout.contains("q8_0: open recall") && q.stdout.contains(plain_dir.to_str().unwrap()),
        "{}",
        q.stdout
    );
    let scores = json(&dir.path().join("q8/scores.json"));
    let plain_scores = json(&dir.path().join("plain/scores.json"));
    assert_eq!(
        scores["unquantized"]["llava_med"],
        plain_scores["llava_med"]
    );
    assert!(plain_scores.get("unquantized").is_none());
    assert_eq!(json(&dir.path().join("q8/eval.json"))["quantize"], "q8_0");
    let run = json(&dir.path().join("q8/run.json"));
    assert!(run["device"].as_str().unwrap().ends_with("q8_0"), "{run}");
}
