//! What mt writes, the Python libraries read, and the other way round, checked against
//! the real libraries (tests/interop/*.py, run with the Python of
//! tests/interop/requirements.txt that `.ci/run` provisions; without it the tests skip
//! outside CI and fail under `CI=true`), on the tiny random checkpoint, on the CPU:
//! - peft loads a LoRA adapter mt trained, every tensor, and merges it into the weights
//!   `mt convert merge-lora` writes;
//! - `torch.load(weights_only=True)` opens `mm_projector.bin` and
//!   `non_lora_trainables.bin`, and mt reads such files that `torch.save` wrote;
//! - transformers loads the language model of a `model/` export (safetensors with
//!   `{"format": "pt"}`) and computes the loss mt computes with it;
//! - `datasets` reads `mt convert parquet` shards with the Image feature, and loads a
//!   dataset `mt download` put in the Hub cache (the loopback fake Hub), offline.
//!
//! (huggingface_hub reading mt's downloads is in tests/it/download.rs.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Tensor;
use medtrinity::core::train::export::{read_safetensors, write_side_files, write_weights};
use serde_json::{Value, json};

use crate::common::{llava_png_records, max_abs_diff, mt_env, mt_in, root, test_python, testdata};
use crate::hub_server::{FakeRepo, HubServer, ServerConfig};

/// What every script here imports.
pub(crate) const MODULES: &[&str] = &["torch", "safetensors", "transformers", "peft", "datasets"];

/// Runs `tests/interop/<script> args` with every Hub and cache access kept in `dir`
/// (offline) and returns each stdout line as JSON.
fn python(py: &Path, dir: &Path, script: &str, args: &[&str]) -> Vec<Value> {
    python_env(py, dir, script, args, &[])
}

