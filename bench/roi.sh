#!/usr/bin/env bash
# `mt roi`'s measuring (src/core/roi/measure.rs: connected components, box, area,
# centroid, position words) against numpy + scikit-image (`skimage.measure.label` +
# `regionprops` per mask, bench/roi_baseline.py), both on ONE thread, on the same N
# 512x512 binary masks (1-4 random ellipses each, seed 0), written once by numpy as one
# bit-packed file. Each side reads the file, then times its loop (unpack + measure per
# mask) and prints masks/s and an FNV-1a checksum of every mask's area, box, component
# count, centroid sums and position words; the script checks that the checksums agree.
# Median masks/s of REPS runs each.
#
#   bench/roi.sh         (env: N=20000 REPS=3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/roi
N=${N:-20000} REPS=${REPS:-3}
VENV=$ROOT/bench/.venv-roi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy scikit-image
fi
(cd "$ROOT" && cargo build --release --quiet --example roi_bench)
BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/roi_bench
MASKS=$OUT/masks-$N.bin
if [ ! -f "$MASKS" ]; then
  mkdir -p "$OUT"
  "$VENV/bin/python" "$ROOT/bench/roi_baseline.py" make "$N" "$MASKS.tmp" && mv "$MASKS.tmp" "$MASKS"
fi
# One thread for numpy's BLAS / OpenMP too (label and regionprops use neither, but be sure).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
py_runs=$(for _ in $(seq "$REPS"); do "$VENV/bin/python" "$ROOT/bench/roi_baseline.py" run "$MASKS"; done)
mt_runs=$(for _ in $(seq "$REPS"); do "$BENCH" "$MASKS"; done)
py_sums=$(awk '{print $3}' <<< "$py_runs" | sort -u)
mt_sums=$(awk '{print $3}' <<< "$mt_runs" | sort -u)
if [ "$py_sums" != "$mt_sums" ] || [ "$(wc -l <<< "$mt_sums")" != 1 ]; then
  echo "checksums differ: python $py_sums, mt $mt_sums" >&2
  exit 1
fi
py=$(awk '{print $1}' <<< "$py_runs" | median)
ours=$(awk '{print $1}' <<< "$mt_runs" | median)
printf "masks\tpython_masks_per_s\tmt_masks_per_s\tspeedup\tchecksum\n"
python3 -c "print('\t'.join(map(str, [$N, round($py), round($ours), round($ours / $py, 1), '$mt_sums'])))"
