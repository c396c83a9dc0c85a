"""Masking and aggregation shared by every loss: one place decides how per-token losses become a scalar.

Every mode is a weighted sum of per-sequence token sums, ``loss = sum_i row_weight_i * sum_t mask_it * l_it``, so a
loss can fold per-sequence factors (prompt weights, advantages) into the row weights and split itself into parts
(e.g. correct vs wrong answers) at O(B) cost.

Every mode takes optional ``num_tokens`` / ``num_seqs``: the totals of the whole optimizer step (all micro-batches,
all ranks). Passing them makes the sum of micro-batch losses equal the loss of the full batch, so gradient
accumulation gives exactly the full-batch gradient. Left as None they default to this call's own totals.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "token_sum_norm")
MAX_LOG_RATIO = 10.0  # the log-ratio is capped before ``exp`` (verl clamps at 20)


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Refuse a string setting that is not one of ``choices``, naming the config key."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")


def check_loss_agg(loss_agg: str, loss_norm: float) -> None:
    check_choice("algo.loss_agg", loss_agg, LOSS_AGGS)
    if not loss_norm > 0:
        raise ValueError(f"algo.loss_norm must be > 0, got {loss_norm}")


def row_weights(
    mask: torch.Tensor,
    loss_agg: str,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    loss_norm: float = 1.0,
) -> torch.Tensor:
    """The weight [B] of each sequence's masked token sum under ``loss_agg`` (``mask`` [B, T], 1 = counted).

    Modes:
        token_mean: sum over all tokens / number of tokens (DAPO).
        seq_mean_token_mean: mean over sequences of each sequence's token mean (GRPO as published).
        seq_mean_token_sum: mean over sequences of each sequence's token sum.
        token_sum_norm: sum over all tokens / ``loss_norm``, a constant (Dr.GRPO divides by the generation budget;
            the NFT reference code by 1000).
    Sequences with no counted token have weight 0 and do not count in ``num_seqs``.
    """
    tokens_per_seq = mask.sum(-1)
    if loss_agg == "token_mean":
        total = tokens_per_seq.sum().clamp(min=1) if num_tokens is None else num_tokens
        return torch.ones_like(tokens_per_seq) / total
    if loss_agg == "token_sum_norm":
        return torch.full_like(tokens_per_seq, 1.0 / loss_norm)
    if num_seqs is None:
        num_seqs = (tokens_per_seq > 0).sum().clamp(min=1)
    if loss_agg == "seq_mean_token_sum":
        return torch.ones_like(tokens_per_seq) / num_seqs
    if loss_agg == "seq_mean_token_mean":
        return 1.0 / (tokens_per_seq.clamp(min=1) * num_seqs)
    raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_agg: str,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    loss_norm: float = 1.0,
) -> torch.Tensor:
    """Reduce ``per_token`` [B, T] over the tokens where ``mask`` [B, T] is 1 (see ``row_weights`` for the modes)."""
    weights = row_weights(mask, loss_agg, num_tokens=num_tokens, num_seqs=num_seqs, loss_norm=loss_norm)
    return ((per_token * mask).sum(-1) * weights).sum()


def masked_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """``logp - old_logp`` where ``counted`` [B, T] (bool) is True, exactly 0 elsewhere.

    Masking the input (not only the output) keeps padding out of the arithmetic: a ``-inf`` log-prob on a padded
    position would otherwise give ``inf * 0 = nan`` in the value or the gradient.
    """
    return torch.where(counted, logp - old_logp, logp.new_zeros(()))


def capped_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """``exp(min(log_ratio, MAX_LOG_RATIO))``: a ratio that cannot overflow."""
    return log_ratio.clamp(max=MAX_LOG_RATIO).exp()


def masked_mean(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``counted`` (bool) is True; other values, even infinite ones, are ignored."""
    return torch.where(counted, values, values.new_zeros(())).sum() / counted.sum().clamp(min=1)
