"""End to end: ``train(cfg)`` of the real tiny model, real generation, real verifier, real Lightning."""

from __future__ import annotations

import csv
import json

import torch

from nft.pipeline import build, train

from .conftest import compose_train


def test_train_two_epochs_end_to_end(tmp_path):
    cfg = compose_train(
        ["trainer.max_epochs=2", "callbacks.benchmark_eval.eval_every=1", "benchmarks.toy.limit=100"], run_dir=tmp_path
    )
    run = build(cfg)
    before = {k: v.clone() for k, v in run.module.model.state_dict().items()}
    run.trainer.fit(run.module, datamodule=run.datamodule)

    after = run.module.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    assert all(torch.isfinite(v).all() for v in after.values())
    assert run.module.global_step == 2  # one optimizer step per epoch on the toy task
    stats = run.datamodule.epoch_stats
    assert 0 < stats["rollout/accuracy"] < 1 and 0 <= stats["rollout/filtered_frac"] < 1
    assert stats["rollout/response_length"] > 5

    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert all(0 <= r["val/toy/avg@1"] <= 1 for r in rows)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    with (tmp_path / "logs" / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    columns = set(logged[0])
    assert {"train/loss", "train/grad_norm", "rollout/accuracy", "time/generate", "val/toy/avg@1"} <= columns
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_train_returns_metrics_and_resumes_from_a_checkpoint(tmp_path):
    first = compose_train(
        [
            "trainer.max_epochs=1",
            "callbacks.benchmark_eval.at_start=false",
            "benchmarks.toy.limit=50",
            "callbacks.checkpoint.every_n_epochs=1",
        ],
        run_dir=tmp_path / "a",
    )
    metrics = train(first)
    assert "val/toy/avg@1" in metrics and "train/loss" in metrics
    resumed = compose_train(
        [
            "trainer.max_epochs=2",
            "callbacks.benchmark_eval.at_start=false",
            "benchmarks.toy.limit=50",
            f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}",
        ],
        run_dir=tmp_path / "b",
    )
    run = build(resumed)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resumed.ckpt_path)
    assert run.module.global_step == 2 and run.trainer.current_epoch == 2
