"""PPO-clip on group-relative advantages: GRPO, Dr.GRPO and DAPO.

- GRPO: Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
  arXiv 2402.03300. Advantage ``(R_i - mean) / std`` over the prompt's group, PPO's clipped surrogate, optional KL to
  a frozen reference policy (the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``), sequence-mean of token-means.
- Dr.GRPO: Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv 2503.20783. No std
  normalisation and a constant normaliser (the generation budget) instead of per-answer lengths.
- DAPO: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv 2503.14476. Clip-higher
  (0.2 / 0.28), token-mean over the batch, no KL; its dynamic sampling and overlong reward shaping are data-side
  settings (``conf/algo/dapo.yaml`` sets them; ``nft.data.rewards``).

Per token, with ``R = pi_theta / pi_old`` and the answer's advantage ``A``:

    loss = -min(R A, clip(R, 1 - clip_low, 1 + clip_high) A)  =  -A * clamp(R, lo, hi)

with one-sided bounds set by the sign of A (``hi = 1 + clip_high`` when A > 0, ``lo = 1 - clip_low`` when A < 0):
both forms have the same value and gradient, the second costs one clamp per token.

Choices and departures:
- The group std is a population std by default (divide by n; for 0/1 rewards ``sqrt(r (1 - r))``), which makes
  on-policy NFT with ``prompt_weight=grpo`` exactly GRPO; ``std: sample`` gives the (n - 1) form of verl/TRL.
- ``std_eps`` floors the std instead of being added to it: advantages are exact whenever the std exceeds it, and a
  group whose answers all score the same gets advantage 0 either way.
- The log-ratio is capped at 10 before ``exp``, as NFT's (verl clamps at 20).
- DAPO's and Dr.GRPO's classes accept a KL to a reference policy like GRPO's (``kl_coef``, 0 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nft.algorithms.aggregation import (
    aggregate,
    capped_ratio,
    check_choice,
    check_loss_agg,
    masked_log_ratio,
    masked_mean,
    row_weights,
)
from nft.algorithms.base import Algorithm

STDS = ("population", "sample", "none")


def group_advantage(
    correct: torch.Tensor,
    correct_rate: torch.Tensor,
    *,
    std: str = "population",
    std_eps: float = 1e-6,
    reward: torch.Tensor | None = None,
    reward_mean: torch.Tensor | None = None,
    reward_std: torch.Tensor | None = None,
    group_size: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-answer advantage [B]: the reward minus its group mean, divided by the group std unless ``std='none'``.

    Without ``reward`` the reward is ``correct``, its group mean ``correct_rate`` and its population std
    ``sqrt(r (1 - r))``. ``std='sample'`` rescales the population std by ``sqrt(n / (n - 1))`` (needs ``group_size``).
    """
    if reward is None:
        reward, reward_mean = correct, correct_rate
        reward_std = (correct_rate * (1.0 - correct_rate)).clamp(min=0).sqrt()
    elif reward_mean is None or reward_std is None:
        raise ValueError("a shaped `reward` needs its group's `reward_mean` and `reward_std`")
    centered = reward - reward_mean
    if std == "none":
        return centered
    if std == "sample":
        if group_size is None:
            raise ValueError("algo.std=sample needs `group_size` (the data module passes it with every batch)")
        size = group_size.to(reward_std.dtype)
        reward_std = reward_std * (size / (size - 1.0).clamp(min=1.0)).sqrt()
    return centered / reward_std.clamp(min=std_eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    correct_rate: torch.Tensor,
    settings: GRPO,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    reward: torch.Tensor | None = None,
    reward_mean: torch.Tensor | None = None,
    reward_std: torch.Tensor | None = None,
    group_size: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    token_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip loss on group advantages. Shapes: ``logp``, ``old_logp``, ``mask``, ``ref_logp``, ``token_weight``
    [B, T]; the rest [B]. ``token_weight`` (the behaviour correction) multiplies each token's surrogate, not the KL.

    Returns (scalar loss, metrics): ``ratio`` (mean R), ``clip_frac`` (counted tokens whose ratio was clipped),
    ``pos_loss`` and ``neg_loss`` (the correct- and wrong-answer parts of the policy loss), ``entropy`` (mean
    negative log-prob of the sampled tokens), and ``kl`` (mean k3 estimate, only with ``kl_coef > 0``).
    """
    counted = mask > 0
    mask = mask.to(logp.dtype)
    correct = correct.to(logp.dtype)
    advantage = group_advantage(
        correct,
        correct_rate,
        std=settings.std,
        std_eps=settings.std_eps,
        reward=reward,
        reward_mean=reward_mean,
        reward_std=reward_std,
        group_size=group_size,
    ).to(logp.dtype)
    ratio = capped_ratio(masked_log_ratio(logp, old_logp, counted))
    low = ((advantage < 0).to(logp.dtype) * (1.0 - settings.clip_low))[:, None]
    high = torch.full_like(advantage, torch.inf).masked_fill(advantage > 0, 1.0 + settings.clip_high)[:, None]
    clipped = ratio.clamp(min=low, max=high)
    totals = dict(num_tokens=num_tokens, num_seqs=num_seqs, loss_norm=settings.loss_norm)
    weighted_mask = mask if token_weight is None else mask * token_weight
    per_answer = -advantage * row_weights(mask, settings.loss_agg, **totals) * (clipped * weighted_mask).sum(-1)
    loss = per_answer.sum()
    metrics = {}
    if settings.kl_coef > 0:
        if ref_logp is None:
            raise ValueError("algo.kl_coef > 0 needs `ref_logp` (the module passes it when `needs_reference`)")
        ref_diff = masked_log_ratio(ref_logp, logp, counted)
        kl = ref_diff.exp() - ref_diff - 1.0
        loss = loss + settings.kl_coef * aggregate(kl, mask, settings.loss_agg, **totals)
        metrics["kl"] = masked_mean(kl.detach(), counted)

    with torch.no_grad():
        pos_loss = (per_answer * correct).sum()
        metrics.update(
            ratio=masked_mean(ratio, counted),
            clip_frac=((clipped != ratio) & counted).sum() / counted.sum().clamp(min=1),
            pos_loss=pos_loss,
            neg_loss=per_answer.sum() - pos_loss,
            entropy=masked_mean(-logp, counted),
        )
    return loss, metrics


@dataclass(frozen=True)
class GRPO(Algorithm):
    """GRPO's settings (``conf/algo/grpo.yaml`` documents each); ``loss`` follows the algorithms contract.

    ``kl_coef > 0`` adds the KL to a frozen reference policy; then ``needs_reference`` is True and the module keeps a
    frozen copy of the initial policy. With the default 0 no reference model is built or run.
    """

    clip_low: float = 0.2
    clip_high: float = 0.2
    std: str = "population"
    std_eps: float = 1e-6
    loss_agg: str = "seq_mean_token_mean"
    loss_norm: float = 1.0
    kl_coef: float = 0.0

    loss_function = staticmethod(grpo_loss)
    uses = ("num_tokens", "num_seqs", "reward", "reward_mean", "reward_std", "group_size", "ref_logp")

    def check(self) -> None:
        super().check()
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(
                f"algo.clip_low must be in [0, 1) and algo.clip_high >= 0, got {self.clip_low}, {self.clip_high}"
            )
        check_choice("algo.std", self.std, STDS)
        if self.std_eps <= 0 or self.kl_coef < 0:
            raise ValueError(f"algo.std_eps must be > 0 and algo.kl_coef >= 0, got {self.std_eps} and {self.kl_coef}")
        check_loss_agg(self.loss_agg, self.loss_norm)

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0


@dataclass(frozen=True)
class DrGRPO(GRPO):
    """Dr.GRPO: GRPO without the std normalisation, with a constant normaliser (``loss_norm``) by default."""

    std: str = "none"
    loss_agg: str = "token_sum_norm"


@dataclass(frozen=True)
class DAPO(GRPO):
    """DAPO's loss: clip-higher and token-mean (dynamic sampling and overlong shaping are data-side)."""

    clip_high: float = 0.28
    loss_agg: str = "token_mean"
