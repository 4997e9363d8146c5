"""CPU training baseline for `mt finetune --cpu`: the LLaVA-Med++ (MedTrinity-25M) training step
in PyTorch + transformers (+ peft for LoRA), built from the reference code that
testdata/train/make_train_fixtures.py vendors verbatim (LazySupervisedDataset with
preprocess_llama3, DataCollatorForSupervisedDataset, CLIPVisionTower, LlavaShim's
prepare_inputs_labels_for_multimodal, LLaVATrainer.create_optimizer); the loop is the HF
Trainer's inner step: forward, backward, clip_grad_norm_, AdamW step, LR schedule step,
zero_grad.

  train_baseline.py make OUT_DIR                 # ~100M-parameter random original-layout LLaVA
                                                 # checkpoint OUT_DIR/llava (+ CLIP OUT_DIR/clip)
  train_baseline.py run --model DIR --data FILE.jsonl --image-folder DIR --steps N --batch B
                        --lr LR [--lora-r R --lora-alpha A] --threads T

`run` prints one JSON line: per-step seconds (dataset items + collation + forward + backward +
clip + optimizer, i.e. what `mt`'s metrics.jsonl `seconds` covers), per-step losses, trainable
parameters, peak RSS (getrusage, the whole process, load included).
Mirrors `mt finetune` defaults: weight decay 0, max grad norm 1.0, cosine schedule (warmup
--warmup-ratio), AdamW betas 0.9/0.999 eps 1e-8, projector lr = --lr (full) or 2e-5 (LoRA),
LoRA dropout 0.05, image_aspect_ratio pad, model_max_length 2048, float32, transformers' default (sdpa)
attention unless --attn eager.
"""
import argparse
import importlib.util
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True
ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "testdata" / "models"


