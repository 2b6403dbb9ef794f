#!/usr/bin/env bash
# S-PCL vs SimCLR efficiency, side by side in one process (ISSUE: >= 1.8x training images/s,
# <= 0.55x forward GFLOPs per image, ViT-Tiny/16 at 128 px, same batch).
# Usage: bash benchmarks/bench_spcl_vs_simclr.sh [PREPARED_DATA] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-.venv/bin/cxrcl}
DATA=${1:-}
OUT=${2:-benchmarks/results}
mkdir -p "$OUT" .bench-data
if [ -z "$DATA" ]; then
  if [ -d ../shared/data/covid_chestxray ]; then
    DATA=.bench-data/covid128
    [ -f "$DATA/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$DATA" --size 128
  else
    DATA=.bench-data/phantom128
    [ -f "$DATA/dataset.json" ] || "$CXRCL" data phantom "$DATA" --n 512 --size 128
  fi
fi
"$CXRCL" bench --methods spcl,simclr --data "$DATA" --backbone vit_tiny_patch16_224 \
  --image-size 128 --batch-size 64 --steps 10 --warmup 2 --out "$OUT/bench_spcl_simclr_vit_tiny16_128.json"
