#!/usr/bin/env bash
# SparseContrast speed: keep 0.5 vs its dense counterpart (keep 1.0 = SimCLR op for op), one
# `cxrcl bench` run per backbone, interleaved rounds in one process. ViT-Tiny/16 at 128 px
# (64 tokens, pruned after block 2 of 12) and ResNet-18 at 128 px (pruned after layer1: 8 of the
# 16 8x8-cell windows go on through layer2-4), batch 32, on 256 phantom images.
# Usage: bash benchmarks/sparsecontrast_speed.sh [WORK_DIR]      (~10 min on 2 CPU cores)
# The ResNet-18 rerun: BACKBONES=resnet18 SUFFIX=_rerun VIT_RERUN=0 bash benchmarks/sparsecontrast_speed.sh
# Only the variant trial: BACKBONES= VIT_RERUN=0 VARIANT_TRIAL=1 bash benchmarks/sparsecontrast_speed.sh
# Only the variant's 20-round rerun: BACKBONES= VIT_RERUN=0 VARIANT_RERUN=1 bash benchmarks/sparsecontrast_speed.sh
# The variant, the default and dense, 20 rounds, in one precision (P = 32-true or bf16-mixed):
#   BACKBONES= VIT_RERUN=0 THREE_WAY=P bash benchmarks/sparsecontrast_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/sc}
OUT=benchmarks/results/sparsecontrast
mkdir -p "$WORK" "$OUT"
[ -f "$WORK/phantom128/dataset.json" ] || "$CXRCL" data phantom "$WORK/phantom128" --n 256 --size 128
# one `cxrcl bench` run against the dense counterpart: bench BACKBONE ROUNDS OUT METHODS [more flags]
bench() {
  local bb=$1 rounds=$2 out=$3 methods=$4; shift 4
  "$CXRCL" bench --methods "$methods" --reference "sparsecontrast:keep_ratio=1.0" --data "$WORK/phantom128" \
    --backbone "$bb" --image-size 128 --batch-size 32 --steps "$rounds" --warmup 2 --no-memory "$@" --out "$OUT/$out"
}
VIT=vit_tiny_patch16_224
DENSE=sparsecontrast:keep_ratio=1.0
DEFAULT=sparsecontrast:keep_ratio=0.5
VARIANT=sparsecontrast:keep_ratio=0.5:prune_at=3:fuse=area
for bb in ${BACKBONES-$VIT resnet18}; do
  bench "$bb" 10 "speed_${bb}_128${SUFFIX:-}.json" "$DEFAULT,$DENSE"
done
# a second ViT run with 20 timed rounds (the first one's step times had an IQR of ~1.6 s on a
# shared machine; both are reported)
if [ "${VIT_RERUN:-1}" = 1 ]; then
  bench $VIT 20 speed_vit_tiny_patch16_224_128_rerun20.json "$DEFAULT,$DENSE"
fi
# how the default prune_at was chosen (6 timed rounds; run with PRUNE_TRIAL=1)
if [ "${PRUNE_TRIAL:-0}" = 1 ]; then
  bench $VIT 6 speed_prune_at_trial.json "$DENSE,$DEFAULT:prune_at=1,$DEFAULT:prune_at=2,$DEFAULT:prune_at=3"
fi
# the accuracy variants tried on covid_radiography's val split (EViT's fused token, prune_at=3),
# beside the default and the dense counterpart (10 timed rounds; run with VARIANT_TRIAL=1)
if [ "${VARIANT_TRIAL:-0}" = 1 ]; then
  bench $VIT 10 speed_variant_trial.json "$DENSE,$DEFAULT,$DEFAULT:fuse=area,$VARIANT"
fi
# the val-chosen accuracy variant against the dense counterpart alone, 20 timed rounds (the trial
# above timed it in one 10-round run beside three other methods; run with VARIANT_RERUN=1)
if [ "${VARIANT_RERUN:-0}" = 1 ]; then
  bench $VIT 20 speed_variant_rerun20.json "$VARIANT,$DENSE"
fi
# the variant, the default and the dense counterpart side by side, 20 timed rounds, in the
# precision THREE_WAY names (the bench's auto choice differs between machines: bf16-mixed where
# the CPU has bf16 units; the first ViT runs above were fp32)
if [ -n "${THREE_WAY:-}" ]; then
  bench $VIT 20 "speed_three_way_${THREE_WAY}.json" "$VARIANT,$DEFAULT,$DENSE" --precision "$THREE_WAY"
fi
