"""What every algorithm class shares: the contract's ``loss`` call and the optional per-sample inputs.

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

from collections.abc import Callable

OPTIONAL_INPUTS = ("num_tokens", "num_seqs", "reward", "reward_mean", "reward_std", "group_size")


class Algorithm:
    """Base class: a subclass names its pure loss function, the optional inputs it takes, and keeps its settings."""

    loss_function: Callable  # (logp, old_logp, mask, correct, correct_rate, **settings, **inputs) -> (loss, metrics)
    uses: tuple[str, ...] = ()  # the optional inputs (and ``ref_logp``) that ``loss_function`` takes
    needs_reference = False  # True: the module keeps a frozen copy of the initial policy and passes ``ref_logp``
    settings: dict

    def loss(self, logp, old_logp, mask, correct, correct_rate, **inputs):
        """The contract's call; optional inputs this algorithm does not use are ignored, unknown ones refused."""
        unknown = set(inputs) - set(OPTIONAL_INPUTS) - {"ref_logp"}
        if unknown:
            raise TypeError(f"{type(self).__name__}.loss got unknown inputs {sorted(unknown)}; see nft.algorithms.base")
        used = {name: inputs[name] for name in self.uses if name in inputs}
        return type(self).loss_function(logp, old_logp, mask, correct, correct_rate, **self.settings, **used)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"
