"""The online data module with the real tiny model, generation and verifier: masking, old log-probs, refills."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from nft.algorithms import NFT
from nft.data import BatchShape, DynamicSampling, LossInputs, OnlineMathDataModule, PromptTemplate
from nft.module import PolicyModule
from nft.rollout import SamplingParams
from nft.rollout.hf import HFGenerator
from nft.verify import MathVerifier

from .conftest import ROOT, PolicyHandle


def toy_datamodule(
    max_new_tokens: int = 12, batch: dict | None = None, dynamic_sampling: dict | None = None, **loss_inputs
) -> OnlineMathDataModule:
    """The toy problems, by default 4 prompts an epoch, answers of up to 12 tokens, no group filtering."""
    return OnlineMathDataModule(
        str(ROOT / "data" / "toy" / "train.jsonl"),
        PromptTemplate(style="plain", user="{problem}\n"),
        HFGenerator(max_batch_rows=64, show_progress=False),
        MathVerifier(num_workers=1),
        SamplingParams(max_new_tokens=max_new_tokens),
        batch=BatchShape(**{"prompts_per_epoch": 4, **(batch or {})}),
        dynamic_sampling=DynamicSampling(**{"filter_groups": False, **(dynamic_sampling or {})}),
        loss_inputs=LossInputs(**loss_inputs),
    )


@pytest.mark.parametrize("mask_truncated", [True, False])
def test_truncated_answers_are_masked_out_of_the_loss_when_configured(tokenizer, tiny_model, mask_truncated):
    tiny_model.generation_config.eos_token_id = list(range(30))  # about half the answers stop within 12 tokens
    datamodule = toy_datamodule(batch=dict(samples_per_prompt=8, groups_per_step=4), mask_truncated=mask_truncated)
    datamodule.connect(PolicyHandle(tiny_model, tokenizer))
    datamodule.setup()
    [micro_batches] = datamodule.rollout(epoch=0)
    assert 0 < datamodule.epoch_stats["rollout/truncated_frac"] < 1
    weights = list(tiny_model.parameters())  # the weight-sync proof's reach, logged each epoch: all of them
    assert datamodule.epoch_stats["rollout/sync_tensors_compared"] == len(weights)
    assert datamodule.epoch_stats["rollout/sync_elements_compared"] == sum(p.numel() for p in weights)
    counted = 0.0
    for batch in micro_batches:
        width = batch["response_mask"].shape[1]
        lengths = batch["response_lengths"]
        response = (torch.arange(width)[None] < lengths[:, None]).float()
        last = batch["response_ids"].gather(1, (lengths - 1)[:, None]).squeeze(1)
        truncated = (lengths == 12) & (last >= 30)
        expected = response * (~truncated[:, None]).float() if mask_truncated else response
        assert torch.equal(batch["response_mask"], expected)
        counted += float(expected.sum())
        # Out of the loss: no gradient reaches the log-probs of a masked answer.
        logp = torch.zeros(batch["response_mask"].shape, requires_grad=True)
        loss, _ = NFT().loss(
            logp,
            logp.detach(),
            batch["response_mask"],
            batch["correct"],
            batch["correct_rate"],
            num_tokens=batch["num_tokens"],
            num_seqs=batch["num_seqs"],
        )
        loss.backward()
        assert (logp.grad[truncated].abs().sum() == 0) == mask_truncated
    assert float(micro_batches[0]["num_tokens"]) == counted  # the token mean's denominator counts only kept tokens


@pytest.mark.parametrize("old_logp", ["recompute", "behaviour"])
def test_old_logp_of_a_multi_step_epoch_is_recomputed_or_taken_from_generation(tokenizer, tiny_model, old_logp):
    datamodule = toy_datamodule(batch=dict(samples_per_prompt=4, groups_per_step=2), old_logp=old_logp)
    datamodule.connect(PolicyModule(tiny_model, tokenizer, NFT()))
    datamodule.setup()
    steps = datamodule.rollout(epoch=0)
    assert len(steps) == 2
    for batch in (b for micro_batches in steps for b in micro_batches):
        mask = batch["response_mask"].bool()
        if old_logp == "behaviour":
            assert batch["old_logp"] is batch["behaviour_logp"]
        else:  # a forward of the training model: the sampling policy's log-probs to float precision
            assert batch["old_logp"] is not batch["behaviour_logp"]
            torch.testing.assert_close(batch["old_logp"][mask], batch["behaviour_logp"][mask], atol=2e-5, rtol=1e-4)


def refill_rounds():
    """One epoch's generation rounds of the warmed-up tiny policy: 16 groups wanted, rounds of 12 prompts, up to 4.
    Returns the rounds and the mixed groups among this rank's answers."""
    from hydra.utils import instantiate

    from nft.data.batching import mixed_groups

    from .conftest import compose_train

    policy = instantiate(compose_train([]).model)
    datamodule = toy_datamodule(
        32,
        batch=dict(samples_per_prompt=4, prompts_per_epoch=16),
        dynamic_sampling=dict(max_gen_rounds=4, round_prompts=12, filter_groups=True),
    )
    datamodule.connect(policy)
    datamodule.setup()
    datamodule.generator.sync(policy)
    rounds = datamodule._generation_rounds(epoch=0, timings={"time/generate": 0.0, "time/verify": 0.0})
    return rounds, mixed_groups(rounds.samples)


@pytest.mark.full
def test_refill_rounds_keep_the_first_mixed_groups_in_draw_order_on_one_and_two_ranks(tmp_path):
    rounds, mixed = refill_rounds()
    assert rounds.count >= 2 and len(rounds.drawn) == 12 * rounds.count  # a real refill
    assert len(set(rounds.drawn)) == len(rounds.drawn)  # no prompt drawn twice
    assert rounds.kept_groups == [g for g in rounds.drawn if g in mixed][:16]  # draw order, not index order
    assert rounds.kept_groups != sorted(rounds.kept_groups)

    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "dist_refill.py"), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # each rank generated half the prompts; together they keep what one process keeps
        on_two = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert on_two["drawn"] == rounds.drawn and on_two["kept"] == rounds.kept_groups
        assert on_two["mixed"] == sorted(mixed)
