"""How far the policy has moved from the one that sampled, measured on the sampled tokens, for every algorithm.

With R = pi(y_t) / pi_old(y_t) on tokens sampled from pi_old, the mean of R is 1 in expectation however far the policy
moves, so it says nothing about off-policyness. What does:

- ``move_abs``: mean |R - 1|;
- ``move_kl``: the k3 estimate of KL(pi_old || pi), mean of (R - 1) - log R (Schulman 2020, "Approximating KL
  divergence"): non-negative for every token, unbiased for samples from pi_old;
- ``move_far_frac``: the fraction of tokens with |log R| > ``FAR_LOG_RATIO`` (a ratio outside [0.82, 1.22]).

GRPO-type losses add ``clip_frac`` (tokens whose ratio the clip held). All are means over counted tokens of the
micro-batch; the training module logs them as ``train/<name>``.
"""

from __future__ import annotations

import torch

from nft.algorithms.aggregation import MAX_LOG_RATIO, masked_log_ratio, masked_mean

FAR_LOG_RATIO = 0.2


@torch.no_grad()
def policy_movement(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``move_abs``, ``move_kl`` and ``move_far_frac`` over the tokens where ``mask`` [B, T] is non-zero."""
    counted = mask > 0
    log_ratio = masked_log_ratio(logp.detach().float(), old_logp.float(), counted).clamp(max=MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    return {
        "move_abs": masked_mean((ratio - 1.0).abs(), counted),
        "move_kl": masked_mean(ratio - 1.0 - log_ratio, counted),
        "move_far_frac": masked_mean((log_ratio.abs() > FAR_LOG_RATIO).float(), counted),
    }
