#!/usr/bin/env bash
# Does the saliency predictor find lesions? SparseContrast (keep 0.5) pre-trained on the phantom
# (1,024 images at 64 px, lesion masks), then `cxrcl explain` at keep 0.5 on the val split (to
# choose a variant) and the test split (reported): lesion_area_kept vs random_area_kept, and the
# overlay montages (copied to docs/methods/figures/). Variants:
#   sc05    the paper's setting: predictor trained by the contrastive loss (ViT-Tiny/16, 4x4 tokens)
#   dense   SimCLR (= sparsecontrast keep 1.0) explained by attention rollout
#   rarity  + our rarity target (rarity_weight=1) with statistics over the views (rarity_frame=view,
#           its first version), ViT-Tiny with 8 px patches (8x8 tokens)
#   rarity_img  the same with statistics over the original images, carried into each view by its
#           sampling grid (rarity_frame=image, the default); _w10: rarity_weight 10
#   rarity_orig the predictor trained on the un-augmented images themselves (rarity_frame=original);
#           _1000: 1,000 steps (its rarity loss was still falling at 300); rarity_img_1000: the
#           rarity_frame=image control at the same 1,000 steps; rarity_orig_2000: 2,000 steps (its
#           val lesion area rose from 0.611 at 300 steps to 0.678 at 1,000); rarity_orig_3000:
#           3,000 steps (val 0.721 at 2,000: still rising)
#   rarity_orig_2000_p3fuse  rarity_orig_2000 with the accuracy variant chosen on covid_radiography's
#           val split (prune_at=3:fuse=area): does its saliency still find lesions?
# Usage: [ONLY="name ..."] bash benchmarks/sparsecontrast_lesions.sh [WORK_DIR]   (~20 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/sc}
OUT=benchmarks/results/sparsecontrast
FIG=docs/methods/figures
STEPS=${STEPS:-500}
mkdir -p "$WORK/runs" "$OUT" "$FIG"
[ -f "$WORK/phantom64/dataset.json" ] || "$CXRCL" data phantom "$WORK/phantom64" --n 1024 --size 64
# name | method | backbone | steps | batch
VARIANTS=(
  "sc05|sparsecontrast:keep_ratio=0.5|vit_tiny_patch16_224|$STEPS|64"
  "dense|sparsecontrast:keep_ratio=1.0|vit_tiny_patch16_224|$STEPS|64"
  "rarity|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=view|vit_tiny_patch16_224:patch_size=8|300|32"
  "rarity_img|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=image|vit_tiny_patch16_224:patch_size=8|300|32"
  "rarity_img_w10|sparsecontrast:keep_ratio=0.5:rarity_weight=10:rarity_frame=image|vit_tiny_patch16_224:patch_size=8|300|32"
  "rarity_orig|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=original|vit_tiny_patch16_224:patch_size=8|300|32"
  "rarity_img_1000|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=image|vit_tiny_patch16_224:patch_size=8|1000|32"
  "rarity_orig_1000|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=original|vit_tiny_patch16_224:patch_size=8|1000|32"
  "rarity_orig_2000|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=original|vit_tiny_patch16_224:patch_size=8|2000|32"
  "rarity_orig_3000|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=original|vit_tiny_patch16_224:patch_size=8|3000|32"
  "rarity_orig_2000_p3fuse|sparsecontrast:keep_ratio=0.5:rarity_weight=1:rarity_frame=original:prune_at=3:fuse=area|vit_tiny_patch16_224:patch_size=8|2000|32"
)
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name spec backbone steps batch <<<"$v"
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $name "* ]] || continue
  run="$WORK/runs/phantom_${name}"
  if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
    resume=""; compgen -G "$run/checkpoints/step-*" >/dev/null && resume="--resume"   # a killed run
    "$CXRCL" pretrain "$spec" --data "$WORK/phantom64" --out "$run" \
      --backbone "$backbone" --steps "$steps" --batch-size "$batch" --no-progress $resume
  fi
  for split in val test; do
    rm -rf "$WORK/explain_${name}_${split}"
    "$CXRCL" explain --run "$run" --data "$WORK/phantom64" --out "$WORK/explain_${name}_${split}" \
      --n 16 --keep 0.5 --split "$split"
    cp "$WORK/explain_${name}_${split}/explain.json" "$OUT/phantom_explain_${name}_${split}.json"
  done
  cp "$WORK/explain_${name}_test/overlays.png" "$FIG/sparsecontrast_phantom_${name}.png"
  cp "$run/metrics.jsonl" "$OUT/phantom_${name}_metrics.jsonl"   # the rarity loss, for the docs
done
