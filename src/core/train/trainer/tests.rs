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
    let text = std::fs::read_to_string(testdata("llava/medtrinity_instruct.jsonl")).unwrap();
    let pngs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(".png\""))
        .take(4)
        .collect();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, pngs.join("\n")).unwrap();
    let control = Control {
        device: Device::Cpu,
        dtype: DType::F32,
        resume: false,
        stop_after: None,
        quantize: None,
        zero: ZeroStage::Off,
        offload: false,
    };
    let single = tmp.path().join("single");
    train(&paths(&data, &single), &plan(2), &control, &Alone).unwrap();

    let parallel = tmp.path().join("parallel");
    std::thread::scope(|scope| {
        for reducer in LocalGroup::new(2) {
            let (data, parallel, control) = (&data, &parallel, &control);
            scope.spawn(move || {
                let control = Control {
                    device: Device::Cpu,
                    dtype: control.dtype,
                    resume: false,
                    stop_after: None,
                    quantize: None,
        zero: ZeroStage::Off,
        offload: false,
                };
                train(&paths(data, parallel), &plan(1), &control, &reducer).unwrap();
            });
        }
    });
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
