"""Writes llama.cpp's LLaVA pair for a tiny original-layout checkpoint, as llama.cpp's own
scripts write them, with llama.cpp's `gguf` package:

  gguf_llava.py CHECKPOINT_DIR CLIP_DIR OUT_DIR TYPE      (TYPE: f32, f16 or q8_0)

OUT_DIR/text.gguf: convert_hf_to_gguf.py's LlamaForCausalLM (query/key rows permuted,
gpt2 tokenizer with the llama-bpe pre-tokenizer, norms f32, matrices in TYPE).
OUT_DIR/mmproj.gguf: tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py's LLaVA
projector file (the CLIP tower without its last layer, as LLaVA reads the second-to-last
layer; fc1 named ffn_down and fc2 ffn_up as that script names them; f16 matrices).
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize
from safetensors.numpy import load_file


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load(d):
    out = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        if f.name != "reference.safetensors":
            out.update(load_file(f))
    for f in sorted(Path(d).glob("*.bin")):
        import torch

        out.update({k: v.float().numpy() for k, v in torch.load(f, weights_only=True).items()})
    return out


def add(w, name, data, kind):
    data = data.astype(np.float32)
    if data.ndim == 1 or kind == "f32":
        w.add_tensor(name, data)
    elif kind == "f16":
        w.add_tensor(name, data.astype(np.float16))
    else:
        q = quantize(data, GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)


def text(ckpt, out, kind):
    cfg = json.loads((ckpt / "config.json").read_text())
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    t = load(ckpt)
    w = GGUFWriter(str(out), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(cfg["vocab_size"])
    vocab = cfg["vocab_size"]
    tokens, types = [f"[PAD{i}]" for i in range(vocab)], [TokenType.UNUSED] * vocab
    for s, i in tok["model"]["vocab"].items():
        tokens[i], types[i] = s, TokenType.NORMAL
    for a in tok["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = TokenType.CONTROL if a["special"] else TokenType.USER_DEFINED
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    add(w, "token_embd.weight", t["model.embed_tokens.weight"], kind)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        add(w, f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"], kind)
        add(w, f"blk.{i}.attn_q.weight", permute(t[p + "self_attn.q_proj.weight"], cfg["num_attention_heads"]), kind)
        add(w, f"blk.{i}.attn_k.weight", permute(t[p + "self_attn.k_proj.weight"], cfg["num_key_value_heads"]), kind)
        add(w, f"blk.{i}.attn_v.weight", t[p + "self_attn.v_proj.weight"], kind)
        add(w, f"blk.{i}.attn_output.weight", t[p + "self_attn.o_proj.weight"], kind)
        add(w, f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"], kind)
        for g, h in [("ffn_gate", "gate_proj"), ("ffn_up", "up_proj"), ("ffn_down", "down_proj")]:
            add(w, f"blk.{i}.{g}.weight", t[p + f"mlp.{h}.weight"], kind)
    add(w, "output_norm.weight", t["model.norm.weight"], kind)
    add(w, "output.weight", t["lm_head.weight"], kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mmproj(ckpt, clip, out):
    v = json.loads((clip / "config.json").read_text())
    pre = json.loads((clip / "preprocessor_config.json").read_text())
    t = {k.removeprefix("vision_model."): x for k, x in load(clip).items()}
    proj = {k: x for k, x in load(ckpt).items() if "mm_projector" in k}
    w = GGUFWriter(str(out), "clip")
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", v["image_size"])
    w.add_uint32("clip.vision.patch_size", v["patch_size"])
    w.add_uint32("clip.vision.embedding_length", v["hidden_size"])
    w.add_uint32("clip.vision.feed_forward_length", v["intermediate_size"])
    w.add_uint32("clip.vision.projection_dim", v["projection_dim"])
    w.add_uint32("clip.vision.attention.head_count", v["num_attention_heads"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v["layer_norm_eps"])
    n = v["num_hidden_layers"] - 1  # LLaVA reads the second-to-last layer
    w.add_uint32("clip.vision.block_count", n)
    w.add_array("clip.vision.image_mean", pre["image_mean"])
    w.add_array("clip.vision.image_std", pre["image_std"])
    w.add_bool("clip.use_gelu", v["hidden_act"] == "gelu")
    f16 = lambda x: x.astype(np.float16) if x.ndim > 1 else x.astype(np.float32)
    w.add_tensor("v.class_embd", t["embeddings.class_embedding"].astype(np.float32))
    w.add_tensor("v.patch_embd.weight", f16(t["embeddings.patch_embedding.weight"]))
    w.add_tensor("v.position_embd.weight", f16(t["embeddings.position_embedding.weight"]))
    for s in ("weight", "bias"):
        w.add_tensor(f"v.pre_ln.{s}", t[f"pre_layrnorm.{s}"].astype(np.float32))
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.out_proj": "attn_out", "layer_norm1": "ln1", "layer_norm2": "ln2",
             "mlp.fc1": "ffn_down", "mlp.fc2": "ffn_up"}
    for i in range(n):
        for h, g in names.items():
            for s in ("weight", "bias"):
                w.add_tensor(f"v.blk.{i}.{g}.{s}", f16(t[f"encoder.layers.{i}.{h}.{s}"]))
    for i in (0, 2):
        for s in ("weight", "bias"):
            w.add_tensor(f"mm.{i}.{s}", f16(proj[f"model.mm_projector.{i}.{s}"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    ckpt, clip, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    out.mkdir(parents=True, exist_ok=True)
    text(ckpt, out / "text.gguf", kind)
    mmproj(ckpt, clip, out / "mmproj.gguf")
