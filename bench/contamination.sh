#!/usr/bin/env bash
# mt inspect --against at scale (issue 29): 1M training rows (10 shards of the same 100k
# distinct 224x224 images under other ids, with 100 planted copies of benchmark images a
# shard: exact, re-encoded, resized, cropped) against 10k benchmark images, on this
# machine. Prints the wall time, peak RSS, and how many planted copies were found and
# how many pairs were not planted (false matches).
#
#     bash bench/contamination.sh [N_BENCH N_TRAIN REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mt-target}"
py="${MT_TEST_PYTHON:-$HOME/.cache/mt-ci-venv/bin/python}"
n_bench="${1:-10000}" n_train="${2:-100000}" repeat="${3:-10}"
out="bench/out/contamination"
if [ ! -f "$out/planted.json" ]; then
  "$py" bench/contamination_data.py "$out" "$n_bench" "$n_train" "$repeat"
fi
cargo build --release --quiet
mt="$CARGO_TARGET_DIR/release/mt"
rm -rf "$out/run"
/usr/bin/time -o "$out/time.txt" -f "%e %M" \
  "$mt" --run-dir "$out/run" inspect "$out"/train-*.parquet --no-images \
  --against "$out/bench.parquet" 2>&1 | grep -E "contamination|inspected"
read -r secs kb < "$out/time.txt"
"$py" - "$out" "$secs" "$kb" <<'PY'
import json, sys
from collections import Counter
out, secs, kb = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
planted = json.load(open(f"{out}/planted.json"))
found, false = Counter(), 0
for line in open(f"{out}/run/contamination.jsonl"):
    r = json.loads(line)
    p = planted.get(r["train"]["id"].split("-", 1)[1])
    if p and p["bench"] == r["bench"]["id"]:
        found[(p["kind"], r["kind"])] += 1
    else:
        false += 1
print(f"wall {secs:.0f} s, peak RSS {kb / 1e6:.2f} GB")
print("planted copies found (planted kind, reported kind):", dict(found))
print(f"pairs not planted (false matches): {false}")
PY
