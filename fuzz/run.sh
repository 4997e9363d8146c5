#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each with cargo-fuzz (libFuzzer),
# starting from the committed seeds plus the corpus grown by earlier runs, and prints one
# JSON line per target: runs, seconds it really ran (a crash ends a run early), corpus
# size, crash files (saved in fuzz/artifacts/).
# Not part of CI. Needs `cargo install cargo-fuzz` and a nightly toolchain.
#
#   fuzz/run.sh [SECONDS=300] [TARGET[:SECONDS]...]
#
# A target written as TARGET:SECONDS runs for its own time (one call can then run a
# whole queue, e.g. `fuzz/run.sh 0 parquet:3600 medical:1800`).
#
# Env: CARGO_TARGET_DIR (default fuzz/target), SANITIZER (default none: mt has no unsafe
# parsing code of its own; `address` builds slower and finds memory errors in C deps),
# RSS_MB (per-process memory limit, default 4096: an input that allocates more is a crash).
# Never pause a run (SIGSTOP): libFuzzer's -timeout is wall-clock, so the input running
# at the pause is saved as a timeout and the run ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-300}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(answers model_config checkpoint tar_zst vqa medical mask llava_records hub_json parquet)
cd "$ROOT"
# Built once; the targets then run as plain binaries, so editing mt's sources while the
# script runs does not rebuild anything half-way through. BUILD=0 runs the binaries built
# before (say, next to a running queue, without replacing its binaries).
[ "${BUILD:-1}" = 0 ] || cargo +nightly fuzz build -s "${SANITIZER:-none}"
BIN=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}/x86_64-unknown-linux-gnu/release
for spec in "${TARGETS[@]}"; do
  t=${spec%%:*} secs=$SECONDS_EACH
  [ "$t" = "$spec" ] || secs=${spec#*:}
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp) start=$(date +%s)
  "$BIN/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
    -max_total_time="$secs" -rss_limit_mb="${RSS_MB:-4096}" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" > "$log" 2>&1 || true
  took=$(( $(date +%s) - start ))
  runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "{\"target\": \"$t\", \"seconds\": $took, \"runs\": ${runs:-0}, \"corpus\": $corpus, \"crash_files\": $crashes, \"log\": \"$log\"}"
done
