#!/usr/bin/env bash
# Disk full: each command writes into a tiny tmpfs until it fails, must fail with one clear
# error naming the file and "No space left on device"; the tmpfs is then grown and the same
# command rerun, which must finish with outputs identical to a run on a roomy disk.
# Commands: convert, eval, finetune, caption, download (through its test, see the end).
# Needs root (mounts a tmpfs).   fault/disk_full.sh    Env: MT, MT_FAULT_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_FAULT_DIR:-$ROOT/bench/out/fault}-disk
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
[ "$(id -u)" = 0 ] || { echo "needs root to mount a tmpfs" >&2; exit 2; }
TD=$ROOT/testdata TINY=$ROOT/testdata/models/tiny-llava
rm -rf "$OUT"; mkdir -p "$OUT/ref" "$OUT/small"
losses() {  # folder: run/losses.txt = the (step, loss) pairs of run/metrics.jsonl
  python3 -c 'import json,sys; [print(r["step"], r["loss"]) for r in map(json.loads, open(sys.argv[1]))]' \
    "$1/run/metrics.jsonl" | sort -n -u > "$1/run/losses.txt"
}
# name | size of the full disk | command (run in its folder) | output to compare
check() {
  local name=$1 size=$2 cmd=$3 out=$4
  (cd "$OUT/ref" && rm -rf "$name" && mkdir "$name" && cd "$name" && bash -c "$cmd" >/dev/null 2>&1 || true)
  local dir=$OUT/small/$name
  mkdir -p "$dir"; mount -t tmpfs -o "size=$size" tmpfs "$dir"
  local rc=0 err
  err=$(cd "$dir" && bash -c "$cmd" 2>&1 >/dev/null) || rc=$?
  local line; line=$(printf '%s\n' "$err" | grep -m1 -i "no space left" || true)
  mount -o remount,size=64m "$dir"
  local again=$cmd  # a finetune with a finished checkpoint resumes from it
  compgen -G "$dir/run/checkpoint-[0-9]*[0-9]" >/dev/null && [ "$name" = finetune ] && again="$cmd --resume"
  local rc2=0; (cd "$dir" && bash -c "$again" >/dev/null 2>&1) || rc2=$?
  if [ "$name" = finetune ]; then losses "$OUT/ref/$name"; losses "$dir"; fi
  local same=differs; cmp -s "$OUT/ref/$name/$out" "$dir/$out" && same=identical
  local temps; temps=$(find "$dir" \( -name '*.tmp' -o -name '.*.tmp-*' -o -name '*.partial' \) | wc -l)
  umount "$dir"
  python3 -c 'import json,sys; print(json.dumps(dict(command=sys.argv[1], full_disk_exit=int(sys.argv[2]), error=sys.argv[3], rerun_exit=int(sys.argv[4]), output=sys.argv[5], leftover_temp_files=int(sys.argv[6]))))' \
    "$name" "$rc" "$line" "$rc2" "$same" "$temps"
}
check convert 128k "$MT -q --no-run-dir convert llava $TD/medtrinity-demo -o out.jsonl --images-out images" out.jsonl
check eval 24k "$MT -q --run-dir run eval slake --ckpt $TINY --data $TD/vqa/slake --max-new-tokens 8" run/answers.jsonl
check caption 12k "$MT -q --run-dir run caption $TD/images --model $TINY -o out.jsonl --max-new-tokens 24 --batch-size 1" out.jsonl
check roi 8k "$MT -q --run-dir run roi $TD/images -o out.jsonl" out.jsonl
check finetune 600k "$MT -q --run-dir run finetune --model $TINY --data $TD/llava/medtrinity_instruct.jsonl --image-folder $TD/llava/images --cpu --max-steps 4 --save-steps 1 --batch-size 2 --grad-accum 1 --model-max-length 1024 --seed 1" run/losses.txt
# mt download: the fake Hub lives in the test suite, so this case is the ignored test
# `disk_full_then_resume`, run here on a 1 MB tmpfs (it grows the tmpfs itself and
# checks the rerun's files byte for byte, the --verify pass and the temp files).
dl=$OUT/small/download
mkdir -p "$dl"; mount -t tmpfs -o size=1m tmpfs "$dl"
rc=0 log=$(cd "$ROOT" && MT_DISK_FULL_DIR=$dl cargo test --quiet --test it \
  download::disk_full_then_resume -- --ignored --nocapture 2>&1) || rc=$?
umount "$dl"
line=$(printf '%s\n' "$log" | sed -n 's/^MT_DISK_FULL_ERROR: //p' | head -1)
same=differs; [ "$rc" = 0 ] && same=identical
python3 -c 'import json,sys; print(json.dumps(dict(command="download", error=sys.argv[1], rerun_exit=int(sys.argv[2]), output=sys.argv[3])))' \
  "$line" "$rc" "$same"
