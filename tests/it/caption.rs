//! `mt caption` end to end on the tiny random checkpoints: output format, resume,
//! bad images, batch invariance, seeded sampling and clear errors for bad models.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{self, mt_in, testdata};

fn model(name: &str) -> String {
    testdata(&format!("models/{name}")).display().to_string()
}

fn images() -> String {
    testdata("images").display().to_string()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn by_id(values: &[serde_json::Value]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["caption"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn captions_a_folder_with_a_run_dir_and_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("captions.jsonl");
    let outs = out.display().to_string();
    let args = [
        "--run-dir",
        "run1",
        "caption",
        &images(),
        "--model",
        &model("tiny-llava"),
        "-o",
        &outs,
        "--max-new-tokens",
        "6",
        "--batch-size",
        "2",
    ];
    let r = mt_in(dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = lines(&out);
    assert_eq!(first.len(), 5);
    for v in &first {
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "image",
                "caption",
                "model",
                "prompt_tokens",
                "new_tokens"
            ]
        );
        assert_eq!(v["model"], "tiny-llava");
        assert!(v["new_tokens"].as_u64().unwrap() <= 6);
        // 576 image rows + the template's text tokens.
        assert!(v["prompt_tokens"].as_u64().unwrap() > 576);
        assert!(Path::new(v["image"].as_str().unwrap()).exists());
    }
    let run = dir.path().join("run1");
    let model_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(model_json["layout"], "original");
    assert_eq!(model_json["vision"]["hidden_size"], 32);
    let gen_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("generation.json")).unwrap())
            .unwrap();
    assert_eq!(gen_json["max_new_tokens"], 6);
    assert!(!gen_json["stop_tokens"].as_array().unwrap().is_empty());

    let rerun = || {
        mt_in(
            dir.path(),
            &[
                "--no-run-dir",
                "caption",
                &images(),
                "--model",
                &model("tiny-llava"),
                "-o",
                &outs,
                "--max-new-tokens",
                "6",
            ],
        )
    };
    // A rerun adds nothing.
    let r = rerun();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines(&out).len(), 5);

    // Cut the file inside its fourth line, as a kill -9 mid-write would: the rerun
    // trims the partial line and captions exactly the two missing images again.
    let text = std::fs::read_to_string(&out).unwrap();
    let keep: usize = text.lines().take(3).map(|l| l.len() + 1).sum::<usize>() + 10;
    std::fs::write(&out, &text[..keep]).unwrap();
    let r = rerun();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again = lines(&out);
    assert_eq!(again.len(), 5);
    assert_eq!(
        by_id(&again),
        by_id(&first),
        "greedy captions are reproducible"
    );
}

#[test]
fn batches_and_padding_do_not_change_greedy_or_seeded_captions() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, hf) = (images(), model("tiny-llava-hf"));
    let run = |batch: &str, extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let mut args = vec![
            "--no-run-dir",
            "--seed",
            "11",
            "caption",
            &imgs,
            "--model",
            &hf,
            "--max-new-tokens",
            "8",
            "--batch-size",
            batch,
            "--ignore-eos",
        ];
        args.extend_from_slice(extra);
        let outs = out.display().to_string();
        args.extend_from_slice(&["-o", &outs]);
        let r = mt_in(dir.path(), &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        by_id(&lines(&out))
    };
    let one = run("1", &[], "a.jsonl");
    let three = run("3", &[], "b.jsonl");
    assert_eq!(one, three, "left padding must not change greedy output");
    let sample = ["--temperature", "0.9", "--top-p", "0.95", "--top-k", "50"];
    let s1 = run("1", &sample, "c.jsonl");
    let s2 = run("5", &sample, "d.jsonl");
    assert_eq!(
        s1, s2,
        "a sample's draws depend on the seed and its id, not its batch"
    );
    assert_ne!(s1, one, "sampling differs from greedy");
}

