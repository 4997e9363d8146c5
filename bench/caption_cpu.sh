#!/usr/bin/env bash
# `mt caption --cpu` against transformers on the CPU: same weights, same images, same
# prompt, greedy, a fixed number of new tokens, same thread count, model load excluded
# on both sides. Median of REPS runs each, measured in the same session.
#
#   bench/caption_cpu.sh            (env: REPS=3 NEWS="32 128" BATCH=4 IMAGES=16 THREADS=$(nproc)
#                                    MT=prebuilt-mt)
#
# NEWS lists the numbers of new tokens to time (128 is the issue's GPU benchmark shape).
#
# Models: the tiny test checkpoint (testdata/models/tiny-llava-hf) and a ~100M-parameter
# llava-hf checkpoint made here with random weights (bench/out/caption-100m).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}
REPS=${REPS:-3} NEWS=${NEWS:-32 128} BATCH=${BATCH:-4} NIMG=${IMAGES:-16} THREADS=${THREADS:-$(nproc)}
VENV=$ROOT/bench/.venv-torch
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers safetensors pillow numpy tokenizers
fi
PY=$VENV/bin/python
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
mkdir -p "$OUT"
IMG=$OUT/caption-images
if [ "$(ls "$IMG" 2>/dev/null | wc -l)" != "$NIMG" ]; then
  rm -rf "$IMG"; mkdir -p "$IMG"
  src=("$ROOT"/testdata/images/*.{png,jpg})
  for i in $(seq 0 $((NIMG - 1))); do
    f=${src[$((i % ${#src[@]}))]}; cp "$f" "$IMG/$(printf %03d "$i")-$(basename "$f")"
  done
fi
BIG=$OUT/caption-100m
[ -f "$BIG/config.json" ] || "$PY" "$ROOT/bench/caption_cpu.py" make "$BIG" "$ROOT/testdata/models/tiny-llava-hf"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "model\tnew_tokens\ttool\timages_per_s (median of %s)\n" "$REPS"
for model in "$ROOT/testdata/models/tiny-llava-hf" "$BIG"; do
  for NEW in $NEWS; do
    py=$(for _ in $(seq "$REPS"); do
      "$PY" "$ROOT/bench/caption_cpu.py" run "$model" "$IMG" --new "$NEW" --batch "$BATCH" --threads "$THREADS" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])'
    done | median)
    ours=$(for _ in $(seq "$REPS"); do
      rm -f "$OUT/captions.jsonl"
      RAYON_NUM_THREADS=$THREADS "$MT" --no-run-dir caption "$IMG" --model "$model" --cpu --prompt "Describe the image in detail." \
        --max-new-tokens "$NEW" --ignore-eos --batch-size "$BATCH" -o "$OUT/captions.jsonl" 2>&1 \
        | sed -n 's/.*captioned [0-9]* (\([0-9.]*\)\/s.*/\1/p' | head -1
    done | median)
    name=$(basename "$model")
    printf "%s\t%s\ttransformers\t%s\n%s\t%s\tmt\t%s\n%s\t%s\tratio\t%s\n" "$name" "$NEW" "$py" "$name" "$NEW" "$ours" \
      "$name" "$NEW" "$(python3 -c "print(round($ours / $py, 2))")"
  done
done
