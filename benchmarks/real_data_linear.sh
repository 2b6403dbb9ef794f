#!/usr/bin/env bash
# Real data: S-PCL and SimCLR pre-trained on the train split of covid_chestxray (64 px) and
# PneumoniaMNIST (28 px), then a linear probe at 1/10/100% labels over 3 seeds against the two
# floors (untrained encoder, pixel PCA). Same backbone, image size, epochs and data per set.
# Usage: bash benchmarks/real_data_linear.sh [WORK_DIR]   (needs ../shared/data; ~45 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/real}
OUT=benchmarks/results/real
SHARED=../shared/data
mkdir -p "$WORK" "$OUT"
[ -d "$SHARED" ] || { echo "needs ../shared/data beside the repository"; exit 1; }
[ -f "$WORK/covid64/dataset.json" ] || "$CXRCL" data prepare npz "$SHARED/covid_chestxray" "$WORK/covid64" --size 64
[ -f "$WORK/pmnist/dataset.json" ] || "$CXRCL" data prepare medmnist "$SHARED/pneumoniamnist/pneumoniamnist.npz" "$WORK/pmnist" --size 28

# name  data  label  backbone  epochs
EXPERIMENTS=(
  "covid64 covid19 vit_tiny_patch16_224:patch_size=8 50"
  "pmnist pneumonia vit_tiny_patch16_224:patch_size=4 8"
)
for exp in "${EXPERIMENTS[@]}"; do
  read -r data label backbone epochs <<<"$exp"
  for method in ${METHODS:-spcl simclr}; do
    run="$WORK/runs/${data}_${method}"
    if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
      resume=""; compgen -G "$run/checkpoints/step-*" >/dev/null && resume="--resume"
      "$CXRCL" pretrain "$method" --data "$WORK/$data" --out "$run" --backbone "$backbone" \
        --epochs "$epochs" --batch-size 64 --no-progress $resume
    fi
    "$CXRCL" eval linear --run "$run" --data "$WORK/$data" --label "$label" --out "$OUT/${data}_${method}_linear.json"
    cp "$run/summary.json" "$OUT/${data}_${method}_summary.json"
  done
  "$CXRCL" eval linear --run "random:$backbone" --data "$WORK/$data" --label "$label" --out "$OUT/${data}_random_linear.json"
  "$CXRCL" eval linear --run pixels --data "$WORK/$data" --label "$label" --out "$OUT/${data}_pixels_linear.json"
done
"$CXRCL" report "$OUT" "$WORK"/runs/* --out "$OUT/REPORT.md"
