"""Run by test_datamodule: two gloo ranks run one epoch's dynamic sampling (several generation rounds) of the toy data
module with the warmed-up tiny policy, each generating for its share of the prompts, and write what they drew and kept.

Usage: python tests/dist_refill.py DIR  (rank<r>.json is written to DIR)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dist_launch import launch

from nft.distributed import all_gather_objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_datamodule import refill_rounds  # noqa: E402


def run(rank: int, world: int, directory: str) -> None:
    rounds, mixed = refill_rounds()
    every_mixed = set().union(*all_gather_objects(mixed))
    result = {"drawn": rounds.drawn, "kept": rounds.kept_groups, "mixed": sorted(every_mixed), "count": rounds.count}
    (Path(directory) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    launch(run, sys.argv[1])
