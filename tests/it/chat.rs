//! `mt chat`: JSONL requests on stdin, JSONL answers on stdout; a two-turn conversation
//! gets transformers' greedy answer.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::common::testdata;

/// `mt chat ARGS --no-run-dir` with `stdin` piped in and `HOME` set to `home`.
fn run_chat(args: &[&str], stdin: &str, home: &Path) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mt"))
        .arg("chat")
        .args(args)
        .args(["--no-run-dir"])
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `mt chat ARGS` with `stdin` piped in: exit code, stdout lines as JSON, stderr.
fn chat(args: &[&str], stdin: &str) -> (i32, Vec<Value>, String) {
    let home = tempfile::tempdir().unwrap();
    let out = run_chat(args, stdin, home.path());
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap(),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The second turn of a conversation about an image, with the first exchange in the
/// llama3 template, gives transformers' greedy tokens: the prompt is golden
/// `conversation.py`'s render of the same turns, fed to `LlavaProcessor` and
/// `LlavaForConditionalGeneration.generate` (tests/interop/llava_hf_logits.py generate).
#[test]
fn a_two_turn_conversation_answers_as_transformers_generates() {
    let Some(py) = crate::model::family_python() else {
        return;
    };
    let prompt = crate::common::golden_prompt("llama3", "two_rounds");
    let model = testdata("models/tiny-llava-hf");
    let image = testdata("images/phantom.png");
    let theirs = crate::model::transformers_generate(&py, &model, &image, &prompt, 12);
    let request = serde_json::json!({"id": 7, "image": image, "conversations": [
        {"from": "human", "value": "What modality is this image?"},
        {"from": "gpt", "value": "CT"},
        {"from": "human", "value": "Which organ is shown?"},
    ]});
    let (code, lines, stderr) = chat(
        &["--model", model.to_str().unwrap(), "--max-new-tokens", "12"],
        &format!("{request}\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 1);
    let ours = &lines[0];
    assert_eq!(ours["id"], 7);
    assert_eq!(
        ours["prompt_tokens"].as_u64().unwrap() as usize,
        theirs["ids"].as_array().unwrap().len()
    );
    assert_eq!(
        ours["answer"], theirs["text"],
        "transformers' ids {}",
        theirs["new"]
    );
}

/// Requests that cannot be answered get an error line naming the problem, the others
/// their answers, and the run exits 3; a request without an image uses the command
/// line's.
#[test]
fn bad_requests_get_error_lines_and_the_rest_are_answered() {
    let model = testdata("models/tiny-llava-hf");
    let image = testdata("images/phantom.png");
    let requests = [
        r#"{"id": "ok", "question": "Which organ is shown?"}"#,
        "not json",
        r#"{"id": "no-file", "image": "missing.png", "question": "x"}"#,
        r#"{"id": "ends-with-gpt", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}"#,
        r#"{"id": "both", "question": "a", "conversations": []}"#,
        r#"{"id": "typo", "questoin": "a"}"#,
    ]
    .join("\n");
    let (code, lines, stderr) = chat(
        &[
            image.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "2",
        ],
        &requests,
    );
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["id"], "ok");
    assert_eq!(lines[0]["new_tokens"], 2);
    let error = |i: usize| lines[i]["error"].as_str().unwrap_or("").to_string();
    assert!(error(1).starts_with("stdin:2:"), "{}", error(1));
    assert!(error(2).contains("missing.png"), "{}", error(2));
    assert!(error(3).contains("nothing to answer"), "{}", error(3));
    assert!(error(4).contains("not both"), "{}", error(4));
    assert!(error(5).contains("questoin"), "{}", error(5));

    // --system replaces the template's system message (llama3's long default here).
    let ok = r#"{"id": "ok", "question": "Which organ is shown?"}"#;
    let (code, short, stderr) = chat(
        &[
            image.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "2",
            "--system",
            "Be brief.",
        ],
        ok,
    );
    assert_eq!(code, 0, "{stderr}");
    let tokens = |v: &Value| v["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens(&short[0]) + 10 < tokens(&lines[0]),
        "{} vs {}",
        short[0],
        lines[0]
    );
}

/// `--interactive` with a script of turns on stdin: answers are printed as they are
/// written, the second question is answered with the first exchange in the template (the
/// same answer the JSONL mode gives for that conversation), `/save` writes a LLaVA record
/// `mt finetune` reads, and bad commands are named without ending the session.
#[test]
fn a_scripted_conversation_keeps_its_turns_and_saves_a_llava_record() {
    let tmp = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llava-hf");
    let image = testdata("images/phantom.png");
    let saved = tmp.path().join("talk.json");
    let script = format!(
        "What modality is this image?\n/bogus\nWhich organ is shown?\n/save {}\n/quit\n",
        saved.display()
    );
    let out = run_chat(
        &[
            image.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "6",
            "--interactive",
        ],
        &script,
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("unknown command /bogus"), "{stderr}");
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let turns = record[0]["conversations"].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0]["value"], "<image>\nWhat modality is this image?");
    let printed = String::from_utf8_lossy(&out.stdout);
    for answer in [&turns[1]["value"], &turns[3]["value"]] {
        assert!(printed.contains(answer.as_str().unwrap()), "{printed}");
    }
    // The JSONL mode answers the same conversation the same way.
    let request = serde_json::json!({"id": "again", "image": image, "conversations": [
        {"from": "human", "value": "What modality is this image?"},
        {"from": "gpt", "value": turns[1]["value"]},
        {"from": "human", "value": "Which organ is shown?"},
    ]});
    let (code, lines, stderr) = chat(
        &["--model", model.to_str().unwrap(), "--max-new-tokens", "6"],
        &format!("{request}\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines[0]["answer"], turns[3]["value"]);
    // The saved record is training data.
    let records =
        medtrinity::core::train::data::load_records(&saved, None).expect("a LLaVA record");
    assert_eq!(records.len(), 1);
}
