//! GGUF export of the language model, as llama.cpp's `convert_hf_to_gguf.py` writes a
//! `LlamaForCausalLM` (architecture `llama`): its hyper-parameters, its tokenizer
//! (byte-level BPE as `gpt2` with the `llama-bpe` pre-tokenizer, the Llama 3 family's)
//! and chat template, and its tensors under llama.cpp's names. The query and key rows of
//! each head go from transformers' rotate-half order to GGML's interleaved pairs, as that
//! script permutes them. Matrices are written in the model's quantized format when it
//! was loaded with `--quantize`, else in f32 or f16; norms in f32.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;

use crate::core::model::arch::linear::Matrix;
use crate::core::model::arch::llama::Llama;
use crate::core::model::load::config::{RopeScaling, TextFamily};
use crate::core::model::load::gguf::{CONTROL, NORMAL, Order, UNUSED, USER_DEFINED, reorder_heads};
use crate::core::model::quant::copy_to;

/// Writes `llm` (of the checkpoint folder `dir`, named `name`) to `out` as a llama.cpp
/// text-model GGUF; dense matrices in `dense` (f32 or f16). Returns the tensors written.
pub(crate) fn write_text_model(
    llm: &Llama,
    dir: &Path,
    name: &str,
    dense: GgmlDType,
    out: &Path,
) -> Result<usize> {
    let cfg = &llm.cfg;
    if cfg.family != TextFamily::Llama || cfg.attention_bias || cfg.mlp_bias {
        bail!(
            "mt convert gguf writes Llama language models (architecture `llama`); this one is {:?}{}",
            cfg.family,
            if cfg.attention_bias || cfg.mlp_bias {
                " with biases"
            } else {
                ""
            }
        );
    }
    let tokenizer = tokenizer(dir, cfg.vocab_size, &cfg.eos_token_ids)?;
    let tensors = tensors(llm, dense)?;
    let mut meta = hyper_parameters(llm, name, file_type(&tensors))?;
    meta.extend(tokenizer);
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    let part = out.with_extension("gguf.part");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&part)
            .with_context(|| format!("cannot create {}", part.display()))?,
    );
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)
        .with_context(|| format!("cannot write {}", part.display()))?;
    std::io::Write::flush(&mut file)?;
    drop(file);
    std::fs::rename(&part, out)?;
    Ok(tensors.len())
}

/// llama.cpp's `general.file_type` (`llama_ftype`) of the tensors' main format.
fn file_type(tensors: &[(String, Stored)]) -> u32 {
    let main = tensors
        .iter()
        .find(|(n, _)| n.ends_with("ffn_up.weight"))
        .map(|(_, t)| t.get().dtype());
    match main {
        Some(GgmlDType::F16) => 1,
        Some(GgmlDType::Q8_0) => 7,
        Some(GgmlDType::Q4K) => 14,
        Some(GgmlDType::Q6K) => 18,
        _ => 0,
    }
}

/// The `general.*` and `llama.*` keys.
fn hyper_parameters(llm: &Llama, name: &str, file_type: u32) -> Result<Vec<(String, Value)>> {
    let cfg = &llm.cfg;
    let u32_of = |v: usize| Value::U32(v as u32);
    let mut meta = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(file_type)),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "llama.context_length".into(),
            u32_of(cfg.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u32_of(cfg.hidden_size)),
        ("llama.block_count".into(), u32_of(cfg.num_hidden_layers)),
        (
            "llama.feed_forward_length".into(),
            u32_of(cfg.intermediate_size),
        ),
        (
            "llama.attention.head_count".into(),
            u32_of(cfg.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u32_of(cfg.num_key_value_heads),
        ),
        ("llama.attention.key_length".into(), u32_of(cfg.head_dim)),
        ("llama.attention.value_length".into(), u32_of(cfg.head_dim)),
        ("llama.rope.dimension_count".into(), u32_of(cfg.head_dim)),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.vocab_size".into(), u32_of(cfg.vocab_size)),
    ];
    match cfg.rope_scaling {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => {
            meta.push((
                "llama.rope.scaling.type".into(),
                Value::String("linear".into()),
            ));
            meta.push((
                "llama.rope.scaling.factor".into(),
                Value::F32(factor as f32),
            ));
        }
        other => bail!("mt convert gguf does not write {other:?} rope scaling yet"),
    }
    Ok(meta)
}

