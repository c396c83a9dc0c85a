"""The toy task: two-digit addition whose answers go in ``\\boxed{}``.

Problems are written as JSONL files shaped like the real data (``id``, ``problem``, ``answer``), so the toy run goes
through exactly the same loading, prompting and verification path as a real dataset.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASK_NAME = "add2"


def problem_text(a: int, b: int) -> str:
    return f"What is {a}+{b}?"


def solution_text(a: int, b: int) -> str:
    """The completion the warm-up teaches: restate the sum, then box the result."""
    return f"{a}+{b}={a + b} \\boxed{{{a + b}}}"


def make_problems(seed: int = 0, num_test: int = 500, low: int = 10, high: int = 99) -> tuple[list[dict], list[dict]]:
    """All ordered pairs ``a + b`` with ``low <= a, b <= high``, shuffled by ``seed`` and split into train and test."""
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    random.Random(seed).shuffle(pairs)
    rows = [
        {
            "id": f"{TASK_NAME}/{a}+{b}",
            "problem": problem_text(a, b),
            "answer": str(a + b),
            "solution": solution_text(a, b),
        }
        for a, b in pairs
    ]
    return rows[num_test:], rows[:num_test]


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_toy_data(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` for the toy task into ``directory``."""
    train, test = make_problems(seed)
    directory = Path(directory)
    return write_jsonl(train, directory / "train.jsonl"), write_jsonl(test, directory / "test.jsonl")


if __name__ == "__main__":
    import sys

    for written in write_toy_data(sys.argv[1] if len(sys.argv) > 1 else "data/toy"):
        print(written)
