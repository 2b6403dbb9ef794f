#!/usr/bin/env bash
# Segmentation probe (cxrcl eval segment): a light decoder on frozen encoder features, trained at
# 1/10/100% of the masks (3 seeds), Dice on the test split, on
#   - covid_chestxray's 192 model-generated lung masks (64 px), and
#   - the phantom's lesion masks (64 px, 400 images),
# for a random ViT-Tiny/8 (the untrained floor) and a short S-PCL run on each set's train split.
# Budgets are tiny (CPU, 2 cores): the numbers check the mechanics, not the method.
# Usage: [DATASETS="covid64 phantom64"] [HEAD_STEPS=100] bash benchmarks/segment.sh [WORK_DIR]   (needs ../shared/data; ~8 min on 2 idle CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/segment}
OUT=benchmarks/results/segment
BACKBONE="vit_tiny_patch16_224:patch_size=8"
STEPS=${STEPS:-100}          # S-PCL pre-training steps (batch 64)
HEAD_STEPS=${HEAD_STEPS:-100}
mkdir -p "$WORK" "$OUT"
[ -f "$WORK/covid64/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$WORK/covid64" --size 64
[ -f "$WORK/phantom64/dataset.json" ] || "$CXRCL" data phantom "$WORK/phantom64" --n 400 --size 64 --seed 0
SFX=""; [ "$HEAD_STEPS" = 100 ] || SFX="_h$HEAD_STEPS"   # other decoder budgets get their own files
for data in ${DATASETS:-covid64 phantom64}; do
  run="$WORK/runs/${data}_spcl"
  if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
    rm -rf "$run"
    "$CXRCL" pretrain spcl --data "$WORK/$data" --out "$run" --backbone "$BACKBONE" --steps "$STEPS" \
      --batch-size 64 --seed 0 --no-progress
  fi
  cp "$run/summary.json" "$OUT/${data}_spcl_summary.json"
  "$CXRCL" eval segment --run "random:$BACKBONE" --data "$WORK/$data" --out "$OUT/${data}_random${SFX}_segment.json" \
    --seeds 3 --head-steps "$HEAD_STEPS"
  "$CXRCL" eval segment --run "$run" --data "$WORK/$data" --out "$OUT/${data}_spcl${SFX}_segment.json" \
    --seeds 3 --head-steps "$HEAD_STEPS"
done
