#!/usr/bin/env bash
# `mt serve` under load: aggregate tokens/s of 1, 8 (and on a GPU 64) concurrent clients
# against one server (continuous batching), then a soak of 1000 requests at 32 concurrent
# (none may be lost; the server's resident memory must stay flat). Clients send a question
# about an image (data: URL; PROMPTS has "image") or the question alone ("text": a short
# prompt, so the decoding steps that batching shares dominate), with `ignore_eos`, so
# every answer has NEW tokens.
#
#   bench/serve.sh        (env: MODEL=bench/out/caption-100m CLIENTS="1 8" PROMPTS="image text" PER_CLIENT=4 NEW=128
#                          REPS=3 SOAK=1000 SOAK_CONC=32 SOAK_NEW=16 THREADS=$(nproc) GPU= MT=prebuilt-mt)
#
# GPU=N serves on GPU N (a CUDA build of mt; CLIENTS defaults to "1 8 64" there). SOAK=0
# skips the soak.
# The model defaults to the ~100M random llava-hf checkpoint bench/caption_cpu.sh makes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}
MODEL=${MODEL:-$OUT/caption-100m}
GPU=${GPU:-}
CLIENTS=${CLIENTS:-$([ -n "$GPU" ] && echo "1 8 64" || echo "1 8")}
PER_CLIENT=${PER_CLIENT:-4} NEW=${NEW:-128} REPS=${REPS:-3} PROMPTS=${PROMPTS:-image text}
SOAK=${SOAK:-1000} SOAK_CONC=${SOAK_CONC:-32} SOAK_NEW=${SOAK_NEW:-16}
THREADS=${THREADS:-$(nproc)}
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
if [ ! -f "$MODEL/config.json" ]; then
  echo "no checkpoint at $MODEL: run bench/caption_cpu.sh once (it makes bench/out/caption-100m)" >&2
  exit 2
fi
IMG=$OUT/serve-images
if [ ! -d "$IMG" ]; then
  mkdir -p "$IMG"; cp "$ROOT"/testdata/images/*.{png,jpg} "$IMG"/
fi
device=(--cpu); [ -n "$GPU" ] && device=(--gpu "$GPU")
LOG=$OUT/serve.log
RAYON_NUM_THREADS=$THREADS "$MT" --no-run-dir serve --model "$MODEL" "${device[@]}" --port 0 \
  --max-batch 64 --queue 2048 --timeout 3600 2> "$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  ADDR=$(sed -n 's/.* on http:\/\/\([0-9.:]*\)\/v1.*/\1/p' "$LOG" | head -1)
  [ -n "$ADDR" ] && break
  kill -0 $PID 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.2
done
URL=http://$ADDR
LOAD="python3 $ROOT/bench/serve_load.py"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

echo "# mt serve, $(basename "$MODEL"), ${device[*]}, $THREADS threads, $NEW new tokens a request, median of $REPS"
$LOAD throughput "$URL" "$IMG" --clients 1 --requests-per-client 1 --max-tokens 8 > /dev/null  # warm up
printf "prompt\tclients\trequests\ttokens_per_s\tvs_1_client\n"
for P in $PROMPTS; do
  kind=(); [ "$P" = text ] && kind=(--text)
  base=
  for C in $CLIENTS; do
    tps=$(for _ in $(seq "$REPS"); do
      $LOAD throughput "$URL" "$IMG" "${kind[@]}" --clients "$C" --requests-per-client "$PER_CLIENT" \
        --max-tokens "$NEW" | field tokens_per_s
    done | median)
    base=${base:-$tps}
    printf "%s\t%s\t%s\t%s\t%s\n" "$P" "$C" "$((C * PER_CLIENT))" "$tps" "$(python3 -c "print(round($tps / $base, 2))")"
  done
done

if [ "$SOAK" -gt 0 ]; then
  echo "# soak: $SOAK requests, $SOAK_CONC concurrent, $SOAK_NEW new tokens each"
  $LOAD soak "$URL" "$IMG" --requests "$SOAK" --concurrency "$SOAK_CONC" --max-tokens "$SOAK_NEW" --pid $PID
fi
kill -TERM $PID
wait $PID && echo "# SIGTERM: exit 0" || echo "# SIGTERM: exit $?"
trap - EXIT
