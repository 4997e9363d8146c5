#!/usr/bin/env python3
"""A tiny SentencePiece BPE `tokenizer.model` (byte fallback, Llama's <unk> <s> </s> ids) and
the ids transformers' slow LlamaTokenizer gives with it, legacy and not, with `<image>` added:
the tokenizer LLaVA's code runs (`use_fast=False`) on a checkpoint that ships only
`tokenizer.model` (LLaVA-1.5, LLaVA-Med v1.5). Also `sentencepiece`'s own ids for the texts
without special tokens.

Run by hand with sentencepiece, protobuf and transformers 4.46.3 (transformers 5 has no slow
tokenizers):

    python make_spm.py   # in testdata/tokenizers/spm
"""
import json

import sentencepiece as spm
import transformers
from transformers import LlamaTokenizer

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>",
    "What modality is this image? Which organ is shown? Is there a lesion? Is the scan normal?",
    "Computed tomography of the chest. The liver, in the upper abdomen. Magnetic resonance imaging.",
    "Yes, a small hypodense lesion in the right lobe. No. The lung. Describe the image in detail.",
    "A fundus photograph of the retina with microaneurysms and hard exudates near the macula.",
    "Histology of tissue stained with hematoxylin and eosin, showing cells with large nuclei.",
]
TEXTS = [
    "USER: What modality is this?",
    " leading space",
    "two  spaces and trailing ",
    "Größe ≈ 2 cm 🫁",
    "\nnewline\n\nparagraph",
    "the liver</s>USER: the lung",
    "A chat between a curious human. USER: <image>\nWhat is shown? ASSISTANT:",
    "[INST] <image>\nDescribe the scan. [/INST]",
]


def main():
    with open("corpus.txt", "w") as f:
        f.write("\n".join(CORPUS * 3))
    spm.SentencePieceTrainer.train(
        input="corpus.txt", model_prefix="tokenizer", vocab_size=600, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    import os
    os.remove("corpus.txt")
    os.remove("tokenizer.vocab")
    sp = spm.SentencePieceProcessor(model_file="tokenizer.model")
    cases = []
    for legacy in (True, False):
        tok = LlamaTokenizer(vocab_file="tokenizer.model", legacy=legacy, add_bos_token=True)
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
        for text in TEXTS:
            cases.append({"legacy": legacy, "text": text, "ids": tok(text).input_ids,
                          "decoded": tok.decode(tok(text).input_ids, skip_special_tokens=True)})
    plain = [{"text": t, "ids": sp.encode(t)} for t in TEXTS if "<" not in t]
    out = {"transformers": transformers.__version__, "sentencepiece": spm.__version__,
           "image_token_id": sp.get_piece_size(), "cases": cases, "sentencepiece_ids": plain}
    with open("golden.json", "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
