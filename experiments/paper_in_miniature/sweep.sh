#!/usr/bin/env bash
# The paper in miniature (README.md here): a learning-rate grid on a tuning seed, then the comparison and the
# ablations on five evaluation seeds, each algorithm at the rate the grid chose for it. Sequential, one process at a
# time (a second busy process slows torch 5-20x on a small machine). Usage:
#   bash experiments/paper_in_miniature/sweep.sh [RUNS_DIR]        # default runs/paper_in_miniature
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/paper_in_miniature}
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=0,1,2,3,4
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
train() { "$PYTHON" src/train.py -m experiment=paper_in_miniature "$@"; }
start=$(date +%s)

# 1. One grid for every algorithm, on seed 100 (not an evaluation seed).
train algo=nft,rft,grpo,dapo optim.lr=1e-4,3e-4,1e-3 seed=100 hydra.sweep.dir="$RUNS/lr_grid"
eval "$("$PYTHON" experiments/paper_in_miniature/summarize.py "$RUNS" --chosen-lr)"  # sets LR_nft, LR_rft, ...

# 2. The comparison: each algorithm at its rate, five seeds, the same warm-up per seed.
for algo in nft rft grpo dapo; do
  lr_var="LR_$algo"
  at_start=$([ "$algo" = nft ] && echo true || echo false)  # the start is the same warm-up for every algorithm
  train algo=$algo optim.lr=${!lr_var} seed=$SEEDS callbacks.benchmark_eval.at_start=$at_start \
    hydra.sweep.dir="$RUNS/compare/$algo"
done

# 3. The paper's ablations of NFT (the comparison's NFT run is neg_weight=1, prompt_weight=dr_grpo).
train algo=nft optim.lr=$LR_nft seed=$SEEDS algo.neg_weight=0,0.5 hydra.sweep.dir="$RUNS/ablate/neg_weight"
train algo=nft optim.lr=$LR_nft seed=$SEEDS algo.prompt_weight=none,grpo hydra.sweep.dir="$RUNS/ablate/prompt_weight"

echo "sweep: $(( $(date +%s) - start )) s" | tee "$RUNS/wall_time.txt"
"$PYTHON" experiments/paper_in_miniature/summarize.py "$RUNS" --out experiments/paper_in_miniature
