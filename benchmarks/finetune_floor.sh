#!/usr/bin/env bash
# Fine-tuning from random init (the from-scratch floor of `cxrcl eval finetune`) against the
# linear-probe floors on covid_chestxray (64 px, label covid19), 1/10/100 % labels x 3 seeds,
# each result with its 95 % bootstrap CI, then paired bootstrap tests on the same test images.
# Usage: bash benchmarks/finetune_floor.sh [WORK_DIR]   (needs ../shared/data; ~10 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
PY=${PY:-$PWD/.venv/bin/python}
WORK=${1:-.bench-data/finetune}
OUT=${OUT:-benchmarks/results/finetune}
# smaller budgets for a smoke run: FRACTIONS=1.0 SEEDS=1 MAX_EPOCHS=1 OUT=/tmp/x bash ...
EVAL=(--fractions "${FRACTIONS:-0.01,0.1,1.0}" --seeds "${SEEDS:-3}")
SHARED=../shared/data
BACKBONE=vit_tiny_patch16_224:patch_size=8
mkdir -p "$WORK" "$OUT"
[ -d "$SHARED" ] || { echo "needs ../shared/data beside the repository"; exit 1; }
[ -f "$WORK/covid64/dataset.json" ] || "$CXRCL" data prepare npz "$SHARED/covid_chestxray" "$WORK/covid64" --size 64
D="$WORK/covid64"
start=$(date +%s)
"$CXRCL" eval finetune --run "random:$BACKBONE" --data "$D" --label covid19 --out "$OUT/covid64_random_finetune.json" \
  "${EVAL[@]}" --max-epochs "${MAX_EPOCHS:-20}"
"$CXRCL" eval linear --run "random:$BACKBONE" --data "$D" --label covid19 --out "$OUT/covid64_random_linear.json" "${EVAL[@]}"
"$CXRCL" eval linear --run pixels --data "$D" --label covid19 --out "$OUT/covid64_pixels_linear.json" "${EVAL[@]}"
"$PY" - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
from pathlib import Path
from cxrcl.evaluation.bootstrap import common_fractions, paired_bootstrap
out = Path(sys.argv[1])
ft = out / "covid64_random_finetune.json"
pairs = {}
for base in ("covid64_random_linear.json", "covid64_pixels_linear.json"):
    b = out / base
    pairs[f"random_finetune - {base[8:-5]}"] = {
        str(f): paired_bootstrap(ft, b, fraction=f) for f in common_fractions(ft, b)}
res = {"script": "benchmarks/finetune_floor.sh", "wall_seconds": int(sys.argv[2]), "paired": pairs}
(out / "covid64_paired.json").write_text(json.dumps(res, indent=2) + "\n")
for name, by_f in pairs.items():
    for f, r in by_f.items():
        print(f"{name} at {f}: {r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] p={r['p']:.3f}"
              + (" *" if r["significant"] else ""))
PY
