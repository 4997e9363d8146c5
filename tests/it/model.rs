//! Fidelity of the candle LLaVA against the reference implementations, on the tiny
//! random checkpoints and reference outputs made by testdata/models/make_tiny.py
//! (transformers' LlavaForConditionalGeneration; the original LLaVA composition
//! with and without the real s2wrapper). f32 on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use medtrinity::core::model::arch::llava::{Llava, Piece, shared_prefix, skip_prefix};
use medtrinity::core::model::engine::generate::{GenerationConfig, generate};
use medtrinity::core::model::engine::preprocess::ImageProcessor;
use medtrinity::core::model::engine::prompt::{TextCodec, llama3_prompt};
use medtrinity::core::model::load::checkpoint::Checkpoint;
use medtrinity::core::model::load::config::Layout;
use sha2::{Digest, Sha256};

#[cfg(feature = "cuda")]
use crate::common;
use crate::common::{copy_checkpoint, max_abs_diff, root, test_python};

const QUESTIONS: [&str; 3] = [
    "Describe the image in detail.",
    "What modality is this and which organ is shown? Answer briefly.",
    "Is there an abnormality in the left upper region of the image, and how large is it compared with the surrounding tissue?",
];
const IMAGES: [&str; 3] = ["cell.png", "ihc.png", "microaneurysms.png"];
const LOGIT_TOLERANCE: f32 = 1e-4;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/models")
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/images")
}

pub(crate) struct Fixture {
    model: Llava,
    codec: TextCodec,
    processor: ImageProcessor,
    meta: serde_json::Value,
    reference: HashMap<String, Tensor>,
    layout: Layout,
    image_token: i64,
}

fn fixture(name: &str) -> Fixture {
    fixture_at(&models_dir().join(name))
}

fn fixture_at(dir: &Path) -> Fixture {
    let ckpt = Checkpoint::open(dir, None, &Device::Cpu, DType::F32).expect("open checkpoint");
    let codec = TextCodec::for_checkpoint(&ckpt).unwrap();
    let processor = ImageProcessor::for_checkpoint(&ckpt).unwrap();
    let meta =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let layout = ckpt.config.layout;
    let image_token = ckpt.config.image_token_index.map_or(-200, i64::from);
    let model = ckpt.load().expect("load checkpoint");
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    Fixture {
        model,
        codec,
        processor,
        meta,
        reference,
        layout,
        image_token,
    }
}

impl Fixture {
    fn get(&self, key: &str) -> &Tensor {
        self.reference
            .get(key)
            .unwrap_or_else(|| panic!("reference tensor {key} missing"))
    }

    fn pieces(&self, question: &str) -> Vec<Piece> {
        self.codec.encode_prompt(&llama3_prompt(question)).unwrap()
    }

    /// Token-space ids as the reference tokenises (image marker or expanded tokens).
    fn token_ids(&self, pieces: &[Piece]) -> Vec<i64> {
        let per_image = match self.layout {
            Layout::Original => 1,
            Layout::Hf => self.model.cfg.image_tokens(),
        };
        pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Text(ids) => ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
                Piece::Image => vec![self.image_token; per_image],
            })
            .collect()
    }

    /// Our preprocessing of a test image, checked bit for bit against the reference's
    /// pixels (their sha256 in meta.json): `(1, 3, S, S)`.
    fn pixels(&self, image: &str) -> Tensor {
        let decoded = image::open(images_dir().join(image)).unwrap();
        let square = self.processor.square_pixels(&decoded).unwrap();
        let (w, h) = square.dimensions();
        let plane = (w * h) as usize;
        let mut chw = vec![0u8; 3 * plane];
        for (i, px) in square.pixels().enumerate() {
            for c in 0..3 {
                chw[c * plane + i] = px[c];
            }
        }
        let digest: String = Sha256::digest(&chw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            self.meta["pixels_sha256"][image].as_str().unwrap(),
            "{image}: preprocessed pixels differ from the reference"
        );
        let data = self.processor.normalize(&square);
        Tensor::from_vec(data, (1, 3, h as usize, w as usize), &Device::Cpu).unwrap()
    }

    /// Prompt embeddings of (image, question).
    fn row(&self, image: &str, question: &str) -> Tensor {
        let pixels = self.pixels(image);
        let features = self.model.encode_images(&pixels).unwrap();
        self.model
            .embed_prompt(&self.pieces(question), &[features.get(0).unwrap()])
            .unwrap()
    }
}

