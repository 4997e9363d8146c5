#!/usr/bin/env bash
# `mt finetune --cpu` against the PyTorch/transformers training step of the reference
# (bench/train_baseline.py: the LLaVA-Med++ dataset, collator, image splicing and
# LLaVATrainer optimizer groups vendored in testdata/train/make_train_fixtures.py; peft for
# LoRA) on the CPU: same checkpoint, same batch, same sequence lengths, same optimizer
# settings (AdamW, lr 1e-4, weight decay 0, clip 1.0, cosine without warmup, f32), same
# thread count. Per-step time = data (image decode + tokenisation) + collation + forward +
# backward + clipping + optimizer step, as `mt`'s metrics.jsonl `seconds`; the median skips
# the first WARM steps; with REPS > 1 the tools alternate and each one's fastest run counts.
# Peak RSS = the whole process (load included): /usr/bin/time -v for mt, getrusage for
# Python. The step-1 losses must agree within 1e-3 relative (same weights, same batch).
#
#   bench/train.sh     (env: THREADS=$(nproc) BATCH=2 STEPS_TINY=20 STEPS_BIG=8 WARM=2 REPS=1
#                       CASES="tiny-full 100m-full 100m-lora"
#                       PY=python-with-torch+transformers+peft  MT=prebuilt-mt  MT_BENCH_DIR)
#
# Data: exactly BATCH single-round 8-bit .png records of testdata/llava/medtrinity_instruct.jsonl,
# so every step of both tools trains on the same batch (924 tokens a sample with the image).
# Models: testdata/models/tiny-llava (+ tiny-clip), and a ~88M-parameter random original-layout
# checkpoint made here (bench/out/train/train-100m: Llama 768 x 12 layers, 12 / 4 KV heads,
# MLP 2048, vocab 326 + CLIP 384 x 6 layers at 336 px), fully and with LoRA r 16 / alpha 32 /
# dropout 0.05 (the reference scripts' and mt's default; case 100m-lora-d0: dropout 0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MT_BENCH_DIR:-$ROOT/bench/out}/train
THREADS=${THREADS:-$(nproc)} BATCH=${BATCH:-2} STEPS_TINY=${STEPS_TINY:-20} STEPS_BIG=${STEPS_BIG:-8} WARM=${WARM:-2} REPS=${REPS:-1}
CASES=${CASES:-tiny-full 100m-full 100m-lora}
if [ -z "${PY:-}" ]; then
  VENV=$ROOT/bench/.venv-torch
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch transformers safetensors pillow numpy tokenizers peft
  fi
  "$VENV/bin/python" -c 'import peft' 2>/dev/null || "$VENV/bin/pip" install -q peft
  PY=$VENV/bin/python
fi
if [ -z "${MT:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  MT=${CARGO_TARGET_DIR:-$ROOT/target}/release/mt
fi
mkdir -p "$OUT"
DATA=$OUT/data.jsonl IMAGES=$ROOT/testdata/llava/images
python3 - "$ROOT/testdata/llava/medtrinity_instruct.jsonl" "$BATCH" > "$DATA" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
# 8-bit PNGs with one human/gpt round (the fixtures' llava-002 96x96, llava-007 187x224 first)
pick = [r for r in recs if r["id"] in ("llava-002", "llava-007")]
pick += [r for r in recs if r.get("image", "").endswith(".png") and r not in pick and len(r["conversations"]) == 2]
for r in pick[: int(sys.argv[2])]:
    print(json.dumps(r, ensure_ascii=False))
EOF
BIG=$OUT/train-100m
[ -f "$BIG/llava/model.safetensors" ] || "$PY" "$ROOT/bench/train_baseline.py" make "$BIG"

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
COMMON=(--batch-size "$BATCH" --grad-accum 1 --lr 1e-4 --warmup-ratio 0 --weight-decay 0 --save-steps 0
        --model-max-length 2048 --image-aspect-ratio pad)
run_case() {  # name model steps [--lora-r R --lora-alpha A]; REPS alternating mt / PyTorch pairs
  local name=$1 model=$2 steps=$3; shift 3
  for rep in $(seq "$REPS"); do
    local run=$OUT/run-$name-$rep
    rm -rf "$run"
    cut -d' ' -f1 /proc/loadavg > "$OUT/$name.$rep.load"  # 1-minute load average before the pair
    /usr/bin/time -v -o "$OUT/$name.$rep.mt.time" "$MT" -q finetune --model "$model" --data "$DATA" \
      --image-folder "$IMAGES" --cpu --max-steps "$steps" "${COMMON[@]}" --run-dir "$run" "$@" >/dev/null
    /usr/bin/time -v -o "$OUT/$name.$rep.py.time" "$PY" "$ROOT/bench/train_baseline.py" run --model "$model" \
      --data "$DATA" --image-folder "$IMAGES" --steps "$steps" --batch "$BATCH" --lr 1e-4 --threads "$THREADS" "$@" \
      2>/dev/null | tail -1 > "$OUT/$name.$rep.py.json"
    cut -d' ' -f1 /proc/loadavg >> "$OUT/$name.$rep.load"
  done
}
for c in $CASES; do
  case $c in
    tiny-full) run_case tiny-full "$ROOT/testdata/models/tiny-llava" "$STEPS_TINY" ;;
    100m-full) run_case 100m-full "$BIG/llava" "$STEPS_BIG" ;;
    100m-lora) run_case 100m-lora "$BIG/llava" "$STEPS_BIG" --lora-r 16 --lora-alpha 32 --lora-dropout 0.05 ;;
    100m-lora-d0) run_case 100m-lora-d0 "$BIG/llava" "$STEPS_BIG" --lora-r 16 --lora-alpha 32 --lora-dropout 0 ;;
    *) echo "unknown case $c (tiny-full 100m-full 100m-lora 100m-lora-d0)" >&2; exit 2 ;;
  esac
