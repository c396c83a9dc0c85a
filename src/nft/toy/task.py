"""The toy tasks, whose answers go in ``\\boxed{}``; each a ``python -m nft.toy.task DIR [TASK]`` away from its files.

- ``add2`` (the default, ``data/toy/``): two-digit addition answered in one line, ``12+34=46 \\boxed{46}``.
- ``add3_steps`` (``data/toy_steps/``, ``experiment=paper_in_miniature``): three-digit addition solved column by
  column, a reasoning trace of about 45 tokens, ``2+5=7, 7+8=15, 4+3+1=8, 472+385=857 \\boxed{857}``: a wrong answer
  differs from a right one in many tokens (a slip in one column changes the rest of the trace), as on real math.

Problems are written as JSONL files shaped like the real data (``id``, ``problem``, ``answer``, and the ``solution``
that the warm-up teaches), so a toy run goes through exactly the same loading, prompting and verification path as a
real dataset.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


def problem_text(a: int, b: int) -> str:
    return f"What is {a}+{b}?"


def solution_text(a: int, b: int) -> str:
    """The ``add2`` completion: restate the sum, then box the result."""
    return f"{a}+{b}={a + b} \\boxed{{{a + b}}}"


def steps_solution_text(a: int, b: int) -> str:
    """The ``add3_steps`` completion: one ``x+y(+carry)=s`` per column from the units up, then the sum, boxed."""
    steps, carry = [], 0
    for x, y in zip(reversed(str(a)), reversed(str(b)), strict=True):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total}")
        carry = total // 10
    return f"{', '.join(steps)}, {a}+{b}={a + b} \\boxed{{{a + b}}}"


@dataclass(frozen=True)
class Task:
    name: str
    low: int  # operands are the integers in [low, high]
    high: int
    solution: object  # (a, b) -> the completion the warm-up teaches
    num_train: int | None  # None: every pair not held out


TASKS = {
    "add2": Task("add2", 10, 99, solution_text, None),
    "add3_steps": Task("add3_steps", 100, 999, steps_solution_text, 10_000),
}


def make_problems(seed: int = 0, num_test: int = 500, task: str = "add2") -> tuple[list[dict], list[dict]]:
    """Ordered pairs ``a + b`` of the task's operands, shuffled by ``seed`` and split into train and test."""
    spec = TASKS[task]
    rows = _shuffled_rows(spec, seed, None if spec.num_train is None else num_test + spec.num_train)
    return rows[num_test:], rows[:num_test]


def validation_problems(seed: int = 0, count: int = 500, num_test: int = 500, task: str = "add3_steps") -> list[dict]:
    """``count`` problems of a sampled task (one with ``num_train``) drawn by the same shuffle right after its test and
    training problems: disjoint from both, from the same distribution, and leaving both sets as they were."""
    spec = TASKS[task]
    if spec.num_train is None:
        raise ValueError(
            f"task {task!r} lists every pair in its train and test sets: no problem is left to validate on"
        )
    return _shuffled_rows(spec, seed, num_test + spec.num_train + count)[-count:]


def _shuffled_rows(spec: Task, seed: int, count: int | None) -> list[dict]:
    """Every pair shuffled (``count`` None), or ``count`` distinct random pairs; ``random.sample`` draws them one by
    one, so a larger ``count`` extends the same sequence."""
    rng = random.Random(seed)
    if count is None:
        pairs = [(a, b) for a in range(spec.low, spec.high + 1) for b in range(spec.low, spec.high + 1)]
        rng.shuffle(pairs)
    else:
        side = spec.high - spec.low + 1
        pairs = [divmod(k, side) for k in rng.sample(range(side * side), count)]
        pairs = [(spec.low + a, spec.low + b) for a, b in pairs]
    return [
        {
            "id": f"{spec.name}/{a}+{b}",
            "problem": problem_text(a, b),
            "answer": str(a + b),
            "solution": spec.solution(a, b),
        }
        for a, b in pairs
    ]


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_toy_data(directory: str | Path, seed: int = 0, task: str = "add2") -> tuple[Path, ...]:
    """Write ``train.jsonl`` and ``test.jsonl`` for a toy task into ``directory``, and ``validation.jsonl`` for a
    sampled task (``validation_problems``)."""
    train, test = make_problems(seed, task=task)
    directory = Path(directory)
    written = (write_jsonl(train, directory / "train.jsonl"), write_jsonl(test, directory / "test.jsonl"))
    if TASKS[task].num_train is None:
        return written
    return (*written, write_jsonl(validation_problems(seed, task=task), directory / "validation.jsonl"))


if __name__ == "__main__":
    import sys

    directory = sys.argv[1] if len(sys.argv) > 1 else "data/toy"
    for written in write_toy_data(directory, task=sys.argv[2] if len(sys.argv) > 2 else "add2"):
        print(written)
