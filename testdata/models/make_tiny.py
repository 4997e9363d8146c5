#!/usr/bin/env python3
"""Builds the tiny RANDOM-WEIGHT LLaVA-Med++ style checkpoints and their reference
outputs under testdata/models/ (see testdata/models/README.md for the contract).
Run by hand, not by CI, from the repository root:

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors pillow numpy einops tokenizers
    .venv/bin/python testdata/models/make_tiny.py

Everything runs on the CPU in float32. Outputs are deterministic for a given set of
library versions (the versions used are recorded in every meta.json).

    --full-pixels   also write <model>/pixels.safetensors with images.{name}.pixels_u8
                    (uint8 [3,S,S]) and images.{name}.pixel_values (float32 [3,S,S]) for the
                    three model input images (about 55 MB in all: local debugging only,
                    git-ignored). Every other output is the same with or without it.
"""
import hashlib
import json
import math
from collections import OrderedDict
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import transformers
import tokenizers
from PIL import Image
from safetensors.torch import save_file as pt_save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "images"
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in testdata
import s2wrapper_ref  # noqa: E402  (vendored bfshi/scaling_on_scales s2wrapper)

FULL_PIXELS = "--full-pixels" in sys.argv[1:]

torch.set_num_threads(1)  # fixed reduction order
torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------- constants
IMAGE_TOKEN_INDEX = -200  # LLaVA's marker in the original layout (llava/constants.py)
ALL_IMAGES = ["cell.png", "microaneurysms.png", "phantom.png", "retina.jpg", "ihc.png"]
# Model inputs: PNGs only (a JPEG decodes differently in other decoders; retina.jpg is only
# a preprocessing reference).
BATCH_IMAGES = ["cell.png", "ihc.png", "microaneurysms.png"]
QUESTIONS = [
    "Describe the image in detail.",
    "What modality is this and which organ is shown? Answer briefly.",
    "Is there an abnormality in the left upper region of the image, and how large is it compared with the surrounding tissue?",
]
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# conv_llama3 (MedTrinity-25M llava/conversation.py, SeparatorStyle.MPT, sep "<|eot_id|>")
# with the first user message "<image>\n" + question and an empty assistant turn.
TEMPLATE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM + "<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n<image>\n{Q}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|reserved_special_token_0|>"]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_VOCAB = 320  # 256 byte tokens + 64 merges; the special tokens come after
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
S2_SCALES = [336, 672, 1008]
N_IMAGE = 576  # (336 / 14) ** 2
N_GREEDY = 32
MARGIN_MIN = 5e-3  # stricter than the 1e-3 floor: a re-implementation must reproduce greedy exactly
TEXT_STRIDE = 4  # every 4th text position (counted among the text positions) keeps its logits
TAIL = 8  # ... plus the last 8 positions of every row
IMAGE_STRIDE = 32  # ... plus every 32nd image-feature position
PREPROC_DIR = HERE / "preprocess"
PREPROC_1008 = ["microaneurysms.png"]  # the 1008 pad path: one image (the smallest PNG)

CORPUS = [
    "The image shows a computed tomography (CT) scan of the chest with a nodule in the right upper lobe.",
    "This is a fundus photograph of the retina; several microaneurysms are visible near the macula.",
    "The histopathology slide shows immunohistochemistry staining of colon tissue with dense stroma.",
    "A phase-contrast microscopy image of a single cell on a dark background medium.",
    "Magnetic resonance imaging (MRI) of the brain shows a hyperintense lesion in the white matter.",
    "The region of interest is located in the left upper region of the image and occupies about 4% of the area.",
    "Compared with the surrounding tissue, the abnormality is darker and has a granular texture.",
    "It is adjacent to the surrounding lung tissue, which may suggest local compression.",
    "The organ shown is the liver; the hepatic parenchyma appears homogeneous.",
    "Answer briefly: the modality is CT and the organ is the head.",
    "The lesion has a clear border, suggesting a well-defined mass without obvious invasion.",
    "Describe the image in detail, including modality, organ, region of interest, texture and relations.",
    "The optic disc and retinal vessels are clearly visible in this fundus image.",
    "The Shepp-Logan phantom is a synthetic image used to test CT reconstruction.",
    "The assistant answers the user's questions about the medical image.",
    "Is there an abnormality in the image? Yes, there is a small bright spot in the lower right region.",
    "How large is the lesion compared with the surrounding tissue? It is small, about 2% of the image.",
    "The cell nucleus is brighter with an irregular, mottled texture.",
    "Densely stained regions with a coarse texture indicate positive immunoreactivity.",
    "What modality is this and which organ is shown?",
    "system", "user", "assistant",
    SYSTEM,
] + QUESTIONS


