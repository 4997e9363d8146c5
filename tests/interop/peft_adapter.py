"""peft loads a LoRA adapter written by `mt finetune --lora-r ...`, and merges it into
what `mt convert merge-lora` made of it. Run by tests/it/interop.rs:

    python peft_adapter.py BASE ADAPTER MERGED [RESAVED]

BASE is the original-layout LLaVA checkpoint the adapter was trained on; its language
model (`model.*`, `lm_head.*`: the module paths LlavaLlamaForCausalLM has too) is loaded
into transformers' LlamaForCausalLM and the adapter on top with
`PeftModel.from_pretrained`. With RESAVED, peft saves the loaded adapter there as
`adapter_model.bin` (`save_pretrained(safe_serialization=False)`, torch.save, as older
peft versions did by default), for mt to read back. Prints one JSON object of
measurements; tests/it/interop.rs holds the thresholds.
"""

import json
import sys
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM


def language_model(checkpoint: Path) -> LlamaForCausalLM:
    """The checkpoint's language model, every weight from its safetensors files."""
    config = LlamaConfig.from_pretrained(checkpoint)
    model, info = LlamaForCausalLM.from_pretrained(
        checkpoint, config=config, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"], info["missing_keys"]
    return model.eval()


def weights(checkpoint: Path) -> dict:
    out = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        if f.name != "reference.safetensors":
            out.update(load_file(f))
    return out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def main() -> None:
    base, adapter, merged = (Path(a) for a in sys.argv[1:4])
    ids = torch.tensor([[320, 322, 82, 88, 283, 68, 76, 323, 198, 198, 32, 277, 71, 294]])
    with torch.no_grad():
        base_logits = language_model(base)(ids).logits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(language_model(base), adapter).eval()
    complaints = [
        str(w.message)
        for w in caught
        if any(s in str(w.message).lower() for s in ("missing", "unexpected", "not found"))
    ]

    # Every stored tensor must have landed in a LoRA parameter, and every LoRA
    # parameter must hold a stored tensor (else it kept peft's own initialisation).
    stored = load_file(adapter / "adapter_model.safetensors")
    loaded = {
        n.replace(".default.", "."): p.detach()
        for n, p in model.named_parameters()
        if ".lora_" in n
    }
    unused = sorted(set(stored) - set(loaded))
    not_in_file = sorted(set(loaded) - set(stored))
    common = sorted(set(stored) & set(loaded))
    loaded_vs_file = max((max_diff(loaded[k], stored[k]) for k in common), default=float("inf"))

    if len(sys.argv) > 4:
        model.save_pretrained(sys.argv[4], safe_serialization=False)
    with torch.no_grad():
        adapted_logits = model(ids).logits
        mt_merged = weights(merged)
        mt_logits = language_model(merged)(ids).logits
        peft_merged = model.merge_and_unload().state_dict()
    compared = [k for k in peft_merged if k in mt_merged]
    merge_diff = max(max_diff(peft_merged[k], mt_merged[k]) for k in compared)
    print(
        json.dumps(
            {
                "stored": len(stored),
                "lora_parameters": len(loaded),
                "unused_in_file": unused,
                "missing_from_file": not_in_file,
                "warnings": complaints,
                "max_loaded_vs_file": loaded_vs_file,
                "merged_weights_compared": len(compared),
                "lm_weights": len(peft_merged),
                "max_merge_diff": merge_diff,
                "max_logits_diff": max_diff(adapted_logits, mt_logits),
                "adapter_effect": max_diff(adapted_logits, base_logits),
            }
        )
    )


if __name__ == "__main__":
    main()
