#!/usr/bin/env bash
# What closes the gap between S-PCL and the pixel-PCA floor on a few hundred 64 px real CXRs?
# Variants of S-PCL on covid_chestxray (train split, 424 images), each probed like the main
# table (linear, covid19, 1/10/100% labels, 3 seeds). Run after benchmarks/real_data_linear.sh
# (it reuses its prepared data and its 50-epoch ViT run as the reference).
# Usage: bash benchmarks/spcl_pixel_gap.sh [WORK_DIR]     (~30 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/real}
OUT=benchmarks/results/gap
mkdir -p "$OUT"
DATA="$WORK/covid64"
[ -f "$DATA/dataset.json" ] || { echo "run benchmarks/real_data_linear.sh first"; exit 1; }

# name | method spec | backbone | epochs
VARIANTS=(
  "vit_p16|spcl|vit_tiny_patch16_224|50"
  "vit_p8_block|spcl:partition=block|vit_tiny_patch16_224:patch_size=8|50"
  "vit_p8_cls|spcl|vit_tiny_patch16_224:patch_size=8:pool=token|50"
  "resnet18|spcl|resnet18|50"
  "vit_p8_100ep|spcl|vit_tiny_patch16_224:patch_size=8|100"
)
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name spec backbone epochs <<<"$v"
  run="$WORK/gap_runs/$name"
  if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
    resume=""; compgen -G "$run/checkpoints/step-*" >/dev/null && resume="--resume"
    "$CXRCL" pretrain "$spec" --data "$DATA" --out "$run" --backbone "$backbone" --epochs "$epochs" \
      --batch-size 64 --no-progress $resume
  fi
  "$CXRCL" eval linear --run "$run" --data "$DATA" --label covid19 --out "$OUT/${name}_linear.json"
  cp "$run/summary.json" "$OUT/${name}_summary.json"
done
"$CXRCL" eval linear --run random:resnet18 --data "$DATA" --label covid19 --out "$OUT/random_resnet18_linear.json"
"$CXRCL" eval linear --run random:vit_tiny_patch16_224 --data "$DATA" --label covid19 --out "$OUT/random_vit_p16_linear.json"
cp benchmarks/results/real/covid64_*_linear.json "$OUT/" 2>/dev/null || true
"$CXRCL" report "$OUT" "$WORK"/gap_runs/* --out "$OUT/REPORT.md"