# ----------------------------------------------------------------------------- tokenizer
def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    # Rebuild the model as Llama-3's: BPE with ignore_merges, no unk, no byte_fallback.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    assert len(vocab) == BPE_VOCAB, len(vocab)
    tok.model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.post_processor = None
    return tok


def tokenizer_files(tok, outdir, extra_special=None):
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json, Llama-3 style."""
    tok = Tokenizer.from_str(tok.to_str())
    if extra_special:
        tok.add_special_tokens([AddedToken(extra_special, special=True, normalized=False)])
    tok.save(str(outdir / "tokenizer.json"), pretty=True)
    added = {}
    for s in SPECIALS + ([extra_special] if extra_special else []):
        added[str(tok.token_to_id(s))] = {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
    cfg = {
        "added_tokens_decoder": added,
        "bos_token": "<|begin_of_text|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 2048,
        "pad_token": "<|end_of_text|>",
        "padding_side": "right",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (outdir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok_entry = lambda s: {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    stm = {"bos_token": tok_entry("<|begin_of_text|>"), "eos_token": tok_entry("<|eot_id|>"),
           "pad_token": tok_entry("<|end_of_text|>")}
    (outdir / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    gen = {"bos_token_id": ids["<|begin_of_text|>"],
           "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]],
           "transformers_version": transformers.__version__}
    (outdir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    # Cross-check: transformers loads the same tokenizer and agrees with `tokenizers`.
    hf = PreTrainedTokenizerFast.from_pretrained(str(outdir))
    for q in QUESTIONS:
        p = TEMPLATE.format(Q=q)
        assert hf(p, add_special_tokens=False).input_ids == tok.encode(p, add_special_tokens=False).ids
    assert hf.bos_token_id == ids["<|begin_of_text|>"] and hf.eos_token_id == ids["<|eot_id|>"]
    assert hf.pad_token_id == ids["<|end_of_text|>"]
    return tok


def tokenize_prompt(tok, prompt, image_ids):
    """LLaVA tokenizer_image_token: split on the literal <image>, encode each chunk with
    add_special_tokens=False, join with `image_ids` (a list) between the chunks."""
    chunks = prompt.split("<image>")
    assert len(chunks) == 2
    ids = []
    for i, c in enumerate(chunks):
        if i:
            ids += image_ids
        ids += tok.encode(c, add_special_tokens=False).ids
    return ids


# ----------------------------------------------------------------------------- images
def expand2square(img, background):
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), background)
        out.paste(img, (0, (w - h) // 2))
    else:
        out = Image.new(img.mode, (h, h), background)
        out.paste(img, ((h - w) // 2, 0))
    return out


def _bicubic(x):  # Pillow's bicubic_filter, a = -0.5
    x = abs(x)
    if x < 1.0:
        return (1.5 * x - 2.5) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


def _pil_pass(a, out_size):
    """One Pillow ImagingResample{Horizontal,Vertical}_8bpc pass over the last axis of a
    uint8 array: antialiased bicubic weights, 22-bit fixed point, rounded, clipped to uint8."""
    prec = 22
    in_size = a.shape[-1]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    out = np.empty(a.shape[:-1] + (out_size,), np.uint8)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - xmin
        w = [_bicubic((x + xmin - center + 0.5) * (1.0 / filterscale)) for x in range(n)]
        ww = sum(w)
        w = [v / ww for v in w] if ww != 0.0 else w
        k = np.array([int(-0.5 + v * (1 << prec)) if v < 0 else int(0.5 + v * (1 << prec)) for v in w], np.int64)
        acc = (1 << (prec - 1)) + (a[..., xmin:xmin + n].astype(np.int64) * k).sum(-1)
        out[..., xx] = np.clip(acc >> prec, 0, 255)
    return out


def pil_bicubic_resize(chw, out_w, out_h):
    """Bit-exact re-statement of Pillow 13 `Image.resize((out_w, out_h), BICUBIC)` on RGB
    (checked against Pillow for every stored image). Two separable passes with a uint8
    intermediate; a pass is skipped when its size is unchanged; horizontal first unless the
    height shrinks by more than twice as many pixels as the width (Pillow >= 13 rule; older
    Pillow is always horizontal first: the same for every resize made here)."""
    _, H, W = chw.shape
    h_first = not ((H - out_h) > 0 and (H - out_h) > (W - out_w) * 2)
    hor = lambda x: _pil_pass(x, out_w) if out_w != W else x
    ver = lambda x: _pil_pass(x.transpose(0, 2, 1), out_h).transpose(0, 2, 1) if out_h != H else x
    return ver(hor(chw)) if h_first else hor(ver(chw))


def clip_preprocess_u8(img, size):
    """CLIPImageProcessor resize (shortest edge -> size, long edge int(size * long / short))
    + centre crop (top = (h - size) // 2, left = (w - size) // 2), restated in numpy."""
    chw = np.asarray(img).transpose(2, 0, 1)
    _, h, w = chw.shape
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    r = pil_bicubic_resize(chw, nw, nh)
    top, left = (nh - size) // 2, (nw - size) // 2
    return r[:, top:top + size, left:left + size]


def image_processor(size):
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 resample=3, do_resize=True, do_center_crop=True, do_rescale=True,
                                 rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
                                 image_mean=CLIP_MEAN, image_std=CLIP_STD)