def vendored():
    """testdata/train/make_train_fixtures.py as a module (it sets 1 thread and deterministic
    algorithms on import; `run` resets both)."""
    spec = importlib.util.spec_from_file_location("ref", ROOT / "testdata" / "train" / "make_train_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- make
def make(out):
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    llava_dir, clip_dir = out / "llava", out / "clip"
    for d in (llava_dir, clip_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    torch.manual_seed(0)
    # CLIP: the tiny-clip config with 384 hidden x 6 layers (6 heads, 1536 MLP) at 336 px / patch 14.
    ccfg = json.loads((TINY / "tiny-clip" / "config.json").read_text())
    ccfg.update(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                projection_dim=384)
    (clip_dir / "config.json").write_text(json.dumps(ccfg, indent=2) + "\n")
    shutil.copy(TINY / "tiny-clip" / "preprocessor_config.json", clip_dir)
    vc = {k: v for k, v in ccfg.items() if k not in ("architectures", "transformers_version", "model_type")}
    clip = CLIPVisionModel(CLIPVisionConfig(**vc))
    # classic names vision_model.* (transformers 5 keeps them flat in memory, maps the prefix on load)
    sd = {("vision_model." + k if not k.startswith("vision_model.") else k): v.contiguous()
          for k, v in clip.state_dict().items()}
    save_file(sd, str(clip_dir / "model.safetensors"), metadata={"format": "pt"})
    n_clip = sum(v.numel() for v in sd.values())

    # Llama 768 x 12 layers, 12 heads / 4 KV heads, MLP 2048, the tiny tokenizer's 326 ids.
    cfg = json.loads((TINY / "tiny-llava" / "config.json").read_text())
    cfg.update(_name_or_path="bench-random-llava-100m", hidden_size=768, intermediate_size=2048,
               num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=4096,
               mm_hidden_size=384, mm_vision_tower="../clip")
    (llava_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=4, hidden_act="silu", max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False))
    proj = torch.nn.Sequential(torch.nn.Linear(384, 768), torch.nn.GELU(), torch.nn.Linear(768, 768))
    sd = {k: v.contiguous() for k, v in llm.state_dict().items()}
    sd.update({"model.mm_projector." + k: v.contiguous() for k, v in proj.state_dict().items()})
    save_file(sd, str(llava_dir / "model.safetensors"), metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copy(TINY / "tiny-llava" / f, llava_dir)
    n_llm = sum(v.numel() for v in sd.values())
    print(json.dumps({"made": str(out), "llm_params": n_llm, "clip_params": n_clip}))


# ----------------------------------------------------------------------------- run
def load_llm(ref, model_dir, attn):
    """make_train_fixtures.load_llm for any original-layout checkpoint folder."""
    import torch.nn as nn
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = json.loads((model_dir / "config.json").read_text())
    lc = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                     intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                     num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                     head_dim=cfg["hidden_size"] // cfg["num_attention_heads"], hidden_act=cfg["hidden_act"],
                     max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
                     rope_theta=cfg["rope_theta"], tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                     bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"], pad_token_id=None,
                     use_cache=False)
    llm = LlamaForCausalLM._from_config(lc, attn_implementation=attn)
    assert cfg["mm_projector_type"] == "mlp2x_gelu"
    llm.model.mm_projector = nn.Sequential(nn.Linear(cfg["mm_hidden_size"], cfg["hidden_size"]), nn.GELU(),
                                           nn.Linear(cfg["hidden_size"], cfg["hidden_size"]))
    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(load_file(str(model_dir / f)))
    llm.load_state_dict(sd, strict=True)
    llm.train()
    return llm, cfg


def run(a):
    import torch
    import peft
    from transformers import PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

    ref = vendored()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(False)
    model_dir = Path(a.model)
    t0 = time.perf_counter()
    llm, cfg = load_llm(ref, model_dir, a.attn)
    tower_dir = Path(a.vision_tower) if a.vision_tower else (model_dir / cfg["mm_vision_tower"])
    tower = ref.CLIPVisionTower(tower_dir)
    if a.attn != "eager":
        tower.vision_tower = type(tower.vision_tower).from_pretrained(str(tower_dir), attn_implementation=a.attn)
        tower.vision_tower.requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir), model_max_length=ref.MODEL_MAX_LENGTH,
                                                        padding_side="right")
    assert tokenizer.pad_token_id == ref.PAD_ID
    if a.lora_r:
        # train.py: get_peft_model(LoraConfig(target_modules=find_all_linear_names(model), ...)),
        # then initialize_vision_modules re-enables the projector.
        lcfg = peft.LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, target_modules=ref.find_all_linear_names(llm),
                               lora_dropout=a.lora_dropout, bias="none", task_type="CAUSAL_LM")
        llm = peft.get_peft_model(llm, lcfg)
        llm.base_model.model.model.mm_projector.requires_grad_(True)
        llm.train()
        projector_lr = a.projector_lr if a.projector_lr is not None else 2e-5
    else:
        llm.requires_grad_(True)
        projector_lr = a.projector_lr
    trainable = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    args = SimpleNamespace(learning_rate=a.lr, mm_projector_lr=projector_lr, adam_beta1=0.9, adam_beta2=0.999,
                           adam_epsilon=1e-8, weight_decay=a.weight_decay, max_grad_norm=1.0)
    optimizer = ref.LLaVATrainer(llm, args).create_optimizer()
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(a.warmup_ratio * a.steps + 0.999999), a.steps)
    shim = ref.LlavaShim(llm, tower)
    data_args = SimpleNamespace(image_folder=a.image_folder, image_processor=tower.image_processor,
                                image_aspect_ratio="pad", is_multimodal=True, mm_use_im_start_end=False)
    dataset = ref.LazySupervisedDataset(a.data, tokenizer, data_args)
    collator = ref.DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    n = len(dataset)
    load_s = time.perf_counter() - t0

    steps = []
    for step in range(a.steps):
        t = time.perf_counter()
        idx = [(step * a.batch + i) % n for i in range(a.batch)]  # in order (the bench uses n == batch)
        batch = collator([dataset[i] for i in idx])
        out, _, _, labels = shim.forward(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["images"])
        loss = out.loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(llm.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        llm.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        steps.append({"step": step + 1, "seconds": dt, "loss": loss.item(), "grad_norm": norm.item(),
                      "tokens": int((labels[:, 1:] != ref.IGNORE_INDEX).sum()), "seq_len": int(labels.shape[1]),
                      "samples": len(idx)})
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_s": load_s, "trainable_params": trainable, "peak_rss_mb": rss_mb,
                      "threads": torch.get_num_threads(), "attn": a.attn, "torch": torch.__version__,
                      "steps": steps}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--vision-tower")
    r.add_argument("--data", required=True)
    r.add_argument("--image-folder", required=True)
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--batch", type=int, default=2)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--projector-lr", type=float)
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--warmup-ratio", type=float, default=0.0)
    r.add_argument("--lora-r", type=int)
    r.add_argument("--lora-alpha", type=float)
    r.add_argument("--lora-dropout", type=float, default=0.05)  # mt's and the reference scripts' default
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    a = p.parse_args()
    if a.cmd == "make":
        make(a.out)
    else:
        if a.lora_r and a.lora_alpha is None:
            a.lora_alpha = 2.0 * a.lora_r
        run(a)


if __name__ == "__main__":
    main()
