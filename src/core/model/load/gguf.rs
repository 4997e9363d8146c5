//! llama.cpp's LLaVA files as a checkpoint: a text-model GGUF (architecture `llama`) and
//! its `mmproj` GGUF (architecture `clip`, a LLaVA projector), as `llama-mtmd-cli -m
//! TEXT --mmproj MMPROJ` takes them. Their metadata becomes a small checkpoint folder
//! (`config.json`, `tokenizer.json`, `tokenizer_config.json`, and the tower's `config.json`
//! and `preprocessor_config.json`) in mt's cache, so the config, tokenizer and image
//! preprocessing load as for any checkpoint; the tensors are read from the GGUF files
//! themselves, quantized ones kept quantized. Query and key rows go back from GGML's
//! interleaved pairs to transformers' rotate-half order.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QStorage, QTensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::Digest as _;

/// The file in a materialised folder that names its GGUF files.
const SOURCES: &str = "gguf.json";

/// The GGUF files a materialised checkpoint folder stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sources {
    /// The text model.
    pub model: PathBuf,
    /// The vision tower and projector.
    pub mmproj: PathBuf,
}

impl Sources {
    /// The sources of `dir` when it is a materialised GGUF checkpoint.
    pub(crate) fn of(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SOURCES);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?,
        ))
    }
}

/// Whether `path` is a GGUF file (by its magic bytes).
pub(crate) fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

/// Reads a GGUF file's header (metadata and tensor directory).
pub(crate) fn read_header(path: &Path) -> Result<Content> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The reader trusts the header's counts; a panic on hostile bytes is its error.
    let reader = format!("{}: the GGUF reader", path.display());
    crate::core::error::contain_panic(&reader, || Ok(Content::read(&mut file)?))
        .with_context(|| format!("{}: not a readable GGUF file", path.display()))
}

