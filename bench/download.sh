#!/usr/bin/env bash
# `mt download` against `hf download` (huggingface_hub, plain HTTP, xet off) on the same
# files served by the fake Hub (examples/fake_hub.rs) on 127.0.0.1, same run:
#   small: SMALL files of 1-64 KiB (stored in git: resolve -> 307 -> resolve-cache)
#   big:   BIG_COUNT files of BIG_MB MiB (LFS: resolve -> 302 -> CDN)
# Both into a fresh cache each time (HF_HUB_CACHE), 8 workers, no progress bars.
# Reports median wall time of REPS runs and CPU seconds (user+sys) per GB; then kills
# mt -9 halfway through the big set, reruns it, and counts the bytes the server sent
# beyond the set's size (re-fetched).
#
#   bench/download.sh      (env: SMALL=200 BIG_COUNT=4 BIG_MB=512 REPS=3
#                           SCRATCH=/dev/shm/mt-bench-download)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SMALL=${SMALL:-200} BIG_COUNT=${BIG_COUNT:-4} BIG_MB=${BIG_MB:-512} REPS=${REPS:-3}
SCRATCH=${SCRATCH:-/dev/shm/mt-bench-download}
VENV=$ROOT/bench/.venv-hub
if [ ! -x "$VENV/bin/hf" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q huggingface_hub
fi
(cd "$ROOT" && cargo build --release --quiet --bin mt --example fake_hub)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
MT=$TARGET/mt FAKE=$TARGET/examples/fake_hub
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$SCRATCH"; }
trap cleanup EXIT
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/small" "$SCRATCH/big"

python3 - "$SCRATCH/small" "$SMALL" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
for i in range(n):
    d = os.path.join(root, f"part{i % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:04d}.json"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 64 * 1024)))
EOF
for i in $(seq 1 "$BIG_COUNT"); do
  head -c "${BIG_MB}M" /dev/urandom > "$SCRATCH/big/shard-$i.bin"
done

# serve NAME: starts the fake Hub on $SCRATCH/NAME, sets ENDPOINT.
serve() {
  "$FAKE" --dir "$SCRATCH/$1" --repo "bench/$1" --stats "$SCRATCH/$1.sent" > "$SCRATCH/$1.endpoint" 2> "$SCRATCH/$1.log" &
  PIDS+=($!)
  until grep -q endpoint "$SCRATCH/$1.endpoint" 2>/dev/null; do sleep 0.1; done
  ENDPOINT=$(awk '/endpoint/ {print $2}' "$SCRATCH/$1.endpoint")
}

# timed LABEL CMD...: runs CMD into a fresh cache, prints "wall cpu".
timed() {
  rm -rf "$SCRATCH/cache"
  HF_HUB_CACHE=$SCRATCH/cache HF_HOME=$SCRATCH/home HF_ENDPOINT=$ENDPOINT HF_HUB_DISABLE_XET=1 \
    HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
    /usr/bin/time -f "%e %U %S" -o "$SCRATCH/time" "$@" > /dev/null 2> "$SCRATCH/err" \
    || { cat "$SCRATCH/err"; exit 1; }
  awk '{print $1, $2 + $3}' "$SCRATCH/time"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "case\tfiles\tbytes\thf_s\tmt_s\tspeedup\thf_cpu_s_per_GB\tmt_cpu_s_per_GB\n"
for case in small big; do
  serve "$case"
  bytes=$(find "$SCRATCH/$case" -type f -printf '%s\n' | paste -sd+ | bc)
  files=$(find "$SCRATCH/$case" -type f | wc -l)
  : > "$SCRATCH/hf.times"; : > "$SCRATCH/mt.times"
  for _ in $(seq "$REPS"); do
    timed "$VENV/bin/hf" download "bench/$case" --max-workers 8 --quiet >> "$SCRATCH/hf.times"
    timed "$MT" --no-run-dir -q download "bench/$case" --max-workers 8 >> "$SCRATCH/mt.times"
  done
  # The last mt download must be complete and verified.
  HF_HUB_CACHE=$SCRATCH/cache HF_HUB_OFFLINE=1 "$MT" --no-run-dir -q download "bench/$case" --verify > /dev/null
  hf=$(cut -d' ' -f1 "$SCRATCH/hf.times" | median) mt=$(cut -d' ' -f1 "$SCRATCH/mt.times" | median)
  hfc=$(cut -d' ' -f2 "$SCRATCH/hf.times" | median) mtc=$(cut -d' ' -f2 "$SCRATCH/mt.times" | median)
  python3 -c "g=$bytes/1e9; print('\t'.join(map(str, ['$case', $files, $bytes, $hf, $mt, round($hf/$mt, 2), round($hfc/g, 2), round($mtc/g, 2)])))"
done

# Resume: kill -9 once half the big set is on disk, rerun, count what the server sent.
ENDPOINT=$(awk '/endpoint/ {print $2}' "$SCRATCH/big.endpoint")
total=$(find "$SCRATCH/big" -type f -printf '%s\n' | paste -sd+ | bc)
rm -rf "$SCRATCH/cache"; sleep 0.3
before=$(cat "$SCRATCH/big.sent")
HF_HUB_CACHE=$SCRATCH/cache HF_HOME=$SCRATCH/home HF_ENDPOINT=$ENDPOINT "$MT" --no-run-dir -q download bench/big &
pid=$!
while [ "$(du -sb "$SCRATCH/cache" 2>/dev/null | cut -f1 || echo 0)" -lt $((total / 2)) ]; do sleep 0.02; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
kept=$(du -sb "$SCRATCH/cache" | cut -f1)
HF_HUB_CACHE=$SCRATCH/cache HF_HOME=$SCRATCH/home HF_ENDPOINT=$ENDPOINT "$MT" --no-run-dir -q --json download bench/big > "$SCRATCH/resume.json"
HF_HUB_CACHE=$SCRATCH/cache HF_HUB_OFFLINE=1 "$MT" --no-run-dir -q download bench/big --verify > /dev/null
sleep 0.5
sent=$(( $(cat "$SCRATCH/big.sent") - before ))
# Fetched twice = what the rerun received beyond what was missing on disk. What the server
# sent beyond the set also counts the socket buffers in flight when the process died.
python3 - "$SCRATCH/resume.json" "$kept" "$total" "$sent" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); kept, total, sent = map(int, sys.argv[2:])
again = r["bytes_received"] + r["bytes_resumed"] - total
print(f"resume: killed with {kept/1e6:.0f} of {total/1e6:.0f} MB on disk; the rerun kept "
      f"{r['bytes_resumed']/1e6:.1f} MB and fetched {r['bytes_received']/1e6:.1f} MB "
      f"({again} bytes fetched twice); the server sent {sent/1e6:.1f} MB in all, "
      f"{100*(sent-total)/total:.2f}% over the set (in flight when the process died)")
EOF
