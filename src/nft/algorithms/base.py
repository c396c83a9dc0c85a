"""What every algorithm shares: its settings as one frozen dataclass, and the contract's ``loss`` call.

Each algorithm is a frozen dataclass whose fields are its settings (declared once, with their defaults, and checked in
``__post_init__``); its pure loss function takes the tensors and that object. A variant that only changes defaults
(RFT of NFT, Dr.GRPO and DAPO of GRPO) is a subclass that redeclares those fields and nothing else.

The training module calls, for every micro-batch,

    algorithm.loss(logp, old_logp, mask, correct, correct_rate, **inputs)

with ``inputs`` the keys of ``OPTIONAL_INPUTS`` that the batch holds, plus ``ref_logp`` when the algorithm
``needs_reference``. Every algorithm accepts them all (and ignores those it does not use), so the module never needs
to know which algorithm it runs; the five positional arguments alone are always a valid call.

Optional inputs (all per sample, [B], except ``ref_logp`` and ``behaviour_logp``):
    num_tokens, num_seqs: totals of the whole optimizer step (scalars), for exact gradient accumulation.
    behaviour_logp: [B, T] log-probs of the sampled tokens as the rollout engine computed them (for the behaviour
        correction, ``nft.algorithms.correction``, which every algorithm takes: ``behaviour_correction``,
        ``behaviour_cap``, ``behaviour_level``).
    reward: the shaped reward (correctness plus e.g. DAPO's overlong penalty); default: ``correct``.
    reward_mean, reward_std: the group's mean and population standard deviation of ``reward``.
    group_size: the number of answers in the sample's group (for the sample standard deviation).
    ref_logp: [B, T] log-probs of a frozen reference policy (only for algorithms with ``needs_reference``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import torch

from nft.algorithms.aggregation import check_choice, masked_mean
from nft.algorithms.correction import CORRECTIONS, LEVELS, behaviour_weights

OPTIONAL_INPUTS = ("num_tokens", "num_seqs", "reward", "reward_mean", "reward_std", "group_size", "behaviour_logp")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base class: a subclass names its pure loss function and the optional inputs it takes; its fields are settings."""

    behaviour_correction: str = "none"  # none | truncate | mask (nft.algorithms.correction)
    behaviour_cap: float = 2.0
    behaviour_level: str = "token"  # token | sequence

    loss_function = None  # (logp, old_logp, mask, correct, correct_rate, settings, **inputs) -> (loss, metrics)
    uses: ClassVar[tuple[str, ...]] = ()  # the optional inputs (and ``ref_logp``) that ``loss_function`` takes
    needs_reference = False  # True: the module keeps a frozen copy of the initial policy and passes ``ref_logp``

    def __post_init__(self) -> None:
        """Settings from YAML arrive as ints and lists: store floats and tuples, so equal settings compare equal."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "float":
                object.__setattr__(self, field.name, float(value))
            elif field.type.startswith("tuple"):
                object.__setattr__(self, field.name, tuple(float(v) for v in value))
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the ``algo.*`` key of a setting out of range (subclasses extend it)."""
        check_choice("algo.behaviour_correction", self.behaviour_correction, CORRECTIONS)
        check_choice("algo.behaviour_level", self.behaviour_level, LEVELS)
        if not self.behaviour_cap > 0:
            raise ValueError(f"algo.behaviour_cap must be > 0, got {self.behaviour_cap}")

    @property
    def settings(self) -> dict:
        """The settings by name (derived from the fields: for logs, hyperparameters and tests)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def loss(self, logp, old_logp, mask, correct, correct_rate, **inputs):
        """The contract's call; optional inputs this algorithm does not use are ignored, unknown ones refused."""
        unknown = set(inputs) - set(OPTIONAL_INPUTS) - {"ref_logp"}
        if unknown:
            raise TypeError(f"{type(self).__name__}.loss got unknown inputs {sorted(unknown)}; see nft.algorithms.base")
        used = {name: inputs[name] for name in self.uses if name in inputs}
        function: Callable = type(self).loss_function
        if self.behaviour_correction == "none":
            return function(logp, old_logp, mask, correct, correct_rate, self, **used)
        if inputs.get("behaviour_logp") is None:
            raise ValueError(f"algo.behaviour_correction={self.behaviour_correction} needs `behaviour_logp`")
        correction = (self.behaviour_correction, self.behaviour_cap, self.behaviour_level)
        weight = behaviour_weights(old_logp, inputs["behaviour_logp"], mask, *correction)
        loss, metrics = function(logp, old_logp, mask, correct, correct_rate, self, token_weight=weight, **used)
        with torch.no_grad():
            counted = mask > 0
            metrics["behaviour_weight"] = masked_mean(weight, counted)
            cut = (weight == 0) if self.behaviour_correction == "mask" else (weight == self.behaviour_cap)
            metrics["behaviour_capped_frac"] = masked_mean(cut.to(weight.dtype), counted)
        return loss, metrics