/// Describes `model` and `mmproj` as a checkpoint folder under `cache` (one folder per
/// pair of files, rewritten when they change) and returns it.
pub(crate) fn materialize(model: &Path, mmproj: &Path, cache: &Path) -> Result<PathBuf> {
    let model = model
        .canonicalize()
        .with_context(|| format!("{}", model.display()))?;
    let mmproj = mmproj
        .canonicalize()
        .with_context(|| format!("{}", mmproj.display()))?;
    let text = read_header(&model)?;
    let vision = read_header(&mmproj)?;
    let identity = format!(
        "{}\n{}\n{:?}\n{:?}",
        model.display(),
        mmproj.display(),
        std::fs::metadata(&model)?.modified().ok(),
        std::fs::metadata(&mmproj)?.modified().ok()
    );
    let key = crate::core::hash::hex(&sha2::Sha256::digest(identity.as_bytes()));
    let stem = model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let dir = cache.join(format!("{stem}-{}", &key[..12]));
    let tower = dir.join("tower");
    std::fs::create_dir_all(&tower)
        .with_context(|| format!("cannot create {}", tower.display()))?;
    let arch = get(&text, &model, "general.architecture")?
        .to_string()?
        .clone();
    if arch != "llama" {
        bail!(
            "{}: a `{arch}` model; mt reads `llama` GGUF files",
            model.display()
        );
    }
    let t = |key: &str| get(&text, &model, &format!("llama.{key}"));
    let v = |key: &str| get(&vision, &mmproj, &format!("clip.{key}"));
    if v("projector_type")
        .and_then(|p| Ok(p.to_string()?.clone()))
        .unwrap_or_else(|_| "mlp".into())
        != "mlp"
    {
        bail!("{}: mt reads LLaVA (`mlp`) projectors", mmproj.display());
    }
    if vision.metadata.contains_key("clip.vision.feature_layer") {
        bail!(
            "{}: features from chosen layers (`clip.vision.feature_layer`) are not read yet; \
             mt reads LLaVA's legacy mmproj (the tower without its last layer)",
            mmproj.display()
        );
    }
    let tokens = get(&text, &model, "tokenizer.ggml.tokens")?.to_vec()?;
    let vocab = match text.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims()[0],
        None => tokens.len(),
    };
    let heads = t("attention.head_count")?.to_u32()? as usize;
    let hidden = t("embedding_length")?.to_u32()? as usize;
    let optional_u32 = |key: &str| text.metadata.get(key).and_then(|v| v.to_u32().ok());
    let eos = optional_u32("tokenizer.ggml.eos_token_id");
    let bos = optional_u32("tokenizer.ggml.bos_token_id");
    let vision_hidden = v("vision.embedding_length")?.to_u32()? as usize;
    let projector = match vision.tensor_infos.contains_key("mm.2.weight") {
        true => "mlp2x_gelu",
        false => "linear",
    };
    let mut config = json!({
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "hidden_size": hidden,
        "intermediate_size": t("feed_forward_length")?.to_u32()?,
        "num_hidden_layers": t("block_count")?.to_u32()?,
        "num_attention_heads": heads,
        "num_key_value_heads": t("attention.head_count_kv").and_then(|v| Ok(v.to_u32()?)).unwrap_or(heads as u32),
        "head_dim": t("attention.key_length").and_then(|v| Ok(v.to_u32()? as usize)).unwrap_or(hidden / heads),
        "rms_norm_eps": t("attention.layer_norm_rms_epsilon")?.to_f32()?,
        "rope_theta": t("rope.freq_base").and_then(|v| Ok(v.to_f32()?)).unwrap_or(10000.0),
        "rope_scaling": null,
        "max_position_embeddings": t("context_length")?.to_u32()?,
        "vocab_size": vocab,
        "tie_word_embeddings": !text.tensor_infos.contains_key("output.weight"),
        "attention_bias": false,
        "mlp_bias": false,
        "hidden_act": "silu",
        "mm_hidden_size": vision_hidden,
        "mm_projector_type": projector,
        "mm_vision_select_layer": -1,
        "mm_vision_select_feature": "patch",
        "mm_vision_tower": tower,
        "mm_patch_merge_type": "flat",
        "mm_use_im_start_end": false,
        "mm_use_im_patch_token": false,
        "image_aspect_ratio": "pad",
        "use_mm_proj": true,
    });
    if let Some(eos) = eos {
        config["eos_token_id"] = eos.into();
    }
    if let Some(bos) = bos {
        config["bos_token_id"] = bos.into();
    }
    if let Ok(scaling) = t("rope.scaling.type") {
        match scaling.to_string()?.as_str() {
            "none" => {}
            "linear" => {
                let factor = t("rope.scaling.factor")?.to_f32()?;
                config["rope_scaling"] = json!({"type": "linear", "factor": factor});
            }
            other => bail!(
                "{}: `{other}` rope scaling is not read yet",
                model.display()
            ),
        }
    }
    let size = v("vision.image_size")?.to_u32()?;
    let tower_config = json!({
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_size": vision_hidden,
        "intermediate_size": v("vision.feed_forward_length")?.to_u32()?,
        "num_hidden_layers": v("vision.block_count")?.to_u32()?,
        "num_attention_heads": v("vision.attention.head_count")?.to_u32()?,
        "image_size": size,
        "patch_size": v("vision.patch_size")?.to_u32()?,
        "layer_norm_eps": v("vision.attention.layer_norm_epsilon")?.to_f32()?,
        "hidden_act": if v("use_gelu").and_then(|g| Ok(g.to_bool()?)).unwrap_or(false) { "gelu" } else { "quick_gelu" },
        "num_channels": 3,
        "projection_dim": v("vision.projection_dim").and_then(|p| Ok(p.to_u32()?)).unwrap_or(vision_hidden as u32),
    });
    let floats = |key: &str| -> Result<Vec<f32>> {
        v(key)?.to_vec()?.iter().map(|x| Ok(x.to_f32()?)).collect()
    };
    let preprocessor = json!({
        "image_mean": floats("vision.image_mean")?,
        "image_std": floats("vision.image_std")?,
        "crop_size": {"height": size, "width": size},
        "size": {"shortest_edge": size},
    });
    let (tokenizer, tokenizer_config) = tokenizer(&text, &model, tokens)?;
    let write = |path: PathBuf, value: &Json| -> Result<()> {
        crate::core::files::write_atomic(&path, format!("{value:#}\n").as_bytes())
    };
    write(dir.join("config.json"), &config)?;
    write(dir.join("tokenizer.json"), &tokenizer)?;
    write(dir.join("tokenizer_config.json"), &tokenizer_config)?;
    write(tower.join("config.json"), &tower_config)?;
    write(tower.join("preprocessor_config.json"), &preprocessor)?;
    write(
        dir.join(SOURCES),
        &serde_json::to_value(Sources { model, mmproj })?,
    )?;
    Ok(dir)
}

