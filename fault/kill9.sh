#!/usr/bin/env bash
# Fault injection: kill `mt` with SIGKILL at random points, rerun until it finishes, and
# check that the outputs equal an uninterrupted run's (nothing lost, nothing twice) and
# that no temporary files or stale locks are left behind.
#
#   fault/kill9.sh [N]      # N kills per command (default 10)
#
# Env: MT (a built mt; else a release build here), MT_FAULT_DIR (default bench/out/fault),
# MAX_DELAY_MS (upper bound of the random delay before a kill; default: the time an
# uninterrupted run takes, at most 60 s).
# Commands: caption, eval (slake, 24 questions), convert llava, roi, finetune (--resume),
# inspect. Each of N cycles starts from scratch, kills once at a random point of a whole
# run (uniform over the time an uninterrupted run takes), reruns to the end and compares;
# `mt download` runs tests/it/download.rs::kill_9_at_random_points_then_finish against the
# loopback hub DOWNLOAD_REPS times (default 1; 12 kills each, at least 8 must land
# mid-download, then the files are compared byte for byte and --verify'd). Prints one summary line per
# command: kills that landed (the process was still running), records lost and duplicated
# over all cycles, outputs differing from the uninterrupted run's, leftover temp files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-10} MAX_DELAY_MS=${MAX_DELAY_MS:-60000} DOWNLOAD_REPS=${DOWNLOAD_REPS:-1}
OUT=${MT_FAULT_DIR:-$ROOT/bench/out/fault}
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
TD=$ROOT/testdata TINY=$ROOT/testdata/models/tiny-llava
python3 - "$TD" > questions.json <<'PY'
import json, sys
print(json.dumps([{"id": f"q{i:03}", "image": f"xmlab{1 + i % 2}/source.jpg",
                   "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"},
                                     {"from": "gpt", "value": "yes" if i % 3 == 0 else "lung"}],
                   "answer_type": "CLOSED" if i % 3 == 0 else "OPEN"} for i in range(24)]))
PY
cp "$TD/llava/medtrinity_instruct.jsonl" train.jsonl
mkdir -p images  # 40 pictures: long enough runs for kills to land inside them
for i in $(seq 0 7); do for f in "$TD"/images/*.png "$TD"/images/*.jpg; do cp "$f" "images/$i-$(basename "$f")"; done; done

# name | command run in its own folder (same every time) | output to compare
declare -a NAMES CMDS OUTS
add() { NAMES+=("$1"); CMDS+=("$2"); OUTS+=("$3"); }
add caption "$MT -q --run-dir run caption $OUT/images --model $TINY -o out.jsonl --max-new-tokens 12 --batch-size 1" out.jsonl
add eval "$MT -q --run-dir run eval slake --ckpt $TINY --data $OUT/questions.json --image-folder $TD/vqa/slake/imgs --max-new-tokens 8 --batch-size 2" run/answers.jsonl
add convert "$MT -q --run-dir run convert llava $TD/medtrinity-demo -o out.jsonl --images-out images" out.jsonl
add roi "$MT -q --run-dir run roi $OUT/images -o out.jsonl" out.jsonl
add finetune "$MT -q --run-dir run finetune --model $TINY --data $OUT/train.jsonl --image-folder $TD/llava/images --cpu --max-steps 8 --save-steps 1 --batch-size 2 --grad-accum 1 --model-max-length 1024" run/losses.txt
add inspect "$MT -q --no-run-dir --json inspect $TD/medtrinity-demo" out.json

run_once() {  # name cmd: runs to the end (exit 0 or 3 count as finished)
  if [ "$1" = inspect ]; then bash -c "$2" > out.json 2>/dev/null; else bash -c "$2" >/dev/null 2>&1; fi
}
resumable() {  # name cmd: the command, with --resume for a finetune that has a checkpoint
  if [ "$1" = finetune ] && ls -d run/checkpoint-* >/dev/null 2>&1; then echo "$2 --resume"; else echo "$2"; fi
}
finish_outputs() {  # name: derived outputs to compare
  if [ "$1" = finetune ] && [ -f run/metrics.jsonl ]; then
    python3 -c 'import json,sys; [print(r["step"], r["loss"]) for r in map(json.loads, open("run/metrics.jsonl"))]' | sort -n -u > run/losses.txt
  fi
}
count() { python3 - "$1" <<'PY'
import json, sys, collections
p = sys.argv[1]
if p.endswith(".json"):  # one document (inspect): whole or not
    try:
        json.load(open(p)); print(1, 0)
    except Exception:
        print(0, 0)
    sys.exit()
try:
    lines = [l for l in open(p) if l.strip()]
except FileNotFoundError:
    print(0, 0); sys.exit()
keys = []
for l in lines:
    try:
        v = json.loads(l); keys.append(json.dumps(v.get("id", v.get("question_id")) if isinstance(v, dict) else v))
    except Exception:
        keys.append(l)
print(len(set(keys)), len(keys) - len(set(keys)))
PY
}

for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} cmd=${CMDS[$i]} out=${OUTS[$i]}
  mkdir -p "$OUT/$name/ref" "$OUT/$name/kill"
  t0=$(date +%s.%N)
  (cd "$OUT/$name/ref" && run_once "$name" "$cmd" || true; finish_outputs "$name")
  took=$(python3 -c "print(max(0.05, $(date +%s.%N) - $t0))")
  read -r want _ < <(count "$OUT/$name/ref/$out")
  kills=0 lost=0 dup=0 differ=0 leftovers=0
  for cycle in $(seq "$N"); do
    # From scratch: one kill at a random point of a whole run, then rerun to the end.
    rm -rf "$OUT/$name/kill"; mkdir -p "$OUT/$name/kill"; cd "$OUT/$name/kill"
    delay=$(python3 -c "import random; print(random.uniform(0.01, min($took, $MAX_DELAY_MS / 1000)))")
    if [ "$name" = inspect ]; then bash -c "exec $cmd" > out.json 2>/dev/null & else bash -c "exec $cmd" >/dev/null 2>&1 & fi
    pid=$!
    sleep "$delay"
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null || true
    run_once "$name" "$(resumable "$name" "$cmd")" || true
    finish_outputs "$name"
    read -r got d < <(count "$OUT/$name/kill/$out")
    lost=$((lost + (want > got ? want - got : 0))); dup=$((dup + d))
    cmp -s "$OUT/$name/ref/$out" "$OUT/$name/kill/$out" || differ=$((differ + 1))
    leftovers=$((leftovers + $(find . \( -name '*.tmp' -o -name '.*.tmp-*' -o -name '*.partial' -o -name '*.incomplete' \) | wc -l)))
  done
  echo "{\"command\": \"$name\", \"cycles\": $N, \"kills_landed\": $kills, \"records_per_run\": $want, \"records_lost\": $lost, \"records_duplicated\": $dup, \"outputs_differing\": $differ, \"leftover_temp_files\": $leftovers}"
  cd "$OUT"
done
for r in $(seq "$DOWNLOAD_REPS"); do
  (cd "$ROOT" && cargo test --quiet --test it download::kill_9 >/dev/null 2>&1) && echo "{\"command\": \"download\", \"rep\": $r, \"ok\": true}" || echo "{\"command\": \"download\", \"rep\": $r, \"ok\": false}"
done
