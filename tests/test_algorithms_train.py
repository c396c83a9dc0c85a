"""Every algorithm through real Lightning: the tiny model, real generation and verifier; bad steps never reach AdamW."""

from __future__ import annotations

import json

import pytest
import torch

from nft.pipeline import build, train

from .conftest import compose_train


def parameters_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def changed(before: list[torch.Tensor], model) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    "overrides",
    [["algo=rft"], ["algo=grpo", "algo.kl_coef=0.04"], ["algo=dr_grpo"], ["algo=dapo"]],
    ids=["rft", "grpo-kl", "dr_grpo", "dapo"],
)
def test_each_algorithm_trains_the_tiny_model(tmp_path, overrides):
    """(NFT's own run is tests/test_train.py.) Two small epochs: the policy moves, stays finite, no step is skipped."""
    run = build(compose_train([*overrides, "debug=small"], run_dir=tmp_path))
    policy_before = parameters_of(run.module.model)
    reference = run.module.reference_model
    reference_before = parameters_of(reference) if reference is not None else None
    run.trainer.fit(run.module, datamodule=run.datamodule)

    assert changed(policy_before, run.module.model)
    assert all(torch.isfinite(p).all() for p in run.module.model.parameters())
    assert run.module.skipped_steps == 0 and run.module.global_step == 2
    metrics = run.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "train/entropy" in metrics and "train/pos_loss" in metrics
    assert {"train/move_abs", "train/move_kl", "train/move_far_frac"} <= set(metrics)  # every algorithm
    assert (reference is not None) == run.module.algorithm.needs_reference
    if reference is not None:  # the KL anchor is the initial policy, frozen
        assert not changed(reference_before, reference) and "train/kl" in metrics
    stats = run.datamodule.epoch_stats
    assert stats["rollout/reward"] <= stats["rollout/accuracy"]  # rewards are 0/1 minus the overlong penalty, if any


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["nft", "grpo"])
def test_nft_and_grpo_raise_held_out_toy_accuracy(tmp_path, algo):
    """20 on-policy epochs at the toy defaults (64 prompts x 8 answers, lr 3e-4). Measured from 23.2% avg@4 on 256
    held-out problems: +13.8 points (NFT) and +15.2 (GRPO); a 32-prompt, lr 5e-4 variant was not reliable. Asks +7."""
    evaluation = ["callbacks.benchmark_eval.eval_every=0", "benchmarks.toy.limit=256", "benchmarks.toy.samples=4"]
    files = ["callbacks.checkpoint=null", "callbacks.export=null", "callbacks.rollout_samples=null"]
    train(compose_train([f"algo={algo}", "trainer.max_epochs=20", *evaluation, *files], run_dir=tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 20]
    assert rows[-1]["val/toy/avg@4"] > rows[0]["val/toy/avg@4"] + 0.07


def test_grpo_without_kl_builds_no_reference_model(tmp_path):
    run = build(compose_train(["algo=grpo", "debug=quiet"], run_dir=tmp_path))
    assert run.module.reference_model is None
    assert not any("reference" in name for name in run.module.state_dict())
