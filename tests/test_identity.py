"""The paper's on-policy identity, end to end: with one optimizer step per epoch and the same seed, NFT with
``prompt_weight=grpo`` follows GRPO's parameter trajectory, and NFT with ``prompt_weight=dr_grpo`` follows Dr.GRPO's
(Chen et al., arXiv 2505.18116, Proposition 4.1 and Remark A.3), up to float rounding."""

from __future__ import annotations

import pytest
import torch

from nft.pipeline import build

from .conftest import compose_train

EPOCHS = 10
# 16 prompts x 8 answers per epoch, all in one optimizer step (strictly on-policy); no evaluation or files.
SMALL_RUN = ["debug=small", f"trainer.max_epochs={EPOCHS}", "~logger.csv"]
PAIRS = {
    "grpo": (
        ["algo=nft", "algo.prompt_weight=grpo", "algo.loss_agg=token_mean"],
        ["algo=grpo", "algo.loss_agg=token_mean"],
    ),
    "dr_grpo": (
        ["algo=nft", "algo.prompt_weight=dr_grpo", "algo.loss_agg=token_sum_norm", "algo.loss_norm=32"],
        ["algo=dr_grpo", "algo.loss_norm=32"],
    ),
}


def trained_weights(overrides: list[str], tmp_path) -> torch.Tensor:
    run = build(compose_train(SMALL_RUN + overrides, run_dir=tmp_path))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.global_step == EPOCHS  # one optimizer step per epoch, none skipped
    return torch.cat([p.detach().flatten() for p in run.module.model.parameters()])


def weight_differences(a: list[str], b: list[str], tmp_path) -> dict[str, float]:
    """Max and median |w_a - w_b| after EPOCHS epochs, and how far run a moved from the shared warmed-up start."""
    start = torch.cat(
        [p.detach().flatten() for p in build(compose_train(SMALL_RUN, tmp_path / "s")).module.parameters()]
    )
    first, second = trained_weights(a, tmp_path / "a"), trained_weights(b, tmp_path / "b")
    difference = (first - second).abs()
    return {
        "max": difference.max().item(),
        "median": difference.median().item(),
        "moved": (first - start).abs().max().item(),
    }


@pytest.mark.full
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_on_policy_nft_follows_the_rl_trajectory(name, tmp_path):
    nft_overrides, rl_overrides = PAIRS[name]
    d = weight_differences(nft_overrides, rl_overrides, tmp_path)
    print(f"NFT vs {name} after {EPOCHS} epochs: max |dw| {d['max']:.3g}, median {d['median']:.3g}")
    assert d["moved"] > 1e-3  # training moved the weights (10 Adam steps at lr 3e-4) ...
    # ... and both algorithms moved them alike: rounding-level differences (Adam can amplify a rounding error in a
    # coordinate whose gradient is ~0 up to a fraction of lr, hence the looser bound on the max).
    assert d["median"] < 1e-7 and d["max"] < 1e-4


@pytest.mark.full
def test_the_identity_needs_the_matching_prompt_weight(tmp_path):
    """The control: uniform prompt weights are another algorithm, and its trajectory separates from GRPO's."""
    d = weight_differences(
        ["algo=nft", "algo.prompt_weight=none", "algo.loss_agg=token_mean"], PAIRS["grpo"][1], tmp_path
    )
    assert d["max"] > 1e-3 and d["median"] > 1e-5