/// The metadata value `key` of the GGUF file `path`.
fn get<'a>(c: &'a Content, path: &Path, key: &str) -> Result<&'a Value> {
    c.metadata
        .get(key)
        .with_context(|| format!("{}: no `{key}` in its metadata", path.display()))
}

/// GGUF token types (llama.cpp's `llama_token_type`), read here and written by
/// [`crate::core::model::gguf`].
pub(crate) const NORMAL: i32 = 1;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const USER_DEFINED: i32 = 4;
pub(crate) const UNUSED: i32 = 5;

/// Llama 3's pre-tokenizer split (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A `tokenizer.json` (byte-level BPE) and `tokenizer_config.json` from the text model's
/// `tokenizer.ggml.*` keys.
fn tokenizer(text: &Content, path: &Path, tokens: &[Value]) -> Result<(Json, Json)> {
    let str_of = |key: &str| {
        text.metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let model = str_of("tokenizer.ggml.model").unwrap_or_default();
    let pre = str_of("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    if model != "gpt2" || !matches!(pre.as_str(), "llama-bpe" | "llama3" | "default") {
        bail!(
            "{}: a `{model}` tokenizer with the `{pre}` pre-tokenizer; mt reads byte-level BPE \
             (`gpt2`, Llama 3's `llama-bpe`)",
            path.display()
        );
    }
    let types: Vec<i32> = match text.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()?
            .iter()
            .map(|t| Ok(t.to_i32()?))
            .collect::<Result<_>>()?,
        None => vec![NORMAL; tokens.len()],
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let token = token.to_string()?;
        match types.get(id).copied().unwrap_or(NORMAL) {
            CONTROL | USER_DEFINED => added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false,
                "special": types[id] == CONTROL,
            })),
            UNUSED => {}
            _ => {
                vocab.insert(token.clone(), id.into());
            }
        }
    }
    let merges: Vec<Json> = match text.metadata.get("tokenizer.ggml.merges") {
        Some(m) => m
            .to_vec()?
            .iter()
            .map(|m| Ok(Json::String(m.to_string()?.clone())))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": true, "vocab": vocab, "merges": merges,
        },
    });
    let name = |key: &str| {
        let id = text.metadata.get(key)?.to_u32().ok()? as usize;
        Some(tokens.get(id)?.to_string().ok()?.clone())
    };
    let mut config = json!({"clean_up_tokenization_spaces": false});
    if let Some(bos) = name("tokenizer.ggml.bos_token_id") {
        config["bos_token"] = bos.into();
    }
    if let Some(eos) = name("tokenizer.ggml.eos_token_id") {
        config["eos_token"] = eos.into();
    }
    if let Some(template) = str_of("tokenizer.chat_template") {
        config["chat_template"] = template.into();
    }
    Ok((tokenizer, config))
}

/// How a stored GGUF tensor maps onto the model: its canonical name and, for query and
/// key matrices, the head count whose rows GGML interleaved.
pub(crate) struct Mapped {
    /// Canonical name.
    pub name: String,
    /// Heads to un-interleave.
    pub heads: Option<usize>,
}

/// The sizes [`canonical`] needs: query and key/value heads of the text model, the
/// vision tower's width.
#[derive(Clone, Copy, Default)]
pub(crate) struct Widths {
    pub heads: usize,
    pub kv_heads: usize,
    pub vision_hidden: usize,
}

impl Widths {
    /// The widths a file's metadata gives (zero where it has none).
    pub(crate) fn of(c: &Content) -> Self {
        let get = |k: &str| c.metadata.get(k).and_then(|v| v.to_u32().ok()).unwrap_or(0) as usize;
        let heads = get("llama.attention.head_count");
        Self {
            heads,
            kv_heads: match get("llama.attention.head_count_kv") {
                0 => heads,
                n => n,
            },
            vision_hidden: get("clip.vision.embedding_length"),
        }
    }
}

