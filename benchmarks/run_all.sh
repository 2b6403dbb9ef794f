#!/usr/bin/env bash
# `make bench`: every published table, in the order the README shows them, then docs/results.md
# (benchmarks/results.sh: every method x data set x task beside the floors, the efficiency bench,
# `cxrcl report`). The real-data parts need ../shared/data beside the repository.
# Usage: bash benchmarks/run_all.sh [--quick | --dry]
#   (none)   everything (several hours on 2 CPU cores)
#   --quick  docs/results.md only, at the smaller budget of benchmarks/results.sh --quick (~25 min)
#   --dry    benchmarks/results.sh --dry (plumbing check; writes under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODE=${1:-}
case "$MODE" in
  --quick|--dry) exec bash benchmarks/results.sh "$MODE" ;;
  "") ;;
  *) echo "usage: bash benchmarks/run_all.sh [--quick | --dry]"; exit 2 ;;
esac
bash benchmarks/bench_spcl_vs_simclr.sh                  # efficiency: S-PCL vs SimCLR (ViT-Tiny/16, 128 px)
$PY benchmarks/bench_loader.py                            # loader vs training throughput
$PY benchmarks/bench_prepare.py                           # preparation throughput and flat memory
$PY benchmarks/bench_phantom.py                           # phantom synthesis speed
$PY benchmarks/bench_load.py make && $PY benchmarks/bench_load.py epoch \
  && $PY benchmarks/bench_load.py passes                  # 100k images: flat memory, fds (~15 min)
if [ -d ../shared/data ]; then
  bash benchmarks/real_data_linear.sh                     # linear probe on real CXRs vs floors
  bash benchmarks/spcl_pixel_gap.sh                       # what closes the gap to the pixel floor
  $PY benchmarks/text_labeller.py                         # labeller vs Open-i MeSH, and medspaCy ConText's labels
  $PY benchmarks/text_encoders.py                         # BPE + MLM pre-training, three encoders side by side
  bash benchmarks/results.sh                              # docs/results.md: every method, task and data set
else
  echo "../shared/data not found: skipping the real-data tables and docs/results.md"
fi
$PY benchmarks/tables.py
