#!/usr/bin/env bash
# `--quantize` against llama.cpp on the same weights, threads and prompt length (issue 28):
#   1. accuracy: mean KL divergence of next-token distributions against f32 on a fixed text
#      (llama.cpp's --kl-divergence convention), mt's quantized model against mt in f32 and
#      llama.cpp's GGUF of the same type against its f32 GGUF, on the ~100M bench checkpoint;
#   2. decode tokens/s at batch 1 after the same PROMPT-token prompt, mt (examples/
#      quant_bench.rs: the model loaded once, the time of NEW+1 tokens minus that of 1)
#      against llama.cpp reading the GGUF `mt convert gguf` wrote from the same checkpoint
#      (so both run the very same quantized blocks); medians of REPS;
#   3. peak RSS of `mt caption --cpu --quantize q4k|q8_0` on the 8B-shaped checkpoint
#      (bench/gpu_model.py; 16 GB on disk in bf16, 32 GB in f32), skipped unless it exists
#      or MAKE_8B=1; EIGHT_B=0 skips it.
#
#   bench/quantize.sh     (env: REPS=3 NEW=128 PROMPT=700 THREADS=$(nproc) TYPES="q8_0 q6k q4k" MT=prebuilt-mt)
#
# llama.cpp comes from PyPI's llama-cpp-python, built here once with GGML_NATIVE into
# $HOME/.cache/mt-llama-venv (~15 min on 2 cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}
REPS=${REPS:-3} NEW=${NEW:-128} PROMPT=${PROMPT:-700} THREADS=${THREADS:-$(nproc)} TYPES=${TYPES:-q8_0 q6k q4k}
LLAMA=${LLAMA_VENV:-$HOME/.cache/mt-llama-venv}
if ! "$LLAMA/bin/python" -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv "$LLAMA"
  "$LLAMA/bin/pip" install -q cmake ninja numpy
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$LLAMA/bin/pip" install -q --no-binary llama-cpp-python llama-cpp-python==0.3.36
fi
LPY="$LLAMA/bin/python $ROOT/bench/quantize_llama_cpp.py"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=$CARGO_TARGET_DIR/release/mt
fi
(cd "$ROOT" && cargo build --release --quiet --example quant_bench)
QB=$CARGO_TARGET_DIR/release/examples/quant_bench
BIG=$OUT/caption-100m
[ -f "$BIG/config.json" ] || "$ROOT/bench/.venv-torch/bin/python" "$ROOT/bench/caption_cpu.py" make "$BIG" "$ROOT/testdata/models/tiny-llava-hf"
G=$OUT/gguf; mkdir -p "$G"
for t in f32 $TYPES; do
  [ -f "$G/100m-$t.gguf" ] || "$MT" --quiet convert gguf --model "$BIG" -o "$G/100m-$t.gguf" --type "$t"
done

echo "## accuracy: mean KL divergence against f32 (512 tokens of a fixed text)"
TEXT=$OUT/kl-text.txt
python3 - "$TEXT" <<'PY'
import sys
words = ("the chest radiograph shows a small nodule in the left upper lobe with no pleural "
         "effusion the heart size is normal and the mediastinum is not widened ").split()
open(sys.argv[1], "w").write(" ".join(words[(i * 7) % len(words)] for i in range(400)))
PY
IDS=$($LPY ids "$G/100m-f32.gguf" "$TEXT" 512)
printf "type\tmt_kl_mean\tllama.cpp_kl_mean\tratio\tmt_top1_same\tllama.cpp_top1_same\n"
"$QB" kl "$BIG" "$IDS" $TYPES > "$OUT/kl-mt.jsonl"
for t in $TYPES; do
  ours=$(grep "\"$t\"" "$OUT/kl-mt.jsonl")
  theirs=$($LPY kl "$G/100m-f32.gguf" "$G/100m-$t.gguf" "$IDS")
  python3 -c "import json,sys; a=json.loads(sys.argv[2]); b=json.loads(sys.argv[3]); print(f\"{sys.argv[1]}\t{a['kl_mean']:.3g}\t{b['kl_mean']:.3g}\t{a['kl_mean']/b['kl_mean']:.2f}\t{a['top1_same']:.3f}\t{b['top1_same']:.3f}\")" "$t" "$ours" "$theirs"
done

echo "## decode tokens/s at batch 1 after a $PROMPT-token prompt ($THREADS threads, median of $REPS)"
printf "type\tmt_tok_s\tllama.cpp_tok_s\tratio\n"
rate() { python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tokens_per_s'])"; }
for t in f32 $TYPES; do
  ours=$(RAYON_NUM_THREADS=$THREADS "$QB" decode "$BIG" - "$t" "$PROMPT" "$NEW" "$REPS" | rate)
  theirs=$($LPY decode "$G/100m-$t.gguf" "$PROMPT" "$NEW" "$THREADS" "$REPS" | rate)
  python3 -c "import sys; a,b=float(sys.argv[2]),float(sys.argv[3]); print(f'{sys.argv[1]}\t{a:.1f}\t{b:.1f}\t{a/b:.2f}')" "$t" "$ours" "$theirs"
done

EIGHT=$OUT/8b
if [ "${MAKE_8B:-0}" = 1 ] && [ ! -f "$EIGHT/llava/config.json" ]; then
  "$ROOT/bench/.venv-torch/bin/python" "$ROOT/bench/gpu_model.py" "$EIGHT" --size 8b --dtype bf16
fi
if [ "${EIGHT_B:-1}" != 0 ] && [ -f "$EIGHT/llava/config.json" ]; then
  echo "## 8B-shaped checkpoint: peak RSS of mt caption --cpu (one image, 4 new tokens)"
  printf "type\tpeak_rss_GB\tseconds\n"
  for t in q4k q8_0; do
    /usr/bin/time -o "$OUT/rss8b" -f "%M %e" "$MT" --quiet caption "$ROOT/testdata/images/cell.png" \
      --model "$EIGHT/llava" --vision-tower "$EIGHT/clip" --cpu --quantize "$t" --ignore-eos \
      --max-new-tokens 4 -o /dev/null >/dev/null 2>&1
    r=$(tail -1 "$OUT/rss8b")
    python3 -c "import sys; kb,s=sys.argv[2].split(); print(f'{sys.argv[1]}\t{int(kb)/1e6:.2f}\t{float(s):.0f}')" "$t" "$r"
  done
  echo "## 8B-shaped checkpoint: q4k decode tokens/s at batch 1 after a $PROMPT-token prompt ($THREADS threads, one run)"
  [ -f "$G/8b-q4k.gguf" ] || "$MT" --quiet convert gguf --model "$EIGHT/llava" --vision-tower "$EIGHT/clip" -o "$G/8b-q4k.gguf" --type q4k
  printf "type\tmt_tok_s\tllama.cpp_tok_s\tratio\n"
  ours=$(RAYON_NUM_THREADS=$THREADS "$QB" decode "$EIGHT/llava" "$EIGHT/clip" q4k "$PROMPT" 16 1 | rate)
  theirs=$($LPY decode "$G/8b-q4k.gguf" "$PROMPT" 16 "$THREADS" 1 | rate)
  python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'q4k\t{a:.2f}\t{b:.2f}\t{a/b:.2f}')" "$ours" "$theirs"
fi
