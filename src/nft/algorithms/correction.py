"""Behaviour correction: importance weights for answers sampled by an engine whose log-probs differ from the trainer's.

The loss's ratio is ``pi_theta / pi_old``, with ``pi_old`` the trainer's forward of the sampling policy. The answers
were sampled by the rollout engine, ``pi_behaviour``: vLLM's kernels and dtypes give other log-probs than the trainer
for the same weights, so the samples are slightly off-policy even for ``pi_old``. The correction reweights each
counted token's loss by ``w = pi_old / pi_behaviour``:

- ``truncate``: ``min(w, cap)``, truncated importance sampling (TIS; Yao, Liu et al., "Your Efficient RL Framework
  Secretly Brings You Off-Policy RL Training", 2025, with ``cap = 2``; ms-swift's ``token_truncate``);
- ``mask``: ``w`` where ``w <= cap``, 0 beyond (masked importance sampling, MIS: Liu et al., "When Speed Kills
  Stability: Demystifying RL Collapse from the Training-Inference Mismatch", 2025; ms-swift's ``token_mask``);

per token (``level=token``), or per answer with ``w = exp(sum_t log w_t)`` (``level=sequence``) given to each of its
tokens. The weight is a constant (no gradient flows through it) that multiplies a token's loss term; the
aggregation's denominators (token and answer counts) are unchanged. ``none`` (the default) applies nothing at all, so
every algorithm's loss is then bit for bit what it is without this module.
"""

from __future__ import annotations

import torch

from nft.algorithms.aggregation import MAX_LOG_RATIO, masked_log_ratio

CORRECTIONS = ("none", "truncate", "mask")
LEVELS = ("token", "sequence")


def behaviour_weights(
    old_logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    mask: torch.Tensor,
    correction: str,
    cap: float,
    level: str = "token",
) -> torch.Tensor:
    """Importance weights [B, T] (0 on positions that do not count) for ``correction`` in (truncate, mask)."""
    counted = mask > 0
    log_weight = masked_log_ratio(old_logp.detach(), behaviour_logp, counted)
    if level == "sequence":
        log_weight = log_weight.sum(-1, keepdim=True).expand_as(log_weight)
    weight = log_weight.clamp(max=MAX_LOG_RATIO).exp()
    if correction == "truncate":
        weight = weight.clamp(max=cap)
    else:
        weight = torch.where(weight <= cap, weight, weight.new_zeros(()))
    return torch.where(counted, weight, weight.new_zeros(())).to(old_logp.dtype)
