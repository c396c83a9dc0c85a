"""BenchmarkEval: evaluate the policy on the benchmarks before training, every ``eval_every`` epochs, and at the end.

An evaluation samples each benchmark's problems with the run's generator (``connect``; each rank its share, as in
training: ``nft.data.answers``), verifies the answers, computes the metrics of ``nft.eval.metrics`` (summed across
ranks) and logs ``val/<benchmark>/<metric>`` and ``val/average`` (the mean of the benchmarks' avg@n) through Lightning:
``pl_module.log_dict`` after an epoch (so they reach every logger and ``trainer.callback_metrics``, where a
``ModelCheckpoint(monitor="val/average")`` finds them); the evaluation before training (and one after ``fit`` stopped
early), where Lightning refuses ``log``, goes to the loggers and ``callback_metrics`` as ``log_dict`` would send it.
The last epoch is evaluated at its end, like the others; a benchmark marked ``final_only`` (a test set read once) only
then.
Rank zero writes, in the output directory:

- ``eval/<benchmark>.jsonl``: every answer's record with its ``epoch`` (``nft.eval.records``); an evaluation of an
  epoch that the file already holds (a resumed run repeating it) replaces those records and any later ones;
- ``eval/<benchmark>.png``: the benchmark's avg@n, maj@n and pass@n against epochs;
- ``accuracy.png``: each benchmark's avg@n and the average; ``results.jsonl``: one row of metrics per evaluation.

When training ends it logs a start/best/final table. The history behind the files and that table is saved in
checkpoints, so a resumed run keeps its start row.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from nft.distributed import all_gather_objects
from nft.eval.evaluator import Benchmark, Evaluator
from nft.eval.metrics import BenchmarkMetrics
from nft.eval.plots import plot_accuracy
from nft.eval.records import RecordFile
from nft.rollout.integrity import sync_and_check

log = logging.getLogger(__name__)


class BenchmarkEval(L.Callback):
    """Args:
    evaluator: the benchmarks, prompt and verifier.
    eval_every: evaluate after every this many epochs (0: only at the start and the end).
    at_start: evaluate the policy before any update (the "start" row of the summary).
    output_dir: where the files above go (default: the trainer's ``default_root_dir``, the run directory).
    """

    def __init__(self, evaluator: Evaluator, eval_every: int = 1, at_start: bool = True, output_dir: str | None = None):
        self.evaluator = evaluator
        self.eval_every = eval_every
        self.at_start = at_start
        self.output_dir = output_dir
        self.history: list[dict] = []
        self.generator = None

    def connect(self, *, generator, report=None) -> None:
        """The run's rollout backend, shared with the data module (``nft.pipeline`` connects it)."""
        self.generator = generator

    # --- when ----------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and not any(row["epoch"] == trainer.current_epoch for row in self.history):
            _log_outside_an_epoch(trainer, self.evaluate(trainer, pl_module, trainer.current_epoch, final=False))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if (self.eval_every > 0 and done % self.eval_every == 0) or done == trainer.max_epochs:
            metrics = self.evaluate(trainer, pl_module, done, final=done == trainer.max_epochs)
            pl_module.log_dict(metrics, on_step=False, on_epoch=True)  # equal on every rank: no sync needed

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch  # `fit` has finished: current_epoch counts completed epochs
        if not self.history or self.history[-1]["epoch"] != done:  # stopped early (max_steps, a callback)
            _log_outside_an_epoch(trainer, self.evaluate(trainer, pl_module, done, final=True))
        self._print_summary()

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])

    # --- what ----------------------------------------------------------------------------------------------------
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, final: bool) -> dict[str, float]:
        """Every benchmark, those marked ``final_only`` only when ``final`` (after the last epoch)."""
        if self.generator is None:
            raise RuntimeError("BenchmarkEval.connect(generator=...) must be called before training")
        sync_and_check(self.generator, pl_module, f" before the evaluation of epoch {epoch}")
        metrics: dict[str, float] = {}
        for benchmark in self.evaluator.benchmarks:
            if benchmark.final_only and not final:
                continue
            metrics.update(self._evaluate_one(benchmark, trainer, pl_module, epoch))
        self.generator.release()
        metrics["val/average"] = self.evaluator.average(metrics)
        self.history = [row for row in self.history if row["epoch"] < epoch]  # a resumed run repeating an epoch
        self.history.append({"epoch": epoch, "step": trainer.global_step, **metrics})
        self._write_summary(trainer)
        return metrics

    def _evaluate_one(self, benchmark: Benchmark, trainer: L.Trainer, pl_module, epoch: int) -> dict[str, float]:
        start = time.perf_counter()
        prepared = self.evaluator.prepare(benchmark, pl_module.tokenizer)
        indices = list(range(len(prepared.problems)))
        records = self.evaluator.sample(benchmark, prepared, indices, self.generator, pl_module.tokenizer)
        metrics = BenchmarkMetrics(benchmark.samples).to(pl_module.device)
        metrics.update(records)
        values = metrics.compute()
        records = [r for rank_records in all_gather_objects(records) for r in rank_records]
        if trainer.is_global_zero:
            protocol = {**benchmark.protocol(), "prompt": repr(self.evaluator.prompt), "seed": self.evaluator.seed}
            path = self._directory(trainer) / "eval" / f"{benchmark.name}.jsonl"
            RecordFile(path, protocol).replace_from(epoch, ({"epoch": epoch, **r} for r in records))
            log.info(
                "%s: %s (%d problems x %d answers, %.1fs)",
                benchmark.name,
                ", ".join(f"{k} {v:.3f}" for k, v in values.items()),
                len(prepared.problems),
                benchmark.samples,
                time.perf_counter() - start,
            )
        return {f"val/{benchmark.name}/{k}": v for k, v in values.items()}

    def _directory(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir or trainer.default_root_dir)

    def _headline_names(self) -> list[str]:
        return [f"val/{b.name}/{b.metric}" for b in self.evaluator.benchmarks] + ["val/average"]

    @rank_zero_only
    def _write_summary(self, trainer: L.Trainer) -> None:
        directory = self._directory(trainer)
        (directory / "eval").mkdir(parents=True, exist_ok=True)
        # The whole history, replaced atomically: after a resume, rows of epochs evaluated after the checkpoint
        # (and lost with the crash) do not linger as duplicates.
        partial = directory / "results.jsonl.partial"
        partial.write_text("".join(json.dumps(row) + "\n" for row in self.history), encoding="utf-8")
        os.replace(partial, directory / "results.jsonl")
        plot_accuracy(self.history, directory / "accuracy.png", self._headline_names())
        for b in self.evaluator.benchmarks:
            names = list(
                dict.fromkeys(f"val/{b.name}/{m}" for m in (b.metric, f"maj@{b.samples}", f"pass@{b.samples}"))
            )
            plot_accuracy(self.history, directory / "eval" / f"{b.name}.png", names, title=b.title)

    @rank_zero_only
    def _print_summary(self) -> None:
        if not self.history:
            return
        start, final = self.history[0], self.history[-1]
        lines = [f"{'metric':<28} {'start':>7} {'best':>7} {'final':>7}"]
        for name in self._headline_names():
            best = max((row[name] for row in self.history if name in row), default=math.nan)
            lines.append(f"{name:<28} {start.get(name, math.nan):>7.3f} {best:>7.3f} {final[name]:>7.3f}")
        log.info("held-out accuracy (epoch %d -> %d):\n%s", start["epoch"], final["epoch"], "\n".join(lines))


def _log_outside_an_epoch(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Where Lightning refuses ``pl_module.log`` (before the first epoch, after ``fit``): what ``log_dict`` would do."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
