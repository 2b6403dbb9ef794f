#!/usr/bin/env bash
# Efficiency against the hardware on this CPU: ViT-Tiny/16 at 128 px (64 tokens), batch 64, every
# contrastive method side by side in one process (cxrcl bench), once in fp32 and once in
# bf16-mixed; each JSON holds the measured fp32 and bf16 matmul peaks (machine.matmul_peak), the
# achieved training GFLOP/s, its fraction of the measured peak of the precision that ran, inference
# images/s at batch 1 and 64, and the fp32-vs-bf16 loss fidelity check (precision_check).
# Stage "accuracy": a short S-PCL pre-training in each precision on covid_chestxray (64 px) and a
# linear probe of each (does bf16 keep accuracy?).
# Usage: bash benchmarks/bench_peak.sh [bench|accuracy|all] [WORK_DIR]   (~4 + ~5 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
STAGE=${1:-all}
WORK=${2:-.bench-data/peak}
OUT=benchmarks/results/efficiency
METHODS=${METHODS:-spcl,simclr,sparsecontrast,comcl,mocov3,dino}
mkdir -p "$WORK" "$OUT"
[ -f "$WORK/covid128/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$WORK/covid128" --size 128
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  for precision in 32-true bf16-mixed; do
    "$CXRCL" bench --methods "$METHODS" --data "$WORK/covid128" --backbone vit_tiny_patch16_224 \
      --image-size 128 --batch-size 64 --steps "${BENCH_STEPS:-3}" --warmup 1 --no-memory \
      --precision "$precision" --out "$OUT/vit_tiny16_128_${precision}.json"
  done
fi
if [ "$STAGE" = accuracy ] || [ "$STAGE" = all ]; then
  [ -f "$WORK/covid64/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$WORK/covid64" --size 64
  for precision in 32-true bf16-mixed; do
    run="$WORK/runs/spcl_${precision}"
    rm -rf "$run"
    "$CXRCL" pretrain spcl --data "$WORK/covid64" --out "$run" --backbone vit_tiny_patch16_224:patch_size=8 \
      --steps "${ACC_STEPS:-100}" --batch-size 64 --seed 0 --precision "$precision" --no-progress
    cp "$run/summary.json" "$OUT/accuracy_spcl_${precision}_summary.json"
    "$CXRCL" eval linear --run "$run" --data "$WORK/covid64" --label covid19 --seeds 3 \
      --out "$OUT/accuracy_spcl_${precision}_linear.json"
  done
fi
