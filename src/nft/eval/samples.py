"""RolloutSamples: a few of each epoch's training prompts, answers and verdicts, to every logger.

A table where the logger has one (W&B: ``rollout/samples``), Markdown text where it shows text (TensorBoard's text
tab), and a Markdown file ``rollout_samples.md`` in the logger's directory otherwise (CSV). The rows come from the
datamodule's ``shown_samples`` (the first answer to each of the epoch's first few prompts).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

COLUMNS = ["epoch", "problem", "response", "answer", "correct"]


class RolloutSamples(L.Callback):
    """Args: rows: how many samples per epoch. every: log every this many epochs."""

    def __init__(self, rows: int = 4, every: int = 1) -> None:
        self.rows = rows
        self.every = every

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        samples = getattr(trainer.datamodule, "shown_samples", [])[: self.rows]
        if not samples or (epoch + 1) % self.every:
            return
        data = [[epoch, s["problem"], s["response"], s["answer"], bool(s["correct"])] for s in samples]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("rollout/samples", columns=COLUMNS, data=data, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("rollout/samples", markdown_table(data), global_step=trainer.global_step)
            elif (directory := getattr(logger, "log_dir", None) or logger.save_dir) is not None:
                path = Path(directory) / "rollout_samples.md"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as f:
                    f.write(f"## epoch {epoch}\n\n{markdown_table(data)}\n")


def markdown_table(data: list[list]) -> str:
    """Rows as a Markdown table; newlines and pipes in the text are escaped so that each sample stays on one row."""

    def cell(value) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
    return "\n".join(lines) + "\n"
