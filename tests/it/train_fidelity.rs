//! Training math against the reference (testdata/train, made by
//! `make_train_fixtures.py` from the MedTrinity-25M code, PyTorch and peft):
//! `preprocess_llama3` token ids and label masks, and optimiser steps (loss, gradient
//! norm, every updated parameter) for full fine-tuning, gradient accumulation, the
//! projector-only stage and LoRA, in f32 on the CPU. Also: every trainable parameter
//! receives a gradient, the same with activation checkpointing as without.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use candle_core::{DType, Device, Tensor};
use medtrinity::core::model::arch::llava::Llava;
use medtrinity::core::model::engine::preprocess::ImageProcessor;
use medtrinity::core::model::engine::prompt::TextCodec;
use medtrinity::core::model::load::checkpoint::Checkpoint;
use medtrinity::core::model::load::weights::original_name;
use medtrinity::core::train::adamw::{AdamW, AdamWConfig};
use medtrinity::core::train::batch::{Collator, Example};
use medtrinity::core::train::conversation::{
    ConversationEncoder, SpecialTokens, TrainTemplate, Turn,
};
use medtrinity::core::train::data::load_records;
use medtrinity::core::train::export::read_safetensors;
use medtrinity::core::train::parallel::Alone;
use medtrinity::core::train::parallel::World;
use medtrinity::core::train::params::{LearningRates, LoraSpec, Tune, make_trainable};
use medtrinity::core::train::trainer::{GradTarget, StepShape, accumulate, update};
use serde_json::Value;

use crate::common::{max_abs_diff, testdata};

const TOL: f32 = 1e-5;

fn tokenizer_dir(name: &str) -> PathBuf {
    match name {
        "tiny" => testdata("models/tiny-llava"),
        "bos" => testdata("train/tokenizer-bos"),
        other => testdata(&format!("train/tokenizers/{other}")),
    }
}

#[test]
fn preprocess_llama3_matches_the_reference_token_for_token() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata("train/preprocess.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 20);
    let mut mismatches = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dir = tokenizer_dir(case["tokenizer"].as_str().unwrap());
        let codec = TextCodec::load(&dir).unwrap();
        let encoder = ConversationEncoder {
            codec: &codec,
            specials: SpecialTokens::load(&dir, &codec).unwrap(),
            max_len: 2048,
            template: TrainTemplate::new("llama3").unwrap(),
        };
        let turns: Vec<Turn> = serde_json::from_value(case["conversations"].clone()).unwrap();
        let got = encoder
            .encode(&turns, case["has_image"].as_bool().unwrap())
            .unwrap();
        let ids: Vec<i64> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(case["labels"].clone()).unwrap();
        let label = format!("{name} ({})", case["tokenizer"]);
        assert_eq!(got.input_ids, ids, "input_ids of {label}");
        assert_eq!(got.labels, labels, "labels of {label}");
        assert_eq!(
            got.mismatch,
            case["mismatch"].as_bool().unwrap(),
            "mismatch of {label}"
        );
        mismatches += usize::from(got.mismatch);
    }
    assert!(mismatches >= 4, "the fixtures exercise the mismatch branch");
}