#[test]
fn records_in_jsonl_and_the_s2_model_work_and_bad_images_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let cell = testdata("images/cell.png");
    let records = format!(
        "{{\"id\": \"case-1\", \"image\": \"{}\"}}\n{{\"id\": \"case-2\", \"image\": \"broken.png\"}}\n{{\"id\": \"case-3\", \"image\": \"missing.png\"}}\n",
        cell.display()
    );
    std::fs::write(dir.path().join("cases.jsonl"), records).unwrap();
    let r = mt_in(
        dir.path(),
        &[
            "--run-dir",
            "r",
            "caption",
            "cases.jsonl",
            "--model",
            &model("tiny-llava-s2"),
            "--max-new-tokens",
            "4",
            "-o",
            "out.jsonl",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let out = lines(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], "case-1");
    assert_eq!(out[0]["model"], "tiny-llava-s2");
    assert!(
        r.stderr.contains("case-2") && r.stderr.contains("case-3"),
        "{}",
        r.stderr
    );
    let failures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/failures.json")).unwrap())
            .unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 2);
}

#[test]
fn model_problems_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let dst = common::copy_checkpoint(name, &dir.path().join(format!("{name}-edited")));
        let cfg_path = dst.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
        dst.display().to_string()
    };
    let caption = |model: &str| {
        let hub = dir.path().join("empty-hub");
        let r = common::mt_env(
            dir.path(),
            &[
                "--no-run-dir",
                "caption",
                &images(),
                "--model",
                model,
                "--max-new-tokens",
                "2",
            ],
            &[
                ("HF_HUB_CACHE", hub.to_str().unwrap()),
                ("HF_HUB_OFFLINE", "1"),
            ],
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        r.stderr
    };
    let bad_projector = copy("tiny-llava", &|c| c["mm_projector_type"] = "qformer".into());
    assert!(caption(&bad_projector).contains("`mm_projector_type`"));
    let no_tower = copy("tiny-llava", &|c| {
        c["mm_vision_tower"] = "openai/clip-vit-large-patch14-336".into()
    });
    let err = caption(&no_tower);
    assert!(
        err.contains("openai/clip-vit-large-patch14-336") && err.contains("--vision-tower"),
        "{err}"
    );
    let tower = testdata("models/tiny-clip").display().to_string();
    let with_tower = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "caption",
            &images(),
            "--model",
            &no_tower,
            "--vision-tower",
            &tower,
            "--max-new-tokens",
            "2",
            "-o",
            "t.jsonl",
        ],
    );
    assert_eq!(with_tower.code, 0, "{}", with_tower.stderr);
    let wrong_width = copy("tiny-llava-hf", &|c| {
        c["text_config"]["intermediate_size"] = 96.into()
    });
    let err = caption(&wrong_width);
    assert!(
        err.contains("mlp.gate_proj.weight has shape [128, 64], expected [96, 64]"),
        "{err}"
    );
    assert!(
        caption(&dir.path().join("nope").display().to_string())
            .contains("no such checkpoint folder")
    );
}

