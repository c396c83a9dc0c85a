"""RolloutSamples: a few of each epoch's training prompts, answers and verdicts, to every logger.

A table where the logger has one (W&B: ``rollout/samples``), Markdown text where it shows text (TensorBoard's text
tab), and a Markdown file ``rollout_samples.md`` in the logger's directory otherwise (CSV). The rows come from the
epoch's ``RolloutReport`` (the first answer to each of the epoch's first few prompts). The file holds one section per
epoch: a resumed run that repeats an epoch replaces that epoch's section and drops any later one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from nft.report import EpochReport

COLUMNS = ["epoch", "problem", "response", "answer", "correct"]
SECTION = re.compile(r"^## epoch (\d+)$", re.MULTILINE)


class RolloutSamples(L.Callback):
    """Args: rows: how many samples per epoch. every: log every this many epochs."""

    def __init__(self, rows: int = 4, every: int = 1) -> None:
        self.rows = rows
        self.every = every
        self.report = EpochReport()

    def connect(self, *, report: EpochReport, generator=None) -> None:
        """The run's report, which the data module fills (``nft.pipeline`` connects it)."""
        self.report = report

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        rollout = self.report.rollout
        samples = rollout.samples[: self.rows] if rollout is not None else []
        if not samples or (epoch + 1) % self.every:
            return
        data = [[epoch, s.problem, s.response, s.answer, s.correct] for s in samples]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("rollout/samples", columns=COLUMNS, data=data, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("rollout/samples", markdown_table(data), global_step=trainer.global_step)
            elif (directory := getattr(logger, "log_dir", None) or logger.save_dir) is not None:
                write_section(Path(directory) / "rollout_samples.md", epoch, markdown_table(data))


def write_section(path: Path, epoch: int, table: str) -> None:
    """Replace the file's sections of ``epoch`` and later by this one (atomically: a kill leaves the old file)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    kept = next((text[: m.start()] for m in SECTION.finditer(text) if int(m.group(1)) >= epoch), text)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{kept}## epoch {epoch}\n\n{table}\n", encoding="utf-8")
    os.replace(partial, path)


def markdown_table(data: list[list]) -> str:
    """Rows as a Markdown table; newlines and pipes in the text are escaped so that each sample stays on one row."""

    def cell(value) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
    return "\n".join(lines) + "\n"
