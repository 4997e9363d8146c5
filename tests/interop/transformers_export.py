"""transformers loads the language model of a `model/` folder that `mt train` / `mt
finetune` exported. Run by tests/it/interop.rs:

    python transformers_export.py MODEL_DIR CASE_JSON

MODEL_DIR is an original-layout LLaVA checkpoint (LlavaLlamaForCausalLM, whose config
class extends LlamaConfig and whose language model has LlamaForCausalLM's module paths).
It is loaded the way LLaVA's builder loads it, `from_pretrained` with the checkpoint's
own config, tokenizer with AutoTokenizer. CASE_JSON is one text-only case of
testdata/train/preprocess.json (`prompt`, `input_ids`, `labels`). Prints one JSON
object of measurements; tests/it/interop.rs holds the thresholds.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def main() -> None:
    model_dir, case_path = Path(sys.argv[1]), Path(sys.argv[2])
    case = json.loads(case_path.read_text())
    files = sorted(model_dir.glob("*.safetensors"))
    metadata = {}
    stored = {}
    for f in files:
        with safe_open(f, framework="pt") as st:
            metadata[f.name] = st.metadata()
        stored.update(load_file(f))

    config = LlamaConfig.from_pretrained(model_dir)
    model, info = LlamaForCausalLM.from_pretrained(
        model_dir, config=config, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    # Each parameter must hold the stored tensor of its name (nothing freshly
    # initialised, tied or transposed on the way in).
    params = model.state_dict()
    compared = [k for k in params if k in stored]
    worst = max((params[k].float() - stored[k].float()).abs().max().item() for k in compared)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(case["prompt"]).input_ids
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([case["input_ids"]]),
            labels=torch.tensor([case["labels"]]),
        )
    print(
        json.dumps(
            {
                "metadata": metadata,
                "missing_keys": sorted(info["missing_keys"]),
                "unexpected_keys": sorted(info["unexpected_keys"]),
                "mismatched_keys": [list(map(str, m)) for m in info.get("mismatched_keys", [])],
                "parameters": len(params),
                "compared": len(compared),
                "max_param_vs_file": worst,
                "tokenizer_matches": ids == case["input_ids"],
                "loss": out.loss.item(),
            }
        )
    )


if __name__ == "__main__":
    main()
