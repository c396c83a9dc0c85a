"""Start ``run(rank, world, directory)`` in two forked gloo processes: the launcher of the ``dist_*.py`` scripts, which
tests run in a subprocess (never a multi-process group inside pytest)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def launch(run, directory: str, world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    mp.start_processes(_in_group, args=(run, world, directory), nprocs=world, join=True, start_method="fork")


def _in_group(rank: int, run, world: int, directory: str) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run(rank, world, directory)
    finally:
        dist.destroy_process_group()
