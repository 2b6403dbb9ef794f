#!/usr/bin/env bash
# SparseContrast on real CXRs: keep 0.5 vs its dense counterpart (keep 1.0 = SimCLR), and
# S-PCL x SparseContrast (spcl:partition=saliency) vs S-PCL, pre-trained on the train split of
# covid_radiography (9,558 images; 300 steps) and covid_chestxray (424; 200 steps), 64 px, ViT-Tiny
# with 16 px patches (16 tokens), batch 64, the same steps/batch/lr for every method; then a linear probe (label covid19,
# 1/10/100% of the labels, 3 seeds) beside the two floors (untrained encoder, pixel PCA).
# SEED=N (default 0) is the pre-training seed: seed 0 keeps the plain names, other seeds add _sN
# (the floors need no pre-training and run once); the tables pool the seeds.
# PATCH=8 uses 8 px patches (64 tokens at 64 px, as ViT-Tiny/16 at 128 px in the speed bench);
# its runs and JSON carry _p8 (the floors: random_p8).
# TAG=_x is appended to the run names (e.g. TAG=_300st for a longer schedule; the names do not
# carry STEPS otherwise).
# Usage: [SEED=N] [PATCH=8] [TAG=..] [DATASETS=..] [METHODS=..] [STEPS=..] bash benchmarks/sparsecontrast_real.sh [WORK_DIR]
#        (needs ../shared/data; ~40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/sc}
OUT=benchmarks/results/sparsecontrast/real
SHARED=../shared/data
BACKBONE=vit_tiny_patch16_224
SEED=${SEED:-0}
SFX=""; [ "$SEED" = 0 ] || SFX="_s$SEED"
PFX=""
if [ -n "${PATCH:-}" ] && [ "${PATCH}" != 16 ]; then BACKBONE="$BACKBONE:patch_size=$PATCH"; PFX="_p$PATCH"; fi
mkdir -p "$WORK" "$OUT"
[ -d "$SHARED" ] || { echo "needs ../shared/data beside the repository"; exit 1; }
[ -f "$WORK/covrad64/dataset.json" ] || "$CXRCL" data prepare npz "$SHARED/covid_radiography" "$WORK/covrad64" --size 64
[ -f "$WORK/covid64/dataset.json" ] || "$CXRCL" data prepare npz "$SHARED/covid_chestxray" "$WORK/covid64" --size 64

for data in ${DATASETS:-covrad64 covid64}; do
  steps=${STEPS:-$([ "$data" = covid64 ] && echo 200 || echo 300)}
  for spec in ${METHODS:-sparsecontrast:keep_ratio=0.5 sparsecontrast:keep_ratio=1.0 spcl spcl:partition=saliency}; do
    name="${data}_$(echo "$spec" | tr ':=' '__')$PFX${TAG:-}$SFX"
    run="$WORK/real_runs/$name"
    if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
      resume=""; [ -f "$run/config.yaml" ] && resume="--resume"
      "$CXRCL" pretrain "$spec" --data "$WORK/$data" --out "$run" --backbone "$BACKBONE" \
        --steps "$steps" --batch-size 64 --seed "$SEED" --no-progress $resume
    fi
    [ -f "$OUT/${name}_linear.json" ] || "$CXRCL" eval linear --run "$run" --data "$WORK/$data" --label covid19 --out "$OUT/${name}_linear.json"
    cp "$run/summary.json" "$OUT/${name}_summary.json"
  done
  [ -f "$OUT/${data}_random${PFX}_linear.json" ] || "$CXRCL" eval linear --run "random:$BACKBONE" --data "$WORK/$data" --label covid19 --out "$OUT/${data}_random${PFX}_linear.json"
  [ -f "$OUT/${data}_pixels_linear.json" ] || "$CXRCL" eval linear --run pixels --data "$WORK/$data" --label covid19 --out "$OUT/${data}_pixels_linear.json"
done