fn ids_of(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

/// Logits of `hidden` `(T, H)` rows at the reference positions of a row that
/// starts at `offset` in the padded batch.
fn logits_at(model: &Llava, hidden: &Tensor, positions: &Tensor, offset: usize) -> Tensor {
    let idx: Vec<u32> = ids_of(positions)
        .iter()
        .map(|&p| (p as usize + offset) as u32)
        .collect();
    let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
    model
        .llm
        .logits(&hidden.index_select(&idx, 0).unwrap())
        .unwrap()
}

fn greedy_cfg(steps: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: steps,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        stop_tokens: vec![],
    }
}

fn greedy(model: &Llava, rows: &[Tensor], steps: usize) -> Vec<Vec<u32>> {
    let batch = model.left_pad(rows).unwrap();
    let seeds = vec![0; rows.len()];
    let out = generate(
        model,
        &batch,
        None,
        &greedy_cfg(steps),
        &seeds,
        &|_, _| false,
        &mut |_| {},
    )
    .unwrap();
    out.into_iter().map(|g| g.tokens).collect()
}

/// [`greedy`] as the captioner runs it: the prompt tokens the rows share (the system
/// prompt) go through the model once, and every row continues from their cache.
fn greedy_after_shared_prefix(f: &Fixture, images: &[&str], questions: &[&str]) -> Vec<Vec<u32>> {
    let prompts: Vec<Vec<Piece>> = questions.iter().map(|q| f.pieces(q)).collect();
    let refs: Vec<&[Piece]> = prompts.iter().map(Vec::as_slice).collect();
    let ids = shared_prefix(&refs);
    let shared = ids.len();
    assert!(shared > 10, "the system prompt is shared ({shared} tokens)");
    let rows: Vec<Tensor> = images
        .iter()
        .zip(&prompts)
        .map(|(image, p)| {
            let features = f.model.encode_images(&f.pixels(image)).unwrap();
            f.model
                .embed_prompt(
                    &skip_prefix(p, shared, f.model.cfg.image_tokens()),
                    &[features.get(0).unwrap()],
                )
                .unwrap()
        })
        .collect();
    let prefix = f.model.llm.prefix_cache(ids).unwrap();
    let batch = f.model.left_pad_after(shared, &rows).unwrap();
    let seeds = vec![0; rows.len()];
    let out = generate(
        &f.model,
        &batch,
        Some(&prefix),
        &greedy_cfg(32),
        &seeds,
        &|_, _| false,
        &mut |_| {},
    )
    .unwrap();
    out.into_iter().map(|g| g.tokens).collect()
}

