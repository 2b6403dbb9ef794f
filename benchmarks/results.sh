#!/usr/bin/env bash
# docs/results.md: every registered method pre-trained with ONE backbone and budget on the train
# split of each real data set (covid_radiography = the main set, covid_chestxray, PneumoniaMNIST;
# each pre-trained on itself: covid_radiography's COVID class holds copies of covid_chestxray
# images, so no encoder is tested on a set it was not pre-trained on), evaluated with every task
# that applies, beside both floors; the efficiency bench; saliency overlays (`cxrcl explain`); then
# `cxrcl report` -> docs/results.md.
#
# Usage: bash benchmarks/results.sh [--quick | --dry]
#   (none)   the published budget (the case below; 2.7 h measured on 2 CPU cores: bench_full_budget.json)
#   --quick  a smaller budget (~25 min on 2 CPU cores, estimated): fewer steps, linear probe (+ zero-shot and retrieval for image-text runs)
#   --dry    plumbing check in a few minutes (2 steps, 1 seed); writes under /tmp, not docs/
# Env: METHODS="spcl simclr ..." (default: every method of cxrcl.methods.registry), WORK, OUT, DOC.
# Methods a data set cannot train (e.g. image-text methods on a set without reports) are skipped
# and listed in the document with the one-line reason cxrcl gave.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
PY=${PY:-$PWD/.venv/bin/python}
SHARED=../shared/data
BACKBONE=vit_tiny_patch16_224   # 16 tokens at 64 px: the fastest ViT here (S-PCL's default backbone)
SIZE=64
BATCH=64
case "$MODE" in
  full)    STEPS_MAIN=300; STEPS_SMALL=150; SEEDS=3; FRACTIONS=0.01,0.1,1.0; BENCH_STEPS=10
           TASKS="linear knn finetune zeroshot retrieval segment"
           WORK=${WORK:-.bench-data/results}; OUT=${OUT:-benchmarks/results/bench_full}; DOC=${DOC:-docs/results.md} ;;
  --quick) STEPS_MAIN=40; STEPS_SMALL=20; SEEDS=3; FRACTIONS=0.01,0.1,1.0; BENCH_STEPS=3
           TASKS="linear zeroshot retrieval"
           WORK=${WORK:-.bench-data/results_quick}; OUT=${OUT:-benchmarks/results/bench}; DOC=${DOC:-docs/results.md} ;;
  --dry)   STEPS_MAIN=2; STEPS_SMALL=2; SEEDS=1; FRACTIONS=0.1,1.0; BENCH_STEPS=1
           TASKS="linear zeroshot retrieval"
           WORK=${WORK:-/tmp/cxrcl-results-dry}; OUT=${OUT:-/tmp/cxrcl-results-dry/out}; DOC=${DOC:-/tmp/cxrcl-results-dry/results.md} ;;
  *) echo "usage: bash benchmarks/results.sh [--quick | --dry]"; exit 2 ;;
esac
RUNS_OUT=${OUT}_runs
# each mode writes its own OUT (a finished eval JSON is reused on resume, so modes must not share one)
# (OUT/mode.txt is written before the first result, so a killed first invocation is guarded too)
for f in "$OUT/mode.txt" "${OUT}_budget.json"; do
  if [ -f "$f" ] && ! grep -q -e "\"mode\": \"$MODE\"" -e "^$MODE\$" "$f"; then
    echo "$OUT holds the results of another mode ($f); set OUT=DIR for this one"; exit 2
  fi
