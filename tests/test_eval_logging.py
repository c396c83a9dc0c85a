"""Training with the csv, tensorboard and wandb (offline) loggers: the same metric names in each, the rollout samples
as a table or text, and BenchmarkEval's records, plots and summary rows, all from a real run of the tiny model."""

from __future__ import annotations

import csv
import json
import struct
from statistics import mean

import pytest
import torch
from omegaconf import open_dict

from nft.eval.records import RecordFile
from nft.eval.samples import write_section
from nft.pipeline import build

from .conftest import compose_train


def wandb_history(run_dir) -> tuple[set[str], set[str]]:
    """(metric names, table names) logged to an offline W&B run, read from its ``.wandb`` file.

    The file is a LevelDB-style log (W&B's documented offline format): a 7-byte header, then records of a 7-byte
    header (crc32, length, type) and a protobuf ``Record``, laid out in 32 KiB blocks.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, names, tables = 32768, 7, b"", set(), set()
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            for item in record.history.item if record.WhichOneof("record_type") == "history" else []:
                parts = [item.key] if item.key else list(item.nested_key)
                if len(parts) == 1:
                    names.add(parts[0])
                elif item.value_json == '"table-file"':  # a table is logged as {"_type": "table-file", ...}
                    tables.add(parts[0])
    return names, tables


def tensorboard_tags(run_dir) -> tuple[set[str], set[str]]:
    """(scalar tags, text tags) in the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    tensors = set(accumulator.Tags()["tensors"])
    scalars = set(accumulator.Tags()["scalars"]) | {t for t in tensors if t != "rollout/samples/text_summary"}
    return scalars, tensors - scalars


def test_three_loggers_receive_the_same_metrics_and_the_rollout_samples(tmp_path):
    cfg = compose_train(
        [
            "logger=[csv,tensorboard,wandb]",
            "logger.wandb.offline=true",
            "trainer.max_epochs=1",
            "callbacks.benchmark_eval.eval_every=1",
            "benchmarks.toy.limit=16",
            "callbacks.rollout_samples.rows=3",
        ],
        run_dir=tmp_path,
    )
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)

    with (tmp_path / "logs" / "metrics.csv").open() as f:
        csv_names = {k for row in csv.DictReader(f) for k, v in row.items() if v}
    tensorboard_names, tensorboard_texts = tensorboard_tags(tmp_path)
    wandb_names, wandb_tables = wandb_history(tmp_path)
    expected = {"val/toy/avg@1", "val/toy/pass@1", "val/toy/maj@1", "val/toy/truncated_frac", "val/average"}
    expected |= {"val/toy/response_length", "train/loss", "rollout/accuracy", "rollout/truncated_frac"}

    def ours(names):
        return {n for n in names if n.split("/")[0] in ("val", "train", "rollout", "time")}

    assert expected <= ours(csv_names)
    assert ours(csv_names) == ours(tensorboard_names) == ours(wandb_names)
    assert "rollout/samples" in wandb_tables
    assert any(t.startswith("rollout/samples") for t in tensorboard_texts)
    markdown = (tmp_path / "logs" / "rollout_samples.md").read_text()
    assert markdown.count("## epoch 0") == 1 and markdown.count("\\boxed") >= 3

    # BenchmarkEval: records for each evaluation, each summary row recomputable from them, plots, checkpointed history.
    records = [json.loads(line) for line in (tmp_path / "eval" / "toy.jsonl").read_text().splitlines()[1:]]
    summaries = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in summaries] == [0, 1]
    for row in summaries:
        of_epoch = [r for r in records if r["epoch"] == row["epoch"]]
        assert len(of_epoch) == 16
        assert row["val/toy/avg@1"] == mean(r["correct"] for r in of_epoch) == row["val/average"]
        assert row["val/toy/response_length"] == mean(r["length"] for r in of_epoch)
    assert (tmp_path / "eval" / "toy.png").stat().st_size > 1000 and (tmp_path / "accuracy.png").stat().st_size > 1000
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("BenchmarkEval")]
    assert state["history"] == summaries  # a resumed run keeps its start row


def test_a_repeated_epoch_replaces_its_records_and_its_samples(tmp_path):
    records = RecordFile(tmp_path / "toy.jsonl", {"samples": 1})
    for epoch in (0, 1, 2):
        records.replace_from(epoch, [{"epoch": epoch, "problem_id": "a"}])
    records.replace_from(1, [{"epoch": 1, "problem_id": "again"}])  # resumed from epoch 0's checkpoint
    assert records.read() == [{"epoch": 0, "problem_id": "a"}, {"epoch": 1, "problem_id": "again"}]

    path = tmp_path / "rollout_samples.md"
    for epoch in (0, 1, 2):
        write_section(path, epoch, f"table {epoch}\n")
    write_section(path, 1, "table 1 again\n")
    assert path.read_text() == "## epoch 0\n\ntable 0\n\n## epoch 1\n\ntable 1 again\n\n"


def test_a_final_only_benchmark_is_read_once_after_the_last_epoch(tmp_path):
    cfg = compose_train(
        ["trainer.max_epochs=2", "callbacks.benchmark_eval.eval_every=1", "benchmarks.toy.limit=8"],
        run_dir=tmp_path,
    )
    with open_dict(cfg):
        cfg.benchmarks.test = {**cfg.benchmarks.toy, "limit": 4, "final_only": True}
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)

    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert ["val/test/avg@1" in row for row in rows] == [False, False, True]
    assert rows[0]["val/average"] == rows[0]["val/toy/avg@1"]
    assert rows[2]["val/average"] == pytest.approx((rows[2]["val/toy/avg@1"] + rows[2]["val/test/avg@1"]) / 2)
    records = (tmp_path / "eval" / "test.jsonl").read_text().splitlines()[1:]
    assert {json.loads(line)["epoch"] for line in records} == {2} and len(records) == 4
