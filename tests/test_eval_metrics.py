"""pass@k, avg@k and maj@k against brute force and hand computation; metric sync across two real processes."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch

from nft.eval.metrics import BenchmarkMetrics, PassAtK, logged_ks, majority_is_correct, pass_at_k

from .conftest import ROOT


def brute_force_pass_at_k(verdicts: list[int], k: int) -> float:
    """The fraction of all size-k subsets of the answers that hold a right one."""
    subsets = list(itertools.combinations(verdicts, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_over_all_subsets(n):
    for c in range(n + 1):
        verdicts = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            assert math.isclose(pass_at_k(n, c, k), brute_force_pass_at_k(verdicts, k), abs_tol=1e-12), (n, c, k)


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError, match="pass_at_k"):
            pass_at_k(n, c, k)


def test_pass_at_k_metric_gives_every_k_at_once():
    torch.manual_seed(0)
    correct = (torch.rand(9, 5) < 0.3).float()
    metric = PassAtK(5)
    metric.update(correct[:4])
    metric.update(correct[4:])
    expected = [sum(brute_force_pass_at_k(row, k) for row in correct.int().tolist()) / 9 for k in range(1, 6)]
    torch.testing.assert_close(metric.compute(), torch.tensor(expected, dtype=torch.float64))


def record(problem, sample, correct, extracted, length=10, finish="stop"):
    return {
        "problem_id": problem,
        "sample": sample,
        "correct": correct,
        "extracted": extracted,
        "length": length,
        "finish_reason": finish,
    }


def hand_records():
    """Three problems x four answers, with the verdicts and boxed answers written out."""
    return [
        # p1: two right (one vote), two wrong "3" (another): a tie, won by the right answer, seen first -> solved
        record("p1", 0, True, "7"),
        record("p1", 1, False, "3"),
        record("p1", 2, False, " 3 "),
        record("p1", 3, True, "7.0", length=30, finish="length"),
        # p2: one right, two wrong "5" (whitespace differs), one without a boxed answer -> not solved
        record("p2", 0, False, "5"),
        record("p2", 1, False, None, length=30, finish="length"),
        record("p2", 2, True, "8"),
        record("p2", 3, False, "5 "),
        # p3: listed out of order; one right answer against three that do not vote -> solved
        record("p3", 3, False, None),
        record("p3", 1, True, "x"),
        record("p3", 0, False, None),
        record("p3", 2, False, None),
    ]


def test_avg_maj_pass_length_and_truncation_by_hand():
    metrics = BenchmarkMetrics(4)
    metrics.update(hand_records())
    values = metrics.compute()
    assert set(values) == {"avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "response_length", "truncated_frac"}
    assert values["avg@4"] == pytest.approx(4 / 12)
    assert values["pass@1"] == pytest.approx(4 / 12)
    # pass@2 = 1 - C(n - c, 2) / C(4, 2): c = 2 -> 1 - 1/6, c = 1 -> 1 - 3/6 (twice)
    assert values["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 1 / 2) / 3)
    assert values["pass@4"] == pytest.approx(1.0)
    assert values["maj@4"] == pytest.approx(2 / 3)
    assert values["response_length"] == pytest.approx((10 * 10 + 30 * 2) / 12)
    assert values["truncated_frac"] == pytest.approx(2 / 12)


def test_majority_vote_ties_and_abstentions():
    assert majority_is_correct(["1", "2", "2"], [1, 0, 0]) is False
    assert majority_is_correct(["2", "1"], [0, 1]) is False  # a tie goes to the answer seen first
    assert majority_is_correct(["1", "2"], [1, 0]) is True
    assert majority_is_correct(["1", "2 ", "\\frac12", "0.5"], [1, 1, 0, 0]) is True  # right answers are one vote
    assert majority_is_correct([None, None], [0, 0]) is False


def test_logged_ks_are_powers_of_two_and_n():
    assert logged_ks(1) == [1]
    assert logged_ks(32) == [1, 2, 4, 8, 16, 32]
    assert logged_ks(12) == [1, 2, 4, 8, 12]


def test_records_must_hold_every_answer_of_a_problem():
    records = [r for r in hand_records() if not (r["problem_id"] == "p2" and r["sample"] == 1)]
    with pytest.raises(ValueError, match="'p2'"):
        BenchmarkMetrics(4).update(records)


@pytest.mark.full
def test_metrics_sum_across_two_processes(tmp_path):
    """Two gloo ranks, each with its shard of the problems (one rank with none for a second benchmark), compute the
    same numbers as one process with every problem."""
    torch.manual_seed(1)
    records = [
        record(f"q{p}", s, bool(torch.rand(()) < 0.4), str(int(torch.randint(0, 3, ()))), int(torch.randint(1, 50, ())))
        for p in range(7)
        for s in range(3)
    ]
    (tmp_path / "records.json").write_text(json.dumps(records))
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "dist_metric_sync.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = BenchmarkMetrics(3)
    single.update(records)
    expected = single.compute()
    lone = BenchmarkMetrics(3)
    lone.update(records[:3])
    for rank in (0, 1):
        synced = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert synced["all"] == pytest.approx(expected, abs=1e-12)
        assert synced["lone"] == pytest.approx(lone.compute(), abs=1e-12)
        assert synced["local_problems"] == [4, 3][rank]  # each rank saw only its shard