#[test]
fn preprocess_of_every_template_matches_the_reference_token_for_token() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("train/templates.json")).unwrap())
            .unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let mut seen = HashMap::new();
    for case in cases {
        let template = case["template"].as_str().unwrap();
        let tokenizer = case["tokenizer"].as_str().unwrap();
        let label = format!("{template} / {tokenizer} / {}", case["name"]);
        let dir = tokenizer_dir(tokenizer);
        let codec = TextCodec::load(&dir).unwrap();
        let encoder = ConversationEncoder {
            codec: &codec,
            specials: SpecialTokens::load(&dir, &codec).unwrap(),
            max_len: 2048,
            template: TrainTemplate::new(template).unwrap(),
        };
        let turns: Vec<Turn> = serde_json::from_value(case["conversations"].clone()).unwrap();
        let got = encoder.encode(&turns, case["has_image"].as_bool().unwrap());
        let outcome = seen.entry(template).or_insert([0; 3]);
        if case.get("error").is_some() {
            assert!(
                got.is_err(),
                "{label}: the reference refuses it ({})",
                case["error"]
            );
            outcome[0] += 1;
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let ids: Vec<i64> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(case["labels"].clone()).unwrap();
        assert_eq!(got.input_ids, ids, "input_ids of {label}");
        assert_eq!(got.labels, labels, "labels of {label}");
        assert_eq!(got.mismatch, case["mismatch"].as_bool().unwrap(), "{label}");
        outcome[1 + usize::from(!got.mismatch)] += 1;
    }
    // Every template has samples it trains on, and the refusals are exercised.
    for template in [
        "vicuna_v1",
        "llava_v1",
        "v1_mmtag",
        "llama_2",
        "llava_llama_2",
        "mistral_instruct",
        "chatml_direct",
        "mpt",
        "plain",
        "llama3",
        "phi3_instruct",
    ] {
        let [refused, _, trained] = seen[template];
        assert!(
            refused >= 1 && trained >= 1,
            "{template}: {:?}",
            seen[template]
        );
    }
}

/// The tiny checkpoint with the BOS-adding tokenizer the step fixtures use.
fn step_model_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("tiny-llava-bos");
    std::fs::create_dir_all(&dir).unwrap();
    let src = testdata("models/tiny-llava");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && name != "reference.safetensors"
            || name.ends_with(".json")
        {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(testdata("train/tokenizer-bos").join(name), dir.join(name)).unwrap();
    }
    dir
}

struct Fixture {
    _tmp: tempfile::TempDir,
    model_dir: PathBuf,
    reference: HashMap<String, Tensor>,
    meta: Value,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = step_model_dir(tmp.path());
    let reference = read_safetensors(&testdata("train/step/reference.safetensors")).unwrap();
    let meta =
        serde_json::from_str(&std::fs::read_to_string(testdata("train/step/meta.json")).unwrap())
            .unwrap();
    Fixture {
        _tmp: tmp,
        model_dir,
        reference,
        meta,
    }
}

/// The model, its examples for the fixture batch, and a trainable set.
fn load(fx: &Fixture, tune: Tune, lrs: LearningRates) -> (Llava, AdamW, Vec<Example>) {
    let (model, opt, examples, _) = load_with_key(fx, tune, lrs);
    (model, opt, examples)
}

/// [`load`], plus the LoRA dropout key when dropout is on.
fn load_with_key(
    fx: &Fixture,
    tune: Tune,
    lrs: LearningRates,
) -> (Llava, AdamW, Vec<Example>, Option<Arc<AtomicU64>>) {
    let dev = Device::Cpu;
    let ckpt = Checkpoint::open(
        &fx.model_dir,
        Some(&testdata("models/tiny-clip")),
        &dev,
        DType::F32,
    )
    .unwrap();
    let codec = TextCodec::for_checkpoint(&ckpt).unwrap();
    let specials = SpecialTokens::load(&fx.model_dir, &codec).unwrap();
    let processor = ImageProcessor::for_checkpoint(&ckpt).unwrap();
    let mut model = ckpt.load().unwrap();
    let trainable = make_trainable(&mut model, tune, lrs, DType::F32, 0).unwrap();
    let records = load_records(
        &testdata("train/step/batch.jsonl"),
        Some(&testdata("llava/images")),
    )
    .unwrap();
    let collator = Collator {
        encoder: ConversationEncoder {
            codec: &codec,
            specials,
            max_len: 2048,
            template: TrainTemplate::new("llama3").unwrap(),
        },
        processor: &processor,
        device: &dev,
    };
    let examples = records
        .iter()
        .map(|r| collator.example(r).unwrap())
        .collect();
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    (
        model,
        AdamW::new(cfg, trainable.params).unwrap(),
        examples,
        trainable.dropout_key,
    )
}

