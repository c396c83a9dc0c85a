#!/usr/bin/env bash
# One node, every GPU: Lightning starts one process per GPU itself (trainer=fsdp, trainer.devices).
#   experiments/launch/one_node.sh                       # the paper's 7B run on 8 GPUs
#   EXPERIMENT=paper_32b experiments/launch/one_node.sh    # 32B on one node: 141-GB GPUs (see nft.plan)
# Extra arguments are Hydra overrides. Check memory first: python -m nft.plan experiment=$EXPERIMENT
# Sweeps (-m) work here: each job's ranks run that job only (nft.distributed.pin_hydra_job_for_relaunch).
set -euo pipefail
cd "$(dirname "$0")/../.."
EXPERIMENT=${EXPERIMENT:-paper_7b}
DEVICES=${DEVICES:-8}
exec python src/train.py experiment="$EXPERIMENT" trainer.num_nodes=1 trainer.devices="$DEVICES" "$@"
