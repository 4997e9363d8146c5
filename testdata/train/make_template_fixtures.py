#!/usr/bin/env python3
"""Golden training sequences for every LLaVA conversation template that trains, computed by
the reference code itself: `preprocess_multimodal` + `preprocess` (which dispatches to
`preprocess_v1`, `preprocess_llama_2`, `preprocess_mpt`, `preprocess_llama3`,
`preprocess_plain`, and LLaVA-pp's `preprocess_phi3`) from the two code bases' `train.py`,
with their `conversation.py` and `mm_utils.tokenizer_image_token`.

Run by hand, not by CI, from the repository root, with the two repositories checked out at
the commits below (their files are checked by sha256 and imported from there, nothing is
copied here):

    python3 testdata/train/make_template_fixtures.py MedTrinity-25M LLaVA-pp

(any Python with torch, transformers and tokenizers; the versions are recorded in the output).
Writes testdata/train/templates.json and the tiny tokenizers under testdata/train/tokenizers/:

- `llama2`: a Llama-2 / Mistral style tokenizer (BPE over "▁"-marked words with byte fallback,
  `<unk>` 0 `<s>` 1 `</s>` 2, BOS added by its post-processor, `legacy: false`: no "▁" after a
  special token), trained here on a small medical corpus, saved by transformers' LlamaTokenizer;
- `llama2-legacy`: the same vocabulary with `legacy: true` (a "▁" after every special token),
  the tokenizer of LLaVA-1.5 era checkpoints;
- `phi3`: `llama2` plus Phi-3's chat tokens (`<|system|>`, `<|user|>`, `<|assistant|>`,
  `<|end|>`, `<|endoftext|>`);
- `chatml`: the byte-level tiny tokenizer of ../models/tiny-llava plus `<|im_start|>`,
  `<|im_end|>` (no BOS), as Qwen2's.

Every tokenizer pads with its `unk_token` where it has one (the reference sets
`tokenizer.pad_token = tokenizer.unk_token` for every version but v0), else `<|end_of_text|>`.
A case the reference refuses (an assertion or a missing key) is recorded with `error`.
"""
import sys

sys.dont_write_bytecode = True

import ast
import copy
import hashlib
import importlib.util
import json
import shutil
import tempfile
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "models" / "tiny-llava"
OUT_TOKENIZERS = HERE / "tokenizers"

SOURCES = {
    # name: (repository, commit, path, sha256)
    "medtrinity-train": ("UCSC-VLAA/MedTrinity-25M", "79b1b030676047161d17164a1ba1da5e76b815a0",
                         "llava/train/train.py",
                         "cadff653b6f68799007a28bc025de99a32fca49dcd2281cd7aa16d489199e59f"),
    "medtrinity-conversation": ("UCSC-VLAA/MedTrinity-25M", "79b1b030676047161d17164a1ba1da5e76b815a0",
                                "llava/conversation.py",
                                "efed5c400916ecd2813b5572ac64414898465b626996087356b629e0e6ed136e"),
    "medtrinity-mm-utils": ("UCSC-VLAA/MedTrinity-25M", "79b1b030676047161d17164a1ba1da5e76b815a0",
                            "llava/mm_utils.py",
                            "060346cc808cee3e2761a5031dc824f45ff82f6690c030337718384bd74ee56f"),
    "llava-pp-phi3-train": ("mbzuai-oryx/LLaVA-pp", "5ccb07b443a9dceabb0992a06fa27b8c216f9546",
                            "Phi-3-V/train.py",
                            "ccbf4e5a756e9a6d5a1ae59e190d7eb2b93b82795a021fecb0eac14a8f6d2773"),
    "llava-pp-phi3-conversation": ("mbzuai-oryx/LLaVA-pp", "5ccb07b443a9dceabb0992a06fa27b8c216f9546",
                                   "Phi-3-V/conversation.py",
                                   "8a05cad06cd2ec9b2fbff6ebceed77c96c51ac7d44d38d7b500deabbd6647a9f"),
}

TRAIN_FUNCTIONS = ["preprocess_multimodal", "preprocess_llama_2", "preprocess_v1", "preprocess_mpt",
                   "preprocess_llama3", "preprocess_caption", "preprocess_phi3", "preprocess_plain",
                   "preprocess", "_tokenize_fn", "_mask_targets", "_add_speaker_and_signal"]


def source(roots, name):
    repo, commit, path, want = SOURCES[name]
    root = roots["medtrinity" if name.startswith("medtrinity") else "llava-pp"]
    data = (Path(root) / path).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"{root}/{path}: sha256 {got}, expected {want} ({repo}@{commit})")
    return data.decode()


def functions(text, names):
    """The named top-level functions of a Python file, compiled from its own source."""
    tree = ast.parse(text)
    picked = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    return compile(ast.Module(body=picked, type_ignores=[]), "<reference>", "exec")


def load_module(name, text):
    module = types.ModuleType(name)
    exec(compile(text, name, "exec"), module.__dict__)
    return module