fn check_model(name: &str) {
    let f = fixture(name);

    // Tokenisation and template.
    assert_eq!(
        f.token_ids(&f.pieces(QUESTIONS[0])),
        ids_of(f.get("single.input_ids")),
        "{name}: prompt ids"
    );
    for (r, q) in QUESTIONS.iter().enumerate() {
        assert_eq!(
            f.token_ids(&f.pieces(q)),
            ids_of(f.get(&format!("batch.{r}.input_ids"))),
            "{name}: row {r} ids"
        );
    }

    // Vision tower (+ S2) alone.
    let pixels = f.pixels("cell.png");
    let features = f
        .model
        .vision_features(&pixels)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let diff = max_abs_diff(&features, f.get("hidden.image_features"));
    assert!(
        diff < LOGIT_TOLERANCE,
        "{name}: image features differ by {diff}"
    );

    // Batch of one: logits and 32 greedy tokens.
    let single = f.row(IMAGES[0], QUESTIONS[0]);
    let batch = f.model.left_pad(std::slice::from_ref(&single)).unwrap();
    let hidden = f.model.forward_batch(&batch).unwrap().i(0).unwrap();
    let logits = logits_at(&f.model, &hidden, f.get("single.positions"), 0);
    let diff = max_abs_diff(&logits, f.get("single.logits"));
    assert!(
        diff < LOGIT_TOLERANCE,
        "{name}: single logits differ by {diff}"
    );
    let tokens = greedy(&f.model, std::slice::from_ref(&single), 32);
    let expected: Vec<u32> = ids_of(f.get("single.greedy"))
        .iter()
        .map(|&t| t as u32)
        .collect();
    assert_eq!(tokens[0], expected, "{name}: greedy tokens (batch 1)");
    let shared = greedy_after_shared_prefix(&f, &IMAGES[..1], &QUESTIONS[..1]);
    assert_eq!(
        shared[0], expected,
        "{name}: greedy tokens (batch 1, shared prefix)"
    );

    // Left-padded batch of three prompts of different lengths.
    let rows: Vec<Tensor> = (0..3).map(|r| f.row(IMAGES[r], QUESTIONS[r])).collect();
    let batch = f.model.left_pad(&rows).unwrap();
    let hidden = f.model.forward_batch(&batch).unwrap();
    let total = hidden.dim(1).unwrap();
    for r in 0..3 {
        let offset = total - batch.lengths[r];
        let logits = logits_at(
            &f.model,
            &hidden.i(r).unwrap(),
            f.get(&format!("batch.{r}.positions")),
            offset,
        );
        let diff = max_abs_diff(&logits, f.get(&format!("batch.{r}.logits")));
        assert!(
            diff < LOGIT_TOLERANCE,
            "{name}: batch row {r} logits differ by {diff}"
        );
    }
    let tokens = greedy(&f.model, &rows, 32);
    let expected = f.get("batch.greedy").to_vec2::<i64>().unwrap();
    for r in 0..3 {
        let want: Vec<u32> = expected[r].iter().map(|&t| t as u32).collect();
        assert_eq!(tokens[r], want, "{name}: greedy tokens (batch row {r})");
    }
    let shared = greedy_after_shared_prefix(&f, &IMAGES[..3], &QUESTIONS[..3]);
    for r in 0..3 {
        let want: Vec<u32> = expected[r].iter().map(|&t| t as u32).collect();
        assert_eq!(
            shared[r], want,
            "{name}: greedy tokens (batch row {r}, shared prefix)"
        );
    }
}

/// The Python of the language-family tests (tests/interop/llava_hf_logits.py).
pub(crate) fn family_python() -> Option<PathBuf> {
    test_python(&["torch", "safetensors", "transformers"])
}

