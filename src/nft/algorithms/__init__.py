"""Algorithms: each is a small class whose ``loss(logp, old_logp, mask, correct, correct_rate, **inputs)`` returns
``(loss, metrics)``; the training module calls it and never branches on which algorithm it is (``nft.algorithms.base``
lists the optional inputs)."""

from nft.algorithms.base import OPTIONAL_INPUTS, Algorithm
from nft.algorithms.grpo import DAPO, GRPO, DrGRPO, grpo_loss
from nft.algorithms.nft import NFT, RFT, nft_loss

__all__ = ["DAPO", "GRPO", "NFT", "OPTIONAL_INPUTS", "RFT", "Algorithm", "DrGRPO", "grpo_loss", "nft_loss"]
