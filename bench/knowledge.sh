#!/usr/bin/env bash
# `mt convert knowledge-index` and `KnowledgeIndex::search` on a synthetic corpus of N
# passages (examples/knowledge_bench.rs `gen`: deterministic, titles of 3-8 medical words,
# texts of 60-120 words from a Zipf law over ~40k words). Times the build of the release
# `mt` with /usr/bin/time -v (wall time, peak RSS), then REPS runs of QUERIES
# pipeline-like queries (5-12 modality / organ / disease / finding words) at top-5 on
# one thread (`knowledge_bench query`, stored passages read included); checks that every
# run returns the same hits and reports the median. Deletes the corpus and the index at
# the end unless KEEP=1.
#
#   bench/knowledge.sh        (env: N=1000000 REPS=3 QUERIES=2000 KEEP=0 MT_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/knowledge
N=${N:-1000000} REPS=${REPS:-3} QUERIES=${QUERIES:-2000} KEEP=${KEEP:-0}
(cd "$ROOT" && cargo build --release --quiet --bin mt --example knowledge_bench)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CORPUS=$OUT/corpus-$N.jsonl
INDEX=$OUT/corpus-$N.bm25
mkdir -p "$OUT"
if [ ! -f "$CORPUS" ]; then
  "$BIN/examples/knowledge_bench" gen "$N" "$CORPUS.tmp"
  mv "$CORPUS.tmp" "$CORPUS"
fi
TIMER=()
if [ -x /usr/bin/time ]; then TIMER=(/usr/bin/time -v -o "$OUT/build.time"); fi
start=$(date +%s.%N)
"${TIMER[@]}" "$BIN/mt" --no-run-dir --json -q convert knowledge-index "$CORPUS" -o "$INDEX" --force \
  > "$OUT/build.json"
end=$(date +%s.%N)
rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/build.time" 2>/dev/null || true)
runs=$(for _ in $(seq "$REPS"); do "$BIN/examples/knowledge_bench" query "$INDEX" "$QUERIES" 5; done)
sums=$(awk '{print $5}' <<< "$runs" | sort -u)
if [ "$(wc -l <<< "$sums")" != 1 ]; then
  echo "query runs returned different hits: $sums" >&2
  exit 1
fi
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
qps=$(awk '{print $1}' <<< "$runs" | median)
p50=$(awk '{print $2}' <<< "$runs" | median)
p99=$(awk '{print $3}' <<< "$runs" | median)
hits=$(awk '{print $4}' <<< "$runs" | median)
python3 - "$OUT/build.json" "$CORPUS" "$start" "$end" "${rss_kb:-0}" "$qps" "$p50" "$p99" "$hits" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))
wall = float(sys.argv[4]) - float(sys.argv[3])
cols = ["passages", "corpus_MB", "build_s", "passages_per_s", "index_MB", "segments",
        "build_peak_RSS_MB", "queries_per_s", "p50_ms", "p99_ms", "hits_per_query"]
vals = [report["passages"], round(os.path.getsize(sys.argv[2]) / 1e6), round(wall, 1),
        round(report["passages"] / wall), round(report["bytes"] / 1e6), report["segments"],
        round(int(sys.argv[5]) / 1024), round(float(sys.argv[6])), sys.argv[7], sys.argv[8],
        sys.argv[9]]
print("\t".join(cols))
print("\t".join(map(str, vals)))
PY
if [ "$KEEP" != 1 ]; then
  rm -rf "$CORPUS" "$INDEX" "$OUT/.corpus-$N.bm25.lock"
fi
