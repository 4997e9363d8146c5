#!/usr/bin/env bash
# `mt convert llava` (parquet with embedded images -> LLaVA JSONL + image files) against a
# pyarrow + Pillow script writing the same files, on N synthetic 25M_demo-shaped rows.
# Wall time, median of REPS, outputs removed before every run (so nothing resumes).
# Outputs go to SCRATCH (default: a folder in /dev/shm): on this VM's ext4 disk, writing
# and deleting 100k files makes both tools' times swing 7 -> 30 s from run to run, so the
# disk would be measured, not the converters.
#
#   bench/convert_llava.sh         (env: N=100000 REPS=3 SCRATCH=/dev/shm/mt-bench-convert)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/convert-llava
N=${N:-100000} REPS=${REPS:-3}
VENV=$ROOT/bench/.venv-convert
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pyarrow pillow
fi
(cd "$ROOT" && cargo build --release --quiet)
MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
if [ ! -f "$OUT/src/n-$N" ]; then
  rm -rf "$OUT/src"; "$VENV/bin/python" "$ROOT/bench/convert_llava.py" make "$N" "$OUT/src"; touch "$OUT/src/n-$N"
fi
SCRATCH=${SCRATCH:-/dev/shm/mt-bench-convert}
trap 'rm -rf "$SCRATCH"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
py=$(for _ in $(seq "$REPS"); do
  rm -rf "$SCRATCH"; seconds "$VENV/bin/python" "$ROOT/bench/convert_llava.py" run "$OUT/src" "$SCRATCH/py"
done | median)
ours=$(for _ in $(seq "$REPS"); do
  rm -rf "$SCRATCH"; seconds "$MT" --no-run-dir convert llava "$OUT/src" -o "$SCRATCH/mt/out.jsonl" --images-out "$SCRATCH/mt/images"
done | median)
[ "$(wc -l < "$SCRATCH/mt/out.jsonl")" = "$N" ] && [ "$(ls "$SCRATCH/mt/images" | wc -l)" = "$N" ]
printf "rows\tpython_s\tmt_s\tpython_rows_per_s\tmt_rows_per_s\tspeedup\n"
python3 -c "print('\t'.join(map(str, [$N, $py, $ours, round($N / $py), round($N / $ours), round($py / $ours, 1)])))"
