"""Random-weight LLaVA-Med++ checkpoints in the original LLaVA layout, for `bench/gpu.sh`.

  gpu_model.py OUT_DIR [--size 8b|tiny] [--dtype bf16|f32]

writes OUT_DIR/clip (CLIP ViT, config + model.safetensors), OUT_DIR/llava (Llama + mlp2x_gelu
projector, sharded safetensors with an index, the tiny test tokenizer) and OUT_DIR/llava-s2
(the same Llama shards, linked, with an S2 projector: scales 336/672/1008, 3 x the CLIP width).
`8b` is the issue's benchmark architecture (CLIP ViT-L/14-336 + Llama-3-8B, vocab 128320 as
../shared/bench/hf_llava_baseline.py); `tiny` is the test suite's tiny config, for rehearsing
the script on a CPU. Tensor names and shapes come from transformers' own classes (built on the
meta device); values are N(0, 0.02), norms 1, biases 0, drawn on the GPU when there is one, so
the 16 GB checkpoint takes seconds to draw and the disk's time to write.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "testdata" / "models"
SHARD_BYTES = 4 << 30

SIZES = {
    "8b": dict(clip=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         projection_dim=768),
               llm=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128320, max_position_embeddings=8192)),
    "tiny": dict(clip={}, llm={}),  # the test suite's tiny-clip / tiny-llava as they are
}


def draw(shapes, device, dtype):
    """Yields (name, tensor on the CPU) in order: norms 1, biases 0, the rest N(0, 0.02)."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    for name, shape in shapes:
        if name.endswith("position_ids"):  # a buffer, not a weight
            continue
        if name.endswith("bias"):
            t = torch.zeros(shape, dtype=dtype, device=device)
        elif "norm" in name:
            t = torch.ones(shape, dtype=dtype, device=device)
        else:
            t = torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=g)
        yield name, t.cpu()


def save_sharded(tensors, out, prefix):
    """Writes `prefix-0000N.safetensors` files of at most SHARD_BYTES; returns {name: file}."""
    from safetensors.torch import save_file

    weight_map, shard, size, n = {}, {}, 0, 0

    def flush():
        nonlocal shard, size, n
        if shard:
            n += 1
            f = f"{prefix}-{n:05d}.safetensors"
            save_file(shard, str(out / f), metadata={"format": "pt"})
            weight_map.update({k: f for k in shard})
        shard, size = {}, 0

    for name, t in tensors:
        if size + t.numel() * t.element_size() > SHARD_BYTES:
            flush()
        shard[name] = t
        size += t.numel() * t.element_size()
    flush()
    return weight_map


def write_index(llava, weight_map):
    (llava / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def main():
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", choices=list(SIZES), default="8b")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(a.out)
    clip_dir, llava, s2 = out / "clip", out / "llava", out / "llava-s2"
    for d in (clip_dir, llava, s2):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    ccfg = json.loads((TINY / "tiny-clip" / "config.json").read_text())
    ccfg.update(SIZES[a.size]["clip"])
    (clip_dir / "config.json").write_text(json.dumps(ccfg, indent=2) + "\n")
    shutil.copy(TINY / "tiny-clip" / "preprocessor_config.json", clip_dir)
    with torch.device("meta"):
        vc = {k: v for k, v in ccfg.items() if k not in ("architectures", "transformers_version", "model_type")}
        clip = CLIPVisionModel(CLIPVisionConfig(**vc))
    shapes = [(k if k.startswith("vision_model.") else "vision_model." + k, tuple(v.shape))
              for k, v in clip.state_dict().items()]
    save_sharded(draw(shapes, device, dtype), clip_dir, "model")
    (clip_dir / "model-00001.safetensors").rename(clip_dir / "model.safetensors")

    cfg = json.loads((TINY / "tiny-llava" / "config.json").read_text())
    cfg.update(SIZES[a.size]["llm"], _name_or_path=f"bench-random-llava-{a.size}", mm_hidden_size=ccfg["hidden_size"],
               mm_vision_tower="../clip", torch_dtype="bfloat16" if a.dtype == "bf16" else "float32")
    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"], tie_word_embeddings=False))
    shapes = [(k, tuple(v.shape)) for k, v in llm.state_dict().items()]
    weight_map = save_sharded(draw(shapes, device, dtype), llava, "model")

    def projector(mm_hidden, d):
        h = cfg["hidden_size"]
        proj = [("model.mm_projector.0.weight", (h, mm_hidden)), ("model.mm_projector.0.bias", (h,)),
                ("model.mm_projector.2.weight", (h, h)), ("model.mm_projector.2.bias", (h,))]
        return save_sharded(draw(proj, device, dtype), d, "projector")

    write_index(llava, {**weight_map, **projector(ccfg["hidden_size"], llava)})
    for f in sorted(set(weight_map.values())):
        os.symlink(os.path.relpath(llava / f, s2), s2 / f)
    write_index(s2, {**weight_map, **projector(3 * ccfg["hidden_size"], s2)})
    for d, c in ((llava, cfg), (s2, {**cfg, "mm_hidden_size": 3 * ccfg["hidden_size"], "s2": True,
                                     "s2_scales": "336,672,1008"})):
        (d / "config.json").write_text(json.dumps(c, indent=2) + "\n")
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
            shutil.copy(TINY / "tiny-llava" / f, d)
    n = sum(v.numel() for v in llm.state_dict().values())
    print(json.dumps({"made": str(out), "size": a.size, "llm_params": n, "device": device, "dtype": a.dtype}))


if __name__ == "__main__":
    main()