fn pick(examples: &[Example], ids: &[usize]) -> Vec<Example> {
    ids.iter()
        .map(|&i| {
            let e = &examples[i];
            Example {
                id: e.id.clone(),
                input_ids: e.input_ids.clone(),
                labels: e.labels.clone(),
                pixels: e.pixels.clone(),
                mismatch: e.mismatch,
            }
        })
        .collect()
}

fn shape(accum: usize, checkpoint: bool) -> StepShape<'static> {
    StepShape {
        accum,
        max_len: 2048,
        checkpoint,
        world: World::SINGLE,
        dropout: None,
        gradients: GradTarget::Device,
    }
}

/// One optimiser step over `micro_batches` (with activation checkpointing, which must
/// not change the math); returns (micro losses, grad norm).
fn step(
    model: &Llava,
    opt: &mut AdamW,
    examples: &[Example],
    micro_batches: &[&[usize]],
    n: u64,
) -> (Vec<f64>, f64) {
    let acc = accumulate(
        model,
        &opt.params,
        shape(micro_batches.len(), true),
        n,
        |k| {
            Ok(pick(
                examples,
                micro_batches[k as usize % micro_batches.len()],
            ))
        },
    )
    .unwrap();
    let losses = acc.losses.clone();
    let norm = update(opt, acc.grads, 1.0, 1.0, n, &Alone, false).unwrap();
    (losses, norm)
}

/// Every trained tensor equals the reference's `{prefix}.{original name}` within TOL.
fn assert_params(opt: &AdamW, reference: &HashMap<String, Tensor>, prefix: &str) {
    let mut worst = (0f32, String::new());
    for p in &opt.params {
        let key = format!("{prefix}.{}", original_name(&p.name));
        let want = reference
            .get(&key)
            .unwrap_or_else(|| panic!("no {key} in the fixture"));
        let d = max_abs_diff(p.var.as_tensor(), want);
        if d > worst.0 {
            worst = (d, key);
        }
    }
    eprintln!("{prefix}: worst {} by {:e}", worst.1, worst.0);
    assert!(
        worst.0 < TOL,
        "{prefix}: {} differs by {}",
        worst.1,
        worst.0
    );
}

/// Checks step `i` of `case` (loss, grad norm before clipping, every parameter after it
/// under `{prefix}.*`) against the reference.
fn check_step(fx: &Fixture, opt: &AdamW, case: &str, i: usize, loss: f64, norm: f64, prefix: &str) {
    let want = &fx.meta["cases"][case]["per_step"][i];
    assert_close(
        loss,
        want["loss"].as_f64().unwrap(),
        &format!("{case} step {i} loss"),
    );
    assert_close(
        norm,
        want["grad_norm_pre_clip"].as_f64().unwrap(),
        &format!("{case} step {i} grad norm"),
    );
    assert_params(opt, &fx.reference, prefix);
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() < 1e-5,
        "{what}: {got} vs reference {want}"
    );
}

#[test]
fn full_fine_tuning_two_steps_match_pytorch() {
    let fx = fixture();
    let lrs = LearningRates {
        main: 1e-3,
        projector: None,
    };
    let (model, mut opt, examples) = load(&fx, Tune::Full, lrs);
    for (n, prefix) in [(0u64, "full.after1"), (1, "full.after2")] {
        let (losses, norm) = step(&model, &mut opt, &examples, &[&[0, 1, 2]], n);
        check_step(&fx, &opt, "full", n as usize, losses[0], norm, prefix);
    }
}

#[test]
fn gradient_accumulation_matches_pytorch() {
    let fx = fixture();
    let lrs = LearningRates {
        main: 1e-3,
        projector: None,
    };
    let (model, mut opt, examples) = load(&fx, Tune::Full, lrs);
    let (losses, norm) = step(&model, &mut opt, &examples, &[&[0, 1], &[2]], 0);
    let micro = &fx.meta["cases"]["accum"]["per_step"][0]["micro"];
    assert_close(
        losses[0],
        micro[0]["loss"].as_f64().unwrap(),
        "micro-batch A loss",
    );
    assert_close(
        losses[1],
        micro[1]["loss"].as_f64().unwrap(),
        "micro-batch B loss",
    );
    let mean = (losses[0] + losses[1]) / 2.0;
    check_step(&fx, &opt, "accum", 0, mean, norm, "accum.after");
}

