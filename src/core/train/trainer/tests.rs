use super::*;
use crate::core::train::parallel::{Alone, LocalGroup};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn plan(grad_accum: usize) -> Plan {
    Plan {
        tune: Tune::Full,
        lrs: LearningRates {
            main: 1e-3,
            projector: None,
        },
        adamw: AdamWConfig::default(),
        epochs: 1.0,
        max_steps: Some(2),
        batch_size: 1,
        grad_accum,
        warmup_ratio: 0.0,
        max_grad_norm: 1.0,
        model_max_length: 2048,
        gradient_checkpointing: false,
        group_by_modality: false,
        image_aspect_ratio: "pad".into(),
        seed: 1,
        conv_mode: None,
        quantize: None,
        save_steps: 0,
        save_total_limit: 0,
    }
}

fn paths(data: &Path, run_dir: &Path) -> Paths {
    Paths {
        model: testdata("models/tiny-llava"),
        vision_tower: None,
        projector: None,
        data: data.to_path_buf(),
        image_folder: Some(testdata("llava/images")),
        bench: None,
        run_dir: run_dir.to_path_buf(),
    }
}

/// Two ranks with accumulation 1 make the same updates as one process with
/// accumulation 2: same micro-batches, and averaging two gradients equals halving
/// each before summing (exact in binary floating point).
#[test]
fn two_ranks_train_exactly_like_one_process_accumulating_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let data = png_data(tmp.path());
    let off = control(ZeroStage::Off, false, false, None);
    let single = tmp.path().join("single");
    train(&paths(&data, &single), &plan(2), &off, &Alone).unwrap();
    let parallel = tmp.path().join("parallel");
    train_ranks(2, &data, &parallel, &plan(1), &off);
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let losses = |d: &Path| -> Vec<f64> {
        String::from_utf8(read(d, "metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (a, b) = (losses(&single), losses(&parallel));
    assert_eq!(a.len(), 2);
    // The ranks' loss sums travel as f32.
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
        "{a:?} vs {b:?}"
    );
    assert!(
        read(&single, "model/model.safetensors") == read(&parallel, "model/model.safetensors"),
        "the data-parallel model differs"
    );
}

fn png_data(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(testdata("llava/medtrinity_instruct.jsonl")).unwrap();
    let pngs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(".png\""))
        .take(4)
        .collect();
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pngs.join("\n")).unwrap();
    data
}

fn control(zero: ZeroStage, offload: bool, resume: bool, stop_after: Option<u64>) -> Control {
    Control {
        device: Device::Cpu,
        dtype: DType::F32,
        resume,
        stop_after,
        zero,
        offload,
        device_memory: None,
    }
}

/// Trains `plan` on `world` in-process ranks into `dir`.
fn train_ranks(world: usize, data: &Path, dir: &Path, plan: &Plan, control: &Control) {
    std::thread::scope(|scope| {
        for reducer in LocalGroup::new(world) {
            scope.spawn(move || {
                let control = Control {
                    device: Device::Cpu,
                    ..*control
                };
                train(&paths(data, dir), plan, &control, &reducer).unwrap();
            });
        }
    });
}

