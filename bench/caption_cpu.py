"""CPU captioning baseline for `mt caption --cpu`: transformers' LlavaForConditionalGeneration
with LLaVA's preprocessing (expand2square + CLIPImageProcessor) and the llama3 template,
greedy, a fixed number of new tokens, left-padded batches.

  caption_cpu.py make OUT_DIR TOKENIZER_DIR     # a ~100M-parameter random llava-hf checkpoint
  caption_cpu.py run MODEL_DIR IMAGES_DIR --new N --batch B --threads T
prints one JSON line: images, seconds (preprocess + generate, model load excluded), images_per_s.
"""
import argparse, json, os, shutil, sys, time

def make(out, tok_dir):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    image_id = tok.token_to_id("<image>")
    vc = CLIPVisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                          image_size=336, patch_size=14, hidden_act="quick_gelu")
    tc = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                     num_key_value_heads=4, vocab_size=tok.get_vocab_size(), rope_theta=500000.0,
                     max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=image_id, projector_hidden_act="gelu",
                      vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "preprocessor_config.json"]:
        if os.path.exists(os.path.join(tok_dir, f)):
            shutil.copy(os.path.join(tok_dir, f), out)
    print(json.dumps({"made": out, "params": n}))

TEMPLATE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an "
            "artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's "
            "questions.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\n{q}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")

def run(model_dir, images_dir, new, batch, threads, prompt):
    import torch
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration
    torch.set_num_threads(threads)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    image_id = model.config.image_token_index
    text = TEMPLATE.format(q=prompt)
    before, after = text.split("<image>")
    ids = tok.encode(before, add_special_tokens=False).ids + [image_id] * 576 + tok.encode(after, add_special_tokens=False).ids
    files = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir))
    mean = tuple(int(x * 255) for x in proc.image_mean)
    def square(img):
        w, h = img.size
        if w == h: return img
        s = max(w, h); canvas = Image.new(img.mode, (s, s), mean)
        canvas.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0)); return canvas
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(files), batch):
            chunk = files[i:i + batch]
            pixels = proc([square(Image.open(f).convert("RGB")) for f in chunk], return_tensors="pt")["pixel_values"]
            input_ids = torch.tensor([ids] * len(chunk))
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels,
                           max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    secs = time.time() - t0
    print(json.dumps({"images": len(files), "seconds": round(secs, 3), "images_per_s": round(len(files) / secs, 4)}))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make"); m.add_argument("out"); m.add_argument("tokenizer_dir")
    r = sub.add_parser("run"); r.add_argument("model"); r.add_argument("images")
    r.add_argument("--new", type=int, default=32); r.add_argument("--batch", type=int, default=4)
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--prompt", default="Describe the image in detail.")
    a = ap.parse_args()
    if a.cmd == "make": make(a.out, a.tokenizer_dir)
    else: run(a.model, a.images, a.new, a.batch, a.threads, a.prompt)