#[test]
fn projector_stage_matches_pytorch_and_trains_nothing_else() {
    let fx = fixture();
    let lrs = LearningRates {
        main: 2e-3,
        projector: None,
    };
    let (model, mut opt, examples) = load(&fx, Tune::Projector, lrs);
    assert_eq!(opt.params.len(), 4);
    let (losses, norm) = step(&model, &mut opt, &examples, &[&[0, 1, 2]], 0);
    check_step(
        &fx,
        &opt,
        "projector",
        0,
        losses[0],
        norm,
        "projector.after",
    );
}

#[test]
fn lora_two_steps_match_pytorch_and_peft() {
    let fx = fixture();
    let lrs = LearningRates {
        main: 1e-3,
        projector: Some(2e-4),
    };
    let (model, mut opt, examples) = load(
        &fx,
        Tune::Lora(LoraSpec {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
        }),
        lrs,
    );
    // The reference's A initialisation (B starts at zero on both sides).
    for p in &opt.params {
        if p.name.contains(".lora_") {
            let init = &fx.reference[&format!("lora.init.{}", original_name(&p.name))];
            p.var.set(init).unwrap();
        }
    }
    for (n, prefix) in [(0u64, "lora.after"), (1, "lora.after2")] {
        let (losses, norm) = step(&model, &mut opt, &examples, &[&[0, 1, 2]], n);
        check_step(&fx, &opt, "lora", n as usize, losses[0], norm, prefix);
    }
}

#[test]
fn every_trainable_parameter_receives_a_gradient() {
    let fx = fixture();
    let lrs = LearningRates {
        main: 1e-3,
        projector: None,
    };
    for tune in [
        Tune::Full,
        Tune::Projector,
        Tune::Lora(LoraSpec {
            r: 2,
            alpha: 4.0,
            dropout: 0.1,
        }),
        // Without dropout nothing but the adapters tracks a gradient before each q/k/v
        // product: the first pass must still take the recomputation's kernels.
        Tune::Lora(LoraSpec {
            r: 2,
            alpha: 4.0,
            dropout: 0.0,
        }),
    ] {
        let (model, opt, examples, key) = load_with_key(&fx, tune, lrs);
        // LoRA dropout is on for the LoRA case: the recomputed forward must draw the same masks.
        let with_key = |checkpoint| StepShape {
            dropout: key.as_ref().map(|k| (k, 5)),
            ..shape(1, checkpoint)
        };
        // LoRA's B starts at zero, which zeroes A's gradient: give B values first.
        for p in &opt.params {
            if p.name.contains(".lora_B") {
                p.var.set(&p.var.as_tensor().ones_like().unwrap()).unwrap();
            }
        }
        let run = |checkpoint| {
            accumulate(&model, &opt.params, with_key(checkpoint), 0, |_| {
                Ok(pick(&examples, &[0, 1]))
            })
            .unwrap()
        };
        let (plain, recomputed) = (run(false), run(true));
        assert_eq!(plain.losses, recomputed.losses, "{tune:?}");
        if matches!(tune, Tune::Lora(spec) if spec.dropout > 0.0) {
            let no_dropout = accumulate(&model, &opt.params, shape(1, false), 0, |_| {
                Ok(pick(&examples, &[0, 1]))
            })
            .unwrap();
            assert_ne!(no_dropout.losses, plain.losses, "dropout changed nothing");
        }
        for ((p, g), h) in opt.params.iter().zip(&plain.grads).zip(&recomputed.grads) {
            let sum = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(sum > 0.0, "{tune:?}: {} got no gradient", p.name);
            let d = max_abs_diff(g, h);
            assert!(
                d <= 1e-6 * (1.0 + sum),
                "{tune:?}: {}: checkpointing changes the gradient by {d}",
                p.name
            );
        }
    }
}
