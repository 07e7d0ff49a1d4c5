#!/usr/bin/env bash
# The issue-14 checks that need a CUDA GPU, in one script (each step prints its
# result).
#
#   bash benchmarks/scripts/gpu_check.sh [OUT_DIR]
#
# 1. The book's chapter-5 run on CUDA, in fp32, bf16-mixed and bf16-true (the
#    book's losses: train < 1.0, val < 7.0 after 10 epochs).
# 2. gpt2-124m training throughput at context 1024, batch 12: bf16-mixed and
#    bf16-true, eager and compiled, with MFU against the GPU's datasheet peak,
#    and the book-style baseline (gptkit bench training).
# 3. FSDP on however many GPUs there are (2 or more): it trains as DDP does.
#
# Written for the GPU and not yet run on one (the session that wrote it had no
# GPU); the CPU runs of the same commands are in the test suite.
set -euo pipefail
out="${1:-gpu-check}"
mkdir -p "$out"
verdict=(--corpus the-verdict --preset gpt2-124m --context-length 256 --epochs 10
         --batch-size 2 --lr 4e-4 --weight-decay 0.1 --eval-freq 5 --eval-iter 5
         --seed 123 --device cuda --logger jsonl)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for precision in fp32 bf16-mixed bf16-true; do
  gptkit train "${verdict[@]}" --precision "$precision" --out "$out/ch5-$precision" --json \
    | tee "$out/ch5-$precision.json"
done
python - "$out" <<'EOF'
import json, sys
for precision in ("fp32", "bf16-mixed", "bf16-true"):
    summary = json.loads(open(f"{sys.argv[1]}/ch5-{precision}.json").read())
    ok = summary["train_loss"] < 1.0 and summary["val_loss"] < 7.0
    print(f"chapter 5, {precision}: train {summary['train_loss']:.3f}, val"
          f" {summary['val_loss']:.3f}: {'ok' if ok else 'NOT the book'}")
EOF
python benchmarks/scripts/precision_curves.py "$out"/ch5-fp32 "$out"/ch5-bf16-mixed \
  "$out"/ch5-bf16-true --out "$out/precision-loss-cuda.png"

gptkit bench training --device cuda --preset gpt2-124m --context-length 1024 \
  --batch-size 12 --precisions bf16-mixed,bf16-true --compile --steps 10 \
  --repeats 3 --profile --out "$out/bench-training.json" | tee "$out/bench-training.txt"

gpus=$(nvidia-smi --list-gpus | wc -l)
if [ "$gpus" -ge 2 ]; then
  common=(--corpus the-verdict --preset gpt2-124m --context-length 256 --drop-rate 0
          --batch-size 4 --max-steps 20 --eval-freq 5 --device cuda --logger jsonl)
  gptkit train "${common[@]}" --devices "$gpus" --strategy ddp --out "$out/ddp"
  gptkit train "${common[@]}" --devices "$gpus" --strategy fsdp --out "$out/fsdp"
  python - "$out" <<'EOF'
import json, sys
rows = lambda run: [json.loads(l) for l in open(f"{sys.argv[1]}/{run}/metrics.jsonl")]
diff = max(abs(a[k] - b[k]) for a, b in zip(rows("ddp"), rows("fsdp"))
           for k in ("loss", "train_loss", "val_loss") if k in a)
print(f"FSDP vs DDP on CUDA: largest loss difference {diff:.2e}")
EOF
fi
