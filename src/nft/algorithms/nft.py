"""Negative-aware Fine-Tuning (NFT): "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning",
Chen et al., arXiv 2505.18116. RFT (rejection-sampling fine-tuning) is NFT with the wrong answers left out.

For response tokens with ratio ``R = pi_theta / pi_old`` and the prompt's correct rate ``r``:

    correct answers:  -log max_sg(R, pos_ratio_floor)
    wrong answers:    -log max_sg((1 - r R) / (1 - r), neg_ratio_floor)      (the implicit negative policy)
    each weighted by  w(r) = 1 | 1 - r (``dr_grpo``) | sqrt((1 - r) / r) (``grpo``); wrong ones also by neg_weight

``max_sg`` clamps the value but passes the gradient straight through (the reference code's ``clamp_preserve_grad``),
``r`` is clipped to ``correct_rate_clip`` and the log-ratio is capped at 10 before ``exp``. At ``R = 1`` the gradient
is ``-w (c - r) / (1 - r) * grad log pi``: with ``w = sqrt((1 - r) / r)`` that is GRPO's (population std), with
``w = 1 - r`` Dr.GRPO's (tests/test_algorithms.py proves both).

Both answer kinds share one form, ``-log max_sg(offset + slope * R, floor)`` with per-sequence offset, slope and floor
(0, 1, pos_ratio_floor for correct answers; 1 / (1 - r), -r / (1 - r), neg_ratio_floor for wrong ones), so each token
costs one ``addcmul``, one clamp and one ``log`` whichever kind it is.

``ratio=sequence`` uses one ratio per answer, ``exp(min(sum_t log R_t, 10))``. The answer's loss is then spread evenly
over its counted tokens before aggregation, so a sequence's token sum is its loss: ``seq_mean_token_sum`` averages
sequence losses, and for correct answers (a sum of token log-ratios) every ``loss_agg`` gives the token mode's value.

Departures from the reference code (NVlabs/NFT ``dp_actor.py``), each a default that a config can restore:
- ``loss_agg`` defaults to ``token_mean``. The reference sums each GPU's token losses and divides by 1000, then FSDP
  averages the gradients over the W data-parallel ranks: an effective sum / (1000 W). Ranks here sum their gradients
  (``nft.distributed``), so the reference is ``loss_agg: token_sum_norm`` with ``loss_norm: 1000 W`` (what
  ``experiment=paper_*`` sets, ``tests/test_recipes.py`` checks it for W = 1 and 4). Its ``ratio=sequence`` sums the
  sequence losses on each GPU: ``token_sum_norm`` with ``loss_norm: W``.
- The default prompt weight is ``dr_grpo`` (1 - r), as the reference's released 7B/32B scripts (``normalize=1``).
- RFT keeps ``prompt_weight: none`` (plain likelihood on correct answers, the paper's definition of RFT).
- Masked (padding) tokens are zeroed before any arithmetic, so ``-inf`` log-probs there cannot make a NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nft.algorithms.aggregation import (
    capped_ratio,
    check_choice,
    check_loss_agg,
    masked_log_ratio,
    masked_mean,
    row_weights,
)
from nft.algorithms.base import Algorithm

PROMPT_WEIGHTS = {  # w(r) of the (already clipped) correct rate
    "none": torch.ones_like,
    "dr_grpo": lambda rate: 1.0 - rate,
    "grpo": lambda rate: ((1.0 - rate) / rate).sqrt(),
}
RATIOS = ("token", "sequence")


class LogClampStraightThrough(torch.autograd.Function):
    """``log(max(x, floor))`` in value; gradient ``1 / max(x, floor)`` even where the floor is active.

    The reference code's ``log(clamp_preserve_grad(x, floor))``, as one function: a clamp and a log forward, one
    division backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
        clamped = x.clamp(min=floor)
        ctx.save_for_backward(clamped)
        return clamped.log()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (clamped,) = ctx.saved_tensors
        return grad / clamped, None


