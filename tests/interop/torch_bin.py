"""PyTorch `.bin` files between mt and torch. Run by tests/interop.rs:

    python torch_bin.py check BIN SAFETENSORS [BIN SAFETENSORS ...]
        torch.load(BIN, weights_only=True) (the safe loader, what LLaVA's
        load_pretrained_model and --pretrain_mm_mlp_adapter get from torch >= 2.6) must
        give a dict of exactly the tensors in SAFETENSORS; prints one JSON object per pair.

    python torch_bin.py write CHECKPOINT_SAFETENSORS PREFIX DTYPE SEED OUT_BIN OUT_SAFETENSORS
        a new random projector: for every `mm_projector` tensor of the checkpoint file, one
        of its shape named PREFIX + its name, in DTYPE (float32, bfloat16, float16),
        saved with torch.save as LLaVA saves mm_projector.bin (PREFIX "") and
        non_lora_trainables.bin (PREFIX "base_model.model."): a dict of CPU tensors. The
        same values as float32 go to OUT_SAFETENSORS, for the test to compare with what
        mt read.
"""

import json
import sys

import torch
from safetensors.torch import load_file, save_file


def check(pairs: list[str]) -> None:
    for bin_path, st_path in zip(pairs[::2], pairs[1::2]):
        loaded = torch.load(bin_path, weights_only=True, map_location="cpu")
        want = load_file(st_path)
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        same = sorted(set(tensors) & set(want))
        print(
            json.dumps(
                {
                    "bin": bin_path,
                    "container": type(loaded).__name__,
                    "entries": len(loaded),
                    "tensors": len(tensors),
                    "expected": len(want),
                    "same_names": len(same),
                    "dtypes": sorted({str(v.dtype) for v in tensors.values()}),
                    "same_dtypes": all(tensors[k].dtype == want[k].dtype for k in same),
                    "same_shapes": all(tensors[k].shape == want[k].shape for k in same),
                    "max_diff": max(
                        ((tensors[k].double() - want[k].double()).abs().max().item() for k in same),
                        default=None,
                    ),
                }
            )
        )


def write(source: str, prefix: str, dtype: str, seed: str, out_bin: str, out_st: str) -> None:
    gen = torch.Generator().manual_seed(int(seed))
    tensors = {
        prefix + name: (torch.randn(t.shape, generator=gen) * 0.5).to(getattr(torch, dtype))
        for name, t in sorted(load_file(source).items())
        if "mm_projector" in name
    }
    assert tensors, f"no mm_projector tensor in {source}"
    torch.save(tensors, out_bin)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, out_st, metadata={"format": "pt"})


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2:])
    else:
        write(*sys.argv[2:8])
