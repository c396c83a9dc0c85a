"""Faults that tests inject into real training runs (``src/train.py`` in a subprocess, given through Hydra overrides).

``KillAfterStep``: SIGKILL (or another signal) right after an optimizer step in the middle of an epoch (the weights
have moved on from the last checkpoint); ``SigtermDuringGeneration``: SIGTERM in the middle of a rollout;
``KillDuringSave``: SIGKILL halfway through writing the n-th checkpoint's bytes to disk; ``KillDuringShardedSave``:
SIGKILL on every rank once the n-th sharded checkpoint's shards are written, before it is renamed into place.

Rollout engines that are deliberately not faithful, as a separate engine can fail (the real transformers sampling loop
over a copy of the policy): ``Bfloat16Generator`` samples with a bfloat16 copy of the float32 trainer (its log-probs
differ, as vLLM's do); ``SkippingGenerator`` holds its own copy and skips every other sync (a stale engine);
``StaleMergeGenerator`` merges a LoRA policy's adapters into a plain copy at the first sync and keeps it.
"""

from __future__ import annotations

import copy
import io
import os
import signal
import time
from types import SimpleNamespace

import lightning as L
import torch

from nft.checkpoint import AtomicCheckpointIO, AtomicModelParallelStrategy
from nft.rollout.hf import HFGenerator


def send(signum: int) -> None:
    """Signal this process, first printing when (``SENT_AT``): a test times the signal to the exit."""
    print(f"{SENT_AT}{time.time():.3f}", flush=True)
    os.kill(os.getpid(), signum)


SENT_AT = "fault: signal sent at "


class KillAfterStep(L.Callback):
    def __init__(self, epoch: int, batch: int = 0, signal_name: str = "SIGKILL") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            send(self.signal)


class SigtermDuringGeneration(HFGenerator):
    """The transformers backend that sends its own process SIGTERM in the middle of its ``call``-th generation."""

    def __init__(self, call: int, **settings) -> None:
        super().__init__(**settings)
        self.call, self.calls = call, 0

    def generate(self, prompts, n, sampling, seed):
        self.calls += 1
        if self.calls == self.call:
            half = len(prompts) // 2
            first = super().generate(prompts[:half], n, sampling, seed[:half])
            send(signal.SIGTERM)  # the handler runs here, between two batches of generation
            return first + super().generate(prompts[half:], n, sampling, seed[half:])
        return super().generate(prompts, n, sampling, seed)


class KillDuringShardedSave(AtomicModelParallelStrategy):
    """Every rank is killed after writing its shards of the n-th sharded checkpoint, before rank 0 renames it."""

    def __init__(self, save: int, **settings) -> None:
        super().__init__(**settings)
        self.save, self.saves = save, 0

    def barrier(self, name: str | None = None) -> None:
        if name == "nft_checkpoint_written":
            self.saves += 1
            if self.saves >= self.save:
                os.kill(os.getpid(), signal.SIGKILL)
        super().barrier(name)


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


class CopyingGenerator(HFGenerator):
    """The transformers backend over its own copy of the policy (in ``weight_dtype``), refreshed at each sync."""

    weight_dtype = torch.float32

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.copy = None
        self.syncs = 0

    def sync(self, policy) -> None:
        self.syncs += 1
        if self.copy is None:
            self.copy = copy.deepcopy(policy.model).to(self.weight_dtype)
        elif self.skips():
            return
        with torch.no_grad():
            for mine, theirs in zip(self.copy.parameters(), policy.model.parameters(), strict=True):
                mine.copy_(theirs)
        super().sync(SimpleNamespace(model=self.copy, tokenizer=policy.tokenizer))

    def skips(self) -> bool:
        return False


class Bfloat16Generator(CopyingGenerator):
    weight_dtype = torch.bfloat16


class SkippingGenerator(CopyingGenerator):
    def skips(self) -> bool:
        return self.syncs % 2 == 0  # syncs 2, 4, ... do nothing


class StaleMergeGenerator(HFGenerator):
    """A LoRA engine with the classic bug: the policy is merged into a plain copy at the first sync and never again."""

    def sync(self, policy) -> None:
        if self.model is None:
            merged = copy.deepcopy(policy.model).merge_and_unload()
            super().sync(SimpleNamespace(model=merged, tokenizer=policy.tokenizer))