/// Runs tests/interop/llava_hf_logits.py with `args`, failing on its error; its stdout.
pub(crate) fn llava_hf_logits(py: &Path, args: &[&std::ffi::OsStr]) -> String {
    let run = std::process::Command::new(py)
        .arg(root().join("tests/interop/llava_hf_logits.py"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

/// A tiny llava-hf checkpoint against transformers' LlavaForConditionalGeneration on the
/// same token ids and pixels (the first question and image): logits at every position
/// within 1e-4 and 16 greedy tokens identical. Returns our logits.
pub(crate) fn matches_transformers(py: &Path, model_dir: &Path, what: &str) -> (Fixture, Tensor) {
    let f = fixture_at(model_dir);
    let ids = f.token_ids(&f.pieces(QUESTIONS[0]));
    let work = model_dir.parent().unwrap();
    let inputs = work.join("inputs.safetensors");
    let ids_tensor = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    candle_core::safetensors::save(
        &HashMap::from([
            ("input_ids".to_string(), ids_tensor),
            ("pixel_values".to_string(), f.pixels(IMAGES[0])),
        ]),
        &inputs,
    )
    .unwrap();
    let out = work.join("out.safetensors");
    llava_hf_logits(
        py,
        &[
            "logits".as_ref(),
            model_dir.as_os_str(),
            inputs.as_os_str(),
            out.as_os_str(),
        ],
    );
    let theirs = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let row = f.row(IMAGES[0], QUESTIONS[0]);
    let batch = f.model.left_pad(std::slice::from_ref(&row)).unwrap();
    let hidden = f.model.forward_batch(&batch).unwrap().i(0).unwrap();
    let logits = f.model.llm.logits(&hidden).unwrap();
    let diff = max_abs_diff(&logits, &theirs["logits"]);
    assert!(diff < LOGIT_TOLERANCE, "{what}: logits differ by {diff}");
    let tokens = greedy(&f.model, std::slice::from_ref(&row), 16);
    let want: Vec<u32> = ids_of(&theirs["greedy"])
        .iter()
        .map(|&t| t as u32)
        .collect();
    assert_eq!(tokens[0], want, "{what}: greedy tokens");
    (f, hidden)
}

/// A random tiny llava-hf checkpoint whose language model is of `model_type` with a
/// sliding window, made by transformers (tests/interop/llava_hf_logits.py family) in a
/// fresh folder (kept alive by the returned guard).
pub(crate) fn random_family(
    py: &Path,
    model_type: &str,
    window: usize,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let source = models_dir().join("tiny-llava-hf");
    let window = window.to_string();
    llava_hf_logits(
        py,
        &[
            "family".as_ref(),
            model_type.as_ref(),
            source.as_os_str(),
            model_dir.as_os_str(),
            window.as_ref(),
        ],
    );
    (dir, model_dir)
}

/// Llama 3.1's RoPE scaling end to end: tiny-llava-hf with `rope_parameters` set to
/// the `llama3` type (original context 64, so with head_dim 16 one band is kept, one
/// blended and the rest divided) against transformers; the unscaled model's logits differ.
#[test]
fn llama3_rope_scaling_matches_transformers() {
    let Some(py) = family_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model_dir = copy_checkpoint("tiny-llava-hf", &dir.path().join("model"));
    let config_path = model_dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["text_config"]["rope_parameters"] = serde_json::json!({
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    });
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (f, hidden) = matches_transformers(&py, &model_dir, "scaled RoPE");
    let unscaled = logits_at(&f.model, &hidden, f.get("single.positions"), 0);
    let moved = max_abs_diff(&unscaled, f.get("single.logits"));
    assert!(
        moved > 1e-3,
        "the scaling changed the logits by only {moved}"
    );
}

/// Mistral (LLaVA-Med v1.5's language model) with a sliding window of 40 tokens, far
/// shorter than the ~700-token prompt, against transformers: a random llava-hf
/// checkpoint that transformers makes (tests/interop/llava_hf_logits.py family); the
/// batched prompt and every decoding step attend through the window.
#[test]
fn mistral_with_a_sliding_window_matches_transformers() {
    let Some(py) = family_python() else {
        return;
    };
    let (_dir, model_dir) = random_family(&py, "mistral", 40);
    let (f, _) = matches_transformers(&py, &model_dir, "mistral");
    assert_eq!(f.model.cfg.text.sliding_window, Some(40));

    // mt caption runs it: Mistral's template by default (refused: this tiny tokenizer
    // has no `</s>`), another template when asked.
    let image = root().join("testdata/images/cell.png");
    let caption = |extra: &[&str]| {
        let mut args = vec!["caption", image.to_str().unwrap()];
        args.extend([
            "--model",
            model_dir.to_str().unwrap(),
            "--max-new-tokens",
            "4",
        ]);
        args.extend(extra);
        crate::common::mt(&args)
    };
    let r = caption(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("`mistral_instruct` writes `</s>`"),
        "{}",
        r.stderr
    );
    let r = caption(&["--conv-mode", "llava_v0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"new_tokens\":4"), "{}", r.stdout);
}

/// Phi-3 (LLaVA-pp's Phi-3 variant): its fused `qkv_proj` and `gate_up_proj` split at
/// load, with the 4k model's sliding window (here 40), against transformers on a random
/// llava-hf checkpoint that transformers makes.
#[test]
fn phi3_with_fused_projections_matches_transformers() {
    let Some(py) = family_python() else {
        return;
    };
    let (_dir, model_dir) = random_family(&py, "phi3", 40);
    let (f, _) = matches_transformers(&py, &model_dir, "phi3");
    assert_eq!(f.model.cfg.text.sliding_window, Some(40));
}

/// Qwen2: biases on the query, key and value projections (none on the output one),
/// against transformers on a random llava-hf checkpoint that transformers makes.
#[test]
fn qwen2_with_qkv_biases_matches_transformers() {
    let Some(py) = family_python() else {
        return;
    };
    let (_dir, model_dir) = random_family(&py, "qwen2", 4096);
    let (f, _) = matches_transformers(&py, &model_dir, "qwen2");
    assert_eq!(f.model.cfg.text.sliding_window, None);
}

#[test]
fn llava_hf_layout_matches_transformers() {
    check_model("tiny-llava-hf");
}

#[test]
fn original_layout_matches_the_llava_composition() {
    check_model("tiny-llava");
}

#[test]
fn original_layout_with_s2_matches_s2wrapper() {
    check_model("tiny-llava-s2");
}

/// `CLIPImageProcessor` (PIL) outputs stored as PNGs named `<image>.<size>[.nopad].png`:
/// bit-exact for PNG sources; JPEG decoders may differ, so there the bar is
/// 99.9% of values within 1/255.
#[test]
fn preprocessing_matches_clip_image_processor() {
    use medtrinity::core::model::load::config::AspectMode;
    let mut checked = 0;
    for entry in std::fs::read_dir(models_dir().join("preprocess")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = file.trim_end_matches(".png");
        let (stem, aspect) = match stem.strip_suffix(".nopad") {
            Some(s) => (s, AspectMode::Crop),
            None => (stem, AspectMode::Pad),
        };
        let (source, size) = stem.rsplit_once('.').unwrap();
        let size: usize = size.parse().unwrap();
        let image = image::open(images_dir().join(source)).unwrap();
        let ours = ImageProcessor::new(size, aspect)
            .square_pixels(&image)
            .unwrap();
        let want = image::open(&path).unwrap().to_rgb8();
        assert_eq!(ours.dimensions(), want.dimensions(), "{file}");
        let pairs = || ours.as_raw().iter().zip(want.as_raw());
        let exact = pairs().filter(|(a, b)| a == b).count();
        let close = pairs().filter(|(a, b)| a.abs_diff(**b) <= 1).count();
        let n = want.as_raw().len();
        if source.ends_with(".png") {
            assert_eq!(
                exact,
                n,
                "{file}: {} of {n} values differ from PIL",
                n - exact
            );
        } else {
            assert!(
                close as f64 >= 0.999 * n as f64,
                "{file}: only {close} of {n} values within 1/255"
            );
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} reference images");
}

/// bf16 on the GPU against f32 on the CPU (CUDA builds on a machine with a GPU; the
/// test binary is carried to the device machine and run there).
#[cfg(feature = "cuda")]
#[test]
fn gpu_bf16_logits_follow_cpu_f32() {
    let Ok(gpu) = Device::new_cuda(0) else {
        eprintln!("no CUDA device: skipped");
        return;
    };
    for name in ["tiny-llava-hf", "tiny-llava-s2"] {
        let logits = |device: &Device, dtype: DType| {
            let dir = models_dir().join(name);
            let ckpt = Checkpoint::open(&dir, None, device, dtype).unwrap();
            let processor = ImageProcessor::for_checkpoint(&ckpt).unwrap();
            let codec = TextCodec::for_checkpoint(&ckpt).unwrap();
            let model = ckpt.load().unwrap();
            let image = image::open(images_dir().join("cell.png")).unwrap();
            let pixels = processor
                .batch(&[&image], device)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let features = model.encode_images(&pixels).unwrap();
            let pieces = codec.encode_prompt(&llama3_prompt(QUESTIONS[0])).unwrap();
            let row = model
                .embed_prompt(&pieces, &[features.get(0).unwrap()])
                .unwrap();
            let batch = model.left_pad(&[row]).unwrap();
            let hidden = model.forward_batch(&batch).unwrap();
            model
                .llm
                .logits(&hidden)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
        };
        let cpu = logits(&Device::Cpu, DType::F32);
        let gpu = logits(&gpu, DType::BF16);
        let relative = max_abs_diff(&cpu, &gpu) / common::max_abs(&cpu);
        eprintln!("{name}: bf16 GPU vs f32 CPU max relative error {relative:.2e}");
        assert!(relative < 1e-2, "{name}: relative error {relative}");
    }
}

/// A llava-hf checkpoint's chat template, through `mt caption`, gives the prompt
/// transformers' LlavaProcessor gives (tests/interop/llava_hf_logits.py prompt): the
/// same number of input ids, image tokens expanded (the template's text itself is
/// checked against transformers in `engine::chat_template`).
#[test]
fn a_chat_template_prompt_has_the_processors_tokens() {
    let Some(py) = family_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model_dir = copy_checkpoint("tiny-llava-hf", &dir.path().join("model"));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("testdata/templates/chat_templates.json")).unwrap(),
    )
    .unwrap();
    let template = serde_json::json!({ "chat_template": golden["templates"]["llava-1.5"] });
    std::fs::write(model_dir.join("chat_template.json"), template.to_string()).unwrap();
    let image = images_dir().join(IMAGES[0]);
    let question = QUESTIONS[1];
    let theirs: serde_json::Value = serde_json::from_str(
        llava_hf_logits(
            &py,
            &[
                "prompt".as_ref(),
                model_dir.as_os_str(),
                image.as_os_str(),
                question.as_ref(),
            ],
        )
        .trim(),
    )
    .unwrap();
    let ours = first_caption(&image, &model_dir, question, 2);
    assert_eq!(
        ours["prompt_tokens"].as_u64().unwrap() as usize,
        theirs["ids"].as_array().unwrap().len(),
        "transformers' prompt: {}",
        theirs["prompt"]
    );
}

/// `mt caption IMAGE --model MODEL --prompt QUESTION` (greedy, `new_tokens` at most): its
/// output line.
fn first_caption(
    image: &Path,
    model: &Path,
    question: &str,
    new_tokens: usize,
) -> serde_json::Value {
    let new_tokens = new_tokens.to_string();
    let r = crate::common::mt(&[
        "caption",
        image.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        question,
        "--max-new-tokens",
        &new_tokens,
        "--no-run-dir",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap()
}

/// transformers' greedy generation for `prompt` about `image` (at most `new_tokens`):
/// tests/interop/llava_hf_logits.py generate's JSON (`ids`, `new`, `text`).
pub(crate) fn transformers_generate(
    py: &Path,
    model: &Path,
    image: &Path,
    prompt: &str,
    new_tokens: usize,
) -> serde_json::Value {
    let new_tokens = new_tokens.to_string();
    let out = llava_hf_logits(
        py,
        &[
            "generate".as_ref(),
            model.as_os_str(),
            image.as_os_str(),
            prompt.as_ref(),
            new_tokens.as_ref(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// LLaVA-1.5's setup end to end: a llava-hf Llama checkpoint with a Llama-2 style tokenizer
/// that adds BOS itself (testdata/train/tokenizers/llama2, `▁` only at the start of a
/// text) gets the llava_v1 template by default; `mt caption` tokenises the prompt as
/// transformers' LlavaProcessor does (one BOS, nothing inserted after `<image>`) and
/// writes transformers' greedy caption.
#[test]
fn a_llava_1_5_checkpoint_captions_as_transformers_generates() {
    let Some(py) = family_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("llava-1.5");
    llava_hf_logits(
        &py,
        &[
            "vicuna".as_ref(),
            models_dir().join("tiny-llava-hf").as_os_str(),
            root().join("testdata/train/tokenizers/llama2").as_os_str(),
            model_dir.as_os_str(),
        ],
    );
    let prompt = crate::common::golden_prompt("llava_v1", "question");
    let image = root().join("testdata/images/phantom.png");
    let theirs = transformers_generate(&py, &model_dir, &image, &prompt, 8);
    let ids = theirs["ids"].as_array().unwrap();
    assert_eq!(
        (ids[0].as_u64(), ids[1].as_u64() == Some(1)),
        (Some(1), false)
    );
    let ours = first_caption(&image, &model_dir, "What modality is this image?", 8);
    assert_eq!(ours["prompt_tokens"].as_u64().unwrap() as usize, ids.len());
    assert_eq!(
        ours["caption"], theirs["text"],
        "transformers' ids {}",
        theirs["new"]
    );
}

/// LLaVA-Med v1.5's and LLaVA-pp's original layouts (`llava_mistral`, `llava_phi`: the
/// text config at the top level, `model.*` tensors, the CLIP tower in its own folder)
/// hold the same weights as their llava-hf twins (written from them by
/// tests/interop/llava_hf_logits.py original), and give the same logits and greedy tokens
/// (the llava-hf ones are checked against transformers above); a fine-tune of each is
/// exported in the original layout and captions.
#[test]
fn original_layout_mistral_and_phi3_match_their_llava_hf_twins() {
    let Some(py) = family_python() else {
        return;
    };
    for (family, window) in [("mistral", 8), ("phi3", 40)] {
        let (dir, hf) = random_family(&py, family, window);
        let original = dir.path().join("original");
        llava_hf_logits(
            &py,
            &["original".as_ref(), hf.as_os_str(), original.as_os_str()],
        );
        let (a, b) = (fixture_at(&hf), fixture_at(&original));
        assert_eq!((a.layout, b.layout), (Layout::Hf, Layout::Original));
        assert_eq!(a.model.cfg.text.family, b.model.cfg.text.family);
        let logits = |f: &Fixture| {
            let row = f.row(IMAGES[1], QUESTIONS[1]);
            let batch = f.model.left_pad(std::slice::from_ref(&row)).unwrap();
            let hidden = f.model.forward_batch(&batch).unwrap().i(0).unwrap();
            (
                f.model.llm.logits(&hidden).unwrap(),
                greedy(&f.model, &[row], 8),
            )
        };
        let ((la, ga), (lb, gb)) = (logits(&a), logits(&b));
        let diff = max_abs_diff(&la, &lb);
        assert!(
            diff < 1e-5,
            "{family}: the layouts' logits differ by {diff}"
        );
        assert_eq!(ga, gb, "{family}: greedy tokens");

        // A fine-tune of the original layout is exported in it (Phi-3's projections
        // fused again) and loads again.
        let run = dir.path().join("run");
        let r = crate::common::finetune_one(dir.path(), &original, &run);
        assert_eq!(r.code, 0, "{family}: {}", r.stderr);
        let export = run.join("model");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
                .unwrap();
        let want =
            ["LlavaMistralForCausalLM", "LlavaPhiForCausalLM"][usize::from(family == "phi3")];
        assert_eq!(config["architectures"][0], want);
        let image = images_dir().join(IMAGES[1]);
        let r = crate::common::mt(&[
            "caption",
            image.to_str().unwrap(),
            "--model",
            export.to_str().unwrap(),
            "--conv-mode",
            "llama3",
            "--max-new-tokens",
            "2",
            "--no-run-dir",
        ]);
        assert_eq!(r.code, 0, "{family}: {}", r.stderr);
    }
}
