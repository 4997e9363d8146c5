# Baseline: HF transformers LLaVA (Llama-3-8B + CLIP-L/336, no S2) random weights,
# bf16, greedy generation throughput; and a LoRA training step with PEFT.
# Vendored from the workspace's shared/bench/hf_llava_baseline.py (its H100 figures are the
# issues' baselines) so that bench/gpu.sh can run it on the device machine. Changes for mt,
# marked "mt:": SIZES picks the generation batches, and a stage-1 step (everything but the
# projector frozen, the LoRA step's batch) runs before the LoRA step.
import json, os, sys, time, torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, CLIPVisionConfig, LlamaConfig
TINY = os.environ.get("TINY") == "1"
dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = torch.bfloat16 if dev == "cuda" else torch.float32
def out(**kw): print(json.dumps(kw), flush=True)
if TINY:
    vc = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=336, patch_size=14, projection_dim=64, hidden_act="quick_gelu")
    tc = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=128320, rope_theta=500000.0, max_position_embeddings=8192)
else:
    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    tc = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128320, rope_theta=500000.0, max_position_embeddings=8192, rms_norm_eps=1e-5)
cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=128256, projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576)
torch.manual_seed(0)
t0 = time.time()
torch.set_default_dtype(dt)
with torch.device(dev):
    model = LlavaForConditionalGeneration(cfg)
model.eval()
nparams = sum(p.numel() for p in model.parameters())
out(part="init", params=nparams, seconds=round(time.time()-t0, 1), device=dev, dtype=str(dt), torch=torch.__version__)
import transformers; out(transformers=transformers.__version__)
PROMPT_TEXT = 40  # text tokens around the image
def batch(B, gen=True):
    g = torch.Generator().manual_seed(B)
    pre = torch.randint(0, 128000, (B, 20), generator=g)
    img = torch.full((B, 576), 128256)
    post = torch.randint(0, 128000, (B, PROMPT_TEXT - 20), generator=g)
    ids = torch.cat([pre, img, post], 1).to(dev)
    pv = torch.randn(B, 3, 336, 336, generator=g).to(dev, dt)
    return ids, pv
NEW = int(os.environ.get("NEW", "128"))
sizes = [int(b) for b in os.environ.get("SIZES", "1 2" if TINY else "1 16 64").split()]  # mt: SIZES
for B in sizes:
    try:
        ids, pv = batch(B)
        mask = torch.ones_like(ids)
        kw = dict(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(**kw)  # warm-up
            if dev == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            ts = []
            for _ in range(2):
                t = time.time(); o = model.generate(**kw)
                if dev == "cuda": torch.cuda.synchronize()
                ts.append(time.time() - t)
        s = sorted(ts)[0]
        mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0
        out(part="generate", batch=B, new_tokens=NEW, prompt_tokens=ids.shape[1], seconds=round(s, 3), images_per_s=round(B / s, 2), tokens_per_s=round(B * NEW / s, 1), peak_gib=round(mem, 1), out_len=o.shape[1])
    except Exception as e:
        out(part="generate", batch=B, error=repr(e)[:300])
# mt: a stage-1 step (projector only), on the batch of the LoRA step below
B, L = (2, 700) if TINY else (8, 1024)
g = torch.Generator().manual_seed(1)
ids = torch.cat([torch.randint(0, 128000, (B, 20), generator=g), torch.full((B, 576), 128256), torch.randint(0, 128000, (B, L - 596), generator=g)], 1).to(dev)
pv = torch.randn(B, 3, 336, 336, generator=g).to(dev, dt)
labels = ids.clone(); labels[:, :596] = -100
def timed_steps(m, opt):  # mt: the LoRA block's timing, shared with the stage-1 step
    def step():
        loss = m(input_ids=ids, pixel_values=pv, labels=labels, attention_mask=torch.ones_like(ids)).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); return loss.item()
    step(); step()
    if dev == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.time(); n = 2 if TINY else 5
    for _ in range(n): l = step()
    if dev == "cuda": torch.cuda.synchronize()
    s = (time.time() - t) / n
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0
    return s, mem, l
try:
    for n, p in model.named_parameters(): p.requires_grad_("multi_modal_projector" in n)
    model.train(); model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt1 = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    s, mem, l = timed_steps(model, opt1)
    out(part="stage1_train", batch=B, seq=L, seconds_per_step=round(s, 3), samples_per_s=round(B / s, 2), peak_gib=round(mem, 1), loss=l)
    del opt1; model.requires_grad_(True); model.eval()
except Exception as e:
    out(part="stage1_train", error=repr(e)[:300])
# LoRA training step (PEFT), LLM linear layers, vision tower frozen
try:
    from peft import LoraConfig, get_peft_model
    torch.set_default_dtype(torch.float32)
    lcfg = LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    pm = get_peft_model(model, lcfg)
    for n, p in pm.named_parameters():
        if "multi_modal_projector" in n: p.requires_grad_(True)
    pm.train(); pm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}); pm.enable_input_require_grads()
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-4)
    s, mem, l = timed_steps(pm, opt)  # mt: the batch is built above, the timing is shared
    out(part="lora_train", batch=B, seq=L, trainable=trainable, seconds_per_step=round(s, 3), samples_per_s=round(B / s, 2), tokens_per_s=round(B * L / s), peak_gib=round(mem, 1), loss=l)
except Exception as e:
    import traceback; traceback.print_exc()
    out(part="lora_train", error=repr(e)[:300])