#[test]
fn a_picture_too_large_to_prepare_is_skipped_by_name_with_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("imgs");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(testdata("images/cell.png"), folder.join("cell.png")).unwrap();
    // A few hundred bytes of PNG whose square canvas would be 100000 x 100000 RGB (30 GB).
    image::GrayImage::new(100_000, 1)
        .save(folder.join("wide.png"))
        .unwrap();
    assert!(std::fs::metadata(folder.join("wide.png")).unwrap().len() < 2_000);
    let started = std::time::Instant::now();
    let r = mt_in(
        dir.path(),
        &[
            "--json",
            "caption",
            "imgs",
            "--model",
            &model("tiny-llava"),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "2",
            "-o",
            "out.jsonl",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 120);
    let out = lines(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], "cell.png");
    let summary = r.json();
    assert_eq!(
        (summary["captioned"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["failures"][0]["input"], "wide.png");
    let error = summary["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("padded to a square (100000x100000)") && error.contains("budget"),
        "{error}"
    );
    // With the captions on stdout, the summary goes to stderr and stdout stays JSONL.
    let r = mt_in(
        dir.path(),
        &[
            "--json",
            "--no-run-dir",
            "caption",
            "imgs/cell.png",
            "--model",
            &model("tiny-llava"),
            "--max-new-tokens",
            "2",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json_lines().len(), 1);
    let last = r.stderr.lines().last().unwrap();
    let summary: serde_json::Value = serde_json::from_str(last).expect(last);
    assert_eq!(summary["captioned"], 1);
}

#[test]
fn orientation_without_the_pipeline_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = mt_in(
        dir.path(),
        &[
            "caption",
            &images(),
            "--model",
            &model("tiny-llava"),
            "--orientation",
            "anatomical",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--pipeline"), "{}", r.stderr);
}

/// `--conv-mode` puts the question in another of LLaVA's templates (`llava_v0`: no
/// special tokens, the tokenizer's own BOS, `###` stops the answer); a template whose
/// special tokens the tokenizer lacks is refused by name, an unknown one is a usage error.
#[test]
fn conv_mode_picks_the_template_and_refuses_one_the_tokenizer_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = dir.path().join("c.jsonl");
        let _ = std::fs::remove_file(&out);
        let outs = out.display().to_string();
        let mut args = vec![
            "--no-run-dir",
            "caption",
            "testdata/images/phantom.png",
            "--model",
            "testdata/models/tiny-llava",
            "--max-new-tokens",
            "4",
            "-o",
            &outs,
        ];
        args.extend(extra);
        let r = mt_in(&common::root(), &args);
        let tokens = (r.code == 0).then(|| lines(&out)[0]["prompt_tokens"].as_u64().unwrap());
        (r, tokens)
    };
    let (r, llama3) = run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (r, same) = run(&["--conv-mode", "llama3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(same, llama3);
    let (r, v0) = run(&["--conv-mode", "llava_v0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_ne!(v0, llama3, "another template, another prompt");

    let (r, _) = run(&["--conv-mode", "vicuna_v1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("`vicuna_v1` writes `</s>`") && r.stderr.contains("--conv-mode"),
        "{}",
        r.stderr
    );
    let (r, _) = run(&["--conv-mode", "llama4"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("no conversation template `llama4`"),
        "{}",
        r.stderr
    );
}

/// A llava-hf checkpoint that carries a chat template (`chat_template.json`) is prompted
/// through it, as its processor would be, unless `--conv-mode` names a template; a
/// template that does not parse is a clear error.
#[test]
fn a_llava_hf_chat_template_is_used_unless_conv_mode_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::copy_checkpoint("tiny-llava-hf", &dir.path().join("hf"));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata("templates/chat_templates.json")).unwrap(),
    )
    .unwrap();
    let template = |source: &str| {
        let json = serde_json::json!({ "chat_template": source });
        std::fs::write(ckpt.join("chat_template.json"), json.to_string()).unwrap();
    };
    let caption = |extra: &[&str]| {
        let out = dir.path().join("c.jsonl");
        let _ = std::fs::remove_file(&out);
        let outs = out.display().to_string();
        let image = testdata("images/cell.png").display().to_string();
        let mut args = vec!["--no-run-dir", "caption", &image];
        args.extend(["--model", ckpt.to_str().unwrap(), "--max-new-tokens", "2"]);
        args.extend(["-o", &outs]);
        args.extend(extra);
        let r = mt_in(dir.path(), &args);
        let tokens = (r.code == 0).then(|| lines(&out)[0]["prompt_tokens"].as_u64().unwrap());
        (r, tokens)
    };
    let (r, llama3) = caption(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    template(golden["templates"]["llava-1.5"].as_str().unwrap());
    let (r, chat) = caption(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_ne!(chat, llama3, "the chat template makes another prompt");
    let (r, asked) = caption(&["--conv-mode", "llama3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(asked, llama3, "--conv-mode wins over the chat template");
    template("{% for m in messages %}");
    let (r, _) = caption(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("chat template does not parse"),
        "{}",
        r.stderr
    );
}
