#!/usr/bin/env bash
# One GPU, under 8 minutes: S-PCL vs SimCLR vs SparseContrast on ViT-Small/16 at 224 px in bf16,
# side by side in one process (cxrcl bench: images/s, GFLOPs, inference at batch 1 and 64, and the
# fraction of the GPU's MEASURED bf16 matmul peak), then a short bf16 pre-training of each method
# on covid_chestxray (224 px) with a linear probe, so speed and accuracy come from the same call.
# Writes benchmarks/results/gpu/*.json.
# Usage: bash benchmarks/gpu.sh            (needs one CUDA GPU and ../shared/data)
#        bash benchmarks/gpu.sh --tiny     (dry run of the plumbing on a CPU: ViT-Tiny/8, 32 px,
#                                           a few steps; writes to .bench-data/gpu-tiny instead)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
METHODS=spcl,simclr,sparsecontrast
if [ "${1:-}" = --tiny ]; then
  WORK=.bench-data/gpu-tiny; OUT=$WORK/results; SIZE=32; BACKBONE=vit_tiny_patch16_224:patch_size=8:depth=2
  BATCH=8; BENCH_STEPS=1; PRE_STEPS=3; ACCEL=cpu; PRECISION=bf16-mixed
else
  WORK=${WORK:-.bench-data/gpu}; OUT=benchmarks/results/gpu; SIZE=224; BACKBONE=vit_small_patch16_224
  BATCH=128; BENCH_STEPS=10; PRE_STEPS=${PRE_STEPS:-300}; ACCEL=cuda; PRECISION=bf16-mixed
  .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh needs a CUDA GPU (use --tiny for a CPU dry run)')"
fi
mkdir -p "$WORK" "$OUT"
start=$(date +%s)
DATA="$WORK/covid$SIZE"
[ -f "$DATA/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$DATA" --size "$SIZE"
"$CXRCL" bench --methods "$METHODS" --data "$DATA" --backbone "$BACKBONE" --image-size "$SIZE" \
  --batch-size "$BATCH" --steps "$BENCH_STEPS" --warmup 2 --no-memory --precision "$PRECISION" \
  --out "$OUT/bench_vit_small16_${SIZE}_bf16.json"
for method in ${METHODS//,/ }; do
  run="$WORK/runs/$method"
  rm -rf "$run"
  "$CXRCL" pretrain "$method" --data "$DATA" --out "$run" --backbone "$BACKBONE" --image-size "$SIZE" \
    --steps "$PRE_STEPS" --batch-size "$BATCH" --seed 0 --precision "$PRECISION" --accelerator "$ACCEL" --no-progress
  cp "$run/summary.json" "$OUT/${method}_summary.json"
  "$CXRCL" eval linear --run "$run" --data "$DATA" --label covid19 --seeds 3 --out "$OUT/${method}_linear.json"
done
"$CXRCL" eval linear --run "random:$BACKBONE" --data "$DATA" --label covid19 --seeds 3 --out "$OUT/random_linear.json"
.venv/bin/python - "$OUT" "$start" <<'PY'
import json, sys, time
from pathlib import Path
out = Path(sys.argv[1])
b = json.loads(next(out.glob("bench_*.json")).read_text())
peak = b["machine"]["matmul_peak"]["bf16-mixed"]["gflops"]
print(f"{b['machine'].get('cuda') or b['machine']['cpu']}: measured bf16 matmul peak {peak:.0f} GFLOP/s")
for m, r in b["methods"].items():
    lin = json.loads((out / f"{m}_linear.json").read_text())["summary"]
    auc = ", ".join(f"{float(f):g}: {s['auroc_mean']:.3f}" for f, s in lin.items())
    print(f"{m:>15}: {r['train_images_per_s']:.0f} img/s, {r['achieved_fraction_of_peak']:.2f} of the bf16 peak, "
          f"infer b1 {r['infer_images_per_s_b1']:.0f} / b64 {r['infer_images_per_s_b64']:.0f} img/s; AUROC {auc}")
print(f"wall {time.time() - float(sys.argv[2]):.0f} s")
PY
