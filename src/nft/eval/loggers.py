"""Logger adjustments for ``conf/logger/``."""

from __future__ import annotations

from lightning.pytorch import loggers
from lightning.pytorch.utilities import rank_zero_only


class WandbLogger(loggers.WandbLogger):
    """Lightning's W&B logger, whose ``finalize`` also ends the W&B run.

    Lightning reuses a W&B run already in progress, so without this the next run in the same process (each run of a
    Hydra ``-m`` sweep, or of a test session) would log into the first one.
    """

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if status == "success" else 1)
