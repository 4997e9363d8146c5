//! `mt finetune` / `mt train` / `mt convert merge-lora` end to end on the tiny random
//! checkpoint, on the CPU: the loss falls when overfitting a few samples, the saved
//! model loads in `mt caption`, an interrupted and resumed run is bit-identical to an
//! uninterrupted one, stage 1 changes only the projector, LoRA writes a PEFT adapter
//! that merges exactly, and bad inputs are named.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use medtrinity::core::model::engine::preprocess::ImageProcessor;
use medtrinity::core::model::engine::prompt::TextCodec;
use medtrinity::core::model::load::checkpoint::Checkpoint;
use medtrinity::core::model::load::weights::weight_files;
use medtrinity::core::train::batch::Collator;
use medtrinity::core::train::conversation::{ConversationEncoder, SpecialTokens, TrainTemplate};
use medtrinity::core::train::data::load_records;
use medtrinity::core::train::export::{read_safetensors, read_tensors};
use medtrinity::core::train::params::{LearningRates, LoraSpec, Tune, make_trainable};
use serde_json::Value;

use crate::common::{self, max_abs_diff, mt_in, testdata};

fn model() -> String {
    testdata("models/tiny-llava").display().to_string()
}

fn images() -> String {
    testdata("llava/images").display().to_string()
}

/// `n` single-turn records with PNG images from the LLaVA fixture.
fn data(dir: &Path, n: usize) -> String {
    common::llava_png_records(dir, n).display().to_string()
}