/// The canonical name of a GGUF tensor of shape `shape` (candle's order); `None` for
/// tensors mt does not use.
pub(crate) fn canonical(name: &str, shape: &[usize], w: Widths) -> Option<Mapped> {
    let (heads, kv_heads) = (w.heads, w.kv_heads);
    let plain = |n: String| {
        Some(Mapped {
            name: n,
            heads: None,
        })
    };
    match name {
        "token_embd.weight" => return plain("llm.embed_tokens.weight".into()),
        "output_norm.weight" => return plain("llm.norm.weight".into()),
        "output.weight" => return plain("llm.lm_head.weight".into()),
        "v.class_embd" => return plain("vision.embeddings.class_embedding".into()),
        "v.patch_embd.weight" => return plain("vision.embeddings.patch_embedding.weight".into()),
        "v.position_embd.weight" => {
            return plain("vision.embeddings.position_embedding.weight".into());
        }
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("mm.") {
        return plain(format!("projector.{rest}"));
    }
    for (from, to) in [
        ("v.pre_ln.", "vision.pre_layrnorm."),
        ("v.post_ln.", "vision.post_layernorm."),
    ] {
        if let Some(rest) = name.strip_prefix(from) {
            return plain(format!("{to}{rest}"));
        }
    }
    if let Some(rest) = name.strip_prefix("v.blk.") {
        let (layer, part) = rest.split_once('.')?;
        let (module, param) = part.rsplit_once('.')?;
        // fc1 is `(intermediate, hidden)` with an `intermediate` bias: the legacy LLaVA
        // script named it `ffn_down`, convert_hf_to_gguf.py `ffn_up`, so the shape decides.
        let wide_out = shape.first() != Some(&w.vision_hidden);
        let to = match module {
            "attn_q" => "self_attn.q_proj",
            "attn_k" => "self_attn.k_proj",
            "attn_v" => "self_attn.v_proj",
            "attn_out" | "attn_output" => "self_attn.out_proj",
            "ln1" => "layer_norm1",
            "ln2" => "layer_norm2",
            "ffn_up" | "ffn_down" if wide_out => "mlp.fc1",
            "ffn_up" | "ffn_down" => "mlp.fc2",
            _ => return None,
        };
        return plain(format!("vision.encoder.layers.{layer}.{to}.{param}"));
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, param) = part.rsplit_once('.')?;
    let (to, heads) = match module {
        "attn_norm" => ("input_layernorm", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        "attn_q" => ("self_attn.q_proj", Some(heads)),
        "attn_k" => ("self_attn.k_proj", Some(kv_heads)),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        _ => return None,
    };
    Some(Mapped {
        name: format!("llm.layers.{layer}.{to}.{param}"),
        heads,
    })
}

/// Which way [`reorder_heads`] moves rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// transformers' rotate-half halves -> GGML's interleaved pairs (writing GGUF).
    ToGgml,
    /// GGML's interleaved pairs -> rotate-half halves (reading GGUF).
    FromGgml,
}

/// The rows of `q` `(heads * d, cols)` reordered within each head: row `2i + j` of a
/// head in GGML's order is row `j * d/2 + i` in transformers' (llama.cpp's `permute`).
/// Rows are whole blocks, so quantized rows move as they are.
pub(crate) fn reorder_heads(q: &QTensor, heads: usize, order: Order) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let d = rows / heads.max(1);
    if heads == 0 || !rows.is_multiple_of(heads) || !d.is_multiple_of(2) {
        bail!("{rows} rows do not split into {heads} heads of an even size");
    }
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let halves = h * d + j * (d / 2) + i;
                let pairs = h * d + 2 * i + j;
                let (from, to) = match order {
                    Order::ToGgml => (halves, pairs),
                    Order::FromGgml => (pairs, halves),
                };
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&data[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    let storage = QStorage::from_data(out.into(), &Device::Cpu, q.dtype())?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Tensor};

    /// Reordering to GGML and back gives the rows back, for dense and quantized rows;
    /// GGML's order pairs a head's two halves row by row.
    #[test]
    fn head_rows_go_to_ggml_order_and_back() {
        let w = Tensor::arange(0f32, 8. * 32., &Device::Cpu)
            .unwrap()
            .reshape((8, 32))
            .unwrap();
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let ggml = reorder_heads(&q, 2, Order::ToGgml).unwrap();
            let back = reorder_heads(&ggml, 2, Order::FromGgml).unwrap();
            assert_eq!(back.data().unwrap(), q.data().unwrap());
            if dtype == GgmlDType::F32 {
                let rows = ggml.dequantize(&Device::Cpu).unwrap();
                let first: Vec<f32> = rows
                    .to_dtype(DType::F32)
                    .unwrap()
                    .narrow(1, 0, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                // Head 0 has rows 0..4 (halves 0,1 | 2,3) -> 0,2,1,3; head 1 likewise.
                assert_eq!(first, [0., 64., 32., 96., 128., 192., 160., 224.]);
            }
        }
        assert!(
            reorder_heads(
                &QTensor::quantize(&w, GgmlDType::F32).unwrap(),
                3,
                Order::ToGgml
            )
            .is_err()
        );
    }

    /// Writes a GGUF file of `meta` and no tensors.
    fn header_only(path: &Path, meta: &[(&str, Value)]) {
        let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let mut file = std::fs::File::create(path).unwrap();
        candle_core::quantized::gguf_file::write(&mut file, &refs, &[]).unwrap();
    }

    /// What mt does not read is refused before anything loads, the file named.
    #[test]
    fn unread_architectures_projectors_and_feature_layers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (text, mmproj) = (dir.path().join("t.gguf"), dir.path().join("m.gguf"));
        let string = |s: &str| Value::String(s.into());
        let refused = |text_arch: &str, projector: &str, feature_layer: bool| {
            header_only(&text, &[("general.architecture", string(text_arch))]);
            let mut meta = vec![
                ("general.architecture", string("clip")),
                ("clip.projector_type", string(projector)),
            ];
            if feature_layer {
                meta.push((
                    "clip.vision.feature_layer",
                    Value::Array(vec![Value::I32(-2)]),
                ));
            }
            header_only(&mmproj, &meta);
            format!(
                "{:#}",
                materialize(&text, &mmproj, &dir.path().join("cache")).unwrap_err()
            )
        };
        let e = refused("qwen2", "mlp", false);
        assert!(e.contains("t.gguf") && e.contains("`qwen2`"), "{e}");
        let e = refused("llama", "resampler", false);
        assert!(e.contains("m.gguf") && e.contains("`mlp`"), "{e}");
        let e = refused("llama", "mlp", true);
        assert!(e.contains("m.gguf") && e.contains("feature_layer"), "{e}");
        assert!(!is_gguf(&dir.path().join("missing.gguf")) && is_gguf(&text));
    }

    #[test]
    fn tensor_names_map_to_the_canonical_ones() {
        let widths = Widths {
            heads: 4,
            kv_heads: 2,
            vision_hidden: 32,
        };
        let name =
            |n: &str, shape: &[usize]| canonical(n, shape, widths).map(|m| (m.name, m.heads));
        assert_eq!(
            name("blk.3.attn_k.weight", &[32, 64]),
            Some(("llm.layers.3.self_attn.k_proj.weight".into(), Some(2)))
        );
        assert_eq!(
            name("blk.0.ffn_down.weight", &[64, 128]),
            Some(("llm.layers.0.mlp.down_proj.weight".into(), None))
        );
        assert_eq!(
            name("v.blk.1.ffn_down.weight", &[64, 32]),
            Some(("vision.encoder.layers.1.mlp.fc1.weight".into(), None))
        );
        assert_eq!(
            name("v.blk.1.ffn_up.weight", &[64, 32]),
            Some(("vision.encoder.layers.1.mlp.fc1.weight".into(), None))
        );
        assert_eq!(
            name("v.blk.1.ffn_up.weight", &[32, 64]),
            Some(("vision.encoder.layers.1.mlp.fc2.weight".into(), None))
        );
        assert_eq!(
            name("v.blk.1.ffn_down.bias", &[64]),
            Some(("vision.encoder.layers.1.mlp.fc1.bias".into(), None))
        );
        assert_eq!(
            name("v.blk.1.ffn_up.bias", &[32]),
            Some(("vision.encoder.layers.1.mlp.fc2.bias".into(), None))
        );
        assert_eq!(
            name("mm.2.bias", &[64]),
            Some(("projector.2.bias".into(), None))
        );
        assert_eq!(name("rope_freqs.weight", &[32]), None);
    }
}
