"""Reads a GGUF file mt wrote with llama.cpp's own `gguf` package and checks it against
the checkpoint it came from (original LLaVA layout, safetensors):

  gguf_check.py FILE.gguf CHECKPOINT_DIR TYPE

Every tensor llama.cpp's convert_hf_to_gguf.py would write is there under its name, with
its shape and type (norms F32, matrices TYPE); dequantized by gguf's own code, each equals
the checkpoint's tensor (query/key rows permuted as convert_hf_to_gguf.py permutes them)
exactly for f32, within the format's error otherwise; the metadata describes the model
and its tokenizer. Prints one JSON line of what it checked.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize
from safetensors.numpy import load_file


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(reader, key):
    return reader.fields[key].contents()


def main(path, ckpt, kind):
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    weights = {}
    for f in sorted(Path(ckpt).glob("*.safetensors")):
        if f.name != "reference.safetensors":
            weights.update(load_file(f))
    r = GGUFReader(path)
    assert field(r, "general.architecture") == "llama"
    n_layer = cfg["num_hidden_layers"]
    assert field(r, "llama.block_count") == n_layer
    assert field(r, "llama.embedding_length") == cfg["hidden_size"]
    assert field(r, "llama.feed_forward_length") == cfg["intermediate_size"]
    assert field(r, "llama.attention.head_count") == cfg["num_attention_heads"]
    assert field(r, "llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert abs(field(r, "llama.rope.freq_base") - cfg["rope_theta"]) < 1e-3 * cfg["rope_theta"]
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg["vocab_size"], len(tokens)
    tok = json.loads((Path(ckpt) / "tokenizer.json").read_text())
    for t, i in tok["model"]["vocab"].items():
        assert tokens[i] == t, (i, tokens[i], t)
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert len(field(r, "tokenizer.ggml.merges")) == len(tok["model"]["merges"])
    assert field(r, "tokenizer.ggml.eos_token_id") == cfg["eos_token_id"]

    want_type = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
                 "q8_0": GGMLQuantizationType.Q8_0, "q6k": GGMLQuantizationType.Q6_K,
                 "q4k": GGMLQuantizationType.Q4_K}[kind]
    # What llama.cpp writes for a q4k/q6k request on rows that are not whole 256-blocks.
    fallback = GGMLQuantizationType.Q8_0
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    parts = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(n_layer):
        for g, h in parts.items():
            names[f"blk.{i}.{g}.weight"] = f"model.layers.{i}.{h}.weight"
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == set(names), set(tensors) ^ set(names)
    worst = {}
    for name, hf in names.items():
        t = tensors[name]
        want = weights[hf].astype(np.float32)
        if name.endswith("attn_q.weight"):
            want = permute(want, cfg["num_attention_heads"])
        if name.endswith("attn_k.weight"):
            want = permute(want, cfg["num_key_value_heads"])
        got = dequantize(t.data, t.tensor_type).reshape(want.shape).astype(np.float32)
        if want.ndim == 1:
            assert t.tensor_type == GGMLQuantizationType.F32, (name, t.tensor_type)
            assert np.array_equal(got, want), name
            continue
        assert t.tensor_type in (want_type, fallback), (name, t.tensor_type)
        err = float(np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean()))
        worst[t.tensor_type.name] = max(worst.get(t.tensor_type.name, 0.0), err)
    bounds = {"F32": 0.0, "F16": 1e-3, "Q8_0": 0.01, "Q6_K": 0.03, "Q4_K": 0.12}
    for k, err in worst.items():
        assert err <= bounds[k], (k, err)
    print(json.dumps({"tensors": len(tensors), "relative_rms_error": worst}))


if __name__ == "__main__":
    main(*sys.argv[1:])
