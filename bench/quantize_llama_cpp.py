"""llama.cpp's side of bench/quantize.sh, through llama-cpp-python (built here with
GGML_NATIVE, so it runs this CPU's best kernels).

  quantize_llama_cpp.py ids F32_GGUF TEXT_FILE N        token ids of the text, N of them (repeated)
  quantize_llama_cpp.py kl F32_GGUF Q_GGUF IDS          mean KL(p_f32 || p_q) over the positions, JSON
  quantize_llama_cpp.py decode GGUF PROMPT_TOKENS NEW THREADS REPS
                                                        decode tokens/s after a prompt, median of REPS, JSON
"""
import json
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama


def load(path, n_ctx=2048, threads=None, logits_all=False):
    return Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, verbose=False)


def ids(gguf, text_file, n):
    llm = load(gguf)
    toks = llm.tokenize(open(text_file, "rb").read(), add_bos=True, special=False)
    n = int(n)
    out = (toks * (n // len(toks) + 1))[:n]
    print(",".join(str(t) for t in out))


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def kl(f32_gguf, q_gguf, id_text):
    toks = [int(t) for t in id_text.split(",")]

    def logp(path):
        llm = load(path, n_ctx=len(toks) + 8, logits_all=True)
        llm.eval(toks)
        return log_softmax(np.array(llm.scores[: len(toks)], dtype=np.float64))

    p, q = logp(f32_gguf), logp(q_gguf)
    d = (np.exp(p) * (p - q)).sum(axis=1)
    print(json.dumps({"kl_mean": float(d.mean()), "kl_max": float(d.max()),
                      "top1_same": float((p.argmax(1) == q.argmax(1)).mean()), "tokens": len(toks)}))


def decode(gguf, prompt_tokens, new, threads, reps):
    prompt_tokens, new, threads, reps = int(prompt_tokens), int(new), int(threads), int(reps)
    llm = load(gguf, n_ctx=prompt_tokens + new + 8, threads=threads)
    prompt = [(i * 7919) % 300 + 5 for i in range(prompt_tokens)]
    rates = []
    for _ in range(reps):
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        for i in range(new):
            # One token a step, its logits computed; which token does not change the cost.
            llm.eval([(i * 31) % 300 + 5])
        rates.append(new / (time.perf_counter() - start))
    print(json.dumps({"decode_tokens_per_s": statistics.median(rates), "runs": rates}))


if __name__ == "__main__":
    {"ids": ids, "kl": kl, "decode": decode}[sys.argv[1]](*sys.argv[2:])
