//! QLoRA: `mt finetune --quantize` trains LoRA adapters (and `mt train --stage 1` the
//! projector) on the tiny checkpoint's language model loaded as q8_0 blocks (its
//! widths, 64 and 128, are whole q8_0 blocks, so every matrix and the token embeddings
//! are quantized), on the CPU: the losses follow the dense run's, the adapter is the
//! dense run's format, peft loads it on the unquantized base, and full fine-tuning is
//! refused.

use std::path::Path;

use serde_json::Value;

use crate::common::{llava_png_records, mt_in, test_python, testdata};
use crate::interop::{MODULES, lora_adapter, peft_checks_an_adapter};
use crate::train::{finetune, metrics, tensors};

/// The losses of `run`'s steps.
fn losses(run: &Path) -> Vec<f64> {
    metrics(run)
        .iter()
        .map(|m| m["loss"].as_f64().unwrap())
        .collect()
}

/// LoRA r 8 for 3 steps of 2 samples on the dense and on the q8_0 base: the quantized
/// run's losses are finite, not the dense run's bits (the base really is quantized)
/// but within 0.5% of them; its adapter has the dense run's config, tensor names, shapes
/// and dtypes, and its B matrices trained.
#[test]
fn lora_on_a_q8_0_base_follows_the_dense_run_and_writes_the_same_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = llava_png_records(tmp.path(), 2);
    let data = data.to_str().unwrap();
    let lora = [
        "--lora-r",
        "8",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--lr",
        "1e-2",
    ];
    let quantized = [&lora[..], &["--quantize", "q8_0"]].concat();
    let mut adapters = Vec::new();
    let mut runs = Vec::new();
    for (name, args) in [("dense", &lora[..]), ("q8_0", &quantized[..])] {
        let run = tmp.path().join(name);
        let r = finetune(tmp.path(), run.to_str().unwrap(), data, args);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        runs.push(losses(&run));
        adapters.push(run.join("adapter"));
    }
    let (dense, q8) = (&runs[0], &runs[1]);
    eprintln!("losses: dense {dense:?}, q8_0 {q8:?}");
    assert_eq!(q8.len(), 3);
    assert!(q8.iter().all(|l| l.is_finite()), "{q8:?}");
    assert_ne!(
        q8[0], dense[0],
        "the q8_0 run computed the dense model's bits"
    );
    for (q, d) in q8.iter().zip(dense) {
        assert!(
            (q - d).abs() < 0.005 * d,
            "q8_0 {q8:?} against dense {dense:?}"
        );
    }

    let config = |dir: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap()
    };
    assert_eq!(config(&adapters[1]), config(&adapters[0]));
    let [dense, q8] =
        [&adapters[0], &adapters[1]].map(|a| tensors(&a.join("adapter_model.safetensors")));
    assert_eq!(q8.len(), 2 * 7 * 2);
    for (name, t) in &dense {
        let q = &q8[name];
        assert_eq!((q.dims(), q.dtype()), (t.dims(), t.dtype()), "{name}");
        if name.ends_with("lora_B.weight") {
            assert!(crate::common::max_abs(q) > 0.0, "{name} did not train");
        }
    }
    assert!(
        adapters[1]
            .join("non_lora_trainables.safetensors")
            .is_file()
    );
}

/// Stage 1 through the q8_0 language model (its token embeddings looked up from
/// blocks, its products quantized, the gradient passing through them to the
/// projector): the first gradient norm and the losses are within 0.5% of the dense
/// run's, and the projector is exported (alone: `projector/`).
#[test]
fn stage_one_trains_the_projector_through_a_quantized_language_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = llava_png_records(tmp.path(), 2);
    let (model, images) = (testdata("models/tiny-llava"), testdata("llava/images"));
    let mut runs = Vec::new();
    for (name, extra) in [("dense", &[][..]), ("q8_0", &["--quantize", "q8_0"][..])] {
        let run = tmp.path().join(name);
        let mut args = vec!["train", "--stage", "1", "--cpu", "--max-steps", "2"];
        let paths = [&model, &data, &images, &run].map(|p| p.to_str().unwrap());
        for (flag, path) in ["--model", "--data", "--image-folder", "--run-dir"]
            .into_iter()
            .zip(paths)
        {
            args.extend([flag, path]);
        }
        args.extend([
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--warmup-ratio",
            "0",
        ]);
        args.extend(extra);
        let r = mt_in(tmp.path(), &args);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        // A quantized base is not written back: its run exports the projector alone.
        let exported = match extra.is_empty() {
            true => "model",
            false => "projector",
        };
        for file in ["mm_projector.safetensors", "mm_projector.bin"] {
            assert!(run.join(exported).join(file).is_file(), "{name}: {file}");
        }
        assert_eq!(run.join("model").exists(), extra.is_empty(), "{name}");
        runs.push(metrics(&run));
    }
    let value = |run: &Vec<Value>, step: usize, key: &str| run[step][key].as_f64().unwrap();
    // The first step's gradient is the backward pass through the blocks alone; later
    // ones also carry the projectors' different updates.
    for (step, key) in [(0, "grad_norm"), (0, "loss"), (1, "loss")] {
        let (q, d) = (value(&runs[1], step, key), value(&runs[0], step, key));
        eprintln!("step {} {key}: q8_0 {q}, dense {d}", step + 1);
        assert!(q.is_finite() && q > 0.0, "{key}: {q}");
        assert!(
            (q - d).abs() < 0.005 * d,
            "step {} {key}: q8_0 {q}, dense {d}",
            step + 1
        );
    }
}

/// Full fine-tuning needs the unquantized weights: `mt finetune --quantize` without
/// `--lora-r` fails with one line saying so, and writes no model.
#[test]
fn full_fine_tuning_of_a_quantized_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = llava_png_records(tmp.path(), 2);
    let run = tmp.path().join("full");
    let args = ["--quantize", "q8_0", "--max-steps", "1"];
    let r = finetune(
        tmp.path(),
        run.to_str().unwrap(),
        data.to_str().unwrap(),
        &args,
    );
    assert!(matches!(r.code, 1 | 2), "exit {}: {}", r.stderr, r.code);
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].contains("full training needs the unquantized weights"),
        "{}",
        r.stderr
    );
    assert!(!run.join("model").exists());
}

/// peft loads the adapter trained on the q8_0 base onto the unquantized base (every
/// tensor, no warning), and its forward and merge are mt's.
#[test]
fn peft_loads_a_qlora_adapter_on_the_unquantized_base() {
    let Some(py) = test_python(MODULES) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let adapter = lora_adapter(tmp.path(), "3", &["--quantize", "q8_0"]);
    peft_checks_an_adapter(&py, tmp.path(), &adapter, None);
}