/// The rows of `run/metrics.jsonl`.
pub(crate) fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `mt finetune --cpu` of the tiny checkpoint on `data` (the LLaVA fixture's images)
/// into `run`, no warmup, with `extra` flags.
pub(crate) fn finetune(dir: &Path, run: &str, data: &str, extra: &[&str]) -> common::Run {
    let (model, images) = (model(), images());
    let mut args = vec![
        "finetune",
        "--model",
        &model,
        "--data",
        data,
        "--image-folder",
        &images,
        "--cpu",
        "--run-dir",
        run,
        "--warmup-ratio",
        "0",
    ];
    args.extend_from_slice(extra);
    mt_in(dir, &args)
}

#[test]
fn finetuning_overfits_four_samples_and_saves_a_model_caption_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 4);
    let run = tmp.path().join("run");
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        &data,
        &[
            "--max-steps",
            "14",
            "--lr",
            "3e-3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--save-steps",
            "0",
            "--plot",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = metrics(&run);
    assert_eq!(m.len(), 14);
    for key in [
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "samples_per_s",
        "rss_mb",
        "epoch",
    ] {
        assert!(m[0].get(key).is_some(), "metrics lack {key}: {}", m[0]);
    }
    let first = (m[0]["loss"].as_f64().unwrap() + m[1]["loss"].as_f64().unwrap()) / 2.0;
    let last = (m[12]["loss"].as_f64().unwrap() + m[13]["loss"].as_f64().unwrap()) / 2.0;
    assert!(
        last < 0.6 * first,
        "the loss did not fall: {first} -> {last}"
    );
    assert!(run.join("curves.png").is_file());
    let saved = run.join("model");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(saved.join(f).is_file(), "model/{f} missing");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlavaLlamaForCausalLM");
    assert!(Path::new(config["mm_vision_tower"].as_str().unwrap()).is_absolute());
    let names = read_safetensors(&saved.join("model.safetensors")).unwrap();
    assert!(
        names.contains_key("model.layers.1.mlp.down_proj.weight")
            && names.contains_key("lm_head.weight")
    );
    assert!(names.contains_key("model.mm_projector.2.bias"));
    assert_captions(tmp.path(), &saved);
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 4);
    let common = [
        "--max-steps",
        "5",
        "--batch-size",
        "1",
        "--grad-accum",
        "2",
        "--lr",
        "1e-3",
        "--save-steps",
        "2",
        "--save-total-limit",
        "2",
        "--weight-decay",
        "0.1",
        "--seed",
        "3",
    ];
    let whole = tmp.path().join("whole");
    let r = finetune(tmp.path(), whole.to_str().unwrap(), &data, &common);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let parts = tmp.path().join("parts");
    let first: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--stop-after-steps", "3"])
        .collect();
    let r = finetune(tmp.path(), parts.to_str().unwrap(), &data, &first);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("continue with --resume"), "{}", r.stderr);
    assert!(!parts.join("model").exists());
    // Only the last two checkpoints are kept.
    assert!(!parts.join("checkpoint-2").exists() || !parts.join("checkpoint-4").exists());
    assert!(parts.join("checkpoint-3/optimizer.safetensors").is_file());
    // Without --resume the run directory is not overwritten.
    let r = finetune(tmp.path(), parts.to_str().unwrap(), &data, &common);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--resume"), "{}", r.stderr);
    // Different settings are refused, naming them.
    let other: Vec<&str> = common
        .iter()
        .map(|a| if *a == "1e-3" { "2e-3" } else { a })
        .chain(["--resume"])
        .collect();
    let r = finetune(tmp.path(), parts.to_str().unwrap(), &data, &other);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lrs"), "{}", r.stderr);

    let resumed: Vec<&str> = common.iter().copied().chain(["--resume"]).collect();
    // Other data is refused too (the order and the schedule depend on it).
    let more = tmp.path().join("more.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&more, format!("{text}{text}")).unwrap();
    let r = finetune(
        tmp.path(),
        parts.to_str().unwrap(),
        more.to_str().unwrap(),
        &resumed,
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("records"), "{}", r.stderr);
    // --resume names the run directory to continue.
    let base = model();
    let args: Vec<&str> = ["finetune", "--model", &base, "--data", &data, "--cpu"]
        .into_iter()
        .chain(resumed.iter().copied())
        .collect();
    let r = mt_in(tmp.path(), &args);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--resume needs --run-dir"),
        "{}",
        r.stderr
    );

    let r = finetune(tmp.path(), parts.to_str().unwrap(), &data, &resumed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let strip = |m: Vec<Value>| -> Vec<(u64, u64, u64, u64)> {
        m.iter()
            .map(|v| {
                let bits = |k: &str| v[k].as_f64().unwrap().to_bits();
                (
                    v["step"].as_u64().unwrap(),
                    bits("loss"),
                    bits("lr"),
                    bits("grad_norm"),
                )
            })
            .collect()
    };
    let (a, b) = (strip(metrics(&whole)), strip(metrics(&parts)));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b, "metrics differ after resuming");
    let bytes = |d: &Path| std::fs::read(d.join("model/model.safetensors")).unwrap();
    assert!(bytes(&whole) == bytes(&parts), "the resumed model differs");
    // A finished run has nothing to resume.
    let r = finetune(tmp.path(), parts.to_str().unwrap(), &data, &resumed);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already finished"), "{}", r.stderr);
}

pub(crate) fn tensors(path: &Path) -> HashMap<String, Tensor> {
    read_safetensors(path).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    max_abs_diff(a, b) == 0.0
}

/// `mt caption` generates with the checkpoint in `model`.
fn assert_captions(dir: &Path, model: &Path) {
    let image = testdata("images/phantom.png").display().to_string();
    let model = model.to_str().unwrap();
    let args = [
        "caption",
        &image,
        "--model",
        model,
        "--max-new-tokens",
        "3",
        "--no-run-dir",
    ];
    let r = mt_in(dir, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"new_tokens\":3"), "{}", r.stdout);
}

