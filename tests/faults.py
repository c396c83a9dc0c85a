"""Faults that tests inject into real training runs (``src/train.py`` in a subprocess, given through Hydra overrides).

``KillAfterStep``: SIGKILL right after an optimizer step in the middle of an epoch (the weights have moved on from the
last checkpoint). ``KillDuringSave``: SIGKILL halfway through writing the n-th checkpoint's bytes to disk.
"""

from __future__ import annotations

import io
import os
import signal

import lightning as L
import torch

from nft.checkpoint import AtomicCheckpointIO


class KillAfterStep(L.Callback):
    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(AtomicCheckpointIO):
    def __init__(self, save: int) -> None:
        super().__init__()
        self.save, self.saves = save, 0

    def _write(self, checkpoint: dict, f) -> None:
        self.saves += 1
        if self.saves < self.save:
            return super()._write(checkpoint, f)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
