#!/usr/bin/env bash
# The paper in miniature (README.md here, its plan written before the runs): a learning-rate grid on two tuning seeds,
# read on the validation split only, then the six arms at their chosen rates on ten paired seeds, each run's test
# set read once after its last epoch; then runs.csv and the report. Runs go JOBS at a time, one thread each (a run's
# numbers depend on its thread count, not on JOBS).
# A finished run (its folder holds `done`) is not run again, so an interrupted sweep resumes where it stopped.
#   bash experiments/paper_in_miniature/sweep.sh [RUNS_DIR]        # default runs/paper_in_miniature
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/paper_in_miniature}
HERE=experiments/paper_in_miniature
export PYTHON=${PYTHON:-.venv/bin/python} OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
JOBS=${JOBS:-2}
GRID="4e-5 6e-5 1e-4 1.6e-4"
TUNING_SEEDS="100 101"
SEEDS="0 1 2 3 4 5 6 7 8 9"
ARMS="nft rft rft_text grpo dr_grpo dapo"
declare -A ALGO=([nft]="algo=nft" [rft]="algo=nft algo.neg_weight=0" [rft_text]="algo=rft" [grpo]="algo=grpo"
  [dr_grpo]="algo=dr_grpo" [dapo]="algo=dapo")

# One run per line of stdin: "<folder> <overrides...>".
run_one() {
  local dir=$1; shift
  [ -f "$dir/done" ] && return 0
  mkdir -p "$dir"
  if "$PYTHON" src/train.py experiment=paper_in_miniature threads=1 "hydra.run.dir=$dir" "$@" > "$dir/stdout.log" 2>&1
  then touch "$dir/done"; else echo "FAILED: $dir (see $dir/stdout.log)" >&2; fi
}
export -f run_one
run_all() { xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _; }
start=$(date +%s)

# 1. Tuning: every arm at every rate on the tuning seeds, the test set left out. The first two jobs warm up the two
# seeds side by side; every later job finds its seed's warm-up cached.
for lr in $GRID; do for arm in $ARMS; do for seed in $TUNING_SEEDS; do
  first=$([ "$lr $arm" = "${GRID%% *} nft" ] && echo true || echo false)  # the start: one evaluation per seed
  echo "$RUNS/tune/$arm/lr$lr/seed$seed ${ALGO[$arm]} optim.lr=$lr seed=$seed ~benchmarks.toy_steps_test" \
    "callbacks.benchmark_eval.at_start=$first"
done; done; done | run_all
"$PYTHON" $HERE/summarize.py collect "$RUNS" --csv "$RUNS/runs.csv"
eval "$("$PYTHON" $HERE/summarize.py choose "$RUNS/runs.csv")"  # LR_<arm>, EDGE_<arm>: the validation split alone
# An arm whose best rate is at the edge of the grid: one step more beyond it, on the same seeds; then choose again.
for arm in $ARMS; do
  edge_var="EDGE_$arm"
  [ -n "${!edge_var:-}" ] || continue
  for seed in $TUNING_SEEDS; do
    echo "$RUNS/tune/$arm/lr${!edge_var}/seed$seed ${ALGO[$arm]} optim.lr=${!edge_var} seed=$seed" \
      "~benchmarks.toy_steps_test callbacks.benchmark_eval.at_start=false"
  done
done | run_all
"$PYTHON" $HERE/summarize.py collect "$RUNS" --csv "$RUNS/runs.csv"
eval "$("$PYTHON" $HERE/summarize.py choose "$RUNS/runs.csv" | grep '^LR_')"

# 2. The comparison: each arm at its rate on ten paired seeds (one warm-up per seed, shared by every arm).
for arm in $ARMS; do for seed in $SEEDS; do
  lr_var="LR_$arm"
  echo "$RUNS/final/$arm/seed$seed ${ALGO[$arm]} optim.lr=${!lr_var} seed=$seed" \
    "callbacks.benchmark_eval.at_start=$([ $arm = nft ] && echo true || echo false)"
done; done | run_all

echo "sweep: $(( $(date +%s) - start )) s with JOBS=$JOBS" | tee "$RUNS/wall_time.txt"
"$PYTHON" $HERE/summarize.py collect "$RUNS" --csv $HERE/runs.csv
"$PYTHON" $HERE/summarize.py report $HERE/runs.csv --out $HERE