#[test]
fn stage_one_trains_only_the_projector_and_exports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 2);
    let run = tmp.path().join("s1");
    let r = mt_in(
        tmp.path(),
        &[
            "train",
            "--stage",
            "1",
            "--model",
            &model(),
            "--data",
            &data,
            "--image-folder",
            &images(),
            "--cpu",
            "--run-dir",
            run.to_str().unwrap(),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary = r.json();
    assert_eq!(summary["steps_done"], 2);
    assert_eq!(summary["trainable_parameters"], 32 * 64 + 64 + 64 * 64 + 64);
    let plan: Value =
        serde_json::from_slice(&std::fs::read(run.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["lrs"]["main"], 2e-3);
    assert_eq!(plan["image_aspect_ratio"], "square");
    let before = {
        let dir = testdata("models/tiny-llava");
        let mut all = tensors(&dir.join("model-00001-of-00002.safetensors"));
        all.extend(tensors(&dir.join("model-00002-of-00002.safetensors")));
        all
    };
    let after = tensors(&run.join("model/model.safetensors"));
    assert_eq!(after.len(), before.len());
    for (name, t) in &before {
        let unchanged = same(t, &after[name]);
        assert_eq!(unchanged, !name.contains("mm_projector"), "{name}");
    }
    let projector = tensors(&run.join("model/mm_projector.safetensors"));
    assert_eq!(projector.len(), 4);
    assert!(same(
        &projector["model.mm_projector.0.weight"],
        &after["model.mm_projector.0.weight"]
    ));

    // A later stage starts from that projector (--projector, LLaVA's
    // --pretrain_mm_mlp_adapter): with lr 0 it comes out unchanged.
    // The same tensors as a torch.save file for LLaVA's --pretrain_mm_mlp_adapter.
    let file = run.join("model/mm_projector.bin");
    let bin = read_tensors(&file).unwrap();
    assert_eq!(bin.len(), 4);
    assert!(projector.iter().all(|(k, v)| same(v, &bin[k])));
    let next = tmp.path().join("next");
    let r = finetune(
        tmp.path(),
        next.to_str().unwrap(),
        &data,
        &[
            "--projector",
            file.to_str().unwrap(),
            "--max-steps",
            "1",
            "--lr",
            "0",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = tensors(&next.join("model/model.safetensors"));
    for (name, t) in &projector {
        assert!(same(t, &out[name]), "{name} was not taken from --projector");
    }
    let whole = testdata("models/tiny-llava/model-00002-of-00002.safetensors");
    let r = finetune(
        tmp.path(),
        tmp.path().join("bad").to_str().unwrap(),
        &data,
        &["--projector", whole.to_str().unwrap(), "--max-steps", "1"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is not a projector tensor"),
        "{}",
        r.stderr
    );
}

#[test]
fn lora_writes_a_peft_adapter_that_merges_into_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 2);
    let run = tmp.path().join("lora");
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        &data,
        &[
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--max-steps",
            "3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--lr",
            "1e-2",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let adapter = run.join("adapter");
    let config: Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 7);
    let lora = tensors(&adapter.join("adapter_model.safetensors"));
    assert_eq!(lora.len(), 2 * 7 * 2);
    let a = &lora["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &lora["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    assert_eq!((a.dims(), b.dims()), (&[4, 64][..], &[64, 4][..]));
    let projector = tensors(&adapter.join("non_lora_trainables.safetensors"));
    let bin = read_tensors(&adapter.join("non_lora_trainables.bin")).unwrap();
    assert!(projector.iter().all(|(k, v)| same(v, &bin[k])));
    assert!(projector.contains_key("base_model.model.model.mm_projector.0.weight"));

    let merged = tmp.path().join("merged");
    let r = mt_in(
        tmp.path(),
        &[
            "convert",
            "merge-lora",
            "--model",
            &model(),
            "--adapter",
            adapter.to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["merged_layers"], 14);
    let out = tensors(&merged.join("model.safetensors"));
    let base = tensors(&testdata(
        "models/tiny-llava/model-00001-of-00002.safetensors",
    ));
    let w = &base["model.layers.0.self_attn.q_proj.weight"];
    let want = (w + (b.matmul(a).unwrap() * 2.0).unwrap()).unwrap();
    let got = &out["model.layers.0.self_attn.q_proj.weight"];
    let diff = max_abs_diff(got, &want);
    assert!(diff < 1e-6, "merged weight differs by {diff}");
    assert!(!same(got, w), "the adapter changed nothing");
    assert!(same(
        &out["model.mm_projector.0.weight"],
        &projector["base_model.model.model.mm_projector.0.weight"]
    ));
    assert_captions(tmp.path(), &merged);
}

#[test]
fn bad_records_and_images_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(data(tmp.path(), 2)).unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{good}{{\"id\": \"x\", \"conversations\": 5}}\n"),
    )
    .unwrap();
    let run = tmp.path().join("r1");
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        bad.to_str().unwrap(),
        &["--max-steps", "1"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("bad.jsonl:3: field `conversations`"),
        "{}",
        r.stderr
    );

    // A wrong image folder stops before training.
    let run = tmp.path().join("r0");
    let r = mt_in(
        tmp.path(),
        &[
            "finetune",
            "--model",
            &model(),
            "--data",
            &data(tmp.path(), 2),
            "--image-folder",
            "/nonexistent",
            "--cpu",
            "--max-steps",
            "1",
            "--run-dir",
            run.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("none of the first 2 training samples"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("/nonexistent"), "{}", r.stderr);
    assert!(!run.join("metrics.jsonl").exists());

    // A missing image skips that sample, lists it, and exits 3 once training is done.
    let missing = tmp.path().join("missing.jsonl");
    std::fs::write(
        &missing,
        format!("{good}{{\"id\": \"gone\", \"image\": \"nope.png\", \"conversations\": [{{\"from\": \"human\", \"value\": \"<image>\\nQ\"}}, {{\"from\": \"gpt\", \"value\": \"A\"}}]}}\n"),
    )
    .unwrap();
    let run = tmp.path().join("r2");
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        missing.to_str().unwrap(),
        &["--max-steps", "2", "--batch-size", "3", "--grad-accum", "1"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("nope.png"), "{}", r.stderr);
    let failures = std::fs::read_to_string(run.join("failures.json")).unwrap();
    assert_eq!(
        failures.matches("\"gone\"").count(),
        1,
        "listed once: {failures}"
    );
    assert!(run.join("model/model.safetensors").is_file());

    // A loss that blows up stops the run, naming the step and the samples.
    let run = tmp.path().join("r3");
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        &data(tmp.path(), 2),
        &[
            "--max-steps",
            "6",
            "--lr",
            "1e30",
            "--max-grad-norm",
            "0",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("step 2:"), "{}", r.stderr);
    assert!(r.stderr.contains("llava-"), "{}", r.stderr);
}

#[test]
fn benchmark_splits_train_through_their_loaders() {
    let tmp = tempfile::tempdir().unwrap();
    // SLAKE's released files (image files) and PathVQA's hub parquet (embedded images).
    for (bench, data, split, samples) in [
        ("slake", "vqa/slake", "train", 1),
        ("pathvqa", "vqa/path-vqa-hub", "test", 2),
    ] {
        let run = tmp.path().join(bench);
        let r = mt_in(
            tmp.path(),
            &[
                "finetune",
                "--model",
                &model(),
                "--data",
                &testdata(data).display().to_string(),
                "--bench",
                bench,
                "--split",
                split,
                "--cpu",
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--grad-accum",
                "1",
                "--run-dir",
                run.to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(r.code, 0, "{bench}: {}", r.stderr);
        assert_eq!(r.json()["steps_done"], 1, "{bench}");
        let m = metrics(&run);
        assert_eq!(m[0]["samples"], samples, "{bench}");
        assert!(m[0]["tokens"].as_u64().unwrap() > 0, "{bench}");
    }
    let r = mt_in(
        tmp.path(),
        &[
            "finetune",
            "--model",
            &model(),
            "--data",
            &testdata("vqa/slake").display().to_string(),
            "--bench",
            "slake",
            "--split",
            "nope",
            "--cpu",
            "--max-steps",
            "1",
            "--run-dir",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}

#[test]
fn bf16_parameters_train_through_f32_masters_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 2);
    let run = tmp.path().join("bf16");
    let common = [
        "--dtype",
        "bf16",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--lr",
        "1e-3",
    ];
    let first: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--stop-after-steps", "2"])
        .collect();
    let r = finetune(tmp.path(), run.to_str().unwrap(), &data, &first);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = tensors(&run.join("checkpoint-2/optimizer.safetensors"));
    let master = &state["llm.layers.0.mlp.up_proj.weight.master"];
    assert_eq!(master.dtype(), DType::F32, "masters are kept in f32");
    let resumed: Vec<&str> = common.iter().copied().chain(["--resume"]).collect();
    let r = finetune(tmp.path(), run.to_str().unwrap(), &data, &resumed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = metrics(&run);
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|v| v["loss"].as_f64().unwrap().is_finite()));
    let saved = tensors(&run.join("model/model.safetensors"));
    assert_eq!(
        saved["model.layers.0.mlp.up_proj.weight"].dtype(),
        DType::BF16
    );
}

#[test]
fn the_conversation_template_shapes_the_training_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 2);
    let tokens = |conv_mode: Option<&str>| {
        let run = tmp.path().join(conv_mode.unwrap_or("default"));
        let mut extra = vec!["--max-steps", "1", "--batch-size", "2", "--json"];
        extra.extend(conv_mode.map(|m| ["--conv-mode", m]).into_iter().flatten());
        let r = finetune(tmp.path(), run.to_str().unwrap(), &data, &extra);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let plan: Value =
            serde_json::from_slice(&std::fs::read(run.join("plan.json")).unwrap()).unwrap();
        assert_eq!(plan.get("conv_mode").and_then(Value::as_str), conv_mode);
        metrics(&run)[0]["tokens"].as_u64().unwrap()
    };
    // `plain` (stage-1 captions) trains on each answer and its "\n"; llama3 on each answer
    // and its <|eot_id|>, the question and the system prompt masked in both.
    let (llama3, plain) = (tokens(None), tokens(Some("plain")));
    assert!(llama3 > 0 && plain > 0);
    assert_eq!(tokens(Some("llama3")), llama3);

    // A template of another family, and one the reference trains with its `###` fallback.
    for (mode, says) in [
        (
            "vicuna_v1",
            "writes `</s>`, which its tokenizer does not have",
        ),
        ("llava_v0", "`### ` fallback"),
    ] {
        let run = tmp.path().join(mode);
        let r = finetune(
            tmp.path(),
            run.to_str().unwrap(),
            &data,
            &["--max-steps", "1", "--conv-mode", mode],
        );
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(says), "{mode}: {}", r.stderr);
    }
}

/// Every tensor of a checkpoint folder, by stored name.
fn checkpoint_tensors(dir: &Path) -> HashMap<String, Tensor> {
    weight_files(dir)
        .unwrap()
        .iter()
        .flat_map(|f| read_tensors(f).unwrap())
        .collect()
}

/// `mt convert merge-lora --json` of `adapter` into `base`, written to `out`.
fn merge_lora(dir: &Path, base: &Path, adapter: &Path, out: &Path) -> common::Run {
    let [base, adapter, out] = [base, adapter, out].map(|p| p.to_str().unwrap());
    mt_in(
        dir,
        &[
            "convert",
            "merge-lora",
            "--model",
            base,
            "--adapter",
            adapter,
            "-o",
            out,
            "--json",
        ],
    )
}

/// `mt finetune` of `base` (2 steps of 2 samples), with `extra` flags; the run folder.
fn finetune_from(dir: &Path, base: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let data = data(dir, 2);
    let run = dir.join(name);
    let (base, images) = (base.to_str().unwrap(), images());
    let mut args = vec![
        "finetune",
        "--model",
        base,
        "--data",
        &data,
        "--image-folder",
        &images,
        "--cpu",
        "--run-dir",
        run.to_str().unwrap(),
        "--warmup-ratio",
        "0",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
    ];
    args.extend_from_slice(extra);
    let r = mt_in(dir, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    run
}

/// A fine-tuned llava-hf checkpoint keeps its base's layout: the same stored names (here
/// the earlier transformers' `language_model.model.*`), the vision tower untouched, the
/// processor files along; a LoRA adapter is named (by transformers' current module paths,
/// which PEFT uses) and targeted for PEFT on `LlavaForConditionalGeneration` and merges
/// back into the base's layout.
#[test]
fn a_llava_hf_checkpoint_fine_tunes_and_exports_in_its_own_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let base = testdata("models/tiny-llava-hf");
    let before = checkpoint_tensors(&base);
    let names = |t: &HashMap<String, Tensor>| {
        let mut n: Vec<String> = t.keys().cloned().collect();
        n.sort();
        n
    };

    let export = finetune_from(tmp.path(), &base, "full", &[]).join("model");
    let after = checkpoint_tensors(&export);
    assert_eq!(names(&after), names(&before));
    for (name, t) in &before {
        let unchanged = same(t, &after[name]);
        if name.starts_with("vision_tower.") {
            assert!(unchanged, "{name} is frozen");
        } else if name.starts_with("language_model.model.layers.") {
            assert!(!unchanged, "{name} was trained");
        }
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(export.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlavaForConditionalGeneration");
    assert!(export.join("preprocessor_config.json").is_file());
    assert_captions(tmp.path(), &export);

    let adapter = finetune_from(tmp.path(), &base, "lora", &["--lora-r", "4"]).join("adapter");
    let config: Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    let targets = config["target_modules"].as_str().unwrap();
    assert!(targets.starts_with(".*language_model.*"), "{targets}");
    let lora = tensors(&adapter.join("adapter_model.safetensors"));
    assert_eq!(lora.len(), 2 * 7 * 2);
    assert!(lora.contains_key(
        "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"
    ));
    let projector = tensors(&adapter.join("non_lora_trainables.safetensors"));
    assert!(projector.contains_key("base_model.model.model.multi_modal_projector.linear_2.bias"));
    let merged = tmp.path().join("merged");
    let r = merge_lora(tmp.path(), &base, &adapter, &merged);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["merged_layers"], 14);
    assert_eq!(names(&checkpoint_tensors(&merged)), names(&before));
}

/// Training llava-hf checkpoints of four language families against transformers and
/// peft: the first step's loss is transformers' on the same sample (Mistral with a
/// sliding window of 8 tokens, far shorter than the sample; Qwen2 with its q, k, v
/// biases; Phi-3 with its fused projections); each full fine-tune loads into
/// `LlavaForConditionalGeneration` with no missing or unexpected tensor and gives mt's
/// logits and greedy tokens (the earlier transformers' names on tiny-llava-hf, the current
/// ones on the others; Phi-3's projections stored fused again); LoRA adapters of the Qwen2
/// and the Phi-3 ones (one adapter per fused layer, its A shared by the parts mt splits)
/// load into peft on their bases, touching no vision layer, and merge as
/// `mt convert merge-lora` does.
#[test]
fn fine_tuned_llava_hf_families_load_in_transformers_and_peft() {
    let Some(py) = crate::model::family_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let llama = testdata("models/tiny-llava-hf");
    let (_mistral_dir, mistral) = crate::model::random_family(&py, "mistral", 8);
    let (_qwen_dir, qwen) = crate::model::random_family(&py, "qwen2", 0);
    let (_phi3_dir, phi3) = crate::model::random_family(&py, "phi3", 40);
    let template = ["--conv-mode", "llama3"];
    for base in [&mistral, &qwen, &phi3] {
        first_loss_matches_transformers(&py, tmp.path(), base);
    }
    for (name, base) in [("llama", &llama), ("mistral", &mistral), ("phi3", &phi3)] {
        let export = finetune_from(tmp.path(), base, name, &template).join("model");
        // The logits test reads its inputs' description from these.
        for file in ["meta.json", "reference.safetensors"] {
            std::fs::copy(base.join(file), export.join(file)).unwrap();
        }
        crate::model::matches_transformers(&py, &export, name);
    }

    // Phi-3's LoRA parameters: one A per stored layer (q/k/v and gate/up share theirs),
    // one B per split part, stacked when stored.
    let mut model = Checkpoint::open(&phi3, None, &Device::Cpu, DType::F32)
        .unwrap()
        .load()
        .unwrap();
    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
    };
    let lrs = LearningRates {
        main: 1e-3,
        projector: None,
    };
    let trainable = make_trainable(&mut model, Tune::Lora(spec), lrs, DType::F32, 0).unwrap();
    let count = |kind: &str| {
        trainable
            .params
            .iter()
            .filter(|p| p.name.contains(kind))
            .count()
    };
    assert_eq!((count("lora_A"), count("lora_B")), (2 * 4, 2 * 7));

    let mut lora = template.to_vec();
    lora.extend(["--lora-r", "4"]);
    // Qwen2: seven adapted layers per decoder layer; Phi-3: four, two of them fused.
    for (name, base, adapted) in [("qwen", &qwen, 14), ("phi3", &phi3, 8)] {
        let adapter =
            finetune_from(tmp.path(), base, &format!("{name}-lora"), &lora).join("adapter");
        let merged = tmp.path().join(format!("{name}-merged"));
        let r = merge_lora(tmp.path(), base, &adapter, &merged);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let report = crate::model::llava_hf_logits(
            &py,
            &[
                "peft".as_ref(),
                base.as_os_str(),
                adapter.as_os_str(),
                merged.as_os_str(),
            ],
        );
        let report: Value = serde_json::from_str(report.trim()).unwrap();
        assert_eq!(report["adapted"], adapted, "{name}: {report}");
        assert_eq!(report["vision_adapted"], 0, "{name}: {report}");
        assert_eq!(
            report["unloaded"],
            serde_json::json!([]),
            "{name}: {report}"
        );
        assert_eq!(report["loaded_vs_stored"], 0.0, "{name}: {report}");
        let diff = report["merged_max_diff"].as_f64().unwrap();
        assert!(
            diff < 1e-6,
            "{name}: peft's merge differs from mt's by {diff}"
        );
    }
}

/// The loss of `mt finetune`'s first step on one sample (llama3 template) equals
/// transformers' `LlavaForConditionalGeneration` loss on the sample as mt's collator
/// built it (ids, labels, pixels).
fn first_loss_matches_transformers(py: &Path, dir: &Path, base: &Path) {
    let work = tempfile::tempdir_in(dir).unwrap();
    let run = work.path().join("run");
    let r = common::finetune_one(work.path(), base, &run);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let data = work.path().join("data.jsonl");
    let images = images();
    let ours = metrics(&run)[0]["loss"].as_f64().unwrap();

    let ckpt = Checkpoint::open(base, None, &Device::Cpu, DType::F32).unwrap();
    let codec = TextCodec::for_checkpoint(&ckpt).unwrap();
    let collator = Collator {
        encoder: ConversationEncoder {
            codec: &codec,
            specials: SpecialTokens::load(base, &codec).unwrap(),
            max_len: 2048,
            template: TrainTemplate::new("llama3").unwrap(),
        },
        processor: &ImageProcessor::for_checkpoint(&ckpt).unwrap(),
        device: &Device::Cpu,
    };
    let record = &load_records(&data, Some(Path::new(&images))).unwrap()[0];
    let example = collator.example(record).unwrap();
    let inputs = work.path().join("inputs.safetensors");
    let n = example.input_ids.len();
    candle_core::safetensors::save(
        &HashMap::from([
            (
                "input_ids".to_string(),
                Tensor::from_vec(example.input_ids, n, &Device::Cpu).unwrap(),
            ),
            (
                "labels".to_string(),
                Tensor::from_vec(example.labels, n, &Device::Cpu).unwrap(),
            ),
            (
                "pixel_values".to_string(),
                example.pixels.unwrap().unsqueeze(0).unwrap(),
            ),
        ]),
        &inputs,
    )
    .unwrap();
    let theirs: Value = serde_json::from_str(
        crate::model::llava_hf_logits(py, &["loss".as_ref(), base.as_os_str(), inputs.as_os_str()])
            .trim(),
    )
    .unwrap();
    let theirs = theirs["loss"].as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-5 * theirs,
        "{}: mt's first loss {ours}, transformers' {theirs}",
        base.display()
    );
}

/// `--plan --json` gives the parts of one device's memory and their total; the counts
/// match the model mt loads; ZeRO and offloading move the optimizer state as planned;
/// a run whose plan does not fit `--device-memory` is refused before any weight loads,
/// naming what would fit.
#[test]
fn the_memory_plan_counts_the_model_and_refuses_what_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path(), 2);
    let plan = |extra: &[&str]| -> Value {
        let mut args = vec!["--json", "--plan", "--batch-size", "2"];
        args.extend_from_slice(extra);
        let run = finetune(tmp.path(), "planned", &data, &args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            !tmp.path().join("planned").exists(),
            "a plan writes nothing"
        );
        serde_json::from_str(&run.stdout).unwrap()
    };
    let full = plan(&[]);
    let d = &full["per_device"];
    let parts: u64 = [
        "weights_bytes",
        "gradients_bytes",
        "master_weights_bytes",
        "optimizer_moments_bytes",
        "activations_bytes",
        "workspace_bytes",
    ]
    .iter()
    .map(|k| d[*k].as_u64().unwrap())
    .sum();
    assert_eq!(d["total_bytes"].as_u64().unwrap(), parts);
    // The trained parameters are the language model and the projector, as mt loads them.
    let trained_by = |tune: Tune| -> u64 {
        let mut model = Checkpoint::open(
            &testdata("models/tiny-llava"),
            None,
            &Device::Cpu,
            DType::F32,
        )
        .unwrap()
        .load()
        .unwrap();
        let lrs = LearningRates {
            main: 1e-4,
            projector: None,
        };
        let trainable = make_trainable(&mut model, tune, lrs, DType::F32, 1).unwrap();
        trainable
            .params
            .iter()
            .map(|p| p.var.elem_count() as u64)
            .sum()
    };
    let loaded = trained_by(Tune::Full);
    assert_eq!(full["parameters"]["trainable"].as_u64().unwrap(), loaded);
    assert_eq!(
        d["optimizer_moments_bytes"].as_u64().unwrap(),
        8 * loaded,
        "two f32 moments a trained parameter"
    );
    let zero = plan(&["--world-size", "4", "--zero", "2"]);
    assert_eq!(
        zero["per_device"]["optimizer_moments_bytes"]
            .as_u64()
            .unwrap(),
        (8 * loaded).div_ceil(4)
    );
    // Moments, and the sums of accumulated gradients (f32 parameters on the CPU need no
    // master copy).
    let offloaded = plan(&["--offload", "optimizer", "--grad-accum", "1"]);
    assert_eq!(offloaded["per_device"]["optimizer_moments_bytes"], 0);
    assert_eq!(offloaded["host_bytes"].as_u64().unwrap(), 8 * loaded);
    let accumulating = plan(&["--offload", "optimizer", "--grad-accum", "2"]);
    assert_eq!(accumulating["host_bytes"].as_u64().unwrap(), 12 * loaded);
    let lora = plan(&["--lora-r", "4"]);
    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
    };
    assert_eq!(
        lora["parameters"]["trainable"].as_u64().unwrap(),
        trained_by(Tune::Lora(spec))
    );

    let total = d["total_bytes"].as_u64().unwrap();
    let small = format!("{}", total - 1);
    let tight = plan(&["--device-memory", &small]);
    assert_eq!(tight["fits"], false);
    assert!(!tight["would_fit_with"].as_array().unwrap().is_empty());
    let run_dir = tmp.path().join("refused");
    let refused = finetune(
        tmp.path(),
        run_dir.to_str().unwrap(),
        &data,
        &[
            "--batch-size",
            "2",
            "--max-steps",
            "1",
            "--device-memory",
            &small,
        ],
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("would fit") && refused.stderr.contains("on one device"),
        "{}",
        refused.stderr
    );
    assert!(!run_dir.join("metrics.jsonl").exists(), "nothing trained");
}
