"""Preemption: clusters stop a job with SIGTERM (SLURM, Kubernetes), then SIGKILL after a grace period.

On SIGTERM the run finishes the current policy iteration's update (a rollout cannot be resumed halfway: its answers
were sampled by the weights at its start), writes a complete checkpoint of it to the checkpoint folder
(``preempted.ckpt``, atomically, as every checkpoint here), and exits with status 143 (128 + SIGTERM); the same
command with ``resume=auto`` continues it to the weights an uninterrupted run ends with. A signal during generation
costs the rest of that generation and the iteration's update; on the toy run that is about a second. If the grace
period ends first, the previous checkpoint is still complete (saves are atomic). Verifier workers die with their
trainer even when it is SIGKILLed (``nft.verify.pool``).

Lightning notices SIGTERM itself and would stop after the current optimizer step, without a checkpoint; this callback
holds that back until the iteration ends.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)

EXIT_STATUS = 128 + 15


class Preempted(SystemExit):
    def __init__(self) -> None:
        super().__init__(EXIT_STATUS)


class Preemption(L.Callback):
    """Writes ``preempted.ckpt`` into the checkpoint callback's folder (``<run>/checkpoints`` without one)."""

    def __init__(self) -> None:
        self.pending = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._hold_back(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold_back(trainer)
        if not trainer.strategy.reduce_boolean_decision(self.pending, all=False):
            return
        checkpoints = trainer.checkpoint_callback
        folder = checkpoints.dirpath if checkpoints is not None else Path(trainer.default_root_dir) / "checkpoints"
        path = Path(folder) / "preempted.ckpt"
        log.warning("SIGTERM: policy iteration %d is complete; saving %s and exiting", trainer.current_epoch, path)
        trainer.save_checkpoint(path)
        raise Preempted()

    def _hold_back(self, trainer: L.Trainer) -> None:
        """Take over Lightning's SIGTERM flag (it would stop at once): the iteration finishes first."""
        if trainer.received_sigterm:
            self.pending = True
            trainer._signal_connector.received_sigterm = False
