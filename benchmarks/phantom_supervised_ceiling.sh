#!/usr/bin/env bash
# Can the phantom's findings be learnt from its pixels at all? A supervised reference for the
# image-report runs of benchmarks/image_text_phantom_long.sh: `cxrcl eval finetune` of a
# randomly initialised ResNet-18 (every weight trained, early stopping on val) on the
# 4,096-image phantom's train split, all 5 findings, test AUROC per finding. Not a method: it
# uses every training label, which zero-shot never sees.
# Beside it, the linear probe (100 % labels) of the 128 px SISTA run of image_text_phantom_long.sh
# (DATA=phantom128_4k NAME=sista_sent1_128_4k), when that run exists: what its image features hold.
# SIZES (default "128"): phantom sizes in px (the phantom is made under WORK when missing).
# BACKBONE (default resnet18) and TAG (its name in the output file, default resnet18): e.g.
# BACKBONE=vit_tiny_patch16_224:patch_size=8:depth=4 TAG=vit8d4, the image tower of the long runs.
# EPOCHS (default 8, patience 3 on val) also needs TAG, e.g. EPOCHS=30 TAG=vit8d4_30ep.
# Usage: [SIZES="64 128"] [BACKBONE=... TAG=...] [EPOCHS=N TAG=...] bash benchmarks/phantom_supervised_ceiling.sh
#        (~14 min per size on 1 core)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-.bench-data/image_text}
OUT=benchmarks/results/image_text/long_probe
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
if { [ -n "${BACKBONE:-}" ] || [ -n "${EPOCHS:-}" ]; } && [ -z "${TAG:-}" ]; then  # the name must say what ran
  echo "BACKBONE or EPOCHS needs TAG=NAME for its output file (supervised_NAME_phantomPX_4k.json)" >&2
  exit 2
fi
for px in ${SIZES:-128}; do
  data=$W/phantom${px}_4k
  [ -f "$data/dataset.json" ] || .venv/bin/cxrcl data phantom "$data" --n 4096 --size "$px" --seed 0
  out=$OUT/supervised_${TAG:-resnet18}_phantom${px}_4k.json
  [ -f "$out" ] || .venv/bin/cxrcl eval finetune --run "random:${BACKBONE:-resnet18}" --data "$data" --label all \
    --fractions 1.0 --seeds 1 --max-epochs "${EPOCHS:-8}" --patience 3 --out "$out"
done
run=.bench-data/it_long/sista_sent1_128_4k_1000
out=$OUT/linear_sista_sent1_128_4k.json
if [ -d "$run" ] && [ ! -f "$out" ]; then
  .venv/bin/cxrcl eval linear --run "$run" --data "$W/phantom128_4k" --label all --fractions 1.0 --seeds 1 --out "$out"
fi