done

python3 - "$OUT" "$WARM" "$THREADS" "$BATCH" "$REPS" $CASES <<'EOF'
import json, re, statistics, sys
out, warm, threads, batch, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
field = lambda f, pat: re.search(pat, open(f).read())[1]
bad = []
print(f"threads {threads}, batch {batch}; s/step = median over steps {warm + 1}.. (first {warm} skipped), "
      f"the lowest of {reps} alternating run(s) per tool")
print("case\ttool\tsteps\tmedian s/step\tsamples/s\tpeak RSS MB\tCPU %\tstep-1 loss\tlast loss")
for name in sys.argv[6:]:
    rows = {"mt": [], "pytorch": []}
    for rep in range(1, reps + 1):
        mt = [json.loads(l) for l in open(f"{out}/run-{name}-{rep}/metrics.jsonl")]
        py = json.load(open(f"{out}/{name}.{rep}.py.json"))
        rss_mt = int(field(f"{out}/{name}.{rep}.mt.time", r"Maximum resident set size \(kbytes\): (\d+)")) / 1024
        rows["mt"].append(dict(t=statistics.median(s["seconds"] for s in mt[warm:]), n=len(mt), rss=rss_mt,
                               cpu=field(f"{out}/{name}.{rep}.mt.time", r"Percent of CPU this job got: (\d+)%"),
                               l1=mt[0]["loss"], last=mt[-1]["loss"]))
        rows["pytorch"].append(dict(t=statistics.median(s["seconds"] for s in py["steps"][warm:]), n=len(py["steps"]),
                                    rss=py["peak_rss_mb"], cpu=field(f"{out}/{name}.{rep}.py.time", r"Percent of CPU this job got: (\d+)%"),
                                    l1=py["steps"][0]["loss"], last=py["steps"][-1]["loss"]))
        rel = abs(rows["mt"][-1]["l1"] - rows["pytorch"][-1]["l1"]) / abs(rows["pytorch"][-1]["l1"])
        if rel > 1e-3:
            bad.append(f"{name} run {rep}: {rows['mt'][-1]['l1']} vs {rows['pytorch'][-1]['l1']}")
    best = {}
    for tool, rs in rows.items():
        b = best[tool] = min(rs, key=lambda r: r["t"])
        print(f"{name}\t{tool}\t{b['n']}\t{b['t']:.3f}\t{batch / b['t']:.2f}\t{max(r['rss'] for r in rs):.0f}\t{b['cpu']}"
              f"\t{b['l1']:.6f}\t{b['last']:.6f}")
    rel = abs(best["mt"]["l1"] - best["pytorch"]["l1"]) / abs(best["pytorch"]["l1"])
    loads = "; ".join(" -> ".join(open(f"{out}/{name}.{r}.load").read().split()) for r in range(1, reps + 1))
    runs = lambda tool: "/".join(f"{r['t']:.3f}" for r in rows[tool])
    print(f"{name}\tratio pytorch/mt\t\t{best['pytorch']['t'] / best['mt']['t']:.2f}\t\t\t\tstep-1 rel diff {rel:.1e} "
          f"{'ok' if rel <= 1e-3 else 'MISMATCH'}\t(per run mt {runs('mt')}, pytorch {runs('pytorch')}; load avg {loads})")
if bad:
    sys.exit(f"step-1 losses differ by more than 1e-3 relative: {bad}")
EOF