def nft_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    correct_rate: torch.Tensor,
    settings: NFT,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    token_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NFT loss. Shapes: ``logp``, ``old_logp``, ``mask``, ``token_weight`` [B, T]; ``correct``, ``correct_rate`` [B].

    ``token_weight`` (the behaviour correction, ``nft.algorithms.correction``) multiplies each token's loss term; in
    sequence mode the answer's loss, spread evenly over its tokens, is weighted token by token.

    Returns (scalar loss, metrics): ``ratio`` (mean R over counted tokens, or answers in sequence mode),
    ``neg_clamped_frac`` (wrong-answer tokens, or answers, whose implicit negative ratio hit its floor),
    ``pos_loss`` and ``neg_loss`` (the correct- and wrong-answer parts; they sum to the loss), ``entropy`` (mean
    negative log-prob of the sampled tokens, an entropy proxy).
    """
    counted_tokens = mask > 0
    counted = counted_tokens  # what a ratio is taken over: tokens, or (sequence mode) answers
    mask = mask.to(logp.dtype)
    correct = correct.to(logp.dtype)
    wrong = 1.0 - correct
    rate = correct_rate.to(logp.dtype).clamp(*settings.correct_rate_clip)
    log_ratio = masked_log_ratio(logp, old_logp, counted_tokens)
    if settings.ratio == "sequence":
        counted = counted.any(-1, keepdim=True)
        log_ratio = log_ratio.sum(-1, keepdim=True)
    ratio_value = capped_ratio(log_ratio)

    offset = wrong / (1.0 - rate)
    slope = correct - wrong * rate / (1.0 - rate)
    floor = (correct * settings.pos_ratio_floor + wrong * settings.neg_ratio_floor)[:, None]
    implicit = torch.addcmul(offset[:, None], slope[:, None], ratio_value)  # R, or (1 - r R) / (1 - r)
    log_term = LogClampStraightThrough.apply(implicit, floor)
    if settings.ratio == "token":
        sums = (log_term * (mask if token_weight is None else mask * token_weight)).sum(-1)
    elif token_weight is None:  # one term per answer = the token sum of its evenly spread loss (0 if nothing counts)
        sums = log_term.squeeze(-1) * counted.squeeze(-1)
    else:  # the evenly spread loss, weighted token by token: the answer's loss times its mean weight
        sums = log_term.squeeze(-1) * (token_weight * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    kind_weight = correct + wrong * settings.neg_weight
    weights = -PROMPT_WEIGHTS[settings.prompt_weight](rate) * kind_weight
    aggregation = row_weights(
        mask, settings.loss_agg, num_tokens=num_tokens, num_seqs=num_seqs, loss_norm=settings.loss_norm
    )
    per_answer = weights * aggregation * sums
    loss = per_answer.sum()

    with torch.no_grad():
        pos_loss = (per_answer * correct).sum()
        clamped = ((implicit < floor) & counted).sum(-1)
        metrics = {
            "ratio": masked_mean(ratio_value, counted),
            "neg_clamped_frac": (clamped * wrong).sum() / (counted.sum(-1) * wrong).sum().clamp(min=1),
            "pos_loss": pos_loss,
            "neg_loss": loss.detach() - pos_loss,
            "entropy": masked_mean(-logp, counted_tokens),
        }
    return loss, metrics


@dataclass(frozen=True)
class NFT(Algorithm):
    """NFT's settings (``conf/algo/nft.yaml`` documents each); ``loss`` follows the algorithms contract.

    NFT learns from binary correctness: shaped rewards, group statistics and ``ref_logp`` are not used.
    """

    neg_weight: float = 1.0
    prompt_weight: str = "dr_grpo"
    ratio: str = "token"
    neg_ratio_floor: float = 1.0
    pos_ratio_floor: float = 0.0
    correct_rate_clip: tuple[float, float] = (0.02, 0.98)
    loss_agg: str = "token_mean"
    loss_norm: float = 1000.0

    loss_function = staticmethod(nft_loss)
    uses = ("num_tokens", "num_seqs")

    def check(self) -> None:
        super().check()
        check_choice("algo.prompt_weight", self.prompt_weight, PROMPT_WEIGHTS)
        check_choice("algo.ratio", self.ratio, RATIOS)
        check_loss_agg(self.loss_agg, self.loss_norm)
        if self.neg_ratio_floor <= 0 or self.pos_ratio_floor < 0:
            raise ValueError(
                "algo.neg_ratio_floor must be > 0 and algo.pos_ratio_floor >= 0 (they floor a value whose log is "
                f"taken), got {self.neg_ratio_floor} and {self.pos_ratio_floor}"
            )
        if self.neg_weight < 0:
            raise ValueError(f"algo.neg_weight must be >= 0 (1 = NFT, 0 = RFT), got {self.neg_weight}")
        low, high = self.correct_rate_clip
        if not 0 < low <= high < 1:
            raise ValueError(f"algo.correct_rate_clip must satisfy 0 < low <= high < 1, got {self.correct_rate_clip}")


@dataclass(frozen=True)
class RFT(NFT):
    """Rejection-sampling fine-tuning: likelihood of the correct answers only (NFT with ``neg_weight = 0``)."""

    neg_weight: float = 0.0
    prompt_weight: str = "none"
