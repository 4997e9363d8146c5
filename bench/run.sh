#!/usr/bin/env bash
# Benchmarks of `mt inspect` against Python baselines, measured in the same run
# (not part of the test suite; see bench/README.md).
#
#   bench/run.sh [DEMO_ROWS=1000000] [FULL_ROWS=25000000]
#
# Env: REPS (default 3), MT_BENCH_DIR (data + results, default bench/out), SKIP_PYTHON=1,
# SKIP_POLARS=1 (polars-python needs ~14 GB of RAM for 25M captions and evicts the page cache).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}
DEMO_ROWS=${1:-1000000}
FULL_ROWS=${2:-25000000}
REPS=${REPS:-3}
VENV=$ROOT/bench/.venv
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy pillow pyarrow duckdb polars
fi
PY=$VENV/bin/python
(cd "$ROOT" && cargo build --release --quiet)
MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt

gen() { # layout rows dir
  if [ "$(cat "$3/.rows" 2>/dev/null)" != "$2" ]; then
    rm -rf "$3"
    "$PY" "$ROOT/bench/gen_shards.py" "$1" --rows "$2" --out "$3"
    echo "$2" > "$3/.rows"
  fi
}
gen demo "$DEMO_ROWS" "$OUT/demo"
gen full "$FULL_ROWS" "$OUT/full"

RESULTS=$OUT/results.tsv
: > "$RESULTS"
# measure NAME ROWS CMD...: median wall seconds and median peak RSS over REPS runs.
measure() {
  local name=$1 rows=$2; shift 2
  local times=() rss=()
  for _ in $(seq "$REPS"); do
    /usr/bin/time -f "%e %M" -o "$OUT/.time" "$@" > "$OUT/.stdout" 2> "$OUT/.stderr" || { cat "$OUT/.stderr"; exit 1; }
    read -r t m < "$OUT/.time"
    times+=("$t"); rss+=("$m")
  done
  local t m
  t=$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(( (REPS + 1) / 2 ))p")
  m=$(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$(( (REPS + 1) / 2 ))p")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rows" "$t" "$(( m / 1024 ))" "$(echo "$rows / $t" | bc)" | tee -a "$RESULTS"
}

echo -e "what\trows\tmedian_s\tpeak_rss_mb\trows_per_s"
measure "mt inspect (25M_demo)" "$DEMO_ROWS" "$MT" --no-run-dir -q --json inspect "$OUT/demo"
[ -n "${SKIP_PYTHON:-}" ] || measure "python pyarrow+Pillow (25M_demo)" "$DEMO_ROWS" "$PY" "$ROOT/bench/inspect_baseline.py" "$OUT/demo"
TEN=(); for _ in $(seq 10); do TEN+=("$OUT/demo"); done
measure "mt inspect (25M_demo x10)" "$(( DEMO_ROWS * 10 ))" "$MT" --no-run-dir -q --json inspect "${TEN[@]}"
measure "mt inspect --columns caption,source (25M_full)" "$FULL_ROWS" "$MT" --no-run-dir -q --json inspect "$OUT/full" --columns caption,source
measure "duckdb (25M_full captions)" "$FULL_ROWS" "$PY" "$ROOT/bench/caption_baseline.py" duckdb "$OUT/full"
[ -n "${SKIP_POLARS:-}" ] || measure "polars (25M_full captions)" "$FULL_ROWS" "$PY" "$ROOT/bench/caption_baseline.py" polars "$OUT/full"
echo "results: $RESULTS"
