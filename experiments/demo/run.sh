#!/usr/bin/env bash
# The README's demo figures: `make demo` (the default run) for seeds 0..4 on 2 CPU threads, then their summary and the
# range a healthy run lands in. Sequential, with a cache of its own, so each seed warms up as on a fresh clone.
#   bash experiments/demo/run.sh [RUNS_DIR]     # default runs/demo; writes experiments/demo/results.md
#   SEEDS="0 1 2" THREADS=1 bash experiments/demo/run.sh
# A run's figures depend on its seed and its thread count only (nft.threads): THREADS fixes the count that an idle
# 2-core machine would decide anyway, so the table holds on a busy one too.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/demo}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$RUNS"
export NFT_CACHE="$(cd "$RUNS" && pwd)/cache"
for seed in ${SEEDS:-0 1 2 3 4}; do
  start=$(date +%s)
  "$PYTHON" src/train.py seed=$seed threads=${THREADS:-2} hydra.run.dir="$RUNS/seed-$seed"
  echo $(( $(date +%s) - start )) > "$RUNS/seed-$seed/wall_seconds.txt"
done
"$PYTHON" experiments/demo/summarize.py "$RUNS" | tee experiments/demo/results.md
