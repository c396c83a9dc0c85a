"""Checkpoints that survive a crash: atomic writes, finding the newest complete one, and the global RNG states.

Lightning's own ``TorchCheckpointIO`` stages a checkpoint in the system temp directory and moves it into place without
an ``fsync``; when the temp directory is on another filesystem the move is a copy that a kill can cut short, leaving a
truncated ``last.ckpt`` and no valid checkpoint at all. ``AtomicCheckpointIO`` writes a sibling ``<name>.partial``
file, flushes it to disk and renames it over the old checkpoint (``os.replace`` is atomic within a directory), so at
every instant the checkpoint on disk is either the previous one or the new one.

Under ``trainer=fsdp`` a checkpoint is a folder of shards (``torch.distributed.checkpoint``, with Lightning's
``meta.pt`` beside them). ``AtomicModelParallelStrategy`` writes it as ``<name>.partial/`` and rank 0 renames it into
place once every rank has written its shard, so a kill during the save leaves the previous checkpoint, complete.

``resume=auto`` (``resume_path``) picks, among the ``*.ckpt`` files and folders under the run directory, the one with
the most optimizer steps that loads (a folder: its ``.metadata`` and ``meta.pt`` are there and ``meta.pt`` loads);
interrupted ``*.partial`` files and folders are removed. As the reference code's
``trainer.resume_mode: auto`` (NVlabs/NFT, config/nft_trainer.yaml), it starts from scratch when there is none; where
the reference code looks in a fixed ``checkpoints/<project>/<experiment>`` folder, our runs live in dated folders,
so a resumed run is pointed at its old folder with ``hydra.run.dir=...``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import ModelParallelStrategy

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
SHARDED_METADATA = "meta.pt"  # what Lightning's ModelParallelStrategy writes beside the shards (_METADATA_FILENAME)


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
        remove(partial)  # every process of a multi-process run looks
    candidates = []
    for path in sorted(run_dir.rglob("*.ckpt")):
        try:
            step, epoch = progress_of(path)
            candidates.append((step, epoch, path.stat().st_mtime, path))
        except Exception as error:  # noqa: BLE001 - any unreadable file is just not a candidate
            log.warning("skipping %s: not a complete checkpoint (%s)", path, str(error).splitlines()[0][:200])
    if not candidates:
        return None
    return str(max(candidates)[-1])


def progress_of(path: Path) -> tuple[int, int]:
    """(global step, epoch) of a complete checkpoint file or sharded folder; raises for anything else."""
    if path.is_dir():
        if not (path / ".metadata").is_file():
            raise FileNotFoundError(f"no .metadata in {path}: its sharded save did not finish")
        path = path / SHARDED_METADATA
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)  # mmap: tensors stay on disk
    return checkpoint["global_step"], checkpoint["epoch"]


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` whose sharded checkpoints are written to ``<name>.partial/`` and renamed
    into place by rank 0 once every rank has written its shard (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(filepath))
        staging = path.with_name(path.name + PARTIAL_SUFFIX)
        if self.global_rank == 0:
            remove(staging)  # left by an earlier interrupted save
        self.barrier("nft_checkpoint_staging")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("nft_checkpoint_written")  # every shard and meta.pt are on disk
        if self.global_rank == 0:
            _replace(staging, path)
        self.barrier("nft_checkpoint_renamed")


def _replace(staging: Path, path: Path) -> None:
    """Move the complete ``staging`` folder to ``path`` (replacing what is there), durably."""
    replaced = path.with_name(path.name + ".replaced")
    if path.exists() or path.is_symlink():
        remove(replaced)
        os.replace(path, replaced)
    os.replace(staging, path)
    remove(replaced)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
