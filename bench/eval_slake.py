"""`mt eval slake` against the reference-style loop (MedTrinity's llava/eval/model_vqa.py: one
question at a time, expand2square + CLIPImageProcessor, the llama3 template with
"<image>\\n" + question, generate, decode without special tokens, strip), on the same
random-weight llava-hf checkpoint and a synthetic SLAKE test split.

  eval_slake.py make OUT --size tiny|8b TOKENIZER_DIR
      OUT/model: random LlavaForConditionalGeneration (8b: CLIP ViT-L/14-336 + Llama-3-8B
      shapes, vocab 128320; tiny: the caption bench's ~100M shapes), bf16 for 8b; the
      tokenizer is the tiny test one (Llama-3 special tokens), so prompts are ~610 tokens.
      OUT/slake: test.json with 1061 English questions (SLAKE's count; 60% OPEN) over 96
      JPEGs of SLAKE's sizes (512x512, some 384x384 / 256x256) in imgs/xmlabN/source.jpg.
  eval_slake.py run MODEL SLAKE --new N [--limit L] [--answers FILE]
      prompts tokenised by LLaVA's tokenizer_image_token, as model_vqa.py does;
      prints one JSON line: questions, seconds (model load excluded), questions_per_s.
Greedy with exactly N new tokens (min_new_tokens), as random weights rarely stop.
"""
import argparse, json, os, random, shutil, time


def make(out, size, tok_dir):
    import torch
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    if size == "8b":
        vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
        tc = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128320, rope_theta=500000.0, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
        dtype = torch.bfloat16
    else:
        vc = CLIPVisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                              image_size=336, patch_size=14, hidden_act="quick_gelu")
        tc = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=4, vocab_size=128320, rope_theta=500000.0, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
        dtype = torch.float32
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tok.token_to_id("<image>"),
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-2, image_seq_length=576)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = LlavaForConditionalGeneration(cfg).eval()
    model_dir = os.path.join(out, "model")
    model.save_pretrained(model_dir)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "preprocessor_config.json"]:
        if os.path.exists(os.path.join(tok_dir, f)):
            shutil.copy(os.path.join(tok_dir, f), model_dir)
    rng = random.Random(0)
    slake = os.path.join(out, "slake")
    sizes = [(512, 512)] * 8 + [(384, 384), (256, 256)]
    for i in range(96):
        d = os.path.join(slake, "imgs", f"xmlab{i}")
        os.makedirs(d, exist_ok=True)
        w, h = rng.choice(sizes)
        Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3)).save(os.path.join(d, "source.jpg"), quality=90)
    words = "which organ is abnormal where the lesion does this image show lung liver brain kidney modality " \
            "is it ct mri x-ray located in left right upper lower part of body how many".split()
    records = []
    for qid in range(1061):
        closed = rng.random() < 0.4
        q = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + "?"
        records.append({"img_id": qid % 96, "img_name": f"xmlab{qid % 96}/source.jpg", "question": q,
                        "answer": rng.choice(["Yes", "No"]) if closed else rng.choice(["Lung", "Liver", "Brain"]),
                        "q_lang": "en", "location": rng.choice(["Lung", "Abdomen", "Brain"]),
                        "modality": rng.choice(["CT", "MRI", "X-Ray"]), "answer_type": "CLOSED" if closed else "OPEN",
                        "base_type": "vqa", "content_type": rng.choice(["Organ", "Position", "Abnormality"]),
                        "qid": qid})
    with open(os.path.join(slake, "test.json"), "w") as f:
        json.dump(records, f)
    print(json.dumps({"made": out, "params": sum(p.numel() for p in model.parameters()), "questions": 1061}))


TEMPLATE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an "
            "artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's "
            "questions.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\n{q}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def tokenizer_image_token(prompt, tok, image_id):
    """LLaVA's mm_utils.tokenizer_image_token, with the image expanded to its 576 rows as
    llava-hf's model expects."""
    chunks = [tok.encode(c).ids for c in prompt.split("<image>")]  # tokenizer(chunk): specials added
    bos = tok.token_to_id("<|begin_of_text|>")
    offset = 1 if chunks[0] and chunks[0][0] == bos else 0
    ids = [chunks[0][0]] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            ids += [image_id] * 576
        ids += chunk[offset:]
    return ids


def run(model_dir, slake, new, limit, answers):
    import torch
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    mean = tuple(int(x * 255) for x in proc.image_mean)
    image_id = model.config.image_token_index

    def square(img):  # LLaVA's expand2square
        w, h = img.size
        if w == h:
            return img
        s = max(w, h)
        canvas = Image.new(img.mode, (s, s), mean)
        canvas.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
        return canvas

    questions = json.load(open(os.path.join(slake, "test.json")))
    questions = [q for q in questions if q.get("q_lang", "en") == "en"][: limit or None]
    out = open(answers, "w") if answers else None
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    with torch.inference_mode():
        for q in questions:
            qs = q["question"].replace("<image>", "").strip()
            ids = tokenizer_image_token(TEMPLATE.format(q=qs), tok, image_id)
            image = Image.open(os.path.join(slake, "imgs", q["img_name"])).convert("RGB")
            pixels = proc(square(image), return_tensors="pt")["pixel_values"].to(dev, dtype)
            input_ids = torch.tensor([ids], device=dev)
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    pixel_values=pixels, max_new_tokens=new, min_new_tokens=new,
                                    do_sample=False, pad_token_id=0)
            text = tok.decode(output[0, len(ids):].tolist(), skip_special_tokens=True).strip()
            if out:
                out.write(json.dumps({"question_id": q["qid"], "text": text}) + "\n")
    if dev == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - t0
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0
    print(json.dumps({"questions": len(questions), "seconds": round(secs, 2),
                      "questions_per_s": round(len(questions) / secs, 3), "peak_gib": round(mem, 1)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--size", choices=["tiny", "8b"], default="tiny")
    m.add_argument("tokenizer_dir")
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("slake")
    r.add_argument("--new", type=int, default=32)
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--answers")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out, a.size, a.tokenizer_dir)
    else:
        run(a.model, a.slake, a.new, a.limit, a.answers)
