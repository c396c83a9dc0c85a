"""Numerical faults in a real run: non-finite steps are skipped and counted, too many in a row stop training, and a
checkpoint with non-finite weights is never written."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from nft.pipeline import build

from .conftest import compose_train

# 16 prompts x 8 answers, one optimizer step per epoch, a checkpoint every epoch, no evaluation.
QUICK = [
    "debug=resume",
    "data.batch.prompts_per_epoch=16",
    "data.batch.groups_per_step=16",
    "callbacks.benchmark_eval=null",
]


class NaNGradientsFrom(L.Callback):
    """From ``epoch`` on, the embedding's gradient is NaN (through the real backward of the real model)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            weight = pl_module.model.get_input_embeddings().weight
            weight.register_hook(lambda grad: torch.full_like(grad, math.nan))


class InfiniteWeightAt(L.Callback):
    """At the end of ``epoch``, just before its checkpoint is written, one weight becomes infinite."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # callbacks run before ModelCheckpoint's hook
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.model.get_input_embeddings().weight[0, 0] = math.inf


def fit_until_it_fails(tmp_path, callback, overrides=()):
    run = build(compose_train(["trainer.max_epochs=5", *QUICK, *overrides], run_dir=tmp_path))
    run.trainer.callbacks.append(callback)
    with pytest.raises(FloatingPointError) as error:
        run.trainer.fit(run.module, datamodule=run.datamodule)
    return run, str(error.value)


def test_non_finite_steps_are_skipped_counted_and_stop_training_after_a_limit(tmp_path):
    run, message = fit_until_it_fails(tmp_path, NaNGradientsFrom(epoch=1), ["optim.max_skipped_in_a_row=2"])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "2 optimizer steps in a row had a non-finite loss or gradient" in message and str(last) in message
    assert run.module.skipped_steps == 2 and run.trainer.current_epoch == 2  # one step per epoch on the toy task
    checkpoint = torch.load(last, weights_only=True)  # epoch 1 saved none: its skipped step changed nothing
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 1 and checkpoint["nft"]["skipped_steps"] == 0
    for name, value in run.module.state_dict().items():  # skipped steps left the weights as the last good step did
        assert torch.equal(checkpoint["state_dict"][name], value), name
        assert torch.isfinite(value).all(), name
    with (tmp_path / "logs" / "metrics.csv").open() as f:
        skipped = [float(row["train/skipped_steps"]) for row in csv.DictReader(f) if row["train/skipped_steps"]]
    assert skipped == [0.0, 1.0]  # logged at the end of epochs 0 and 1; epoch 2 stopped before its end


def test_a_checkpoint_with_non_finite_weights_is_refused_and_the_previous_one_kept(tmp_path):
    _, message = fit_until_it_fails(tmp_path, InfiniteWeightAt(epoch=1))
    assert "refusing to write a checkpoint" in message and "not finite" in message
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not list((tmp_path / "checkpoints").glob("*.partial"))