class DataArguments:
    """Stand-in for train.py's dataclass (only the fields preprocess_multimodal reads)."""
    is_multimodal = True
    mm_use_im_start_end = False


def reference(roots, code_base):
    """`preprocess_multimodal`, `preprocess` and the module holding `default_conversation` of
    one code base, wired as train.py wires them (its imports stood in by hand)."""
    conv_name = {"medtrinity": "medtrinity-conversation", "llava-pp": "llava-pp-phi3-conversation"}
    train_name = {"medtrinity": "medtrinity-train", "llava-pp": "llava-pp-phi3-train"}
    conversation_lib = load_module(f"conv_{code_base}", source(roots, conv_name[code_base]))
    mm_utils = {"torch": torch, "IMAGE_TOKEN_INDEX": -200}
    exec(functions(source(roots, "medtrinity-mm-utils"), ["tokenizer_image_token"]), mm_utils)
    namespace = {
        "torch": torch, "transformers": transformers, "copy": copy, "Dict": Dict,
        "Sequence": Sequence, "List": List, "Optional": Optional, "DataArguments": DataArguments,
        "conversation_lib": conversation_lib,
        "tokenizer_image_token": mm_utils["tokenizer_image_token"],
        "IGNORE_INDEX": -100, "IMAGE_TOKEN_INDEX": -200, "DEFAULT_IMAGE_TOKEN": "<image>",
        "DEFAULT_IM_START_TOKEN": "<im_start>", "DEFAULT_IM_END_TOKEN": "<im_end>",
        "IS_TOKENIZER_GREATER_THAN_0_14": True,
    }
    exec(functions(source(roots, train_name[code_base]), TRAIN_FUNCTIONS), namespace)
    return namespace, conversation_lib


CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural language.",
    "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>",
    "What modality is this image? Which organ is shown? Is there a lesion? Is the scan normal?",
    "Computed tomography of the chest. The liver, in the upper abdomen. Magnetic resonance imaging.",
    "Yes, a small hypodense lesion in the right lobe. No. The lung. Describe the image in detail.",
    "The image is a CT scan of the head showing the brain and the ventricles without hemorrhage.",
    "A fundus photograph of the retina with microaneurysms and hard exudates near the macula.",
    "Histology of tissue stained with hematoxylin and eosin, showing cells with large nuclei.",
]


def train_llama2(dir_legacy, dir_new):
    """A tiny Llama-2 style BPE (words marked with "▁", 256 byte-fallback tokens), saved by
    transformers' LlamaTokenizer with legacy false and true."""
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=sorted(set("".join(CORPUS).replace(" ", "▁")) | {"▁"}))
    bpe.train_from_iterator(CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab, merges = model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                     for m in model["merges"]]
    for out, legacy in ((dir_new, False), (dir_legacy, True)):
        tok = LlamaTokenizer(vocab=vocab, merges=merges, legacy=legacy, add_bos_token=True,
                             model_max_length=2048)
        tok.pad_token = tok.unk_token
        save(tok, out, legacy)


def save(tok, out, legacy=None):
    """save_pretrained, plus `legacy` in tokenizer_config.json where the tokenizer has one
    (transformers 5 does not write it; transformers 4's LlamaTokenizer did)."""
    if out.exists():
        shutil.rmtree(out)
    tok.save_pretrained(out)
    if legacy is not None:
        config = json.loads((out / "tokenizer_config.json").read_text())
        config["legacy"] = legacy
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load(dir):
    """The tokenizer as its tokenizer.json has it (transformers 5's LlamaTokenizer would rebuild
    the pre-tokenizer from `legacy`), with the special tokens and `legacy` of its config: what
    mt reads."""
    config = json.loads((dir / "tokenizer_config.json").read_text())
    named = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k)}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(dir / "tokenizer.json"), model_max_length=2048,
                                  padding_side="right", **named)
    if "legacy" in config:
        tok.legacy = config["legacy"]
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or "<|end_of_text|>"
    return tok


def make_phi3(base, out):
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>",
                                                         "<|end|>", "<|endoftext|>"]})
    tok.pad_token = tok.unk_token
    save(tok, out, False)


def make_chatml(out):
    tok = AutoTokenizer.from_pretrained(TINY)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.pad_token = "<|end_of_text|>"
    save(tok, out)


def h(v):
    return {"from": "human", "value": v}


def g(v):
    return {"from": "gpt", "value": v}


