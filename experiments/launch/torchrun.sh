#!/usr/bin/env bash
# Several nodes with torchrun: run this script on every node (same command, its own NODE_RANK). torchrun starts one
# process per GPU and Lightning (TorchElasticEnvironment) joins them; nothing is relaunched.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 RUN_DIR=/shared/runs/nft-32b experiments/launch/torchrun.sh   # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 RUN_DIR=/shared/runs/nft-32b experiments/launch/torchrun.sh   # on node1
# RUN_DIR must be on a filesystem every node sees, and the same for all: every rank composes the config itself,
# so a time-stamped default directory could differ between them. Resume with ckpt_path=$RUN_DIR/checkpoints/last.ckpt.
# One run per launch: do not use -m here (every rank would run the whole sweep).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${NNODES:?set NNODES}" "${NODE_RANK:?set NODE_RANK}" "${MASTER_ADDR:?set MASTER_ADDR}" "${RUN_DIR:?set RUN_DIR}"
EXPERIMENT=${EXPERIMENT:-paper_32b}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
exec torchrun --nnodes="$NNODES" --nproc-per-node="$GPUS_PER_NODE" --node-rank="$NODE_RANK" \
    --master-addr="$MASTER_ADDR" --master-port="${MASTER_PORT:-29500}" \
    src/train.py experiment="$EXPERIMENT" trainer.num_nodes="$NNODES" trainer.devices="$GPUS_PER_NODE" \
    hydra.run.dir="$RUN_DIR" "$@"
