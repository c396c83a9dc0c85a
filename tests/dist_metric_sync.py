"""Run by test_eval_metrics: two gloo ranks update BenchmarkMetrics with their shards and write what they compute.

Usage: python tests/dist_metric_sync.py DIR  (DIR holds records.json; rank<r>.json are written there)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dist_launch import launch

from nft.eval.metrics import BenchmarkMetrics


def run(rank: int, world: int, directory: str) -> None:
    records = json.loads((Path(directory) / "records.json").read_text())
    problems = list(dict.fromkeys(r["problem_id"] for r in records))
    mine = set(problems[rank::world])
    everything = BenchmarkMetrics(3)
    everything.update([r for r in records if r["problem_id"] in mine])
    lone = BenchmarkMetrics(3)  # one problem in all: rank 1 has none
    lone.update([r for r in records[:3] if r["problem_id"] in mine])
    result = {"all": everything.compute(), "lone": lone.compute()}
    result["local_problems"] = int(everything.pass_at_k.problems)  # compute() restores the local state
    (Path(directory) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    launch(run, sys.argv[1])