CONVERSATIONS = [
    ("single_image_first", True, [h("<image>\nDescribe the image in detail."),
                                  g("A CT scan of the head showing the ventricles.")]),
    ("image_after_question", True, [h("What modality is shown in this image?\n<image>"),
                                    g("The image is a CT scan of the chest.")]),
    ("image_inline_whitespace", True, [h("  Look at <image> and describe the lesion. \n"),
                                       g("A small hypodense lesion.")]),
    ("image_only_no_question", True, [h("<image>"), g("A fundus photograph of the retina.")]),
    ("three_rounds", True, [h("<image>\nWhat modality is this?"), g("Computed tomography."),
                            h("Which organ is shown?"), g("The liver, in the upper abdomen."),
                            h("Is there a lesion?"), g("Yes, a small hypodense lesion in the right lobe.")]),
    ("text_only", False, [h("What does a hypodense lesion on CT mean?"),
                          g("It is darker than the surrounding tissue.")]),
    ("text_only_two_rounds", False, [h("What is MRI?"), g("Magnetic resonance imaging."),
                                     h("Is it ionising?"), g("No.")]),
    ("first_turn_gpt_skipped", True, [g("Hello! Please send an image."), h("<image>\nWhat organ is this?"),
                                      g("The liver.")]),
    ("eos_in_answer", True, [h("<image>\nIs the scan normal?"), g("Yes.</s> It is normal.")]),
    ("unicode", True, [h("<image>\nDécrivez l'image. 这是什么器官？ 🫁"),
                       g("Poumon droit (右肺) : opacité — Größe ≈ 2 cm.")]),
    ("empty_answer", True, [h("<image>\nDescribe the image."), g("")]),
    ("bad_order", True, [h("<image>\nWhat is this?"), h("Answer me."), g("A scan.")]),
]

# (template, code base, tokenizers)
TEMPLATES = [
    ("vicuna_v1", "medtrinity", ["llama2", "llama2-legacy"]),
    ("llava_v1", "medtrinity", ["llama2"]),
    ("v1_mmtag", "medtrinity", ["llama2"]),
    ("llama_2", "medtrinity", ["llama2", "llama2-legacy"]),
    ("llava_llama_2", "medtrinity", ["llama2"]),
    ("mistral_instruct", "medtrinity", ["llama2"]),
    ("chatml_direct", "medtrinity", ["chatml"]),
    ("mpt", "medtrinity", ["chatml"]),
    ("plain", "medtrinity", ["llama2", "chatml"]),
    ("llama3", "medtrinity", ["tiny"]),
    ("phi3_instruct", "llava-pp", ["phi3"]),
]


def run_case(ns, conversation_lib, template, tok, has_image, convs):
    conversation_lib.default_conversation = conversation_lib.conv_templates[template]
    sources = [copy.deepcopy(convs)]
    if has_image:
        sources = ns["preprocess_multimodal"](sources, DataArguments())
    out = ns["preprocess"](sources, tok, has_image=has_image)
    ids, labels = out["input_ids"][0].tolist(), out["labels"][0].tolist()
    return {"input_ids": ids, "labels": labels,
            "mismatch": all(x == -100 for x in labels) and len(labels) > 0}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    roots = {"medtrinity": sys.argv[1], "llava-pp": sys.argv[2]}
    OUT_TOKENIZERS.mkdir(exist_ok=True)
    train_llama2(OUT_TOKENIZERS / "llama2-legacy", OUT_TOKENIZERS / "llama2")
    make_phi3(OUT_TOKENIZERS / "llama2", OUT_TOKENIZERS / "phi3")
    make_chatml(OUT_TOKENIZERS / "chatml")
    toks = {name: load(OUT_TOKENIZERS / name) for name in ("llama2", "llama2-legacy", "phi3", "chatml")}
    toks["tiny"] = load(TINY)
    assert toks["llama2"]("a</s>b").input_ids != toks["llama2-legacy"]("a</s>b").input_ids
    refs = {base: reference(roots, base) for base in ("medtrinity", "llava-pp")}
    cases = []
    for template, base, tok_names in TEMPLATES:
        ns, conversation_lib = refs[base]
        for tok_name in tok_names:
            for name, has_image, convs in CONVERSATIONS:
                case = {"template": template, "tokenizer": tok_name, "name": name,
                        "has_image": has_image, "conversations": convs}
                try:
                    case.update(run_case(ns, conversation_lib, template, toks[tok_name], has_image, convs))
                except (AssertionError, KeyError, IndexError) as e:
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    meta = {
        "sources": {k: {"repository": v[0], "commit": v[1], "path": v[2], "sha256": v[3]}
                    for k, v in SOURCES.items()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
    }
    write(HERE / "templates.json", {"meta": meta, "cases": cases})
    summary = {}
    for c in cases:
        key = (c["template"], c["tokenizer"])
        s = summary.setdefault(key, [0, 0, 0])
        s[0 if "error" in c else (1 if c["mismatch"] else 2)] += 1
    for (template, tok), (err, mis, ok) in summary.items():
        print(f"{template:18} {tok:14} ok {ok:2}  mismatch {mis:2}  refused {err:2}", file=sys.stderr)


def write(path, obj):
    """One case per line block, id lists on one line (diff-friendly, small)."""
    cases = ",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in obj["cases"])
    meta = json.dumps(obj["meta"], indent=2)
    path.write_text('{\n  "meta": ' + meta.replace("\n", "\n  ") + ',\n  "cases": [\n' + cases + "\n  ]\n}\n",
                    encoding="utf-8")


if __name__ == "__main__":
    main()
