#!/usr/bin/env bash
# CoMCL and the momentum baselines (MoCo v3, DINO) against S-PCL and SimCLR: training images/s
# and GFLOPs per image, side by side in ONE `cxrcl bench` process (same backbone ViT-Tiny/16,
# 64 px, batch 32, the phantom). CoMCL is timed with regions=none (uniform patch placements):
# its compute does not depend on where the patches are; a mask lookup adds a memory read.
# Usage: bash benchmarks/comcl_bench.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-.venv/bin/cxrcl}
WORK=${1:-.bench-data/comcl}
OUT=benchmarks/results/comcl
mkdir -p "$WORK" "$OUT"
[ -f "$WORK/phantom64/dataset.json" ] || "$CXRCL" data phantom "$WORK/phantom64" --n 1024 --size 64
"$CXRCL" bench --methods "comcl:regions=none:queue_size=1024,mocov3,dino,spcl,simclr" \
  --data "$WORK/phantom64" --backbone vit_tiny_patch16_224 --image-size 64 --batch-size 32 \
  --steps 6 --warmup 2 --no-memory --out "$OUT/bench_comcl_momentum_vit_tiny16_64.json"
