"""PyTorch `.bin` files between mt and torch. Run by tests/it/interop.rs:

    python torch_bin.py check BIN SAFETENSORS [BIN SAFETENSORS ...]
        torch.load(BIN, weights_only=True) (the safe loader, what LLaVA's
        load_pretrained_model and --pretrain_mm_mlp_adapter get from torch >= 2.6) must
        give a dict of exactly the tensors in SAFETENSORS, which LLaVA's loading code
        puts into its projector; prints one JSON object per pair.

    python torch_bin.py write CHECKPOINT_SAFETENSORS PREFIX DTYPE LAYOUT SEED OUT_BIN OUT_SAFETENSORS
        a new random projector: for every `mm_projector` tensor of the checkpoint file, one
        of its shape named PREFIX + its name, in DTYPE (float32, bfloat16, float16),
        saved with torch.save as LLaVA saves mm_projector.bin (PREFIX "") and
        non_lora_trainables.bin (PREFIX "base_model.model."): a dict of CPU tensors,
        each with its own storage (LAYOUT "separate"), or all views of one storage at
        offsets, the matrices transposed (LAYOUT "views": what torch.save writes for
        slices of a flat buffer). The same values as float32 go to OUT_SAFETENSORS, for
        the test to compare with what mt read.
"""

import json
import sys

import torch
from safetensors.torch import load_file, save_file


def llava_projector(state: dict) -> tuple[list[str], bool]:
    """What LLaVA does with such a file: `load_pretrained_model`'s key clean-up of
    non_lora_trainables.bin (a no-op on mm_projector.bin), then
    `initialize_vision_modules`' `get_w(weights, "mm_projector")` into the mlp2x_gelu
    projector with a strict `load_state_dict`. Returns the cleaned names and whether
    the strict load took every tensor."""
    state = {(k[11:] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[6:] if k.startswith("model.") else k): v for k, v in state.items()}
    get_w = {k.split("mm_projector.")[1]: v for k, v in state.items() if "mm_projector" in k}
    first, second = get_w["0.weight"], get_w["2.weight"]
    projector = torch.nn.Sequential(
        torch.nn.Linear(first.shape[1], first.shape[0]),
        torch.nn.GELU(),
        torch.nn.Linear(second.shape[1], second.shape[0]),
    ).to(first.dtype)
    result = projector.load_state_dict(get_w, strict=True)
    loaded = not result.missing_keys and not result.unexpected_keys
    loaded = loaded and all(torch.equal(projector.state_dict()[k], v) for k, v in get_w.items())
    return sorted(state), loaded


def check(pairs: list[str]) -> None:
    for bin_path, st_path in zip(pairs[::2], pairs[1::2]):
        loaded = torch.load(bin_path, weights_only=True, map_location="cpu")
        want = load_file(st_path)
        llava_names, llava_loaded = llava_projector(dict(loaded))
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
                    "llava_names": llava_names,
                    "llava_projector_loaded": llava_loaded,
                    "max_diff": max(
                        ((tensors[k].double() - want[k].double()).abs().max().item() for k in same),
                        default=None,
                    ),
                }
            )
        )


def write(
    source: str, prefix: str, dtype: str, layout: str, seed: str, out_bin: str, out_st: str
) -> None:
    shapes = {k: t.shape for k, t in sorted(load_file(source).items()) if "mm_projector" in k}
    assert shapes, f"no mm_projector tensor in {source}"
    gen = torch.Generator().manual_seed(int(seed))
    total = sum(s.numel() for s in shapes.values()) + 7
    flat = (torch.randn(total, generator=gen) * 0.5).to(getattr(torch, dtype))
    tensors, offset = {}, 7
    for name, shape in shapes.items():
        view = flat[offset : offset + shape.numel()]
        offset += shape.numel()
        if layout == "views" and len(shape) == 2:
            view = view.view(shape[1], shape[0]).t()
            assert not view.is_contiguous()
        else:
            view = view.view(shape)
        tensors[prefix + name] = view if layout == "views" else view.clone()
    torch.save(tensors, out_bin)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, out_st, metadata={"format": "pt"})


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2:])
    else:
        write(*sys.argv[2:9])
