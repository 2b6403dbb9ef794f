#!/usr/bin/env bash
# Robustness (CoMCL's claim): CoMCL vs SimCLR vs MoCo v3 pre-trained with the same backbone,
# image size, batch and steps on one data set's train split, then a linear probe (3 label-sample
# seeds at 10 % and 100 % labels) scored by AUROC on clean test images and on test images
# degraded at levels 1-3 (`cxrcl eval --degrade-test`, cxrcl.data.degrade); beside them the two
# floors (untrained encoder, pixel PCA). CoMCL's lesion regions come from the saliency of the
# SimCLR run (regions=saliency), so it runs after SimCLR; regions=none (uniform patches) is the
# region ablation. Idempotent: finished runs and evaluations are skipped, so it can be called
# in pieces (METHODS="simclr" ..., LEVELS="0 1").
# covid_chestxray has lung masks for 192 of its 575 images: comcl_mask uses them (regions=mask;
# "lesion" = inside the lungs, an image without a mask gets a uniformly placed patch), and
# comcl_mask_sp04 is the same with a tighter self-paced threshold; variants are compared on the
# val split (clean, 100 % labels: `val_auroc_per_label` in the L0 JSON, comcl_tables.py).
# covrad = covid_radiography (13,636 images, no masks: regions=saliency of the SimCLR run).
# SEED=N (default 0) is the pre-training seed: seed 0 keeps the plain names (${SET}_${name}), other
# seeds add _sN to the run and result names (the floors have no pre-training seed); comcl_tables.py
# pools the seeds.
# Usage: [SEED=N] bash benchmarks/comcl_robustness.sh [phantom|covid|covrad] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
SET=${1:-phantom}
WORK=${2:-.bench-data/comcl}
OUT=benchmarks/results/comcl
BACKBONE=vit_tiny_patch16_224
STEPS=${STEPS:-300}
SEED=${SEED:-0}
SFX=""; [ "$SEED" = 0 ] || SFX="_s$SEED"
mkdir -p "$WORK/runs" "$OUT"
case "$SET" in
  phantom) DATA=$WORK/phantom64; LABEL=all
           [ -f "$DATA/dataset.json" ] || "$CXRCL" data phantom "$DATA" --n 1024 --size 64 ;;
  covid)   DATA=$WORK/covid64; LABEL=covid19
           [ -f "$DATA/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_chestxray "$DATA" --size 64 ;;
  covrad)  DATA=$WORK/covrad64; LABEL=covid19
           [ -f "$DATA/dataset.json" ] || "$CXRCL" data prepare npz ../shared/data/covid_radiography "$DATA" --size 64 ;;
  *) echo "unknown set $SET (phantom, covid or covrad)"; exit 2 ;;
esac
SAL=$WORK/runs/${SET}_simclr$SFX
declare -A SPEC=(
  [simclr]="simclr"
  [mocov3]="mocov3"
  [comcl]="comcl:regions=saliency:region_run=$SAL:queue_size=1024"
  [comcl_uniform]="comcl:regions=none:queue_size=1024"
  [comcl_mask]="comcl:regions=mask:queue_size=1024"
  [comcl_mask_sp04]="comcl:regions=mask:queue_size=1024:self_paced=hard:sp_lambda=0.4,1.0"
  [dino]="dino"
)
for name in ${METHODS:-simclr mocov3 comcl}; do
  run=$WORK/runs/${SET}_${name}$SFX
  if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
    resume=""; [ -f "$run/config.yaml" ] && resume="--resume"
    "$CXRCL" pretrain "${SPEC[$name]}" --data "$DATA" --out "$run" --backbone "$BACKBONE" \
      --image-size 64 --steps "$STEPS" --batch-size 32 --seed "$SEED" --no-progress $resume
  fi
  cp "$run/summary.json" "$OUT/${SET}_${name}${SFX}_summary.json"
  cp "$run/metrics.jsonl" "$OUT/${SET}_${name}${SFX}_metrics.jsonl"
done
for name in ${EVALS:-simclr mocov3 comcl random pixels}; do
  sfx=$SFX
  case "$name" in
    random) enc="random:$BACKBONE"; sfx="" ;;
    pixels) enc=pixels; sfx="" ;;
    *) enc=$WORK/runs/${SET}_${name}$SFX ;;
  esac
  for level in ${LEVELS:-0 1 2 3}; do
    out=$OUT/${SET}_${name}${sfx}_L${level}.json
    [ -f "$out" ] || "$CXRCL" eval linear --run "$enc" --data "$DATA" --label "$LABEL" \
      --fractions 0.1,1.0 --seeds 3 --degrade-test "$level" --image-size 64 --out "$out"
  done
done
