#!/usr/bin/env python3
"""Checks, by hand, that a LoRA adapter written by `mt finetune --lora-r ...` loads in
peft and means what `mt convert merge-lora` made of it. Not run by CI.

    mt finetune --model testdata/models/tiny-llava --data testdata/train/step/batch.jsonl \\
        --image-folder testdata/llava/images --cpu --lora-r 4 --lora-alpha 8 --max-steps 3 \\
        --batch-size 3 --grad-accum 1 --lr 1e-2 --run-dir /tmp/peftcheck/run
    mt convert merge-lora --model testdata/models/tiny-llava --adapter /tmp/peftcheck/run/adapter \\
        -o /tmp/peftcheck/merged
    /work/venv-torch/bin/python testdata/train/check_peft_adapter.py testdata/models/tiny-llava \\
        /tmp/peftcheck/run/adapter /tmp/peftcheck/merged

The language model of the original-layout checkpoint (`model.*`, `lm_head.*`) is loaded
into transformers' LlamaForCausalLM (the module paths LlavaLlamaForCausalLM has too),
the adapter with `PeftModel.from_pretrained` (which must find every adapter tensor and
leave none unused), then:
  1. peft's `merge_and_unload()` weights equal mt's merged checkpoint (max |diff|),
  2. logits of the adapted model (unmerged) equal those of mt's merged weights.
"""
import json
import sys
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM


def llama(base: Path, weights: dict) -> LlamaForCausalLM:
    cfg = json.loads((base / "config.json").read_text())
    keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta",
            "max_position_embeddings", "tie_word_embeddings", "attention_bias", "mlp_bias"]
    config = LlamaConfig(**{k: cfg[k] for k in keys if k in cfg})
    model = LlamaForCausalLM(config).eval()
    state = {k: v for k, v in weights.items() if k.startswith(("model.layers", "model.embed", "model.norm", "lm_head"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model


def checkpoint(dir: Path) -> dict:
    weights = {}
    for f in sorted(dir.glob("*.safetensors")):
        if f.name != "reference.safetensors":
            weights.update(load_file(f))
    return weights


def main() -> None:
    base, adapter, merged = (Path(a) for a in sys.argv[1:4])
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(llama(base, checkpoint(base)), adapter).eval()
    problems = [str(w.message) for w in caught if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()]
    assert not problems, problems
    loaded = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    stored = load_file(adapter / "adapter_model.safetensors")
    assert len(loaded) == len(stored), (len(loaded), len(stored))
    ids = torch.tensor([[320, 322, 82, 88, 283, 68, 76, 323, 198, 198, 32, 277, 71, 294]])
    with torch.no_grad():
        adapted = peft_model(ids).logits
        mt_merged = llama(base, checkpoint(merged))(ids).logits
        peft_merged = peft_model.merge_and_unload()
    mt = checkpoint(merged)
    worst = max((peft_merged.state_dict()[k] - mt[k]).abs().max().item() for k in peft_merged.state_dict()
                if k in mt)
    logits = (adapted - mt_merged).abs().max().item()
    print(f"adapter tensors loaded by peft: {len(loaded)} of {len(stored)}")
    print(f"max |peft merge_and_unload - mt merge-lora| over weights: {worst:.3g}")
    print(f"max |logits(peft adapter) - logits(mt merged)|: {logits:.3g}")
    assert worst < 1e-6 and logits < 1e-4


if __name__ == "__main__":
    main()
