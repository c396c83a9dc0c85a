"""What every algorithm shares: its settings as one frozen dataclass, and the contract's ``loss`` call.

Each algorithm is a frozen dataclass whose fields are its settings (declared once, with their defaults, and checked in
``__post_init__``); its pure loss function takes the tensors and that object. A variant that only changes defaults
(RFT of NFT, Dr.GRPO and DAPO of GRPO) is a subclass that redeclares those fields and nothing else.

The training module calls, for every micro-batch,

    algorithm.loss(logp, old_logp, mask, correct, correct_rate, **inputs)

with ``inputs`` the keys of ``OPTIONAL_INPUTS`` that the batch holds, plus ``ref_logp`` when the algorithm
``needs_reference``. Every algorithm accepts them all (and ignores those it does not use), so the module never needs
to know which algorithm it runs; the five positional arguments alone are always a valid call.

Optional inputs (all per sample, [B], except ``ref_logp``):
    num_tokens, num_seqs: totals of the whole optimizer step (scalars), for exact gradient accumulation.
    reward: the shaped reward (correctness plus e.g. DAPO's overlong penalty); default: ``correct``.
    reward_mean, reward_std: the group's mean and population standard deviation of ``reward``.
    group_size: the number of answers in the sample's group (for the sample standard deviation).
    ref_logp: [B, T] log-probs of a frozen reference policy (only for algorithms with ``needs_reference``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import ClassVar

OPTIONAL_INPUTS = ("num_tokens", "num_seqs", "reward", "reward_mean", "reward_std", "group_size")


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Refuse a string setting that is not one of ``choices``, naming the config key."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base class: a subclass names its pure loss function and the optional inputs it takes; its fields are settings."""

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
        return function(logp, old_logp, mask, correct, correct_rate, self, **used)
