"""transformers' side of mt's language-family tests (`tests/it/model.rs`) on tiny llava-hf
checkpoints.

    python llava_hf_logits.py logits CHECKPOINT_DIR INPUTS.safetensors OUT.safetensors
        The checkpoint reads `input_ids` and `pixel_values` from INPUTS; its logits at
        every position and 16 greedy tokens (argmax, no EOS stop) go to OUT.
    python llava_hf_logits.py prompt CHECKPOINT_DIR IMAGE QUESTION
        What transformers' LlavaProcessor makes of one question about one image with the
        checkpoint's chat template: the prompt text and its input ids (image tokens
        expanded), as JSON.
    python llava_hf_logits.py peft BASE_DIR ADAPTER_DIR MERGED_DIR
        peft loads mt's LoRA adapter onto BASE (LlavaForConditionalGeneration) and merges it;
        prints JSON: the adapted modules, the adapter tensors peft left unloaded, and the
        largest difference from the checkpoint `mt convert merge-lora` wrote (projector
        excluded: mt takes it from the adapter's non_lora_trainables, peft does not).
    python llava_hf_logits.py vicuna SOURCE_DIR TOKENIZER_DIR OUT_DIR
        A random llava-hf checkpoint shaped as SOURCE_DIR's, with TOKENIZER_DIR's Llama-2
        style tokenizer (BOS added by the tokenizer) and `<image>` added: LLaVA-1.5's setup.
    python llava_hf_logits.py generate CHECKPOINT_DIR IMAGE PROMPT N
        transformers' greedy generation (N new tokens at most) for PROMPT through
        LlavaProcessor, as JSON: the input ids, the new ids and their text.
    python llava_hf_logits.py loss CHECKPOINT_DIR INPUTS.safetensors
        transformers' training loss on one sample (ids with -200 for the image, labels,
        pixel values), as JSON.
    python llava_hf_logits.py original HF_DIR OUT_DIR
        HF_DIR's weights in LLaVA's original layout (llava_mistral, llava_phi or
        llava_llama, by its text model), the CLIP tower in OUT_DIR-clip.
    python llava_hf_logits.py family TYPE SOURCE_DIR OUT_DIR SLIDING_WINDOW
        A random-weight LlavaForConditionalGeneration whose language model is of
        `model_type` TYPE (mistral, phi3, qwen2) with that sliding window (the rest of
        SOURCE_DIR's config, its tokenizer and image processor kept), saved with
        save_pretrained.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration


def logits(model_dir, inputs, out):
    model, info = LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{model_dir}: {problems}"
    model.eval()
    t = load_file(inputs)
    ids, pixels = t["input_ids"], t["pixel_values"]
    with torch.no_grad():
        all_logits = model(input_ids=ids, pixel_values=pixels).logits[0]
        greedy = []
        for _ in range(16):
            step = model(input_ids=ids, pixel_values=pixels).logits[0, -1]
            token = int(step.argmax())
            greedy.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    save_file({"logits": all_logits.contiguous(), "greedy": torch.tensor(greedy)}, out)


def llava_processor(model_dir, chat_template=None):
    """The checkpoint's LlavaProcessor (CLIP image processor, tokenizer, image-token count)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return LlavaProcessor(
        image_processor=CLIPImageProcessor.from_pretrained(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        patch_size=config["vision_config"]["patch_size"],
        vision_feature_select_strategy=config["vision_feature_select_strategy"],
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )


def prompt(model_dir, image, question):
    from PIL import Image

    template = json.loads((Path(model_dir) / "chat_template.json").read_text())["chat_template"]
    processor = llava_processor(model_dir, template)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    ids = processor(text=text, images=Image.open(image).convert("RGB"), return_tensors="pt")["input_ids"][0]
    print(json.dumps({"prompt": text, "ids": ids.tolist()}))