_PIX_CACHE = {}


def preprocess(name, size, pad=True):
    """-> (uint8 [3,S,S], float32 [3,S,S]) exactly as LLaVA process_images(..., 'pad')."""
    key = (name, size, pad)
    if key in _PIX_CACHE:
        return _PIX_CACHE[key]
    proc = image_processor(size)
    img = Image.open(IMAGES / name).convert("RGB")
    if pad:
        img = expand2square(img, tuple(int(x * 255) for x in proc.image_mean))
    u8 = proc.preprocess(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    assert u8.dtype == np.uint8 and u8.shape == (3, size, size), (u8.dtype, u8.shape)
    assert np.array_equal(clip_preprocess_u8(img, size), u8), f"pil_bicubic_resize disagrees on {name}"
    pv = proc.preprocess(img, return_tensors="np")["pixel_values"][0]
    assert pv.dtype == np.float32
    # The exact normalisation the Rust side must reproduce (bit for bit):
    mine = (((u8.astype(np.float64) * (1 / 255)).astype(np.float32).T - np.array(CLIP_MEAN, np.float32))
            / np.array(CLIP_STD, np.float32)).T
    assert np.array_equal(mine, pv)
    _PIX_CACHE[key] = (u8, pv)
    return u8, pv


# ----------------------------------------------------------------------------- models
def clip_config():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                            image_size=336, patch_size=14, num_channels=3, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, projection_dim=32, attention_dropout=0.0)


def llama_config(vocab, ids):
    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
                       max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=500000.0,
                       tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                       bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|eot_id|>"],
                       pad_token_id=None, use_cache=True)


