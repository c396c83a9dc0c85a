"""Accuracy over n sampled answers per problem, as torchmetrics ``Metric``s whose states are sums across ranks.

- avg@n: the mean verdict over all n answers of all problems (the paper's Table 1 metric: avg@32 for AIME24, AIME25
  and AMC23, avg@1 for the others).
- pass@k, every k from 1 to n: the unbiased estimator of Chen et al. 2021 (Codex, arXiv 2107.03374), per problem
  ``1 - C(n - c, k) / C(n, k)`` with c of its n answers right, averaged over problems. pass@1 equals avg@n.
- maj@n: the problem counts as solved when the most frequent final answer among its n answers is right (majority
  voting, "self-consistency", Wang et al. 2022). The votes use the verdicts already given: every right answer is
  equivalent to the reference, so all right answers form one vote; a wrong answer votes with its ``\\boxed{}`` content
  (whitespace removed); an answer with no ``\\boxed{}`` does not vote. Departure from a full equivalence clustering:
  two equivalent wrong answers written differently (``1/2``, ``\\frac12``) are separate votes. Ties go to the answer
  seen first (as ``collections.Counter.most_common`` orders them).
- response length (tokens) and truncation rate (answers cut at the token limit).

Each rank updates the metrics with its own problems (all n answers of a problem on one rank); every state is a sum
reduced with ``dist_reduce_fx="sum"``, so ``compute()`` on any rank gives the numbers of all problems together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb

import torch
from torchmetrics import MeanMetric, Metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n - c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_is_correct(answers: Sequence[str | None], verdicts: Sequence[float]) -> bool:
    """Whether majority voting over one problem's answers picks a right one (see the module docstring)."""
    votes: Counter = Counter()
    for answer, verdict in zip(answers, verdicts, strict=True):
        if verdict:
            votes[True] += 1  # every right answer is the same answer: the reference
        elif answer is not None:
            votes["".join(answer.split())] += 1
    return bool(votes) and votes.most_common(1)[0][0] is True


class PassAtK(Metric):
    """pass@k for every k from 1 to ``samples``; ``update`` takes the [problems, samples] 0/1 verdicts."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, samples: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.samples = samples
        # table[c, k - 1] = pass@k of a problem with c right answers: an update is a lookup, exact in float64.
        table = [[pass_at_k(samples, c, k) for k in range(1, samples + 1)] for c in range(samples + 1)]
        self.register_buffer("table", torch.tensor(table, dtype=torch.float64), persistent=False)
        self.add_state("pass_sum", torch.zeros(samples, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor) -> None:
        if correct.ndim != 2 or correct.shape[1] != self.samples:
            raise ValueError(f"expected verdicts of shape [problems, {self.samples}], got {tuple(correct.shape)}")
        counts = correct.to(self.pass_sum.device).round().long().sum(dim=1)
        self.pass_sum += self.table[counts].sum(dim=0)
        self.problems += correct.shape[0]

    def compute(self) -> torch.Tensor:
        """[samples]: pass@1, pass@2, ..., pass@samples (a scalar when samples is 1: torchmetrics squeezes it)."""
        return self.pass_sum / self.problems


class MajorityAtK(Metric):
    """maj@n: ``update`` takes each problem's extracted answers (None: none) and its [problems, n] verdicts."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("solved", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, answers: Sequence[Sequence[str | None]], correct: torch.Tensor) -> None:
        if len(answers) != correct.shape[0]:
            raise ValueError(f"{len(answers)} problems of answers but {correct.shape[0]} of verdicts")
        self.solved += sum(majority_is_correct(a, v) for a, v in zip(answers, correct.tolist(), strict=True))
        self.problems += len(answers)

    def compute(self) -> torch.Tensor:
        return self.solved / self.problems


def logged_ks(samples: int) -> list[int]:
    """The k of pass@k that go to the loggers: powers of two up to ``samples``, and ``samples`` itself."""
    return sorted({2**i for i in range(samples.bit_length()) if 2**i <= samples} | {samples})


class BenchmarkMetrics(torch.nn.Module):
    """All metrics of one benchmark with ``samples`` answers per problem, updated from per-sample records.

    A record is a dict with ``problem_id``, ``sample``, ``correct``, ``extracted``, ``length`` and ``finish_reason``
    (``nft.eval.evaluator.Evaluator.sample`` writes them). ``.to(device)`` before use under NCCL.
    """

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.samples = samples
        self.accuracy = MeanMetric().set_dtype(torch.float64)
        self.pass_at_k = PassAtK(samples)
        self.majority = MajorityAtK()
        self.response_length = MeanMetric().set_dtype(torch.float64)
        self.truncated = MeanMetric().set_dtype(torch.float64)

    def update(self, records: Sequence[dict]) -> None:
        groups = group_by_problem(records, self.samples)
        if not groups:  # this rank had no problems; compute() still joins the other ranks' sums
            return
        device = self.pass_at_k.pass_sum.device
        correct = torch.tensor([[float(r["correct"]) for r in g] for g in groups], dtype=torch.float64, device=device)
        flat = [r for g in groups for r in g]
        self.accuracy.update(correct.flatten())
        self.pass_at_k.update(correct)
        self.majority.update([[r["extracted"] for r in g] for g in groups], correct)
        self.response_length.update(torch.tensor([float(r["length"]) for r in flat], dtype=torch.float64))
        self.truncated.update(torch.tensor([float(r["finish_reason"] == "length") for r in flat], dtype=torch.float64))

    def compute(self) -> dict[str, float]:
        """``avg@n``, ``pass@k`` (k in ``logged_ks(n)``), ``maj@n``, ``response_length``, ``truncated_frac``."""
        n = self.samples
        pass_curve = self.pass_at_k.compute().reshape(-1)  # torchmetrics squeezes a 1-element result
        return {
            f"avg@{n}": float(self.accuracy.compute()),
            **{f"pass@{k}": float(pass_curve[k - 1]) for k in logged_ks(n)},
            f"maj@{n}": float(self.majority.compute()),
            "response_length": float(self.response_length.compute()),
            "truncated_frac": float(self.truncated.compute()),
        }


def group_by_problem(records: Sequence[dict], samples: int) -> list[list[dict]]:
    """Records grouped per problem (first-seen order), each sorted by sample index and exactly ``samples`` long."""
    groups: dict[str, dict[int, dict]] = {}
    for record in records:
        groups.setdefault(record["problem_id"], {})[record["sample"]] = record
    for problem_id, group in groups.items():
        if sorted(group) != list(range(samples)):
            raise ValueError(
                f"problem {problem_id!r}: expected samples 0..{samples - 1}, got {len(group)} ({sorted(group)[:8]}...)"
            )
    return [[group[j] for j in range(samples)] for group in groups.values()]
