"""EpochSummary: each epoch's report (``nft.report``) to every logger, and one line on the console.

The pipeline adds it to every training run: the data module and the training module fill the report, this callback
writes it, so neither producer logs the other's numbers.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from nft.report import EpochReport
from nft.threads import ContentionWatch

log = logging.getLogger(__name__)


class EpochSummary(L.Callback):
    """Args: report: the run's report. warn_kl: the engine-trainer KL from which the epoch line shows the mismatch."""

    def __init__(self, report: EpochReport, warn_kl: float = 1e-3) -> None:
        self.report = report
        self.warn_kl = warn_kl
        self.contention = ContentionWatch()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = dict(self.report.rollout.stats) if self.report.rollout is not None else {}
        stats.update(self.report.update.metrics())
        stats.update(self.report.mismatch)
        stats["train/skipped_steps"] = float(pl_module.skipped_steps)
        pl_module.log_dict(stats, on_step=False, on_epoch=True, batch_size=1)
        self._print(trainer.current_epoch, stats)
        if pl_module.device.type == "cpu" and trainer.is_global_zero:
            self.contention.check()

    @rank_zero_only
    def _print(self, epoch: int, stats: dict[str, float]) -> None:
        kl = stats.get("rollout/mismatch/kl", 0.0)
        mismatch = f" | mismatch kl {kl:.2g} ess {stats['rollout/mismatch/ess_frac']:.3f}" if kl > self.warn_kl else ""
        log.info(
            "epoch %d | acc %.3f | filtered %.2f | len %.1f | loss %+.4f | grad %.3f | steps %d "
            "| gen %.1fs verify %.1fs update %.1fs%s",
            epoch,
            stats.get("rollout/accuracy", float("nan")),
            stats.get("rollout/filtered_frac", float("nan")),
            stats.get("rollout/response_length", float("nan")),
            stats["train/epoch_loss"],
            stats["train/epoch_grad_norm"],
            self.report.update.steps,
            stats.get("time/generate", 0.0),
            stats.get("time/verify", 0.0),
            stats["time/update"],
            mismatch,
        )
