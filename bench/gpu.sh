#!/usr/bin/env bash
# The GPU checks of the caption and training issues in one device call: correctness first
# (bf16 GPU logits against f32 CPU on the tiny checkpoints), then mt against the PyTorch
# baseline on the same card, in the same call (the real architecture, CLIP ViT-L/14-336 +
# Llama-3-8B, random bf16 weights):
#   - `mt caption --gpu 0`: 616-ish-token prompt (576 image rows), 128 new tokens, greedy,
#     batch 1 and 64, without and with S2, against transformers' generate at batch 1 and 64;
#     and batch 1 with `--quantize q4k` (tokens/s and memory next to the bf16 rows);
#   - `mt serve --gpu 0` (bench/serve.sh): aggregate tokens/s of 1, 8 and 64 clients asking
#     about an image, NEW new tokens each (SERVE=0 skips it);
#   - `mt finetune` LoRA r 128 / alpha 256, batch 8 x 1024 tokens, gradient checkpointing,
#     against PEFT; `mt train --stage 1` against the same step with all but the projector
#     frozen; `mt finetune` under torchrun's variables for a world of one; the full 8B
#     fine-tune with `--offload optimizer` and QLoRA (LoRA on q4k); each training row shows
#     the memory plan (`--plan`) next to the card's measured peak.
#
# The device machine has CUDA 13, PyTorch and transformers but no Rust, so build here:
#   source ../shared/cuda/toolchain.sh && bench/gpu.sh pack
# (a `--profile gpu --features cuda` mt and the test binary of tests/it, whose
# model::gpu_bf16_logits_follow_cpu_f32 runs there, xz-compressed into .gpu/, which
# must be in .git/info/exclude), then run it there with the device tool (carry [".gpu"]):
#   bench/gpu.sh run
# It prints a JSON line per measurement and a table last. TINY=1 MT=path/to/mt bench/gpu.sh run
# rehearses every step on this CPU with the tiny configs (no test binary, no memory figures).
# Env: GPU_BENCH_DIR (scratch, default /tmp/mt-gpu; the 8B checkpoint takes 17 GB),
# STEPS (training steps, default 7; the first 2 are warm-up), NEW (new tokens, default 128;
# 16 with TINY).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PACK=$ROOT/.gpu

pack() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  (cd "$ROOT" && cargo build --profile gpu --features cuda \
    && cargo test --profile gpu --features cuda --test it --no-run)
  local tests
  tests=$(ls -t "$target"/gpu/deps/it-* | grep -v '\.d$' | head -1)
  mkdir -p "$PACK"
  xz -T2 -c "$target/gpu/mt" > "$PACK/mt.xz"
  xz -T2 -c "$tests" > "$PACK/model-tests.xz"
  echo "$ROOT" > "$PACK/built-in"  # the test binary reads testdata/ from there
  ls -la "$PACK"
}

TINY=${TINY:-0}
W=${GPU_BENCH_DIR:-/tmp/mt-gpu}
STEPS=${STEPS:-7}
NEW=${NEW:-128} MANY=192
[ "$TINY" = 1 ] && NEW=16 MANY=8
log() { echo "$*" | tee -a "$W/results.jsonl"; }

unpack() {
  if [ -z "${MT:-}" ]; then
    xz -d -c "$PACK/mt.xz" > "$W/mt" && chmod +x "$W/mt"
    MT=$W/mt
  fi
  if [ "$TINY" != 1 ]; then
    xz -d -c "$PACK/model-tests.xz" > "$W/model-tests" && chmod +x "$W/model-tests"
    export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
}

# The model test reads testdata/ from the path it was built in (CARGO_MANIFEST_DIR).
correctness() {
  local built
  built=$(cat "$PACK/built-in")
  if [ ! -e "$built" ]; then mkdir -p "$(dirname "$built")" && ln -s "$ROOT" "$built"; fi
  (cd "$ROOT" && "$W/model-tests" model::gpu_bf16_logits_follow_cpu_f32 --exact --nocapture 2>&1) | tee "$W/correctness.log" \
    | grep -E "relative error|test result" || true
  local verdict
  verdict=$(grep -c "test result: ok. 1 passed" "$W/correctness.log" || true)
  log "{\"part\": \"correctness\", \"test\": \"gpu_bf16_logits_follow_cpu_f32\", \"passed\": $([ "$verdict" = 1 ] && echo true || echo false)}"
}

