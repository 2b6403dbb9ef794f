#!/usr/bin/env bash
# Does a longer image-report run reach the phantom zero-shot target (issue 10: macro AUROC >= 0.65)?
# The method's recipe of benchmarks/image_text_eval.sh (its configs/METHOD.yaml: BPE text tower from the
# Open-i reports, ViT-Tiny 8 px patches depth 4 at 64 px, batch 32) at STEPS (default 1000,
# 6.7x the 150 of that script), scored on the VAL split (both scorings, both prompt files); TEST
# scores the variant chosen there once on the test split.
# SPEC (default clip) names the method (clip, sista, maco) and adds settings to its recipe, e.g.
# SPEC=clip:text_sentences=1 (ConVIRT's one sampled sentence per report and step); NAME names the
# variant (default clip).
# Needs benchmarks/image_text_eval.sh to have made its phantom and configs first.
# EXTRA: more `cxrcl pretrain` arguments (e.g. "--lr 3e-4"; name the variant with NAME).
# SEED=N (default 0): the pre-training seed (other seeds add _sN to the names).
# DATA (default phantom64): the phantom under $WORK; phantomPX_4k is `cxrcl data phantom --n 4096
# --size PX --seed 0` (made here when missing): 4x the images, 819 test images instead of 204.
# BACKBONE (default vit_tiny_patch16_224:patch_size=8:depth=4): e.g. vit_tiny_patch16_224:depth=4
# (16 px patches) at 128 px has the same 8x8 tokens as 8 px patches at 64 px.
# Retrieval on val is scored both ways of embedding a report (--report-embedding whole | sentences);
# REPORT_EMB (default whole) is the one chosen there for TEST.
# Usage: [STEPS=1000] [SPEC=METHOD:KEY=VALUE NAME=VARIANT] [SEED=N] [DATA=phantom64_4k] [BACKBONE=...]
#        [TEST="PROMPTS SCORING"] bash benchmarks/image_text_phantom_long.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-.bench-data/image_text}
OUT=benchmarks/results/image_text/long_probe
STEPS=${STEPS:-1000}
SPEC=${SPEC:-clip}
NAME=${NAME:-clip}
SEED=${SEED:-0}
DATA=${DATA:-phantom64}
[ "$SEED" = 0 ] || NAME=${NAME}_s$SEED  # seed 0 keeps the plain names
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
if [[ $DATA =~ ^phantom([0-9]+)_4k$ ]] && [ ! -f "$W/$DATA/dataset.json" ]; then
  .venv/bin/cxrcl data phantom "$W/$DATA" --n 4096 --size "${BASH_REMATCH[1]}" --seed 0
fi
run=.bench-data/it_long/${NAME}_$STEPS
[ -f "$run/summary.json" ] || .venv/bin/cxrcl pretrain "$SPEC" --config "$W/configs/${SPEC%%:*}.yaml" --data "$W/$DATA" \
  --out "$run" --backbone "${BACKBONE:-vit_tiny_patch16_224:patch_size=8:depth=4}" --steps "$STEPS" --seed "$SEED" --batch-size 32 \
  --no-progress --log-every 50 ${EXTRA:-}
cp "$run/summary.json" "$OUT/${NAME}_${STEPS}_summary.json"
cp "$run/metrics.jsonl" "$OUT/${NAME}_${STEPS}_metrics.jsonl"
for sc in cosine posneg; do
  [ -f "$OUT/${NAME}_${STEPS}_val_$sc.json" ] || .venv/bin/cxrcl eval zeroshot --run "$run" --data "$W/$DATA" \
    --label all --scoring "$sc" --split val --out "$OUT/${NAME}_${STEPS}_val_$sc.json"
  [ -f "$OUT/${NAME}_${STEPS}_val_${sc}_report_style.json" ] || .venv/bin/cxrcl eval zeroshot --run "$run" \
    --data "$W/$DATA" --label all --scoring "$sc" --split val --prompts configs/prompts/report_style.yaml \
    --out "$OUT/${NAME}_${STEPS}_val_${sc}_report_style.json"
done
for unit in whole sentences; do
  for match in text labels; do
    f="$OUT/${NAME}_${STEPS}_val_retrieval_${match}_$unit.json"
    [ -f "$f" ] || .venv/bin/cxrcl eval retrieval --run "$run" --data "$W/$DATA" --split val --match "$match" \
      --report-embedding "$unit" --out "$f" > /dev/null
  done
done
# TEST="PROMPT_FILE_STEM SCORING": the variant chosen on val, scored once on the test split
# (zero-shot with those prompts and scoring, and retrieval of the own report and by label set)
if [ -n "${TEST:-}" ]; then
  set -- $TEST
  [ -f "$OUT/${NAME}_${STEPS}_test_$2_$1.json" ] || .venv/bin/cxrcl eval zeroshot --run "$run" --data "$W/$DATA" \
    --label all --scoring "$2" --split test --prompts "configs/prompts/$1.yaml" --out "$OUT/${NAME}_${STEPS}_test_$2_$1.json"
  unit=${REPORT_EMB:-whole}
  suffix=$([ "$unit" = whole ] || echo "_$unit")  # whole keeps the names of the earlier stops
  [ -f "$OUT/${NAME}_${STEPS}_test_retrieval$suffix.json" ] || .venv/bin/cxrcl eval retrieval --run "$run" \
    --data "$W/$DATA" --report-embedding "$unit" --out "$OUT/${NAME}_${STEPS}_test_retrieval$suffix.json"
  [ -f "$OUT/${NAME}_${STEPS}_test_retrieval_labels$suffix.json" ] || .venv/bin/cxrcl eval retrieval --run "$run" \
    --data "$W/$DATA" --match labels --report-embedding "$unit" \
    --out "$OUT/${NAME}_${STEPS}_test_retrieval_labels$suffix.json"
fi
