#!/usr/bin/env bash
# Image-report methods (CLIP, SISTA, MaCo): zero-shot classification and retrieval (issue 10).
#   phantom : templated reports with negations (64 px, 1,024 images); 3 pre-training seeds each;
#             zero-shot on the 5 findings + retrieval R@1/5/10 on the test split.
#   covid   : covid_chestxray's clinical notes (464 of 575 images have one), pre-trained end to
#             end on its train split; retrieval + zero-shot COVID-19 vs other on its test split AND
#             on covid_radiography's test split minus the rows marked as copies of
#             covid_chestxray images (column covid_chestxray_match).
#   pairing : covid_radiography images paired with label-matched real Open-i reports
#             (cxrcl data pair-reports; our experiment); zero-shot on the held-out test images with
#             prompts checked against the training text (protocol.prompts_seen_in_training).
# Recipe knobs (scoring posneg vs cosine, prompt file) are chosen on the val split: every val
# result is written next to the test one (*_val_*.json) and benchmarks/image_text_tables.py
# picks on val only.
# Usage (each part is one heavy job of a few minutes on 2 CPU cores):
# (PARTS="phantom0 covid pairing phantom1 phantom2" runs seed 0 first; the script resumes where a
#  timeout stopped it, so the same command can simply be repeated)
#   PARTS=phantom flock /tmp/cxrcl-heavy.lock bash benchmarks/image_text_eval.sh [WORK_DIR]
#   PARTS=covid   flock /tmp/cxrcl-heavy.lock bash benchmarks/image_text_eval.sh [WORK_DIR]
#   PARTS=pairing flock /tmp/cxrcl-heavy.lock bash benchmarks/image_text_eval.sh [WORK_DIR]
#   .venv/bin/python benchmarks/image_text_tables.py
set -euo pipefail
cd "$(dirname "$0")/.."
CXRCL=${CXRCL:-$PWD/.venv/bin/cxrcl}
WORK=${1:-.bench-data/image_text}
mkdir -p "$WORK/runs" "$WORK/configs"
WORK=$(cd "$WORK" && pwd)   # absolute: the runs' config.yaml names the text tower by path
OUT=${OUT:-benchmarks/results/image_text/eval}
SHARED=../shared/data
PARTS=${PARTS:-phantom covid pairing}
METHODS=${METHODS:-clip sista maco}
SEEDS=${SEEDS:-0 1 2}
BACKBONE=${BACKBONE:-vit_tiny_patch16_224:patch_size=8:depth=4}
BATCH=${BATCH:-32}
STEPS_PHANTOM=${STEPS_PHANTOM:-150}
STEPS_COVID=${STEPS_COVID:-100}
STEPS_PAIRING=${STEPS_PAIRING:-100}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
{ git rev-parse HEAD; git status --short cxrcl/ | head -20; } > "$OUT/provenance_$(echo $PARTS | tr ' ' '_').txt"

# Text tower (CPU time): the scratch BPE encoder of `cxrcl text pretrain` on the Open-i reports
# (1.1 M parameters, fine-tuned end to end) instead of the recipes' MiniLM (22 M parameters, whose
# forward pass alone costs ~3 s per batch of 32 reports here). SISTA's frozen report similarity:
# the labeller's finding vectors of the report text (similarity=labels), for the same reason
# (text only: the data set's label columns, similarity=columns, would put labels into pre-training).
BPE=$WORK/bpe_openi
[ -f "$BPE/text_pretrain.json" ] || "$CXRCL" text pretrain --reports "$SHARED/openi_reports" --out "$BPE" --seed 0 \
  --steps "${BPE_STEPS:-300}"
cp "$BPE/text_pretrain.json" "$OUT/bpe_openi_text_pretrain.json"
# each method's recipe (configs/methods/METHOD.yaml: lr, weight decay, temperature ...) with the
# text tower swapped; steps and batch size come from the command line below
for m in $METHODS; do
  .venv/bin/python - "$m" "$BPE" "$WORK/configs/$m.yaml" <<'PY'
import sys, yaml
m, bpe, out = sys.argv[1:]
cfg = yaml.safe_load(open(f"configs/methods/{m}.yaml"))
mc = cfg.get("method_config") or {}
mc.update(text_encoder=f"bpe:{bpe}", text_trainable_layers=-1, text_max_length=128)
if m == "sista":
    mc["similarity"] = "labels"
train = {k: v for k, v in (cfg.get("train") or {}).items() if k not in ("epochs", "steps", "batch_size")}
yaml.safe_dump({"method_config": mc, "train": train}, open(out, "w"), sort_keys=False)
PY
done

