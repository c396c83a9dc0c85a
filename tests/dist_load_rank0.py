"""Run by test_fsdp: two gloo ranks shard a saved Qwen2, either with rank 0 loading the weights and rank 1 building
the model on the meta device (``from_rank0``: ``nft.distributed.load_from_rank0``) or with every rank loading them
(``every_rank``, for comparison); each writes its peak host memory and whether the sharded model holds the saved
weights (and RoPE's buffers) exactly.

Usage: python tests/dist_load_rank0.py DIR MODEL_DIR from_rank0|every_rank  (<mode>-rank<r>.json is written to DIR)
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
from pathlib import Path

import torch
from dist_launch import launch
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh

from nft.distributed import full_state_dict, load_from_rank0, shard_model
from nft.policy import pretrained_policy


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def run(rank: int, world: int, directory: str) -> None:
    folder, mode = sys.argv[2], sys.argv[3]
    before = rss_mb()
    model = pretrained_policy(folder, "float32", 16, 16, on_meta_device=mode == "from_rank0" and rank > 0).model
    built = rss_mb()
    mesh = init_device_mesh("cpu", (world,))
    with load_from_rank0([model], rank) if mode == "from_rank0" else contextlib.nullcontext():
        shard_model(model, mesh, param_dtype="float32")
    peak, sharding = rss_mb() - before, rss_mb() - built
    state = full_state_dict(model)  # every rank takes part; rank 0 gets the whole
    result = {
        "rank": rank,
        "peak_mb": peak,
        "sharding_peak_mb": sharding,
        "meta_left": any(p.is_meta for p in model.parameters()),
    }
    inv_freq = model.model.rotary_emb.inv_freq
    reference = pretrained_policy(folder, "float32", 16, 16, on_meta_device=False).model.model.rotary_emb.inv_freq
    result["buffers_equal"] = bool(torch.equal(inv_freq, reference))
    if rank == 0:
        saved = load_file(str(Path(folder) / "model.safetensors"))
        result["weights_equal"] = all(torch.equal(state[k], saved[k]) for k in saved)
    (Path(directory) / f"{mode}-rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    launch(run, sys.argv[1])