def random_llava(config):
    """A LlavaForConditionalGeneration of `config` (a config.json dict), weights N(0, 0.2), seed 0."""
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(**{k: v for k, v in config.items()
                                                          if k not in ("architectures", "transformers_version")}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def family(model_type, source, out, window):
    source, out = Path(source), Path(out)
    config = json.loads((source / "config.json").read_text())
    text = config["text_config"]
    text["model_type"] = model_type
    text["sliding_window"] = int(window)
    text.pop("attention_bias", None)
    text.pop("mlp_bias", None)
    config["architectures"] = ["LlavaForConditionalGeneration"]
    random_llava(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "preprocessor_config.json", "meta.json", "reference.safetensors"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)


def vicuna(source, tokenizer_dir, out):
    """A random LLaVA-1.5 shaped llava-hf checkpoint: SOURCE's config (Llama) with the Llama-2
    style tokenizer of TOKENIZER_DIR (BOS added by the tokenizer) plus `<image>`."""
    from transformers import AutoTokenizer
    source, out = Path(source), Path(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = json.loads((source / "config.json").read_text())
    text = config["text_config"]
    text.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config["image_token_index"] = tok.convert_tokens_to_ids("<image>")
    random_llava(config).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    shutil.copy(source / "preprocessor_config.json", out / "preprocessor_config.json")


def generate(model_dir, image, prompt, new_tokens):
    """transformers' greedy generation for PROMPT (text with `<image>`) through LlavaProcessor:
    the input ids and the generated ids, as JSON."""
    from PIL import Image
    processor = llava_processor(model_dir)
    inputs = processor(text=prompt, images=Image.open(image).convert("RGB"), return_tensors="pt")
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=int(new_tokens))
    ids = inputs["input_ids"][0].tolist()
    new = out[0, len(ids):].tolist()
    text = processor.tokenizer.decode(new, skip_special_tokens=True)
    print(json.dumps({"ids": ids, "new": new, "text": text}))


def loss(model_dir, inputs):
    """transformers' training loss on one sample: INPUTS holds `input_ids` (-200 where the
    image goes), `labels` (-100 = ignored) and `pixel_values`; the image becomes the
    config's image-token run, labelled -100, as LlavaForConditionalGeneration expects."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    t = load_file(inputs)
    n = model.config.image_seq_length
    ids, labels = [], []
    for i, l in zip(t["input_ids"].tolist(), t["labels"].tolist()):
        ids += [model.config.image_token_index] * n if i == -200 else [i]
        labels += [-100] * n if i == -200 else [l]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), pixel_values=t["pixel_values"],
                    labels=torch.tensor([labels]))
    print(json.dumps({"loss": float(out.loss), "tokens": len(ids)}))


def original(hf_dir, out):
    """The same weights in LLaVA's original layout: LlavaMistralForCausalLM (`llava_mistral`,
    LLaVA-Med v1.5) or LlavaPhiForCausalLM (`llava_phi`, LLaVA-pp) with the text config at
    the top level, `model.*` / `lm_head.*` / `model.mm_projector.{0,2}.*` tensors, and the
    CLIP tower saved as its own folder OUT-clip that `mm_vision_tower` names."""
    hf_dir, out = Path(hf_dir), Path(out)
    model = LlavaForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32)
    text = model.config.text_config.to_dict()
    kind = {"mistral": ("LlavaMistralForCausalLM", "llava_mistral"),
            "phi3": ("LlavaPhiForCausalLM", "llava_phi"),
            "llama": ("LlavaLlamaForCausalLM", "llava_llama")}[text["model_type"]]
    tower = out.parent / (out.name + "-clip")
    model.model.vision_tower.save_pretrained(tower)
    vision = {k if k.startswith("vision_model.") else "vision_model." + k: v.contiguous()
              for k, v in model.model.vision_tower.state_dict().items()}
    save_file(vision, tower / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(hf_dir / "preprocessor_config.json", tower / "preprocessor_config.json")
    config = {k: v for k, v in text.items() if k not in ("architectures", "model_type")}
    config.update(architectures=[kind[0]], model_type=kind[1], image_aspect_ratio="pad",
                  mm_hidden_size=model.config.vision_config.hidden_size,
                  mm_projector_type="mlp2x_gelu", mm_use_im_patch_token=False,
                  mm_use_im_start_end=False, mm_vision_select_feature="patch",
                  mm_vision_select_layer=model.config.vision_feature_layer,
                  mm_vision_tower=str(tower.resolve()), use_mm_proj=True)
    renames = [("model.language_model.", "model."), ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
               ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."), ("lm_head.", "lm_head.")]
    tensors = {}
    for name, t in model.state_dict().items():
        for old, new in renames:
            if name.startswith(old):
                tensors[new + name[len(old):]] = t.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "meta.json", "reference.safetensors"):
        if (hf_dir / name).exists():
            shutil.copy(hf_dir / name, out / name)


def peft(base_dir, adapter_dir, merged_dir):
    from peft import PeftModel
    base = LlavaForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir)
    adapted = sorted(n for n, _ in model.named_modules() if n.endswith(".lora_A"))
    stored = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    unloaded = [k for k in stored
                if k.replace(".weight", ".default.weight") not in loaded]
    differ = max((float((loaded[k.replace(".weight", ".default.weight")] - stored[k]).abs().max())
                  for k in stored if k not in unloaded), default=None)
    if unloaded:
        print(json.dumps({"unloaded": unloaded[:3], "peft_names": sorted(loaded)[:3]}))
        return
    merged = model.merge_and_unload().state_dict()
    ours = LlavaForConditionalGeneration.from_pretrained(merged_dir, dtype=torch.float32).state_dict()
    assert merged.keys() == ours.keys(), sorted(set(merged) ^ set(ours))[:5]
    diff = max(float((merged[k] - ours[k]).abs().max()) for k in merged if "multi_modal_projector" not in k)
    print(json.dumps({"adapted": len(adapted), "vision_adapted": sum("vision" in n for n in adapted),
                      "unloaded": unloaded, "loaded_vs_stored": differ, "merged_max_diff": diff}))


if __name__ == "__main__":
    commands = {"logits": logits, "family": family, "prompt": prompt, "peft": peft,
                "vicuna": vicuna, "generate": generate, "loss": loss, "original": original}
    commands[sys.argv[1]](*sys.argv[2:])
