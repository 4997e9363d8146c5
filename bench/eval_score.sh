#!/usr/bin/env bash
# `mt eval score` against the reference scorer (MedTrinity-25M's run_eval_nocandi.py,
# vendored in testdata/eval/reference/medtrinity, with NLTK) on the same synthetic files.
# Wall time of each, median of REPS; the Python scorer's own stdout goes to /dev/null.
#
#   bench/eval_score.sh            (env: N=1000000 REPS=3 PY_REPS=1)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/eval-score
N=${N:-1000000} REPS=${REPS:-3} PY_REPS=${PY_REPS:-1}
VENV=$ROOT/bench/.venv-eval
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q nltk==3.9.1 tabulate==0.9.0
fi
(cd "$ROOT" && cargo build --release --quiet)
MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
if [ ! -f "$OUT/n-$N" ]; then
  rm -rf "$OUT"; "$VENV/bin/python" "$ROOT/bench/eval_score.py" "$N" "$OUT"; touch "$OUT/n-$N"
fi
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
REF=$ROOT/testdata/eval/reference/medtrinity
py=$(for _ in $(seq "$PY_REPS"); do
  seconds "$VENV/bin/python" "$REF/run_eval_nocandi.py" --gt "$OUT/gt.json" --pred "$OUT/pred.jsonl"
done | median)
ours=$(for _ in $(seq "$REPS"); do
  seconds "$MT" --no-run-dir --json eval score --gt "$OUT/gt.json" --pred "$OUT/pred.jsonl"
done | median)
printf "answers\tpython_s\tmt_s\tspeedup\n%s\t%s\t%s\t%s\n" "$N" "$py" "$ours" \
  "$(python3 -c "print(round($py / $ours, 1))")"
# Same numbers from both: the scores printed by mt against the reference's table.
"$MT" --no-run-dir eval score --gt "$OUT/gt.json" --pred "$OUT/pred.jsonl" | head -13
"$VENV/bin/python" "$REF/run_eval_nocandi.py" --gt "$OUT/gt.json" --pred "$OUT/pred.jsonl" | tail -14
