#!/usr/bin/env python3
"""Golden prompts of LLaVA's conversation templates, rendered by the reference code itself.

Each source's `llava/conversation.py` is imported from a file given on the command line
(their licences differ, so none is vendored here) and every template of its
`conv_templates` renders the same conversations with `Conversation.get_prompt()`, the way
LLaVA's eval scripts and `serve/cli.py` build a prompt: `conv = conv_templates[name].copy()`,
`conv.append_message(conv.roles[i], text)` for each turn, `None` for the turn the model is
to write. A render that raises is recorded as an error (the Rust side must refuse it too).

    python3 make_prompts.py \\
        medtrinity=MedTrinity-25M/llava/conversation.py \\
        llava=LLaVA/llava/conversation.py \\
        llava-med=LLaVA-Med/llava/conversation.py \\
        llava-pp-phi3=LLaVA-pp/Phi-3-V/conversation.py \\
        llava-pp-llama3=LLaVA-pp/LLaMA-3-V/conversation.py  > prompts.json

The files, at the commits `SOURCES` names (raw files:
https://raw.githubusercontent.com/<repo>/<commit>/<path>), are checked by sha256.
"""
import hashlib
import importlib.util
import json
import sys

SOURCES = {
    "medtrinity": ("UCSC-VLAA/MedTrinity-25M", "79b1b030676047161d17164a1ba1da5e76b815a0",
                   "llava/conversation.py",
                   "efed5c400916ecd2813b5572ac64414898465b626996087356b629e0e6ed136e"),
    "llava": ("haotian-liu/LLaVA", "c121f0432da27facab705978f83c4ada465e46fd",
              "llava/conversation.py",
              "5afd26fa231082cb6fdc100c3887d663f72d8c99a93dcdd285dac303ca72e45c"),
    "llava-med": ("microsoft/LLaVA-Med", "d406e3fc7c3d1e4c797a7676de18cbfd070b6d2c",
                  "llava/conversation.py",
                  "dd9c8b52c0f22ea53ff60312b220fdf3c13a8c87e5ad8c9c38f41e94f0cb1943"),
    "llava-pp-phi3": ("mbzuai-oryx/LLaVA-pp", "5ccb07b443a9dceabb0992a06fa27b8c216f9546",
                      "Phi-3-V/conversation.py",
                      "8a05cad06cd2ec9b2fbff6ebceed77c96c51ac7d44d38d7b500deabbd6647a9f"),
    "llava-pp-llama3": ("mbzuai-oryx/LLaVA-pp", "5ccb07b443a9dceabb0992a06fa27b8c216f9546",
                        "LLaMA-3-V/conversation.py",
                        "2e390d651f01bd2b5fcecf328fbcc5f77a7a26826563a29fd5c16968a861e404"),
}

# (name, turns): turn i is the user's when i is even; None = the model answers next.
CONVERSATIONS = [
    ("question", ["<image>\nWhat modality is this image?", None]),
    ("text_only", ["Which organ is usually imaged for cholelithiasis?", None]),
    ("answered", ["<image>\nIs there a fracture?", "No."]),
    ("two_rounds", ["<image>\nWhat modality is this image?", "CT", "Which organ is shown?", None]),
    ("two_rounds_answered",
     ["<image>\nWhat modality is this image?", "CT", "Which organ is shown?", "The liver."]),
    ("untrimmed", ["<image>\n  Where is the lesion?  ", "  In the left lobe.\n", "Size?", None]),
]


def load(name, path):
    data = open(path, "rb").read()
    want = SOURCES[name][3]
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"{path}: sha256 {got}, expected {want} ({SOURCES[name][0]}@{SOURCES[name][1]})")
    spec = importlib.util.spec_from_file_location(f"conv_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(template, turns):
    conv = template.copy()
    for i, text in enumerate(turns):
        conv.append_message(conv.roles[i % 2], text)
    return conv.get_prompt()


def main():
    # One case per distinct render: the sources that render it the same are listed together.
    cases = {}
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        module = load(name, path)
        for key, template in module.conv_templates.items():
            for conv_name, turns in CONVERSATIONS:
                try:
                    outcome = ("prompt", render(template, turns))
                except Exception as e:  # the reference refuses this conversation
                    outcome = ("error", f"{type(e).__name__}: {e}")
                case = cases.setdefault((key, conv_name, outcome), {
                    "template": key, "conversation": conv_name, "turns": turns,
                    "sources": [], outcome[0]: outcome[1]})
                case["sources"].append(name)
    cases = list(cases.values())
    sources = {n: {"repo": r, "commit": c, "path": p, "sha256": h} for n, (r, c, p, h) in SOURCES.items()}
    json.dump({"sources": sources, "cases": cases}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
