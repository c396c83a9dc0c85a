"""Checkpoints that survive a crash: atomic writes, finding the newest complete one, and the global RNG states.

Lightning's own ``TorchCheckpointIO`` stages a checkpoint in the system temp directory and moves it into place without
an ``fsync``; when the temp directory is on another filesystem the move is a copy that a kill can cut short, leaving a
truncated ``last.ckpt`` and no valid checkpoint at all. ``AtomicCheckpointIO`` writes a sibling ``<name>.partial``
file, flushes it to disk and renames it over the old checkpoint (``os.replace`` is atomic within a directory), so at
every instant the checkpoint on disk is either the previous one or the new one.

``resume=auto`` (``resume_path``) picks, among the ``*.ckpt`` files under the run directory, the one with the most
optimizer steps that loads; interrupted ``*.partial`` files are removed. As the reference code's
``trainer.resume_mode: auto`` (NVlabs/NFT, config/nft_trainer.yaml), it starts from scratch when there is none; where
the reference code looks in a fixed ``checkpoints/<project>/<experiment>`` folder, our runs live in dated folders,
so a resumed run is pointed at its old folder with ``hydra.run.dir=...``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and durable (write a sibling file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the best that is available there
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        with partial.open("wb") as f:
            self._write(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:  # make the rename itself durable
            os.fsync(directory)
        finally:
            os.close(directory)

    def _write(self, checkpoint: dict[str, Any], f) -> None:
        torch.save(checkpoint, f)


def resume_path(run_dir: str | Path) -> str | None:
    """The newest complete checkpoint under ``run_dir`` (most optimizer steps, then latest epoch), or None.

    A checkpoint that does not load (truncated by a crash outside ``AtomicCheckpointIO``, a full disk) is skipped with a
    warning; ``*.partial`` files left by an interrupted save are removed.
    """
    run_dir = Path(run_dir)
    for partial in sorted(run_dir.rglob(f"*.ckpt{PARTIAL_SUFFIX}")):
        log.warning("removing %s: a checkpoint save was interrupted there", partial)
        partial.unlink(missing_ok=True)  # every process of a multi-process run looks
    candidates = []
    for path in sorted(run_dir.rglob("*.ckpt")):
        try:  # mmap: only the pickle is read, tensors stay on disk
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            candidates.append((checkpoint["global_step"], checkpoint["epoch"], path.stat().st_mtime, path))
        except Exception as error:  # noqa: BLE001 - any unreadable file is just not a candidate
            log.warning("skipping %s: not a complete checkpoint (%s)", path, str(error).splitlines()[0][:200])
    if not candidates:
        return None
    return str(max(candidates)[-1])


def rng_states() -> dict[str, Any]:
    """The global random states (Python, NumPy, torch CPU and CUDA), in types that ``weights_only`` loading accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
