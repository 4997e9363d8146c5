//! `--quantize` and `mt convert gguf` end to end: the real binary on the tiny checkpoint,
//! its GGUF files read back by llama.cpp's own `gguf` package (the numerics of every
//! format on a model wide enough for them are `core::model::quant`'s unit tests).

use std::path::Path;

use crate::common::{mt_in, root, test_python, testdata};

/// Every `--type` gives a file llama.cpp's reader takes: the tensors and metadata
/// convert_hf_to_gguf.py would write, each tensor equal to the checkpoint's within its
/// format (exactly in f32), the query/key rows permuted as that script does. The tiny
/// model's rows (64 wide) are not whole 256-blocks, so q4k falls back to q8_0 as
/// llama.cpp's quantizer does.
#[test]
fn gguf_files_read_back_in_llama_cpps_gguf_package() {
    let Some(py) = test_python(&["gguf", "safetensors", "numpy"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llava");
    for kind in ["f32", "f16", "q8_0", "q4k"] {
        let out = dir.path().join(format!("tiny-{kind}.gguf"));
        let args = [
            "convert",
            "gguf",
            "--model",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            kind,
            "--json",
        ];
        let r = mt_in(dir.path(), &args);
        assert_eq!(r.code, 0, "{kind}: {}", r.stderr);
        assert_eq!(r.json()["tensors"], 21, "{kind}: {}", r.stdout);
        let check = std::process::Command::new(&py)
            .arg(root().join("tests/interop/gguf_check.py"))
            .args([out.as_os_str(), model.as_os_str(), kind.as_ref()])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// `mt caption --quantize` says what it quantized, records it in run.json, and captions;
/// a checkpoint whose tokenizer GGUF cannot describe is refused with the file named.
#[test]
fn caption_quantized_and_gguf_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llava");
    let image = testdata("images/cell.png");
    let r = mt_in(
        dir.path(),
        &[
            "--run-dir",
            "run",
            "caption",
            image.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--cpu",
            "--quantize",
            "q6k",
            "--max-new-tokens",
            "4",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("16 matrices in q8_0"), "{}", r.stderr);
    assert_eq!(r.json_lines().len(), 1);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap())
            .unwrap();
    assert_eq!(run["device"], "cpu f32 q6k");

    // A tokenizer that is not byte-level BPE.
    let ckpt = dir.path().join("ckpt");
    crate::common::copy_checkpoint("tiny-llava", &ckpt);
    let tok = ckpt.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok).unwrap();
    std::fs::write(&tok, text.replace("\"ByteLevel\"", "\"Metaspace\"")).unwrap();
    let out = dir.path().join("x.gguf");
    let r = refused(dir.path(), &ckpt, &out);
    assert!(
        r.contains("tokenizer.json") && r.contains("byte-level BPE"),
        "{r}"
    );
    assert!(!out.exists() && !dir.path().join("x.gguf.part").exists());

    // Cut or lying GGUF files: one line naming the file, no panic.
    let good = dir.path().join("good.gguf");
    let args = ["convert", "gguf", "--model", model.to_str().unwrap(), "-o"];
    let r = mt_in(dir.path(), &[&args[..], &[good.to_str().unwrap()]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..5000]).unwrap();
    let mut lying = b"GGUF\x03\x00\x00\x00".to_vec();
    lying.extend([0xff; 7].into_iter().chain([0x7f]));
    lying.extend([0; 8]);
    let lies = dir.path().join("lies.gguf");
    std::fs::write(&lies, lying).unwrap();
    for bad in [&cut, &lies] {
        let args = [
            "caption",
            image.to_str().unwrap(),
            "--model",
            bad.to_str().unwrap(),
            "--mmproj",
            good.to_str().unwrap(),
            "--cpu",
        ];
        let r = crate::common::mt_env(dir.path(), &args, &[("MT_CACHE_DIR", "cache")]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let name = bad.file_name().unwrap().to_str().unwrap();
        assert!(
            r.stderr.contains(name) && r.stderr.contains("not a readable GGUF file"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

/// Runs `mt convert gguf` expecting a failure; its stderr.
fn refused(dir: &Path, model: &Path, out: &Path) -> String {
    let r = mt_in(
        dir,
        &[
            "convert",
            "gguf",
            "--model",
            model.to_str().unwrap(),
            "--vision-tower",
            testdata("models/tiny-clip").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.stderr
}

/// llama.cpp's LLaVA pair (a text-model GGUF and its mmproj, written as llama.cpp's own
/// scripts write them, by its `gguf` package) captions as the checkpoint they came from:
/// the same tokens from f32 files, and from q8_0 ones (kept quantized); mt's own GGUF
/// takes the same mmproj. A GGUF model without its mmproj is a usage error.
#[test]
fn llama_cpp_llava_files_caption_as_their_checkpoint() {
    let Some(py) = test_python(&["gguf", "safetensors", "numpy", "torch"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llava");
    let image = testdata("images/cell.png");
    let caption = |model: &Path, mmproj: Option<&Path>| {
        let mut args = vec![
            "--no-run-dir".to_string(),
            "caption".into(),
            image.display().to_string(),
            "--model".into(),
            model.display().to_string(),
            "--cpu".into(),
            "--ignore-eos".into(),
            "--max-new-tokens".into(),
            "12".into(),
        ];
        if let Some(m) = mmproj {
            args.extend(["--mmproj".into(), m.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cache = dir.path().join("cache");
        crate::common::mt_env(
            dir.path(),
            &args,
            &[("MT_CACHE_DIR", cache.to_str().unwrap())],
        )
    };
    let want = caption(&model, None);
    assert_eq!(want.code, 0, "{}", want.stderr);
    let want = want.json_lines()[0]["caption"].clone();
    for kind in ["f32", "q8_0"] {
        let out = dir.path().join(kind);
        let made = std::process::Command::new(&py)
            .arg(root().join("tests/interop/gguf_llava.py"))
            .args([model.as_os_str(), testdata("models/tiny-clip").as_os_str()])
            .args([out.as_os_str(), kind.as_ref()])
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let r = caption(&out.join("text.gguf"), Some(&out.join("mmproj.gguf")));
        assert_eq!(r.code, 0, "{kind}: {}", r.stderr);
        let line = &r.json_lines()[0];
        assert_eq!(line["caption"], want, "{kind}");
        assert_eq!(line["model"], "text");
        if kind == "q8_0" {
            assert!(r.stderr.contains("16 matrices in q8_0"), "{}", r.stderr);
        }
    }
    let ours = dir.path().join("ours.gguf");
    let r = mt_in(
        dir.path(),
        &[
            "--no-run-dir",
            "convert",
            "gguf",
            "--model",
            model.to_str().unwrap(),
            "-o",
        ]
        .into_iter()
        .chain([ours.to_str().unwrap(), "--type", "q8_0"])
        .collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = caption(&ours, Some(&dir.path().join("f32/mmproj.gguf")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json_lines()[0]["caption"], want);

    let lone = caption(&ours, None);
    assert_eq!(lone.code, 2, "{}", lone.stderr);
    assert!(lone.stderr.contains("--mmproj"), "{}", lone.stderr);
    let mixed = caption(&model, Some(&dir.path().join("f32/mmproj.gguf")));
    assert_eq!(mixed.code, 2, "{}", mixed.stderr);
    assert!(mixed.stderr.contains("GGUF text model"), "{}", mixed.stderr);
}
