"""Rollout integrity with real runs of the tiny model: the engine holds the trainer's weights after every sync, and
the gap between their log-probs is measured, bounded by the correction and stopped past a threshold."""

from __future__ import annotations

import csv

import pytest
import torch

from nft.pipeline import build
from nft.rollout import integrity
from nft.rollout.integrity import (
    EngineFingerprint,
    RolloutMismatchError,
    Shard,
    WeightSyncError,
    check_fingerprints,
    fingerprint,
    shard_fingerprint,
)

from .conftest import compose_train

# 3 epochs of 16 prompts x 8 answers in two optimizer steps each, no evaluation or files.
RUN = ["debug=small", "trainer.max_epochs=3", "data.batch.groups_per_step=8"]


def fit(tmp_path, *overrides: str):
    run = build(compose_train([*RUN, *overrides], run_dir=tmp_path))
    mismatch: list[dict] = []
    run.trainer.callbacks.append(RecordMismatch(run.report, mismatch))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return run, mismatch


class RecordMismatch:
    """Keeps each epoch's ``rollout/mismatch/*`` (a Lightning callback in duck type)."""

    def __init__(self, report, into):
        self.report, self.into = report, into

    def __getattr__(self, name):  # every other hook: nothing to do
        if name.startswith("on_") or name in ("setup", "teardown"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_epoch_end(self, trainer, pl_module):
        self.into.append(dict(self.report.mismatch))

    state_key = "RecordMismatch"

    def state_dict(self):
        return {}


def test_a_fingerprint_sees_one_changed_element_and_equal_bits_match(monkeypatch):
    weights = torch.randn(3000, dtype=torch.float32).bfloat16()
    whole = Shard.whole(weights.shape)
    exact = shard_fingerprint(weights, whole)
    assert exact == shard_fingerprint(weights.clone(), whole) and exact[1] == 3000
    nudged = weights.clone()
    nudged[1234] = torch.nextafter(nudged[1234].float(), torch.tensor(10.0)).bfloat16()  # one bf16 step
    nudged[1234] += torch.finfo(torch.bfloat16).eps * nudged[1234].abs()
    assert nudged[1234] != weights[1234] and shard_fingerprint(nudged, whole) != exact
    assert fingerprint(nudged) != fingerprint(weights)  # the float form, kept for LoRA checkpoints
    monkeypatch.setattr(integrity, "BITS_CHUNK", 1000)  # chunked: exactly the same value as in one piece
    assert shard_fingerprint(weights, whole) == exact
    whole_float = fingerprint(weights)
    monkeypatch.setattr(integrity, "CHUNK", 1000)
    assert fingerprint(weights) == pytest.approx(whole_float, rel=1e-12)
    with pytest.raises(WeightSyncError, match="engine's a \\[2\\] is not one of the trainer's weights"):
        check_fingerprints({"a": EngineFingerprint((2,), torch.bfloat16, 1, 2)}, {"b": ((2,), 1)})


def test_a_faithful_engine_matches_the_trainer_to_float_rounding(tmp_path):
    run, mismatch = fit(tmp_path)
    assert len(mismatch) == 3 and run.module.global_step >= 4  # up to two steps an epoch (some groups filtered)
    for epoch in mismatch:
        assert epoch["rollout/mismatch/tokens"] > 500
        assert epoch["rollout/mismatch/mean_abs_diff"] < 1e-5 and epoch["rollout/mismatch/max_abs_diff"] < 1e-3
        assert epoch["rollout/mismatch/kl"] < 1e-8 and epoch["rollout/mismatch/ess_frac"] > 1 - 1e-6
    logged = run.trainer.callback_metrics
    assert "rollout/mismatch/kl" in logged and "rollout/mismatch/token_mult_prob_error" in logged


@pytest.mark.full
def test_a_bfloat16_engine_shows_in_the_metrics_and_the_correction_bounds_its_weights(tmp_path):
    bf16 = ["rollout.backend._target_=tests.faults.Bfloat16Generator"]
    _, faithful = fit(tmp_path / "faithful")
    # bf16 sampling moves |log w| by about 0.002 on average and up to ~0.1: a cap of 1.01 acts on a few tokens.
    run, mismatch = fit(tmp_path / "bf16", *bf16, "algo.behaviour_correction=truncate", "algo.behaviour_cap=1.01")
    assert run.module.global_step >= 4  # the syncs were checked (in bf16) and passed
    for ours, reference in zip(mismatch, faithful, strict=True):
        assert ours["rollout/mismatch/kl"] > 100 * max(reference["rollout/mismatch/kl"], 1e-12)
        assert ours["rollout/mismatch/mean_abs_diff"] > 10 * reference["rollout/mismatch/mean_abs_diff"]
        assert ours["rollout/mismatch/ess_frac"] < 1
    with (tmp_path / "bf16" / "logs" / "metrics.csv").open() as f:
        steps = [row for row in csv.DictReader(f) if row.get("train/behaviour_capped_frac")]
    assert len(steps) == run.module.global_step
    assert 0 < max(float(s["train/behaviour_capped_frac"]) for s in steps) < 1
    assert all(float(s["train/behaviour_weight"]) <= 1.01 for s in steps)  # the mean weight, under the cap

    # Past integrity.stop_kl the run stops before the first update: the weights are the initial ones.
    stopped = build(compose_train([*RUN, *bf16, "integrity.stop_kl=1e-7"], run_dir=tmp_path / "stop"))
    before = [p.detach().clone() for p in stopped.module.model.parameters()]
    with pytest.raises(RolloutMismatchError, match=r"epoch 0: .* \(over integrity.stop_kl=1e-07"):
        stopped.trainer.fit(stopped.module, datamodule=stopped.datamodule)
    assert all(torch.equal(a, b) for a, b in zip(before, stopped.module.model.parameters(), strict=True))


def test_a_skipped_sync_stops_the_run_at_the_first_epoch_it_happens(tmp_path):
    skipping = ["rollout.backend._target_=tests.faults.SkippingGenerator"]
    run = build(compose_train([*RUN, *skipping], run_dir=tmp_path))
    with pytest.raises(WeightSyncError, match=r"before the rollout of epoch 1: the rollout engine's model\.\S+ "):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert 1 <= run.module.global_step <= 2  # epoch 0 trained; epoch 1 generated nothing
