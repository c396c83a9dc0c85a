#!/usr/bin/env bash
# The README's demo figures: `make demo` (the default run) for seeds 0, 1 and 2, then their summary. Sequential, with
# a cache of its own, so each seed warms up as on a fresh clone.
#   bash experiments/demo/run.sh [RUNS_DIR]     # default runs/demo; writes experiments/demo/results.md
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/demo}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$RUNS"
export NFT_CACHE="$(cd "$RUNS" && pwd)/cache"
for seed in 0 1 2; do
  start=$(date +%s)
  "$PYTHON" src/train.py seed=$seed hydra.run.dir="$RUNS/seed-$seed"
  echo $(( $(date +%s) - start )) > "$RUNS/seed-$seed/wall_seconds.txt"
done
"$PYTHON" experiments/demo/summarize.py "$RUNS" | tee experiments/demo/results.md