# The peak of the GPU's memory in use while "$@" runs (MiB, all processes), to $W/mem.
with_memory() {
  if [ "$TINY" = 1 ]; then "$@"; echo 0 > "$W/mem"; return; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$W/mem.log" &
  local sampler=$!
  "$@"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  sort -n "$W/mem.log" | tail -1 > "$W/mem"
}

caption() {  # name model batch images [extra mt caption arguments...]
  local name=$1 model=$2 batch=$3 n=$4 dev=(--gpu 0) extra=("${@:5}")
  [ "$TINY" = 1 ] && dev=(--cpu)
  local images=$W/images-$n
  if [ ! -d "$images" ]; then
    mkdir -p "$images"
    local src=("$ROOT"/testdata/images/*.{png,jpg})
    for i in $(seq 0 $((n - 1))); do cp "${src[$((i % ${#src[@]}))]}" "$images/$(printf %04d "$i").${src[$((i % ${#src[@]}))]##*.}"; done
  fi
  rm -f "$W/captions.jsonl"
  with_memory bash -c '"$@" 2> "'"$W"'/caption.log"' _ "$MT" --no-run-dir caption "$images" --model "$model" "${dev[@]}" \
    --max-new-tokens "$NEW" --ignore-eos --batch-size "$batch" "${extra[@]}" -o "$W/captions.jsonl"
  local line
  line=$(sed -n 's/.*captioned \([0-9]*\) (\([0-9.]*\)\/s, \([0-9.]*\) tokens\/s).*/\1 \2 \3/p' "$W/caption.log" | tail -1)
  read -r done ips tps <<< "$line"
  log "{\"part\": \"mt_caption\", \"case\": \"$name\", \"batch\": $batch, \"images\": $done, \"images_per_s\": $ips, \"tokens_per_s\": $tps, \"peak_gpu_mib\": $(cat "$W/mem")}"
}

serve_bench() {  # mt serve on the caption checkpoint: 1, 8, 64 clients (1, 8 with TINY)
  [ "${SERVE:-1}" = 1 ] || return 0
  local where=(GPU=0) clients="1 8 64"
  [ "$TINY" = 1 ] && where=() clients="1 8"
  env "${where[@]}" MT="$MT" MODEL="$W/models/llava" MT_BENCH_DIR="$W" CLIENTS="$clients" PROMPTS=image \
    NEW="$NEW" PER_CLIENT=2 REPS=1 SOAK=0 bash "$ROOT/bench/serve.sh" | tee "$W/serve.txt"
  awk -F'\t' '$1 == "image" {printf "{\"part\": \"mt_serve\", \"clients\": %s, \"tokens_per_s\": %s, \"vs_1_client\": %s}\n", $2, $4, $5}' \
    "$W/serve.txt" >> "$W/results.jsonl"
}

train_data() {  # 8 records whose answers run past 1024 tokens (truncated there, as the baseline's batch)
  python3 - "$ROOT/testdata/llava/medtrinity_instruct.jsonl" > "$W/train.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
recs = [r for r in recs if r.get("image", "").endswith(".png") and len(r["conversations"]) == 2][:8]
for r in (recs * 8)[:8]:
    answer = r["conversations"][1]["value"]
    r["conversations"][1]["value"] = " ".join([answer] * (4000 // len(answer) + 1))
    print(json.dumps(r))
EOF
}

train() {  # name command... (mt train/finetune arguments after the model and data)
  local name=$1; shift
  local run=$W/run-$name dev=(--gpu 0)
  [ "$TINY" = 1 ] && dev=(--cpu --gradient-checkpointing)
  rm -rf "$run"
  local args=("$@" --model "$W/models/llava" --data "$W/train.jsonl" --image-folder "$ROOT/testdata/llava/images"
    "${dev[@]}" --max-steps "$STEPS" --batch-size 8 --grad-accum 1 --model-max-length 1024 --save-steps 0)
  "$MT" -q --no-run-dir --json "${args[@]}" --plan > "$W/plan.json"
  with_memory "$MT" -q "${args[@]}" --run-dir "$run" > /dev/null
  python3 - "$run/metrics.jsonl" "$name" "$(cat "$W/mem")" "$W/plan.json" <<'EOF' | tee -a "$W/results.jsonl"
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
s = statistics.median(x["seconds"] for x in steps[2:])
plan = json.load(open(sys.argv[4]))["per_device"]["total_bytes"] / 2**20
print(json.dumps({"part": "mt_train", "case": sys.argv[2], "steps": len(steps), "seconds_per_step": round(s, 3),
                  "samples_per_s": round(8 / s, 2), "peak_gpu_mib": float(sys.argv[3]), "plan_mib": round(plan),
                  "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"]}))
EOF
}

run() {
  mkdir -p "$W"
  : > "$W/results.jsonl"
  unpack
  [ "$TINY" = 1 ] || correctness
  local size=8b dtype=bf16
  [ "$TINY" = 1 ] && size=tiny dtype=f32
  [ -f "$W/models/llava/config.json" ] || python3 "$ROOT/bench/gpu_model.py" "$W/models" --size "$size" --dtype "$dtype"
  local sizes="1 64"
  [ "$TINY" = 1 ] && sizes="1 2"
  (cd "$W" && TINY=$TINY SIZES=$sizes NEW=$NEW python3 "$ROOT/bench/hf_llava_baseline.py" | tee -a "$W/results.jsonl")
  caption b1 "$W/models/llava" 1 6
  caption b64 "$W/models/llava" 64 "$MANY"
  caption q4k-b1 "$W/models/llava" 1 6 --quantize q4k
  caption s2-b1 "$W/models/llava-s2" 1 6
  caption s2-b64 "$W/models/llava-s2" 64 "$MANY"
  serve_bench
  train_data
  train lora finetune --lora-r 128 --lora-alpha 256
  train stage1 train --stage 1
  RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 STEPS=3 train world1 finetune --lora-r 128 --lora-alpha 256
  STEPS=3 train offload finetune --offload optimizer
  train qlora finetune --lora-r 128 --lora-alpha 256 --quantize q4k
  python3 - "$W/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
hf = {(r["part"], r.get("batch")): r for r in rows if r.get("part") == "generate"}
hf_train = {r["part"]: r for r in rows if r.get("part") in ("lora_train", "stage1_train")}
print("\nGPU memory: HF's is torch's peak allocation; mt's is the card's peak in use (nvidia-smi,"
      " CUDA context included)")
print("what\tHF / PyTorch\tmt\tmt vs HF")
for r in rows:
    if r.get("part") == "mt_caption":
        base = hf.get(("generate", r["batch"])) if not r["case"].startswith("s2") else None
        b = f"{base['images_per_s']} img/s, {base['tokens_per_s']} tok/s, {base['peak_gib']} GiB" if base else "-"
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        print(f"caption {r['case']}\t{b}\t{r['images_per_s']} img/s, {r['tokens_per_s']} tok/s, "
              f"{r['peak_gpu_mib'] / 1024:.1f} GiB in use\t{ratio}")
    elif r.get("part") == "mt_train":
        base = hf_train.get({"lora": "lora_train", "stage1": "stage1_train"}.get(r["case"]))
        b = f"{base['seconds_per_step']} s/step, {base['peak_gib']} GiB" if base and "seconds_per_step" in base else "-"
        ratio = f"{base['seconds_per_step'] / r['seconds_per_step']:.2f}x" if base and "seconds_per_step" in base else "-"
        print(f"train {r['case']}\t{b}\t{r['seconds_per_step']} s/step, {r['peak_gpu_mib'] / 1024:.1f} GiB in use "
              f"(plan {r['plan_mib'] / 1024:.1f} GiB, {r['plan_mib'] / max(r['peak_gpu_mib'], 1):.2f}x), "
              f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}\t{ratio}")
    if r.get("case") == "world1":
        lora = next(x for x in rows if x.get("case") == "lora")
        same = r["loss_first"] == lora["loss_first"]
        print(f"world of one\t\tstep-1 loss {'the same as' if same else 'DIFFERS from'} the single-process run")
    elif r.get("part") == "mt_serve":
        print(f"serve {r['clients']} clients\t-\t{r['tokens_per_s']} tok/s\t{r['vs_1_client']}x one client")
    elif r.get("part") == "correctness":
        print(f"correctness\t\t{'passed' if r['passed'] else 'FAILED'}")
EOF
}

case ${1:-} in
  pack) pack ;;
  run) run ;;
  *) echo "usage: bench/gpu.sh pack|run" >&2; exit 2 ;;
esac
