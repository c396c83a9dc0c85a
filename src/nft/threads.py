"""The CPU thread policy, chosen before torch starts: fair on a shared machine, as fast as before on an idle one.

torch's OpenMP threads spin-wait for work by default. On a machine with other busy processes (a laptop with a browser
open, a CI runner) a spinning thread holds a core that the thread it waits for needs, and an iteration of
``make bench`` took 6x its idle time with one competing one-core process where a fair share would cost at most 2x.
``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep instead (measured: 1.75x under the same contention, idle within
noise). It must be set before the OpenMP runtime loads, i.e. before ``import torch``: every entry point
(``src/train.py``, ``src/evaluate.py``, ``python -m nft.bench``, the test suite) calls ``apply_thread_policy`` first.
A value already in the environment wins; subprocesses (verifier workers, Lightning's other ranks, TRL's baseline)
inherit the environment. ``describe_thread_policy`` is the line each run logs once at start.
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
SOURCE = "NFT_THREAD_POLICY_FROM"  # records, for the log line, whether the environment or nft chose


def apply_thread_policy() -> None:
    """Set the defaults that the environment does not set already (call before ``import torch``)."""
    chosen = {key: value for key, value in DEFAULTS.items() if key not in os.environ}
    os.environ.update(chosen)
    os.environ.setdefault(SOURCE, "nft" if chosen else "environment")


def describe_thread_policy() -> str:
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    threads = os.environ.get("OMP_NUM_THREADS")
    origin = "OMP_NUM_THREADS" if threads else "torch's default: the physical cores"
    return (
        f"CPU threads: {torch.get_num_threads()} ({origin}), OMP_WAIT_POLICY={policy} "
        f"(set by {os.environ.get(SOURCE, 'the environment')}; export OMP_WAIT_POLICY to choose)"
    )