def randomize(module, seed):
    """Fixed-seed init with a larger spread than the default so the logits are well
    separated: weights N(0, 0.2), biases N(0, 0.05), norm weights 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in module.named_modules():
            is_norm = isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")
            for pname, p in mod.named_parameters(recurse=False):
                r = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if is_norm and pname == "weight":
                    p.copy_(1.0 + 0.1 * r)
                elif pname == "bias" or is_norm:
                    p.copy_(0.05 * r)
                else:
                    p.copy_(0.2 * r)
    return module


def new_clip(seed):
    m = CLIPVisionModel._from_config(clip_config(), attn_implementation="eager")
    return randomize(m, seed).eval()


def new_llama(vocab, ids, seed):
    m = LlamaForCausalLM._from_config(llama_config(vocab, ids), attn_implementation="eager")
    return randomize(m, seed).eval()


def new_projector(mm_hidden, seed):
    return randomize(nn.Sequential(nn.Linear(mm_hidden, 64), nn.GELU(), nn.Linear(64, 64)), seed).eval()


def clip_features(clip, pixel_values):
    """CLIPVisionTower.forward: hidden_states[-2] with the CLS token dropped."""
    out = clip(pixel_values, output_hidden_states=True)
    return out.hidden_states[-2][:, 1:]


def s2_features(clip, pixel_values):
    """CLIPVisionTowerS2.forward (LLaVA), through the vendored s2wrapper."""
    return s2wrapper_ref.forward(lambda x: clip_features(clip, x), pixel_values,
                                 img_sizes=S2_SCALES, max_split_size=S2_SCALES[0])


# ----------------------------------------------------------------------------- reference runs
def left_pad_meta(lens):
    T = max(lens)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for r, L in enumerate(lens):
        mask[r, T - L:] = 1
    pos = mask.cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return T, mask, pos


class OriginalRunner:
    """LlavaLlamaForCausalLM semantics: embed the text ids and splice the projected image
    features in at the -200 marker (prepare_inputs_labels_for_multimodal), then run
    LlamaForCausalLM on inputs_embeds."""

    def __init__(self, llm, proj, feats_fn, pad_id):
        self.llm, self.proj, self.feats_fn, self.pad_id = llm, proj, feats_fn, pad_id
        self.cache = {}

    def image_embeds(self, pixel_values):
        k = pixel_values.data_ptr()
        if k not in self.cache:
            self.cache[k] = self.proj(self.feats_fn(pixel_values[None]))[0]
        return self.cache[k]

    def row_embeds(self, ids, pixel_values):
        emb = self.llm.get_input_embeddings()
        i = ids.index(IMAGE_TOKEN_INDEX)
        parts = [emb(torch.tensor(ids[:i])), self.image_embeds(pixel_values), emb(torch.tensor(ids[i + 1:]))]
        return torch.cat(parts, 0), i

    def expanded_len(self, ids):
        return len(ids) - 1 + N_IMAGE

    def image_start(self, ids):
        return ids.index(IMAGE_TOKEN_INDEX)

    def logits(self, rows, pixels):
        embeds = [self.row_embeds(ids, pv)[0] for ids, pv in zip(rows, pixels)]
        lens = [e.shape[0] for e in embeds]
        T, mask, pos = left_pad_meta(lens)
        pad = self.llm.get_input_embeddings()(torch.tensor([self.pad_id]))[0]
        x = torch.stack([torch.cat([pad.expand(T - e.shape[0], -1), e], 0) for e in embeds])
        out = self.llm(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False).logits
        return out, lens


class HfRunner:
    """LlavaForConditionalGeneration(input_ids, pixel_values, attention_mask, position_ids)."""

    def __init__(self, model, image_token, pad_id):
        self.model, self.image_token, self.pad_id = model, image_token, pad_id

    def expanded_len(self, ids):
        return len(ids)

    def image_start(self, ids):
        return ids.index(self.image_token)

    def logits(self, rows, pixels):
        lens = [len(r) for r in rows]
        T, mask, pos = left_pad_meta(lens)
        ids = torch.tensor([[self.pad_id] * (T - len(r)) + r for r in rows])
        out = self.model(input_ids=ids, pixel_values=torch.stack(pixels), attention_mask=mask,
                         position_ids=pos, use_cache=False).logits
        return out, lens


def kept_positions(runner, ids):
    """Text positions whose index among the text positions is a multiple of TEXT_STRIDE, the
    last TAIL positions, image positions s, s+IMAGE_STRIDE, ...: sorted, no duplicates."""
    L = runner.expanded_len(ids)
    s = runner.image_start(ids)
    text = [p for p in range(L) if p < s or p >= s + N_IMAGE]
    keep = set(text[::TEXT_STRIDE]) | set(range(L - TAIL, L)) | set(range(s, s + N_IMAGE, IMAGE_STRIDE))
    return sorted(keep)


def pixels_sha256(u8):
    """sha256 (hex) of the uint8 [3,S,S] buffer in C order."""
    assert u8.dtype == np.uint8 and u8.ndim == 3 and u8.shape[0] == 3
    return hashlib.sha256(np.ascontiguousarray(u8).tobytes()).hexdigest()


def greedy(runner, rows, pixels):
    """N_GREEDY argmax steps, full recompute each step, no eos stop; rows stay left-padded
    (every row grows by one token per step). -> (tokens [B, N], min top1-top2 gap)."""
    rows = [list(r) for r in rows]
    new = [[] for _ in rows]
    gap = math.inf
    for _ in range(N_GREEDY):
        logits, _ = runner.logits(rows, pixels)
        last = logits[:, -1, :]
        top = torch.topk(last, 2, dim=-1).values
        gap = min(gap, float((top[:, 0] - top[:, 1]).min()))
        nxt = last.argmax(-1).tolist()
        for r, t in enumerate(nxt):
            rows[r].append(t)
            new[r].append(t)
    return torch.tensor(new, dtype=torch.int64), gap


def reference(runner, tok, image_ids, S, folder, seed, extra_meta, hidden_features):
    prompts = [TEMPLATE.format(Q=q) for q in QUESTIONS]
    row_ids = [tokenize_prompt(tok, p, image_ids) for p in prompts]
    pix = {n: torch.from_numpy(preprocess(n, S)[1]) for n in BATCH_IMAGES}
    t = {}
    with torch.no_grad():
        # single
        ids0 = row_ids[0]
        lg, _ = runner.logits([ids0], [pix[BATCH_IMAGES[0]]])
        pos0 = kept_positions(runner, ids0)
        t["single.input_ids"] = torch.tensor(ids0, dtype=torch.int64)
        t["single.positions"] = torch.tensor(pos0, dtype=torch.int64)
        t["single.logits"] = lg[0, pos0].contiguous()
        g1, gap1 = greedy(runner, [ids0], [pix[BATCH_IMAGES[0]]])
        t["single.greedy"] = g1[0].contiguous()
        # batch
        pixels = [pix[n] for n in BATCH_IMAGES]
        lg, lens = runner.logits(row_ids, pixels)
        T = max(lens)
        diffs = []
        for r, ids in enumerate(row_ids):
            pos = kept_positions(runner, ids)
            t[f"batch.{r}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
            t[f"batch.{r}.positions"] = torch.tensor(pos, dtype=torch.int64)
            t[f"batch.{r}.logits"] = lg[r, [T - lens[r] + p for p in pos]].contiguous()
            own, _ = runner.logits([ids], [pixels[r]])
            diffs.append(float((own[0, pos] - t[f"batch.{r}.logits"]).abs().max()))
        gB, gapB = greedy(runner, row_ids, pixels)
        t["batch.greedy"] = gB
        t["hidden.image_features"] = hidden_features(pix[BATCH_IMAGES[0]][None])[0].contiguous()
    assert diffs[0] < 1e-4, diffs
    assert max(diffs) < 1e-4, diffs
    assert torch.equal(t["single.greedy"], t["batch.greedy"][0]), "batch row 0 greedy != single greedy"
    margin = min(gap1, gapB)
    t = {k: v.detach().contiguous() for k, v in t.items()}
    meta = {
        "model_folder": folder,
        "random_weights": "RANDOM WEIGHTS - not a medical model",
        "seed": seed,
        "image_size_S": S,
        "num_image_features_N": N_IMAGE,
        "image_marker": image_ids[0] if len(set(image_ids)) == 1 else None,
        "image_marker_count_in_input_ids": len(image_ids),
        "pad_id": runner.pad_id,
        "pad_token": "<|end_of_text|>",
        "vocab_size": int(t["single.logits"].shape[-1]),
        "special_token_ids": {s: tok.token_to_id(s) for s in SPECIALS},
        "questions": QUESTIONS,
        "prompts": prompts,
        "single": {"image": BATCH_IMAGES[0], "question": 0},
        "batch": {
            "images": BATCH_IMAGES,
            "questions": [0, 1, 2],
            "expanded_lens": lens,
            "padded_len": T,
            "image_starts": [runner.image_start(ids) for ids in row_ids],
            "padding": "left; attention_mask 0 on padding; position_ids = cumsum(mask)-1 with padding positions set to 1",
        },
        "positions_rule": (f"positions of the row's own expanded sequence (length L, image span [s, s+{N_IMAGE})), "
                           f"sorted, no duplicates: the text positions (p < s or p >= s+{N_IMAGE}) whose index among "
                           f"the text positions is a multiple of {TEXT_STRIDE}, plus L-{TAIL}..L-1, plus "
                           f"s, s+{IMAGE_STRIDE}, ..., < s+{N_IMAGE}"),
        "stored_positions": {"single": len(t["single.positions"]),
                             "batch": [len(t[f"batch.{r}.positions"]) for r in range(len(row_ids))]},
        "greedy_steps": N_GREEDY,
        "min_greedy_margin": margin,
        "greedy_margin_single": gap1,
        "greedy_margin_batch": gapB,
        "padding_sanity_max_abs_diff": {"row0": diffs[0], "all_rows": diffs},
        "pixels_sha256": {n: pixels_sha256(preprocess(n, S)[0]) for n in BATCH_IMAGES},
        "pixels_sha256_rule": (f"sha256 of the uint8 [3,{S},{S}] C-order buffer of ../../images/<name> after "
                               "convert('RGB'), expand2square, shortest-edge bicubic resize and centre crop "
                               "(before rescale/normalise)"),
        "pixel_values_rule": "float32(float64(u8) * (1/255)) then (x - float32(mean[c])) / float32(std[c]) in float32; "
                             "mean [0.48145466, 0.4578275, 0.40821073], std [0.26862954, 0.26130258, 0.27577711]",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__,
                     "pillow": Image.__version__},
    }
    meta.update(extra_meta)
    return t, meta, margin


def write_reference(outdir, t, meta):
    pt_save_file(t, str(outdir / "reference.safetensors"), metadata={"format": "pt"})
    if FULL_PIXELS:  # debugging aid, not committed: every model input image, raw and normalised
        px = {}
        for n in BATCH_IMAGES:
            u8, pv = preprocess(n, meta["image_size_S"])
            px[f"images.{n}.pixels_u8"] = torch.from_numpy(u8.copy())
            px[f"images.{n}.pixel_values"] = torch.from_numpy(pv.copy())
        pt_save_file(px, str(outdir / "pixels.safetensors"), metadata={"format": "pt"})
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# ----------------------------------------------------------------------------- checkpoints
def original_config(llama_cfg, extra):
    c = llama_cfg
    d = {
        "_name_or_path": "tiny-random-llava-med-pp",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "mlp_bias": False,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": c.vocab_size,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": 32,
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "../tiny-clip",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_mm_proj": True,
        "transformers_version": transformers.__version__,
    }
    d.update(extra)
    return d


def clip_state(clip):
    """CLIPVisionModel weights under the classic (transformers 4.x / openai checkpoint) names
    `vision_model.*`; transformers 5 keeps them flat in memory and maps the prefix on load."""
    return OrderedDict(("vision_model." + k, v.detach().clone().contiguous()) for k, v in clip.state_dict().items())


def original_state(llm, proj, clip=None):
    sd = {k: v for k, v in llm.state_dict().items()}
    for k, v in proj.state_dict().items():
        sd["model.mm_projector." + k] = v
    if clip is not None:
        for k, v in clip_state(clip).items():
            sd["model.vision_tower.vision_tower." + k] = v
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def save_sharded(sd, outdir, first_shard_pred):
    names = sorted(sd)
    shard1 = {k: sd[k] for k in names if first_shard_pred(k)}
    shard2 = {k: sd[k] for k in names if not first_shard_pred(k)}
    f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    pt_save_file(shard1, str(outdir / f1), metadata={"format": "pt"})
    pt_save_file(shard2, str(outdir / f2), metadata={"format": "pt"})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    wm = {k: (f1 if k in shard1 else f2) for k in names}
    (outdir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": wm}, indent=2) + "\n")


def fresh(outdir):
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    return outdir


def main():
    tok = build_tokenizer()
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    vocab = tok.get_vocab_size(with_added_tokens=True)
    pad_id = ids["<|end_of_text|>"]
    assert [ids[s] for s in SPECIALS] == list(range(BPE_VOCAB, BPE_VOCAB + len(SPECIALS)))
    summary = {}

    # ---- tiny-clip: CLIPVisionModel as config.json + pytorch_model.bin (zip torch.save)
    clip_dir = fresh(HERE / "tiny-clip")
    clip = new_clip(seed=1000)
    clip.config.architectures = ["CLIPVisionModel"]
    clip.config.save_pretrained(str(clip_dir))
    # zip-format torch.save of an OrderedDict, like transformers 4.x save_pretrained(safe_serialization=False)
    torch.save(clip_state(clip), str(clip_dir / "pytorch_model.bin"))
    image_processor(336).save_pretrained(str(clip_dir))
    reloaded = CLIPVisionModel.from_pretrained(str(clip_dir), attn_implementation="eager").eval()
    probe = torch.from_numpy(preprocess("cell.png", 336)[1])[None]
    with torch.no_grad():
        assert torch.equal(clip_features(reloaded, probe), clip_features(clip, probe))

    # ---- tiny-llava: original layout, no S2, CLIP = ../tiny-clip
    for attempt in range(20):
        seed = 2000 + attempt
        llm = new_llama(vocab, ids, seed)
        proj = new_projector(32, seed + 500)
        runner = OriginalRunner(llm, proj, lambda x: clip_features(clip, x), pad_id)
        t, meta, margin = reference(runner, tok, [IMAGE_TOKEN_INDEX], 336, "tiny-llava", seed,
                                    {"layout": "original", "s2": False, "vision_tower": "../tiny-clip (seed 1000)"},
                                    lambda x: clip_features(clip, x))
        if margin >= MARGIN_MIN:
            break
        print(f"tiny-llava seed {seed}: margin {margin:.2e} too small, retrying")
    else:
        raise SystemExit("tiny-llava: no seed with a safe greedy margin")
    d = fresh(HERE / "tiny-llava")
    tokenizer_files(tok, d)
    (d / "config.json").write_text(json.dumps(original_config(llm.config, {}), indent=2) + "\n")
    save_sharded(original_state(llm, proj), d, lambda k: k.startswith("model.embed_tokens") or ".layers.0." in k)
    write_reference(d, t, meta)
    cross_check_original_vs_hf(llm, proj, clip, t, tok, vocab, pad_id)
    summary["tiny-llava"] = meta

    # ---- tiny-llava-s2: original layout with S2, its own CLIP weights inside the checkpoint
    for attempt in range(20):
        seed = 3000 + attempt
        clip_s2 = new_clip(seed + 700)
        llm = new_llama(vocab, ids, seed)
        proj = new_projector(96, seed + 500)
        feats = lambda x, c=clip_s2: s2_features(c, x)
        runner = OriginalRunner(llm, proj, feats, pad_id)
        t, meta, margin = reference(runner, tok, [IMAGE_TOKEN_INDEX], 1008, "tiny-llava-s2", seed,
                                    {"layout": "original", "s2": True, "s2_scales": S2_SCALES,
                                     "vision_tower": f"checkpoint copy model.vision_tower.vision_tower.vision_model.* (seed {seed + 700}); NOT ../tiny-clip's weights"},
                                    feats)
        if margin >= MARGIN_MIN:
            break
        print(f"tiny-llava-s2 seed {seed}: margin {margin:.2e} too small, retrying")
    else:
        raise SystemExit("tiny-llava-s2: no seed with a safe greedy margin")
    with torch.no_grad():  # the checkpoint's CLIP copy must be distinguishable from tiny-clip's
        pv = torch.from_numpy(preprocess("cell.png", 1008)[1])[None]
        # Facts about s2wrapper's F.interpolate(bicubic) the README states:
        bic = lambda x, n: torch.nn.functional.interpolate(x, size=n, mode="bicubic")
        assert torch.equal(bic(pv, 1008), pv) and torch.equal(bic(pv, 336), pv[..., 1::3, 1::3])
        other = s2_features(clip, pv)
        meta["tiny_clip_weights_feature_max_abs_diff"] = float((other[0] - t["hidden.image_features"]).abs().max())
        assert meta["tiny_clip_weights_feature_max_abs_diff"] > 0.1
    d = fresh(HERE / "tiny-llava-s2")
    tokenizer_files(tok, d)
    cfg = original_config(llm.config, {"s2": True, "s2_scales": "336,672,1008", "mm_hidden_size": 96})
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    pt_save_file(original_state(llm, proj, clip_s2), str(d / "model.safetensors"), metadata={"format": "pt"})
    write_reference(d, t, meta)
    summary["tiny-llava-s2"] = meta

    # ---- tiny-llava-hf: llava-hf layout
    tok_hf = Tokenizer.from_str(tok.to_str())
    tok_hf.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    image_token = tok_hf.token_to_id("<image>")
    vocab_hf = tok_hf.get_vocab_size(with_added_tokens=True)
    assert image_token == vocab_hf - 1 == vocab
    for attempt in range(20):
        seed = 4000 + attempt
        model = new_hf(vocab_hf, ids, image_token, seed)
        runner = HfRunner(model, image_token, pad_id)
        hidden = lambda x, m=model: clip_features(m.model.vision_tower, x)
        t, meta, margin = reference(runner, tok_hf, [image_token] * N_IMAGE, 336, "tiny-llava-hf", seed,
                                    {"layout": "llava-hf", "s2": False,
                                     "image_preprocessing": "same as the original layout: expand2square pad + CLIP 336 (LLaVA process_images 'pad')"},
                                    hidden)
        if margin >= MARGIN_MIN:
            break
        print(f"tiny-llava-hf seed {seed}: margin {margin:.2e} too small, retrying")
    else:
        raise SystemExit("tiny-llava-hf: no seed with a safe greedy margin")
    d = fresh(HERE / "tiny-llava-hf")
    model.save_pretrained(str(d), max_shard_size="400KB")
    tokenizer_files(tok, d, extra_special="<image>")
    image_processor(336).save_pretrained(str(d))
    # The reference pixels are LLaVA's `pad` ones: say so as LlavaImageProcessor does
    # (`do_pad`), since a llava-hf checkpoint's processor decides its preprocessing.
    pre = json.loads((d / "preprocessor_config.json").read_text())
    pre.update(image_processor_type="LlavaImageProcessor", do_pad=True)
    (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    write_reference(d, t, meta)
    # reload check: the saved checkpoint reproduces the reference logits exactly
    reloaded = LlavaForConditionalGeneration.from_pretrained(str(d), attn_implementation="eager").eval()
    with torch.no_grad():
        lg, _ = HfRunner(reloaded, image_token, pad_id).logits([t["single.input_ids"].tolist()],
                                                        [torch.from_numpy(preprocess("cell.png", 336)[1])])
    assert torch.equal(lg[0, t["single.positions"]], t["single.logits"])
    summary["tiny-llava-hf"] = meta

    # ---- preprocess/: lossless PNGs of the uint8 preprocessing results
    pre = {}
    for n in ALL_IMAGES:
        pre[f"{n}.336"] = preprocess(n, 336)[0]
        nopad = preprocess(n, 336, pad=False)[0]
        w, h = Image.open(IMAGES / n).size
        if w == h:  # expand2square is the identity on square images: not stored twice
            assert np.array_equal(nopad, pre[f"{n}.336"])
        else:
            pre[f"{n}.336.nopad"] = nopad
    for n in PREPROC_1008:
        pre[f"{n}.1008"] = preprocess(n, 1008)[0]
    d = fresh(PREPROC_DIR)
    for k, v in pre.items():
        f = d / f"{k}.png"
        Image.fromarray(np.ascontiguousarray(v.transpose(1, 2, 0)), "RGB").save(str(f), optimize=True)
        back = np.asarray(Image.open(f)).transpose(2, 0, 1)
        assert Image.open(f).mode == "RGB" and np.array_equal(back, v), f"{f} does not round-trip"
    old = HERE / "preprocess_reference.safetensors"
    if old.exists():
        old.unlink()

    for k, m in summary.items():
        print(f"{k}: seed {m['seed']} min greedy margin {m['min_greedy_margin']:.4e} "
              f"(single {m['greedy_margin_single']:.4e}, batch {m['greedy_margin_batch']:.4e}) "
              f"row0 padding diff {m['padding_sanity_max_abs_diff']['row0']:.2e} all {m['padding_sanity_max_abs_diff']['all_rows']}")
        print(f"  pixels_sha256 (S={m['image_size_S']}): {json.dumps(m['pixels_sha256'])}")
        print(f"  stored positions per row: single {m['stored_positions']['single']} batch {m['stored_positions']['batch']}")
    print("special ids", ids, "image token (hf)", image_token, "vocab", vocab, vocab_hf)


def new_hf(vocab_hf, ids, image_token, seed):
    cfg = LlavaConfig(vision_config=clip_config().to_dict(), text_config=llama_config(vocab_hf, ids).to_dict(),
                      image_token_index=image_token, projector_hidden_act="gelu",
                      vision_feature_select_strategy="default", vision_feature_layer=-2,
                      image_seq_length=N_IMAGE, tie_word_embeddings=False)
    m = LlavaForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    return randomize(m, seed).eval()


def cross_check_original_vs_hf(llm, proj, clip, t, tok, vocab, pad_id):
    """Validates the original-layout splicing code against transformers' own Llava: the
    same weights (one extra embedding row for <image>) must give the same logits."""
    image_token = vocab
    m = new_hf(vocab + 1, {s: tok.token_to_id(s) for s in SPECIALS}, image_token, 1)
    with torch.no_grad():
        m.model.vision_tower.load_state_dict(clip.state_dict())
        m.model.multi_modal_projector.linear_1.load_state_dict(proj[0].state_dict())
        m.model.multi_modal_projector.linear_2.load_state_dict(proj[2].state_dict())
        lm_sd = {k[len("model."):]: v for k, v in llm.state_dict().items() if k.startswith("model.")}
        tgt = m.model.language_model
        for k, v in lm_sd.items():
            p = tgt.state_dict()[k]
            if k == "embed_tokens.weight":
                tgt.embed_tokens.weight[:vocab] = v
            else:
                p.copy_(v)
        m.lm_head.weight[:vocab] = llm.lm_head.weight
        ids = t["single.input_ids"].tolist()
        i = ids.index(IMAGE_TOKEN_INDEX)
        hf_ids = ids[:i] + [image_token] * N_IMAGE + ids[i + 1:]
        lg, _ = HfRunner(m, image_token, pad_id).logits([hf_ids], [torch.from_numpy(preprocess("cell.png", 336)[1])])
        diff = float((lg[0, t["single.positions"], :vocab] - t["single.logits"]).abs().max())
    assert diff < 1e-4, diff
    print(f"original-layout splice vs transformers Llava: max abs diff {diff:.2e}")


if __name__ == "__main__":
    main()
