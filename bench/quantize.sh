#!/usr/bin/env bash
# `--quantize` against llama.cpp on the same weights, threads and prompt length (issue 28):
#   1. accuracy: mean KL divergence of next-token distributions against f32 on a fixed text
#      (llama.cpp's --kl-divergence convention), mt's quantized model against mt in f32 and
#      llama.cpp's GGUF of the same type against its f32 GGUF, on the ~100M bench checkpoint;
#   2. decode tokens/s at batch 1 after a ~700-token prompt, mt caption (the time of NEW+8
#      tokens minus that of 8) against llama.cpp reading the GGUF `mt convert gguf` wrote
#      from the same checkpoint (so both run the very same quantized blocks); medians of REPS;
#   3. peak RSS of `mt caption --cpu --quantize q4k|q8_0` on the 8B-shaped checkpoint
#      (bench/gpu_model.py; 16 GB on disk in bf16, 32 GB in f32), skipped unless it exists
#      or MAKE_8B=1.
#
#   bench/quantize.sh     (env: REPS=3 NEW=128 THREADS=$(nproc) TYPES="q8_0 q6k q4k" MT=prebuilt-mt)
#
# llama.cpp comes from PyPI's llama-cpp-python, built here once with GGML_NATIVE into
# $HOME/.cache/mt-llama-venv (~15 min on 2 cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}
REPS=${REPS:-3} NEW=${NEW:-128} THREADS=${THREADS:-$(nproc)} TYPES=${TYPES:-q8_0 q6k q4k}
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
(cd "$ROOT" && cargo build --release --quiet --example quant_kl)
KL=$CARGO_TARGET_DIR/release/examples/quant_kl
BIG=$OUT/caption-100m
[ -f "$BIG/config.json" ] || "$ROOT/bench/.venv-torch/bin/python" "$ROOT/bench/caption_cpu.py" make "$BIG" "$ROOT/testdata/models/tiny-llava-hf"
G=$OUT/gguf; mkdir -p "$G"
for t in f32 $TYPES; do
  [ -f "$G/100m-$t.gguf" ] || "$MT" --quiet convert gguf --model "$BIG" -o "$G/100m-$t.gguf" --type "$t"
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

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
"$KL" "$BIG" "$IDS" $TYPES > "$OUT/kl-mt.jsonl"
for t in $TYPES; do
  ours=$(grep "\"$t\"" "$OUT/kl-mt.jsonl")
  theirs=$($LPY kl "$G/100m-f32.gguf" "$G/100m-$t.gguf" "$IDS")
  python3 -c "import json,sys; a=json.loads(sys.argv[2]); b=json.loads(sys.argv[3]); print(f\"{sys.argv[1]}\t{a['kl_mean']:.3g}\t{b['kl_mean']:.3g}\t{a['kl_mean']/b['kl_mean']:.2f}\t{a['top1_same']:.3f}\t{b['top1_same']:.3f}\")" "$t" "$ours" "$theirs"
done

echo "## decode tokens/s at batch 1 ($THREADS threads, median of $REPS)"
IMG=$ROOT/testdata/images/cell.png
caption() { "$MT" --quiet caption "$IMG" --model "$BIG" --cpu --ignore-eos --max-new-tokens "$1" $2 -o - 2>/dev/null; }
prompt=$(caption 1 "" | python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['prompt_tokens'])")
printf "type\tmt_tok_s\tllama.cpp_tok_s\tratio\n"
for t in f32 $TYPES; do
  q=""; [ "$t" = f32 ] || q="--quantize $t"
  rates=()
  for _ in $(seq "$REPS"); do
    s0=$( { /usr/bin/time -f %e bash -c "$(declare -f caption); MT=$MT IMG=$IMG BIG=$BIG caption 8 '$q' >/dev/null" ; } 2>&1 | tail -1)
    s1=$( { /usr/bin/time -f %e bash -c "$(declare -f caption); MT=$MT IMG=$IMG BIG=$BIG caption $((NEW + 8)) '$q' >/dev/null" ; } 2>&1 | tail -1)
    rates+=("$(python3 -c "print($NEW / ($s1 - $s0))")")
  done
  ours=$(printf "%s\n" "${rates[@]}" | median)
  theirs=$($LPY decode "$G/100m-$t.gguf" "$prompt" "$NEW" "$THREADS" "$REPS" | python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tokens_per_s'])")
  python3 -c "import sys; a,b=float(sys.argv[2]),float(sys.argv[3]); print(f'{sys.argv[1]}\t{a:.1f}\t{b:.1f}\t{a/b:.2f}')" "$t" "$ours" "$theirs"
done

EIGHT=$OUT/8b
if [ "${MAKE_8B:-0}" = 1 ] && [ ! -f "$EIGHT/llava/config.json" ]; then
  "$ROOT/bench/.venv-torch/bin/python" "$ROOT/bench/gpu_model.py" "$EIGHT" --size 8b --dtype bf16
fi
if [ -f "$EIGHT/llava/config.json" ]; then
  echo "## 8B-shaped checkpoint: peak RSS of mt caption --cpu (one image, 4 new tokens)"
  printf "type\tpeak_rss_GB\tseconds\n"
  for t in q4k q8_0; do
    r=$( { /usr/bin/time -f "%M %e" "$MT" --quiet caption "$IMG" --model "$EIGHT/llava" --vision-tower "$EIGHT/clip" \
          --cpu --quantize "$t" --ignore-eos --max-new-tokens 4 -o /dev/null >/dev/null 2>/dev/null; } 2>&1 | tail -1)
    python3 -c "import sys; kb,s=sys.argv[2].split(); print(f'{sys.argv[1]}\t{int(kb)/1e6:.2f}\t{float(s):.0f}')" "$t" "$r"
  done
fi
