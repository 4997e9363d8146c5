"""Logits and greedy tokens of a llava-hf checkpoint from transformers, for mt's
`model::llama3_rope_scaling_matches_transformers`: the checkpoint (whose text config sets
RoPE scaling) reads `input_ids` and `pixel_values` from an input safetensors file, and its
logits at every position plus 16 greedy tokens (argmax, no EOS stop) are written out.

    python rope_logits.py CHECKPOINT_DIR INPUTS.safetensors OUT.safetensors
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration

model_dir, inputs, out = sys.argv[1:4]
torch.manual_seed(0)
model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
t = load_file(inputs)
ids, pixels = t["input_ids"], t["pixel_values"]
with torch.no_grad():
    logits = model(input_ids=ids, pixel_values=pixels).logits[0]
    greedy = []
    for _ in range(16):
        step = model(input_ids=ids, pixel_values=pixels).logits[0, -1]
        token = int(step.argmax())
        greedy.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
save_file({"logits": logits.contiguous(), "greedy": torch.tensor(greedy)}, out)