pretrain() {  # METHOD DATA RUN STEPS SEED
  if [ -f "$3/summary.json" ] && grep -q '"complete": true' "$3/summary.json"; then return; fi
  resume=""; compgen -G "$3/checkpoints/step-*" >/dev/null && resume="--resume"
  "$CXRCL" pretrain "$1" --config "$WORK/configs/$1.yaml" --data "$2" --out "$3" --backbone "$BACKBONE" \
    --steps "$4" --seed "$5" --batch-size "$BATCH" --no-progress $resume
  cp "$3/summary.json" "$OUT/$(basename "$3")_summary.json"
}
prepare_npz() {  # SOURCE DIR: `cxrcl data prepare npz` of $SHARED/SOURCE at 64 px (skipped when DIR has it)
  [ -f "$2/dataset.json" ] || "$CXRCL" data prepare npz "$SHARED/$1" "$2" --size 64
}
EVALS=$WORK/evals.txt
: > "$EVALS"
ev() {  # OUT_JSON TASK ARGS...: queued for flush (skipped when the JSON exists: the script resumes)
  local out=$1; shift
  [ -f "$out" ] || printf '%q ' eval "$@" --out "$out" >> "$EVALS"
  [ -f "$out" ] || echo >> "$EVALS"
}
flush() {  # the queued `cxrcl eval` lines, in one process (benchmarks/cli_batch.py)
  if [ -s "$EVALS" ]; then .venv/bin/python benchmarks/cli_batch.py "$EVALS"; fi
  : > "$EVALS"
}

for part in $PARTS; do
  case $part in
  phantom*)  # phantom = every seed of $SEEDS; phantom1 = seed 1 only
    DATA=$WORK/phantom64
    [ -f "$DATA/dataset.json" ] || "$CXRCL" data phantom "$DATA" --n 1024 --size 64 --seed 0
    seeds=${part#phantom}
    for seed in ${seeds:-$SEEDS}; do
      for m in $METHODS; do
        run=$WORK/runs/phantom_${m}_s$seed
        pretrain "$m" "$DATA" "$run" "$STEPS_PHANTOM" "$seed"
        for scoring in posneg cosine; do
          for split in val test; do
            ev "$OUT/phantom_${m}_s${seed}_${split}_zeroshot_${scoring}.json" zeroshot --run "$run" \
              --data "$DATA" --label all --scoring $scoring --split $split
          done
        done
        ev "$OUT/phantom_${m}_s${seed}_test_retrieval.json" retrieval --run "$run" --data "$DATA"
        flush
      done
    done ;;
  covid)
    DATA=$WORK/covid_chestxray64
    RAD=$WORK/covid_radiography64
    prepare_npz covid_chestxray "$DATA"
    prepare_npz covid_radiography "$RAD"
    for m in $METHODS; do
      run=$WORK/runs/covid_${m}_s0
      pretrain "$m" "$DATA" "$run" "$STEPS_COVID" 0
      ev "$OUT/covid_${m}_s0_test_retrieval.json" retrieval --run "$run" --data "$DATA"
      for scoring in posneg cosine; do
        for split in val test; do
          ev "$OUT/covid_${m}_s0_${split}_zeroshot_${scoring}.json" zeroshot --run "$run" --data "$DATA" \
            --label covid19 --scoring $scoring --split $split
          ev "$OUT/covidrad_${m}_s0_${split}_zeroshot_${scoring}.json" zeroshot --run "$run" --data "$RAD" \
            --label covid19 --scoring $scoring --split $split --exclude-nonempty covid_chestxray_match
        done
      done
      flush
    done ;;
  pairing)
    RAD=$WORK/covid_radiography64
    PAIRED=$WORK/covid_radiography64_openi
    prepare_npz covid_radiography "$RAD"
    [ -f "$PAIRED/dataset.json" ] || "$CXRCL" data pair-reports "$RAD" "$SHARED/openi_reports" "$PAIRED" \
      --positive covid19 --seed 0
    cp "$PAIRED/dataset.json" "$OUT/pairing_dataset.json"
    for m in $METHODS; do
      run=$WORK/runs/pairing_${m}_s0
      pretrain "$m" "$PAIRED" "$run" "$STEPS_PAIRING" 0
      for prompts in default openi_pairing; do
        for scoring in posneg cosine; do
          for split in val test; do
            ev "$OUT/pairing_${m}_s0_${split}_zeroshot_${scoring}_${prompts}.json" zeroshot --run "$run" \
              --data "$PAIRED" --label covid19 --scoring $scoring --prompts configs/prompts/$prompts.yaml \
              --split $split
          done
        done
      done
      ev "$OUT/pairing_${m}_s0_test_retrieval.json" retrieval --run "$run" --data "$PAIRED"
      flush
    done ;;
  bpe) ;;  # the text tower only (made above)
  *) echo "unknown part $part (bpe, phantom, covid, pairing)"; exit 2 ;;
  esac
done