/// The tensors under llama.cpp's names, in its order.
fn tensors(llm: &Llama, dense: GgmlDType) -> Result<Vec<(String, Stored<'_>)>> {
    let cfg = &llm.cfg;
    let mut out = vec![(
        "token_embd.weight".to_string(),
        matrix(&llm.embed, dense, None)?,
    )];
    let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    for (i, block) in llm.layers.iter().enumerate() {
        let p = format!("blk.{i}");
        let linears = [
            ("attn_q", &block.attn.q, Some(heads)),
            ("attn_k", &block.attn.k, Some(kv_heads)),
            ("attn_v", &block.attn.v, None),
            ("attn_output", &block.attn.o, None),
            ("ffn_gate", &block.mlp.gate, None),
            ("ffn_up", &block.mlp.up, None),
            ("ffn_down", &block.mlp.down, None),
        ];
        out.push((
            format!("{p}.attn_norm.weight"),
            norm(&block.input_norm.weight)?,
        ));
        for (name, linear, permute) in linears {
            out.push((
                format!("{p}.{name}.weight"),
                matrix(&linear.weight, dense, permute)?,
            ));
        }
        out.push((
            format!("{p}.ffn_norm.weight"),
            norm(&block.post_norm.weight)?,
        ));
    }
    out.push(("output_norm.weight".to_string(), norm(&llm.norm.weight)?));
    if !llm.tied_head {
        out.push((
            "output.weight".to_string(),
            matrix(&llm.lm_head.weight, dense, None)?,
        ));
    }
    Ok(out)
}

/// A norm's weight in f32.
fn norm(weight: &Tensor) -> Result<Stored<'static>> {
    let w = weight.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    Ok(Stored::Owned(Box::new(QTensor::quantize(
        &w,
        GgmlDType::F32,
    )?)))
}

/// A tensor to write: the model's own (a quantized matrix on the CPU, as it is) or a
/// converted copy.
enum Stored<'a> {
    Borrowed(&'a QTensor),
    Owned(Box<QTensor>),
}

impl Stored<'_> {
    fn get(&self) -> &QTensor {
        match self {
            Self::Borrowed(q) => q,
            Self::Owned(q) => q,
        }
    }
}

/// A matrix as stored in the file: its quantized blocks, or the dense weight in `dense`;
/// with `heads`, each head's rows in GGML's interleaved order.
fn matrix(m: &Matrix, dense: GgmlDType, heads: Option<usize>) -> Result<Stored<'_>> {
    let q = match m {
        Matrix::Quantized(q) if q.device().is_cpu() => Stored::Borrowed(q.qtensor()),
        Matrix::Quantized(q) => Stored::Owned(Box::new(copy_to(q.qtensor(), &Device::Cpu)?)),
        Matrix::Dense(w) => {
            let w = w
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .contiguous()?;
            Stored::Owned(Box::new(QTensor::quantize(&w, dense)?))
        }
    };
    Ok(match heads {
        Some(heads) => Stored::Owned(Box::new(reorder_heads(q.get(), heads, Order::ToGgml)?)),
        None => q,
    })
}

/// The `tokenizer.*` keys of a byte-level BPE `tokenizer.json` (and the chat template
/// of `tokenizer_config.json`), `vocab` tokens long (ids past the tokenizer's are
/// `[PADn]`, unused).
fn tokenizer(dir: &Path, vocab: usize, eos: &[u32]) -> Result<Vec<(String, Value)>> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: Json =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let model = &json["model"];
    if model["type"] != "BPE" || !text.contains("\"ByteLevel\"") {
        bail!(
            "{}: mt convert gguf writes byte-level BPE tokenizers (Llama 3's); this one is {}",
            path.display(),
            model["type"]
        );
    }
    let mut tokens = vec![None; vocab];
    let mut types = vec![UNUSED; vocab];
    let mut put = |id: u64, token: &str, kind: i32| {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(token.to_string());
            types[id as usize] = kind;
        }
    };
    for (token, id) in model["vocab"].as_object().into_iter().flatten() {
        put(id.as_u64().unwrap_or(u64::MAX), token, NORMAL);
    }
    let mut ids: HashMap<String, u32> = HashMap::new();
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let kind = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        put(id, content, kind);
        ids.insert(content.to_string(), id as u32);
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let config: Json = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let named = |key: &str| {
        let token = &config[key];
        token
            .as_str()
            .or(token["content"].as_str())
            .and_then(|t| ids.get(t).copied())
    };
    let mut meta = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String("llama-bpe".into()),
        ),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    if let Some(bos) = named("bos_token") {
        meta.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)));
        meta.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
    }
    if let Some(&eos) = eos.first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
    }
    if let Some(pad) = named("pad_token") {
        meta.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(pad)));
    }
    if let Some(template) = config["chat_template"].as_str() {
        meta.push((
            "tokenizer.chat_template".into(),
            Value::String(template.into()),
        ));
    }
    Ok(meta)
}
