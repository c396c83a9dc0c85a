"""Self-consistency on the six shipped benchmarks: the reference answer boxed is right, a different number is wrong.

The negative half of Minerva and OlympiadBench is slow (most of their wrong answers are expressions and equations
that only sympy can reject), so it runs with ``make test-slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nft.bench.verifier import with_different_number
from nft.verify import MathVerifier

BENCHMARKS = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
FAST = ["aime24", "aime25", "amc23", "math500"]
SLOW = ["minerva_math", "olympiadbench"]


@pytest.fixture(scope="module")
def verifier():
    verifier = MathVerifier(num_workers=2, timeout=5, strict=True)
    yield verifier
    verifier.close()


def _answers(name: str) -> list[str]:
    return [json.loads(line)["answer"] for line in (BENCHMARKS / f"{name}.jsonl").read_text().splitlines()]


def _score(verifier: MathVerifier, answers: list[str], boxed: list[str], name: str) -> int:
    scores = verifier.score([f"So the answer is \\boxed{{{b}}}." for b in boxed], answers)
    right = int(sum(scores))
    print(f"{name}: {right}/{len(answers)} judged right")  # the per-benchmark count (`pytest -s`)
    return right


@pytest.mark.parametrize("name", FAST + SLOW)
def test_every_reference_answer_boxed_is_judged_right(verifier, name):
    answers = _answers(name)
    assert _score(verifier, answers, answers, name) == len(answers)


@pytest.mark.parametrize("name", FAST + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW])
def test_a_different_number_boxed_is_judged_wrong(verifier, name):
    answers = _answers(name)
    assert _score(verifier, answers, [with_different_number(a) for a in answers], name) == 0
