"""Rewards from verdicts: correctness (0/1) plus an optional shaping term, which a config switches on.

``data.loss_inputs.reward_shaping`` names a callable ``(answer length, length limit) -> float`` added to correctness;
``null`` leaves the reward equal to correctness. ``conf/algo/dapo.yaml`` switches on DAPO's overlong penalty.

DAPO's overlong reward shaping (Yu et al., arXiv 2503.14476, Eq. 13): with a length limit ``L_max`` and a buffer of
``L_cache`` tokens before it, an answer of ``L`` tokens gets

    0                               if L <= L_max - L_cache
    ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max      (from 0 down to -1)
    -1                              if L > L_max

times ``factor``. DAPO's rewards are +1 / -1, ours 0 / 1 (``correct``): ``factor = 0.5`` keeps DAPO's weight of the
penalty relative to the gap between a right and a wrong answer. Group filtering (dynamic sampling) looks at
correctness, as the reference scripts' ``filter_groups.metric=acc``, not at the shaped reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RewardShaping(Protocol):
    def __call__(self, length: int, max_length: int) -> float: ...


def overlong_penalty(length: int, max_length: int, buffer_length: int, factor: float) -> float:
    """DAPO's soft overlong penalty (<= 0) of an answer of ``length`` tokens; 0 when ``buffer_length`` is 0."""
    if buffer_length <= 0 or factor == 0:
        return 0.0
    excess = length - (max_length - buffer_length)
    return -factor * min(max(excess, 0) / buffer_length, 1.0)


@dataclass(frozen=True)
class OverlongPenalty:
    """DAPO's overlong penalty over the last ``buffer_frac`` of the length limit, ``factor`` at the limit."""

    buffer_frac: float = 0.2
    factor: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.buffer_frac < 1 and self.factor >= 0):
            raise ValueError(
                "data.loss_inputs.reward_shaping: buffer_frac must be in [0, 1) and factor >= 0, got "
                f"{self.buffer_frac} and {self.factor}"
            )

    def __call__(self, length: int, max_length: int) -> float:
        return overlong_penalty(length, max_length, round(self.buffer_frac * max_length), self.factor)
