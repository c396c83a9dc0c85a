"""Verdicts depend on the pair alone: the same under any ``PYTHONHASHSEED``, in any grading order, in process
(``is_correct``) and in the worker pool (``MathVerifier``).

Each run is a fresh interpreter, since hash order and sympy's state are fixed at start-up; each grades every pair
of ``tests/test_verify_families.py`` (in both modes) in its own shuffled order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nft
from tests.test_verify_families import CONVENTIONS, FAMILIES

SRC = str(Path(nft.__file__).resolve().parents[1])

# Arguments: a JSON file of [response, answer, strict] triples, the grading order's seed, "pool" or "is_correct".
# Prints the verdicts in the file's order, having graded the pairs in a shuffled one.
CHILD = """
import json, random, sys
from nft.verify import MathVerifier, is_correct
pairs = json.load(open(sys.argv[1]))
TIMEOUT = 60  # a deadline is the one thing that may change a verdict, on a loaded machine: not tested here
order = list(range(len(pairs)))
random.Random(int(sys.argv[2])).shuffle(order)
verdicts = {}
if sys.argv[3] == "pool":
    for strict in (False, True):
        chosen = [i for i in order if pairs[i][2] is strict]
        verifier = MathVerifier(num_workers=2, timeout=TIMEOUT, strict=strict)
        scores = verifier.score([pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen])
        verifier.close()
        verdicts.update({i: score == 1.0 for i, score in zip(chosen, scores)})
else:
    verdicts = {i: is_correct(pairs[i][0], pairs[i][1], TIMEOUT, pairs[i][2]) for i in order}
print(json.dumps([verdicts[i] for i in range(len(pairs))]))
"""

RUNS = [("0", "0", "is_correct"), ("1", "1", "is_correct"), ("2", "2", "pool"), ("3", "3", "pool")]  # hash, order


def _pairs() -> list[tuple[str, str, bool]]:
    pairs = [(r, a, strict) for cases in FAMILIES.values() for r, a, *_ in cases for strict in (False, True)]
    return pairs + [(r, a, False) for cases in CONVENTIONS.values() for r, a, _ in cases]


def test_verdicts_do_not_depend_on_the_hash_seed_the_order_or_the_pool(tmp_path):
    pairs = _pairs()
    assert len(pairs) >= 350
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    path = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "pairs.json"), order, via],
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed, order, via in RUNS
    ]
    runs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        runs.append(json.loads(out))
    differing = [(pair, [run[i] for run in runs]) for i, pair in enumerate(pairs) if len({run[i] for run in runs}) > 1]
    assert differing == []
    expected = [
        verdict for cases in FAMILIES.values() for *_, lenient, strict in cases for verdict in (lenient, strict)
    ]
    assert runs[0][: len(expected)] == expected  # and they are the verdicts the family tests expect
