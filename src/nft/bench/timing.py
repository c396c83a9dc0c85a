"""``IterationTimer``: per-iteration wall time and its phases, as ``make bench`` reports them
(docs/bench_workload.md section 7).

An iteration runs from the end of the previous optimizer step (the first: from the start of training) to the end of
its own, so it includes prompt drawing, generation, decoding, verification, batching, the update and the logging.
"""

from __future__ import annotations

import time

import lightning as L

from nft.report import EpochReport
from nft.threads import ForeignCpu


class IterationTimer(L.Callback):
    """Records one dict per optimizer step: ``seconds`` and the phases ``generate``, ``verify``, ``old_logp``
    (from the data module's epoch timings, on the epoch's first step), ``update`` (the training step), the epoch's
    mean response length, and ``foreign_cpu``, the CPU seconds other processes took meanwhile."""

    def __init__(self) -> None:
        self.iterations: list[dict[str, float]] = []
        self.report = EpochReport()

    def connect(self, *, report: EpochReport, generator=None) -> None:
        self.report = report

    def on_fit_start(self, trainer, pl_module) -> None:  # before the first epoch's rollout
        self._cpu = ForeignCpu()
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        stats = self.report.rollout.stats if self.report.rollout is not None else {}
        # The rollout happens once an epoch, before its first step: later steps of the epoch did none of it.
        rollout = stats if batch_idx == 0 else {}
        self.iterations.append(
            {
                "seconds": now - self._mark,
                "generate": rollout.get("time/generate", 0.0),
                "verify": rollout.get("time/verify", 0.0),
                "old_logp": rollout.get("time/old_logp", 0.0),
                "update": now - self._step_start,
                "response_length": stats.get("rollout/response_length", 0.0),
                "foreign_cpu": self._cpu.lap(),
            }
        )
        self._mark = time.perf_counter()  # the /proc scan above is not the workload's time
