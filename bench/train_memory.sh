#!/usr/bin/env bash
# The training memory plan (`--plan --json` total) against the peak RSS `mt finetune --cpu`
# reaches, on the ~100M bench model of bench/train.sh (run that once first), f32 and bf16
# (whose attention runs candle's ops, as on a GPU), 3 steps each (AdamW's moments are
# resident from the first update on).
# The factors of src/core/train/memory.rs came from the full f32 cases (stage 1 and bf16
# each add one: their frozen layers, their attention scores); the other cases check them.
#
#   bench/train_memory.sh   (env: MT=prebuilt-mt  CASES="..."  MT_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/train
MT=${MT:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mt}
[ -x "$MT" ] || (cd "$ROOT" && cargo build --release --quiet)
[ -f "$OUT/train-100m/llava/model.safetensors" ] || { echo "run bench/train.sh first (it makes $OUT/train-100m)" >&2; exit 2; }
[ -f "$OUT/data.jsonl" ] || { echo "run bench/train.sh first (it writes $OUT/data.jsonl)" >&2; exit 2; }
# Samples are 924 tokens; 900 truncates each to exactly the planned length.
COMMON=(--model "$OUT/train-100m/llava" --data "$OUT/data.jsonl" --image-folder "$ROOT/testdata/llava/images"
        --cpu --lr 1e-4 --warmup-ratio 0 --save-steps 0 --image-aspect-ratio pad --model-max-length 900)
CASES=${CASES:-"full-b1 full-b2 full-b4 full-ck-b1 full-ck-b2 full-ck-b4 lora-b2 lora-ck-b4 projector-b1 projector-b2 projector-b4 projector-ck-b2 full-accum2-b1 bf16-b1 bf16-b2 bf16-ck-b2"}
printf '%-16s %10s %10s %7s\n' case plan_GiB peak_GiB ratio
for c in $CASES; do
  case $c in
    full-b1) a=(finetune --batch-size 1 --grad-accum 1 --gradient-checkpointing false) ;;
    full-b2) a=(finetune --batch-size 2 --grad-accum 1 --gradient-checkpointing false) ;;
    full-b4) a=(finetune --batch-size 4 --grad-accum 1 --gradient-checkpointing false) ;;
    full-ck-b1) a=(finetune --batch-size 1 --grad-accum 1 --gradient-checkpointing true) ;;
    full-ck-b2) a=(finetune --batch-size 2 --grad-accum 1 --gradient-checkpointing true) ;;
    full-ck-b4) a=(finetune --batch-size 4 --grad-accum 1 --gradient-checkpointing true) ;;
    lora-b2) a=(finetune --batch-size 2 --grad-accum 1 --gradient-checkpointing false --lora-r 16) ;;
    lora-ck-b4) a=(finetune --batch-size 4 --grad-accum 1 --gradient-checkpointing true --lora-r 16) ;;
    projector-b1) a=(train --stage 1 --batch-size 1 --grad-accum 1 --gradient-checkpointing false) ;;
    projector-b2) a=(train --stage 1 --batch-size 2 --grad-accum 1 --gradient-checkpointing false) ;;
    projector-b4) a=(train --stage 1 --batch-size 4 --grad-accum 1 --gradient-checkpointing false) ;;
    projector-ck-b2) a=(train --stage 1 --batch-size 2 --grad-accum 1 --gradient-checkpointing true) ;;
    full-accum2-b1) a=(finetune --batch-size 1 --grad-accum 2 --gradient-checkpointing false) ;;
    # bf16 takes candle's attention ops (scores kept), as on a GPU.
    bf16-b1) a=(finetune --dtype bf16 --batch-size 1 --grad-accum 1 --gradient-checkpointing false) ;;
    bf16-b2) a=(finetune --dtype bf16 --batch-size 2 --grad-accum 1 --gradient-checkpointing false) ;;
    bf16-ck-b2) a=(finetune --dtype bf16 --batch-size 2 --grad-accum 1 --gradient-checkpointing true) ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
  plan=$("$MT" --no-run-dir --json "${a[@]}" "${COMMON[@]}" --max-steps 3 --plan | python3 -c 'import json,sys; print(json.load(sys.stdin)["per_device"]["total_bytes"])')
  run=$OUT/memory-$c; rm -rf "$run"
  /usr/bin/time -v -o "$run.time" "$MT" -q "${a[@]}" "${COMMON[@]}" --max-steps 3 --run-dir "$run" >/dev/null
  peak=$(( $(awk '/Maximum resident/ {print $6}' "$run.time") * 1024 ))
  python3 -c "p,m=$plan,$peak; print('%-16s %10.2f %10.2f %7.3f' % ('$c', p/2**30, m/2**30, p/m))"
  rm -rf "$run"  # the exported model: 0.3 GB a case
done