done
[ -d "$SHARED" ] || { echo "needs ../shared/data beside the repository"; exit 1; }
METHODS=${METHODS:-$($PY -c "from cxrcl.methods.registry import METHODS; print(' '.join(METHODS))")}
IT_METHODS=$($PY -c "from cxrcl.methods.registry import METHODS; from cxrcl.methods.image_text import ImageTextMethod
print(' '.join(k for k, v in METHODS.items() if isinstance(v, type) and issubclass(v, ImageTextMethod)))")
EVAL_TASKS=$("$CXRCL" eval --help | sed -n 's/.*{\(linear[^}]*\)}.*/\1/p' | head -1 | tr ',' ' ')
T0=$(date +%s)
mkdir -p "$WORK/runs" "$OUT" "$RUNS_OUT"
echo "$MODE" > "$OUT/mode.txt"
NOTES="$OUT/notes.md"
: > "$NOTES"
note() { echo "- $*" | tee -a "$NOTES"; }
has_task() { [[ " $EVAL_TASKS " == *" $1 "* && " $TASKS " == *" $1 "* ]]; }
is_it() { [[ " $IT_METHODS " == *" $1 "* ]]; }

# name | prepare command args | label(s) | pre-training steps
prep() {
  local name=$1; shift
  [ -f "$WORK/$name/dataset.json" ] || "$CXRCL" data prepare "$@" "$WORK/$name" --size $SIZE >/dev/null
}
prep covrad npz "$SHARED/covid_radiography"
prep covidcxr npz "$SHARED/covid_chestxray"
prep pmnist medmnist "$SHARED/pneumoniamnist/pneumoniamnist.npz"
DATASETS=("covrad covid19 $STEPS_MAIN" "covidcxr covid19 $STEPS_SMALL" "pmnist pneumonia $STEPS_SMALL")

evaluate() {  # task run data label out [extra args]
  local task=$1 run=$2 data=$3 label=$4 out=$5; shift 5
  [ -f "$out" ] && return 0
  local err
  local lab=(); [ -n "$label" ] && lab=(--label "$label")
  if ! err=$("$CXRCL" eval "$task" --run "$run" --data "$data" "${lab[@]}" --out "$out" "$@" 2>&1 >/dev/null); then
    note "eval $task of \`$run\` on \`$data\` skipped: $(echo "$err" | tail -1)"
  fi
}

TRAINED=(); TRAINED_IT=()
for dsspec in "${DATASETS[@]}"; do
  read -r ds label steps <<<"$dsspec"
  data="$WORK/$ds"
  for m in $METHODS; do
    run="$WORK/runs/${ds}_$m"
    spec=$m
    if [ "$m" = comcl ] && [ ! -f "$data/masks.npy" ]; then   # no lesion/lung masks: image-level pairs only
      spec="comcl:regions=none"; note "comcl on $ds: regions=none (the set has no masks; only its image-level multi-quality pairs train)"
    fi
    if is_it "$m"; then
      if [ "$ds" != covidcxr ]; then note "$m (image-text) not pre-trained on $ds: it has no report text"; continue; fi
      # covid_chestxray's report column holds its clinical notes
    fi
    if [ ! -f "$run/summary.json" ] || ! grep -q '"complete": true' "$run/summary.json"; then
      resume=""; compgen -G "$run/checkpoints/step-*" >/dev/null && resume="--resume"
      if ! err=$("$CXRCL" pretrain "$spec" --data "$data" --out "$run" --backbone "$BACKBONE" --steps "$steps" \
                 --batch-size $BATCH --no-progress $resume 2>&1 >/dev/null); then
        note "pretrain $m on $ds skipped: $(echo "$err" | tail -1)"
        continue
      fi
    fi
    [ "$ds" = covrad ] && TRAINED+=("$spec")
    [ "$ds" = covidcxr ] && is_it "$m" && TRAINED_IT+=("$spec")
    mkdir -p "$RUNS_OUT/${ds}_$m"   # the run's record (not its checkpoints), committed with the results
    cp "$run/summary.json" "$run/metrics.jsonl" "$run/config.yaml" "$RUNS_OUT/${ds}_$m/" 2>/dev/null
    for task in linear knn finetune; do
      has_task $task || continue
      [ $task = finetune ] && [ "$ds" = covrad ] && continue   # 9.5k images x epochs: too long on CPU
      evaluate $task "$run" "$data" "$label" "$OUT/${ds}_${m}_$task.json" --fractions $FRACTIONS --seeds $SEEDS
    done
    if [ "$ds" = covidcxr ]; then   # the only real image-text pairs here (clinical notes)
      for task in zeroshot retrieval; do
        has_task $task || continue
        is_it "$m" || continue
        evaluate $task "$run" "$data" "$([ $task = zeroshot ] && echo "$label")" "$OUT/${ds}_${m}_$task.json"
      done
    fi
    if has_task segment && [ "$ds" = covidcxr ]; then
      evaluate segment "$run" "$data" "$label" "$OUT/${ds}_${m}_segment.json" --fractions $FRACTIONS --seeds $SEEDS
    fi
  done
  for floor in "random:$BACKBONE" pixels; do
    tag=${floor%%:*}
    for task in linear knn finetune; do
      has_task $task || continue
      # fine-tuning's floor is the untrained encoder trained end to end (pixels have no weights)
      [ $task = finetune ] && { [ "$tag" = pixels ] || [ "$ds" = covrad ]; } && continue
      evaluate $task "$floor" "$data" "$label" "$OUT/${ds}_${tag}_$task.json" --fractions $FRACTIONS --seeds $SEEDS
    done
  done
done

if [ ${#TRAINED[@]} -gt 0 ]; then
  methods=$(IFS=,; echo "${TRAINED[*]}")
  [ -f "$OUT/bench.json" ] || "$CXRCL" bench --methods "$methods" --data "$WORK/covrad" --backbone "$BACKBONE" \
      --image-size $SIZE --batch-size $BATCH --steps $BENCH_STEPS --out "$OUT/bench.json" \
    || note "cxrcl bench failed (see its message above)"
fi
if [ ${#TRAINED_IT[@]} -gt 0 ]; then   # image-text methods need the reports: benched on covid_chestxray
  methods=$(IFS=,; echo "simclr,${TRAINED_IT[*]}")
  [ -f "$OUT/bench_image_text.json" ] || "$CXRCL" bench --methods "$methods" --data "$WORK/covidcxr" \
      --backbone "$BACKBONE" --image-size $SIZE --batch-size $BATCH --steps $BENCH_STEPS \
      --out "$OUT/bench_image_text.json" || note "cxrcl bench of the image-text methods failed"
fi
# saliency overlays for the report: SparseContrast's kept tokens and S-PCL's attention rollout on
# covid_radiography's test split (no masks there, so no lesion-area figure; see
# docs/methods/sparsecontrast.md for the phantom's)
for m in sparsecontrast spcl; do
  run="$WORK/runs/covrad_$m"; ex="$OUT/explain_covrad_$m"
  [ -f "$run/summary.json" ] && [ ! -f "$ex/explain.json" ] || continue
  "$CXRCL" explain --run "$run" --data "$WORK/covrad" --out "$ex" --n 16 --split test >/dev/null \
    || note "cxrcl explain of covrad_$m failed (see its message above)"
done
T1=$(date +%s)
# a resumed invocation reuses the runs and results of earlier ones: add their wall time
read -r PREV_S PREV_N < <($PY -c "import json,sys
try: d = json.load(open(sys.argv[1])); ok = d.get('mode') == sys.argv[2]
except (OSError, ValueError): ok = False
print(*((d.get('wall_s_total', d['wall_s']), d.get('invocations', 1)) if ok else (0, 0)))" "${OUT}_budget.json" "$MODE")
TOTAL_S=$((PREV_S + T1 - T0)); INVOCATIONS=$((PREV_N + 1))
printf '{"mode": "%s", "wall_s": %d, "wall_s_total": %d, "invocations": %d, "methods": "%s", "steps": {"covrad": %d, "covidcxr": %d, "pmnist": %d}, "seeds": %d, "fractions": "%s", "backbone": "%s", "image_size": %d, "batch_size": %d}\n' \
  "$MODE" $((T1 - T0)) $TOTAL_S $INVOCATIONS "$METHODS" "$STEPS_MAIN" "$STEPS_SMALL" "$STEPS_SMALL" "$SEEDS" "$FRACTIONS" "$BACKBONE" $SIZE $BATCH > "${OUT}_budget.json"
mkdir -p "$(dirname "$DOC")"
"$CXRCL" report "$OUT" "$RUNS_OUT"/* --out "$DOC"
{
  echo
  echo "## How this document was made"
  echo
  echo "\`bash benchmarks/results.sh $([ "$MODE" = full ] || echo "$MODE")\` (\`make bench\`): $TOTAL_S s of wall time on this machine over $INVOCATIONS invocation(s) (a later one reuses what earlier ones finished)"
  echo "($(nproc) CPU cores) for pre-training, evaluation and the bench; budget in \`${OUT}_budget.json\`."
  echo "Backbone $BACKBONE at $SIZE px, batch $BATCH; pre-training steps: covid_radiography $STEPS_MAIN,"
  echo "covid_chestxray $STEPS_SMALL, PneumoniaMNIST $STEPS_SMALL; every method pre-trained on the train split of the set it is tested on."
  if [ -s "$NOTES" ]; then echo; echo "Skipped:"; echo; cat "$NOTES"; fi
} >> "$DOC"
echo "wrote $DOC in $((T1 - T0)) s (+ report)"
