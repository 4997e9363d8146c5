#!/usr/bin/env bash
# `mt eval slake` against the reference-style generation loop (bench/eval_slake.py run: one
# question at a time, as MedTrinity's model_vqa.py) on the same random-weight llava-hf
# checkpoint and a synthetic 1061-question SLAKE test split; greedy, NEW new tokens each.
#
#   bench/eval_slake.sh                                  # SIZE=tiny on the CPU (~100M params)
#   SIZE=8b GPU=0 MT=./mt PY=python3 bench/eval_slake.sh # on the device: Llama-3-8B + CLIP-L/336
#
# Env: SIZE tiny|8b, NEW (32), BATCH (mt --batch-size, 16), LIMIT_MT / LIMIT_PY (questions
# each side answers; 0 = all 1061), GPU (index; the CPU without), MT (a built mt; else a
# release build here), PY (a Python with torch + transformers; else bench/.venv-torch),
# MT_BENCH_DIR (default bench/out). Model loading is excluded on both sides: mt's
# `answer_seconds` (run.json) against the loop's own clock. Prints one JSON line with
# questions/s of both, their ratio, and how many greedy answers agree word for word.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${SIZE:-tiny} NEW=${NEW:-32} BATCH=${BATCH:-16} LIMIT_MT=${LIMIT_MT:-0} LIMIT_PY=${LIMIT_PY:-0}
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/eval-slake-$SIZE
if [ -z "${PY:-}" ]; then
  VENV=$ROOT/bench/.venv-torch
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q torch transformers safetensors pillow numpy tokenizers; }
  PY=$VENV/bin/python
fi
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
mkdir -p "$OUT"
[ -f "$OUT/model/config.json" ] || "$PY" "$ROOT/bench/eval_slake.py" make "$OUT" --size "$SIZE" "$ROOT/testdata/models/tiny-llava-hf"
DEVICE=(--cpu); [ -n "${GPU:-}" ] && DEVICE=(--gpu "$GPU")
LIMIT=(); [ "$LIMIT_MT" != 0 ] && LIMIT=(--limit "$LIMIT_MT")
rm -rf "$OUT/run"
"$MT" -q --run-dir "$OUT/run" eval slake --ckpt "$OUT/model" --data "$OUT/slake" --max-new-tokens "$NEW" \
  --batch-size "$BATCH" "${DEVICE[@]}" "${LIMIT[@]}" > /dev/null
"$PY" "$ROOT/bench/eval_slake.py" run "$OUT/model" "$OUT/slake" --new "$NEW" --limit "$LIMIT_PY" \
  --answers "$OUT/py_answers.jsonl" > "$OUT/py.json"
python3 - "$OUT" "$SIZE" "$NEW" "$BATCH" <<'PYEOF'
import json, sys
out, size, new, batch = sys.argv[1:]
run = json.load(open(f"{out}/run/run.json"))["counts"]
mt_qps = run["answered_now"] / run["answer_seconds"]
py = json.loads(open(f"{out}/py.json").read())
mine = {json.loads(l)["question_id"]: json.loads(l)["text"] for l in open(f"{out}/run/answers.jsonl")}
theirs = {json.loads(l)["question_id"]: json.loads(l)["text"] for l in open(f"{out}/py_answers.jsonl")}
common = [q for q in theirs if q in mine]
print(json.dumps({"size": size, "new_tokens": int(new), "mt_batch": int(batch),
                  "mt_questions": run["answered_now"], "mt_seconds": round(run["answer_seconds"], 2),
                  "mt_questions_per_s": round(mt_qps, 3), "py_questions": py["questions"],
                  "py_seconds": py["seconds"], "py_questions_per_s": py["questions_per_s"],
                  "py_peak_gib": py["peak_gib"], "ratio": round(mt_qps / py["questions_per_s"], 2),
                  "answers_compared": len(common), "answers_equal": sum(mine[q] == theirs[q] for q in common)}))
PYEOF