/// The largest difference between two runs' final models, relative to the largest value.
fn model_difference(a: &Path, b: &Path) -> f32 {
    let read = |d: &Path| read_tensors(&d.join("model/model.safetensors")).unwrap();
    let (a, b) = (read(a), read(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (name, x) in &a {
        let (x, y) = (
            &x.to_dtype(DType::F32).unwrap(),
            &b[name].to_dtype(DType::F32).unwrap(),
        );
        let scale = crate::core::model::max_abs_diff(x, &x.zeros_like().unwrap()).max(1e-6);
        worst = worst.max(crate::core::model::max_abs_diff(x, y) / scale);
    }
    worst
}

/// ZeRO 1 and 2 over 2 and 4 ranks train like one process accumulating as many
/// micro-batches: bit for bit without clipping (each element's update is the same
/// arithmetic), within 1e-6 with it (the norm sums the ranks' parts in another order) or
/// when ZeRO 2 sums micro-batches after the ranks.
#[test]
fn zero_sharded_ranks_train_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = png_data(tmp.path());
    let off = control(ZeroStage::Off, false, false, None);
    for (world, accum, clip) in [(2, 1, 0.0), (4, 1, 1.0), (2, 2, 1.0)] {
        let mut single_plan = plan(world * accum);
        single_plan.max_grad_norm = clip;
        let single = tmp.path().join(format!("single-{world}-{accum}-{clip}"));
        train(&paths(&data, &single), &single_plan, &off, &Alone).unwrap();
        for zero in [ZeroStage::Optimizer, ZeroStage::Gradients] {
            let mut ranks_plan = plan(accum);
            ranks_plan.max_grad_norm = clip;
            let dir = tmp
                .path()
                .join(format!("zero{}-{world}-{accum}-{clip}", zero.level()));
            train_ranks(
                world,
                &data,
                &dir,
                &ranks_plan,
                &control(zero, false, false, None),
            );
            let diff = model_difference(&single, &dir);
            let exact = clip == 0.0 && accum == 1;
            assert!(
                if exact { diff == 0.0 } else { diff < 1e-6 },
                "ZeRO {} over {world} ranks, accumulation {accum}, clip {clip}: {diff}",
                zero.level()
            );
        }
    }
}

/// A ZeRO 2 checkpoint of 2 ranks accumulating 2 resumes on 4 ranks accumulating 1 (the
/// same micro-batches a step) and on one process, and ends where the uninterrupted run
/// does.
#[test]
fn a_sharded_checkpoint_resumes_on_another_number_of_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = png_data(tmp.path());
    let mut whole = plan(4);
    whole.max_steps = Some(3);
    whole.save_steps = 1;
    let straight = tmp.path().join("straight");
    train(
        &paths(&data, &straight),
        &whole,
        &control(ZeroStage::Off, false, false, None),
        &Alone,
    )
    .unwrap();
    let zero = ZeroStage::Gradients;
    for (resume_world, name) in [(4, "four"), (1, "one")] {
        let dir = tmp.path().join(name);
        let first = Plan {
            grad_accum: 2,
            ..whole.clone()
        };
        train_ranks(
            2,
            &data,
            &dir,
            &first,
            &control(zero, false, false, Some(1)),
        );
        // Each rank saved its own pieces.
        for rank in 0..2 {
            let file = format!("checkpoint-1/optimizer.rank-{rank}-of-2.safetensors");
            assert!(dir.join(file).is_file());
        }
        assert!(!dir.join("checkpoint-1/optimizer.safetensors").exists());
        let then = Plan {
            grad_accum: 4 / resume_world,
            ..whole.clone()
        };
        train_ranks(
            resume_world,
            &data,
            &dir,
            &then,
            &control(zero, false, true, None),
        );
        let diff = model_difference(&straight, &dir);
        assert!(diff < 1e-6, "resumed on {resume_world}: {diff}");
    }
}

/// `--offload optimizer` keeps the state in host memory and updates it there: on the
/// CPU, for bf16 parameters with f32 masters, the same bits as without.
#[test]
fn offloading_the_optimizer_changes_no_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = png_data(tmp.path());
    let mut p = plan(2);
    p.max_steps = Some(2);
    let run = |offload: bool| {
        let dir = tmp.path().join(format!("offload-{offload}"));
        let c = Control {
            dtype: DType::BF16,
            ..control(ZeroStage::Off, offload, false, None)
        };
        train(&paths(&data, &dir), &p, &c, &Alone).unwrap();
        dir
    };
    let (plain, offloaded) = (run(false), run(true));
    assert_eq!(model_difference(&plain, &offloaded), 0.0);
}