/// [`python`] with extra environment variables (set last).
fn python_env(
    py: &Path,
    dir: &Path,
    script: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Vec<Value> {
    let home = dir.join("hf-home");
    let out = Command::new(py)
        .arg(root().join("tests/interop").join(script))
        .args(args)
        .env("HF_HOME", &home)
        .env("HF_HUB_CACHE", home.join("hub"))
        .env("HF_DATASETS_CACHE", home.join("datasets"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONHASHSEED", "0")
        .envs(extra.iter().copied())
        .output()
        .expect("python starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{script}: not JSON ({e}): {l}\n{stderr}"))
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn model() -> PathBuf {
    testdata("models/tiny-llava")
}

/// `mt finetune --cpu` from `model` on `data` (images from the LLaVA fixture) into
/// `dir/run`, no warmup, batch `batch`, no accumulation; must succeed.
fn finetune(dir: &Path, run: &str, model: &Path, data: &Path, batch: usize, extra: &[&str]) {
    let batch = batch.to_string();
    let images = testdata("llava/images");
    let mut args = vec![
        "finetune",
        "--model",
        s(model),
        "--data",
        s(data),
        "--image-folder",
        s(&images),
        "--cpu",
        "--run-dir",
        run,
        "--warmup-ratio",
        "0",
        "--save-steps",
        "0",
        "--batch-size",
        &batch,
        "--grad-accum",
        "1",
    ];
    args.extend_from_slice(extra);
    let r = mt_in(dir, &args);
    assert_eq!(r.code, 0, "mt {args:?}:\n{}", r.stderr);
}

/// A LoRA adapter (r 4, alpha 8) trained for `steps` steps at lr 1e-2 with `extra`
/// flags: `dir/lora/adapter`.
pub(crate) fn lora_adapter(dir: &Path, steps: &str, extra: &[&str]) -> PathBuf {
    let data = llava_png_records(dir, 2);
    let args = ["--lora-r", "4", "--lora-alpha", "8", "--max-steps", steps];
    finetune(
        dir,
        "lora",
        &model(),
        &data,
        2,
        &[&args[..], &["--lr", "1e-2"], extra].concat(),
    );
    dir.join("lora/adapter")
}

/// `mt convert merge-lora` of `adapter` into the tiny checkpoint: `dir/<name>`.
fn merge(dir: &Path, adapter: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let r = mt_in(
        dir,
        &[
            "--no-run-dir",
            "convert",
            "merge-lora",
            "--model",
            s(&model()),
            "--adapter",
            s(adapter),
            "-o",
            s(&out),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    out
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks `adapter` (r 4, trained on the tiny checkpoint) with peft on the tiny
/// checkpoint: peft loads every tensor and merges it into the weights `mt convert
/// merge-lora` writes (`dir/merged`, returned), with the same logits; with `resaved`,
/// peft also saves the loaded adapter there (torch.save).
pub(crate) fn peft_checks_an_adapter(
    py: &Path,
    dir: &Path,
    adapter: &Path,
    resaved: Option<&Path>,
) -> PathBuf {
    let merged = merge(dir, adapter, "merged");
    let base = model();
    let mut args = vec![s(&base), s(adapter), s(&merged)];
    args.extend(resaved.map(s));
    let r = &python(py, dir, "peft_adapter.py", &args)[0];
    eprintln!("peft: {r}");
    // 2 layers x 7 target modules x (A, B), all loaded, none left over, none missing.
    assert_eq!(r["stored"], 28, "{r}");
    assert_eq!(r["lora_parameters"], 28, "{r}");
    assert_eq!(r["unused_in_file"], json!([]), "{r}");
    assert_eq!(r["missing_from_file"], json!([]), "{r}");
    assert_eq!(r["warnings"], json!([]), "{r}");
    assert_eq!(f64_of(&r["max_loaded_vs_file"]), 0.0, "{r}");
    // peft's merge_and_unload() equals mt's merged checkpoint, weight for weight
    // (embeddings, 2 x 9 layer tensors, norm, lm_head), and so do the logits.
    assert_eq!(r["merged_weights_compared"], 21, "{r}");
    assert_eq!(r["lm_weights"], 21, "{r}");
    assert!(f64_of(&r["max_merge_diff"]) < 1e-6, "{r}");
    assert!(f64_of(&r["max_logits_diff"]) < 1e-4, "{r}");
    assert!(
        f64_of(&r["adapter_effect"]) > 1e-2,
        "the adapter changed nothing: {r}"
    );
    merged
}

#[test]
fn peft_loads_every_tensor_of_an_mt_lora_adapter_and_merges_like_mt() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let adapter = lora_adapter(tmp.path(), "3", &[]);
    let resaved = tmp.path().join("resaved");
    let merged = peft_checks_an_adapter(&py, tmp.path(), &adapter, Some(&resaved));

    // The adapter as peft itself saves it with torch.save (adapter_model.bin, peft's
    // full adapter_config.json, no non_lora_trainables): mt merges it into the same
    // language-model weights.
    assert!(resaved.join("adapter_model.bin").is_file());
    assert!(!resaved.join("adapter_model.safetensors").exists());
    let ours = tensors(&merged.join("model.safetensors"));
    let theirs =
        tensors(&merge(tmp.path(), &resaved, "merged-from-peft").join("model.safetensors"));
    assert_eq!(ours.len(), theirs.len());
    for (name, t) in &ours {
        if !name.contains("mm_projector") {
            let diff = max_abs_diff(t, &theirs[name]);
            assert_eq!(diff, 0.0, "{name} differs by {diff}");
        }
    }
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    read_safetensors(path).unwrap()
}

#[test]
fn torch_load_weights_only_opens_the_bin_files_mt_writes() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = llava_png_records(tmp.path(), 2);
    let r = mt_in(
        tmp.path(),
        &[
            "train",
            "--stage",
            "1",
            "--model",
            s(&model()),
            "--data",
            s(&data),
            "--image-folder",
            s(&testdata("llava/images")),
            "--cpu",
            "--run-dir",
            "s1",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--dtype",
            "bf16",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stage1 = tmp.path().join("s1/model");
    let adapter = lora_adapter(tmp.path(), "1", &[]);
    let pairs = [
        stage1.join("mm_projector.bin"),
        stage1.join("mm_projector.safetensors"),
        adapter.join("non_lora_trainables.bin"),
        adapter.join("non_lora_trainables.safetensors"),
    ];
    let args: Vec<&str> = ["check"]
        .into_iter()
        .chain(pairs.iter().map(|p| s(p)))
        .collect();
    let checks = python(&py, tmp.path(), "torch_bin.py", &args);
    eprintln!("torch.load: {}", json!(checks));
    assert_eq!(checks.len(), 2);
    // Stage 1 ran in bf16 (as on a GPU), LoRA in f32 (the CPU's default).
    assert_eq!(
        checks[0]["dtypes"],
        json!(["torch.bfloat16"]),
        "{}",
        checks[0]
    );
    assert_eq!(
        checks[1]["dtypes"],
        json!(["torch.float32"]),
        "{}",
        checks[1]
    );
    for c in &checks {
        // A dict of the 4 projector tensors (`torch.save` of a state dict: an
        // OrderedDict), names, dtypes, shapes and values those of the safetensors file
        // beside it.
        assert_eq!(c["container"], "OrderedDict", "{c}");
        assert_eq!(c["entries"], 4, "{c}");
        assert_eq!(c["tensors"], 4, "{c}");
        assert_eq!(c["expected"], 4, "{c}");
        assert_eq!(c["same_names"], 4, "{c}");
        assert_eq!(c["same_dtypes"], true, "{c}");
        assert_eq!(c["same_shapes"], true, "{c}");
        assert_eq!(f64_of(&c["max_diff"]), 0.0, "{c}");
        // LLaVA's key clean-up leaves the projector's own names, and its strict
        // load_state_dict into the mlp2x_gelu projector takes every tensor.
        let names = ["0.bias", "0.weight", "2.bias", "2.weight"];
        let names: Vec<String> = names
            .iter()
            .map(|n| format!("model.mm_projector.{n}"))
            .collect();
        assert_eq!(c["llava_names"], json!(names), "{c}");
        assert_eq!(c["llava_projector_loaded"], true, "{c}");
    }
}

#[test]
fn mt_reads_projector_and_adapter_bin_files_that_torch_save_wrote() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shard = model().join("model-00002-of-00002.safetensors");
    let write = |prefix: &str, dtype: &str, layout: &str, seed: &str, name: &str| {
        let (bin, st) = (dir.join(format!("{name}.bin")), dir.join(name));
        let args = [
            "write",
            s(&shard),
            prefix,
            dtype,
            layout,
            seed,
            s(&bin),
            s(&st),
        ];
        python(&py, dir, "torch_bin.py", &args);
        (bin, tensors(&st))
    };

    // mm_projector.bin as LLaVA's stage 1 saves it (bf16, `model.mm_projector.*`), its
    // tensors here views of one storage at offsets, the matrices transposed:
    // `mt finetune --projector` starts from it; with lr 0 it comes out unchanged.
    let (bin, want) = write("", "bfloat16", "views", "1", "mm_projector");
    assert_eq!(want.len(), 4);
    let data = llava_png_records(dir, 2);
    let projector = ["--projector", s(&bin), "--max-steps", "1", "--lr", "0"];
    finetune(dir, "from-bin", &model(), &data, 2, &projector);
    let out = tensors(&dir.join("from-bin/model/model.safetensors"));
    for (name, t) in &want {
        let diff = max_abs_diff(t, &out[name]);
        assert_eq!(
            diff, 0.0,
            "{name} differs from the torch.save file by {diff}"
        );
    }

    // non_lora_trainables.bin as LLaVA's LoRA training saves it (fp16,
    // `base_model.model.model.mm_projector.*`), alone beside an mt adapter:
    // `mt convert merge-lora` takes the projector from it.
    let adapter = lora_adapter(dir, "1", &[]);
    std::fs::remove_file(adapter.join("non_lora_trainables.safetensors")).unwrap();
    let (bin, want) = write("base_model.model.", "float16", "separate", "2", "non_lora");
    std::fs::rename(&bin, adapter.join("non_lora_trainables.bin")).unwrap();
    let merged = tensors(&merge(dir, &adapter, "merged").join("model.safetensors"));
    for (name, t) in &want {
        let name = name.strip_prefix("base_model.model.").unwrap();
        let diff = max_abs_diff(t, &merged[name]);
        assert_eq!(
            diff, 0.0,
            "{name} differs from the torch.save file by {diff}"
        );
    }
}

/// The `text_only` case of testdata/train/preprocess.json for the tiny tokenizer.
fn text_only_case() -> Value {
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(testdata("train/preprocess.json")).unwrap()).unwrap();
    cases
        .into_iter()
        .find(|c| c["name"] == "text_only" && c["tokenizer"] == "tiny")
        .expect("text_only case")
}

fn first_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    f64_of(&first["loss"])
}

#[test]
fn transformers_loads_the_language_model_of_a_model_export() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let case = text_only_case();
    let data = dir.join("text.jsonl");
    let record = json!({"id": "text-0", "conversations": case["conversations"]});
    std::fs::write(&data, format!("{record}\n")).unwrap();
    let case_file = dir.join("case.json");
    std::fs::write(&case_file, case.to_string()).unwrap();

    // Full fine-tuning, 3 steps on the one sample, then mt's loss of the exported model
    // on it (one step at lr 0 logs the loss of the weights as loaded).
    finetune(
        dir,
        "ft",
        &model(),
        &data,
        1,
        &["--max-steps", "3", "--lr", "1e-2"],
    );
    let export = dir.join("ft/model");
    finetune(
        dir,
        "again",
        &export,
        &data,
        1,
        &["--max-steps", "1", "--lr", "0"],
    );
    let (base_loss, mt_loss) = (first_loss(&dir.join("ft")), first_loss(&dir.join("again")));
    assert!(
        mt_loss < base_loss - 0.1,
        "training changed nothing: {base_loss} -> {mt_loss}"
    );

    // The export (one model.safetensors at this size), and the same weights sharded by
    // mt's writer as a real model's export is (5 GB shards there, 100 kB here) with the
    // index transformers follows.
    let sharded = dir.join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    let mut weights: Vec<(String, Tensor)> = tensors(&export.join("model.safetensors"))
        .into_iter()
        .collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    write_weights(&sharded, weights, 100_000).unwrap();
    write_side_files(&export, &sharded, &Default::default()).unwrap();
    assert!(sharded.join("model.safetensors.index.json").is_file());

    for (folder, files) in [(&export, 1), (&sharded, 6)] {
        let r = &python(
            &py,
            dir,
            "transformers_export.py",
            &[s(folder), s(&case_file)],
        )[0];
        eprintln!("transformers: {r}; mt's loss {mt_loss} (base {base_loss})");
        let metadata = r["metadata"].as_object().unwrap();
        assert_eq!(metadata.len(), files, "{r}");
        for (file, m) in metadata {
            assert_eq!(m, &json!({"format": "pt"}), "{file}: {r}");
        }
        assert_eq!(r["missing_keys"], json!([]), "{r}");
        assert_eq!(r["mismatched_keys"], json!([]), "{r}");
        for k in r["unexpected_keys"].as_array().unwrap() {
            assert!(
                k.as_str().unwrap().contains("mm_projector"),
                "not a language-model tensor: {k}"
            );
        }
        assert_eq!(r["parameters"], 21, "{r}");
        assert_eq!(r["compared"], 21, "{r}");
        assert_eq!(f64_of(&r["max_param_vs_file"]), 0.0, "{r}");
        assert_eq!(r["tokenizer_matches"], true, "{r}");
        let loss = f64_of(&r["loss"]);
        assert!(
            (loss - mt_loss).abs() < 1e-5 * mt_loss.max(1.0),
            "transformers' loss {loss} vs mt's {mt_loss}"
        );
    }
}

#[test]
fn datasets_reads_mt_parquet_shards_with_the_image_feature() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = testdata("medtrinity-demo/25M_demo");
    let (jsonl, images, out) = (dir.join("demo.jsonl"), dir.join("imgs"), dir.join("pq"));
    for args in [
        vec![
            "convert",
            "llava",
            s(&demo),
            "-o",
            s(&jsonl),
            "--images-out",
            s(&images),
        ],
        vec![
            "convert",
            "parquet",
            s(&jsonl),
            "--images",
            s(&images),
            "-o",
            s(&out),
        ],
    ] {
        let r = mt_in(dir, &[&["--no-run-dir"], &args[..]].concat());
        assert_eq!(r.code, 0, "mt {args:?}:\n{}", r.stderr);
    }
    let r = &python(&py, dir, "datasets_parquet.py", &[s(&out), s(&demo)])[0];
    eprintln!("datasets: {r}");
    assert_eq!(
        r["features"],
        json!({"id": "Value", "image": "Image", "caption": "Value", "source": "Value"}),
        "{r}"
    );
    assert_eq!(r["rows"], 33, "{r}");
    assert_eq!(r["original_rows"], 33, "{r}");
    assert_eq!(
        r["same_rows"], true,
        "ids, captions or image bytes differ: {r}"
    );
    assert_eq!(r["pixels_differ"], json!([]), "{r}");
}

#[test]
fn datasets_loads_a_dataset_mt_downloaded_into_the_hub_cache() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = testdata("medtrinity-demo/25M_demo");
    let mut files = vec![("README.md".to_string(), b"card".to_vec(), false)];
    for shard in [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ] {
        let bytes = std::fs::read(demo.join(shard)).unwrap();
        files.push((format!("25M_demo/{shard}"), bytes, true));
    }
    let repo = FakeRepo::dataset("UCSC-VLAA/MedTrinity-25M").with_commit("main", files);
    let server = HubServer::start(vec![repo], ServerConfig::default());
    // The cache python() points datasets at.
    let cache = dir.join("hf-home/hub");
    let args = [
        "--no-run-dir",
        "download",
        "UCSC-VLAA/MedTrinity-25M",
        "--repo-type",
        "dataset",
        "--config",
        "25M_demo",
    ];
    let env = [
        ("HF_ENDPOINT", server.endpoint()),
        ("HF_HUB_CACHE", s(&cache).to_string()),
        ("HF_HOME", s(&dir.join("hf-home")).to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = mt_env(dir, &args, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // datasets cannot resolve a Hub repo offline (it needs its own cache of an online
    // load), so it asks the fake Hub for the commit and the listing; the shards it must
    // take from mt's snapshot folder: no LFS body is served again. (The card is fetched:
    // --config 25M_demo did not select README.md.)
    server.reset_log();
    let spec = "hub:UCSC-VLAA/MedTrinity-25M:25M_demo";
    let online = [
        ("HF_ENDPOINT", env[0].1),
        ("HF_HUB_OFFLINE", "0"),
        ("HF_DATASETS_OFFLINE", "0"),
        ("HF_HUB_DISABLE_XET", "1"),
    ];
    let r = &python_env(&py, dir, "datasets_parquet.py", &[spec, s(&demo)], &online)[0];
    let gets: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.body_bytes > 0 && !r.path.starts_with("/api/"))
        .map(|r| r.path)
        .collect();
    assert!(gets.is_empty(), "datasets downloaded again: {gets:?}");
    eprintln!("datasets from the Hub cache: {r}");
    assert_eq!(
        r["features"],
        json!({"image": "Image", "id": "Value", "caption": "Value"}),
        "{r}"
    );
    assert_eq!(r["rows"], 33, "{r}");
    assert_eq!(r["same_rows"], true, "{r}");
    assert_eq!(r["pixels_differ"], json!([]), "{r}");
}
