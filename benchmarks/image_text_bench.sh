#!/usr/bin/env bash
# CLIP, SISTA, MaCo and MAE side by side in ONE `cxrcl bench` run (issue 10: images/s and GFLOPs;
# MaCo and MAE encode only the visible patches), plus a per-component FLOP breakdown of one
# training step (image encoder / text encoder / MAE decoder, patch tokens the encoder is given).
# ViT-Tiny/16 at 128 px on the phantom (it has reports; 256 images, 128 px), batch 32.
# BACKBONE=resnet18 (with TAG=NAME for the output names bench_NAME.json, components_NAME.json):
# MaCo and MAE on a CNN (our SparK-style masking: masked pixels zeroed, the network runs densely);
# the per-component breakdown follows the ViT token path, so it runs for the ViT only.
# Usage: [BACKBONE=... TAG=...] bash benchmarks/image_text_bench.sh [PREPARED_DATA_WITH_REPORTS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-.venv/bin/cxrcl}
PY=${PY:-.venv/bin/python}
DATA=${1:-.bench-data/phantom128_reports}
OUT=${2:-benchmarks/results/image_text}
METHODS=${METHODS:-clip,sista,maco,mae}
STEPS=${STEPS:-5}
BACKBONE=${BACKBONE:-vit_tiny_patch16_224}
if [ "$BACKBONE" != vit_tiny_patch16_224 ] && [ -z "${TAG:-}" ]; then
  echo "BACKBONE needs TAG=NAME for its output files (bench_NAME.json)" >&2
  exit 2
fi
SFX=${TAG:+_$TAG}
mkdir -p "$OUT" .bench-data
[ -f "$DATA/dataset.json" ] || "$CXRCL" data phantom "$DATA" --n 256 --size 128 --seed 0
"$CXRCL" bench --methods "$METHODS" --data "$DATA" --backbone "$BACKBONE" --image-size 128 \
  --batch-size 32 --steps "$STEPS" --warmup 1 --reference clip --out "$OUT/bench$SFX.json"
[ -n "$SFX" ] || "$PY" benchmarks/image_text_components.py --data "$DATA" --methods "$METHODS" \
  --backbone "$BACKBONE" --image-size 128 --batch-size 32 --out "$OUT/components.json"
