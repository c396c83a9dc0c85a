"""Rollout bookkeeping: group statistics, filtering, whole-group mini-batches, token-budget micro-batches."""

from __future__ import annotations

import statistics

import pytest
import torch

from nft.algorithms import DAPO, GRPO, NFT, RFT, DrGRPO
from nft.data.batching import Sample, collate, make_mini_batches, mixed_groups, pack_micro_batches, set_group_stats
from nft.data.rewards import overlong_penalty
from nft.module import PolicyModule


def make_samples(correct_by_group: dict[int, list[float]], seed: int = 0) -> list[Sample]:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for group, corrects in correct_by_group.items():
        prompt = torch.randint(4, 260, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g)
        for c in corrects:
            length = int(torch.randint(1, 12, (1,), generator=g))
            samples.append(
                Sample(
                    group,
                    prompt,
                    torch.randint(4, 260, (length,), generator=g),
                    -torch.rand(length, generator=g),
                    c,
                    "stop",
                )
            )
    return samples


def test_group_stats_and_mixed_groups():
    samples = make_samples({0: [1, 0, 0, 1], 1: [0, 0, 0, 0], 2: [1, 1, 1, 1], 3: [0, 0, 0, 1]})
    set_group_stats(samples)
    assert [s.correct_rate for s in samples[:4]] == [0.5] * 4
    assert samples[-1].correct_rate == 0.25
    assert mixed_groups(samples) == {0, 3}


def test_micro_batches_respect_the_token_budget_and_keep_every_sample():
    samples = make_samples({g: [1, 0, 1, 0, 0] for g in range(12)})
    budget = 60
    micro = pack_micro_batches(samples, budget)
    assert sorted(id(s) for m in micro for s in m) == sorted(id(s) for s in samples)
    for m in micro:  # each distinct prompt once, each answer padded to the longest
        prompts = {tuple(s.prompt_ids.tolist()) for s in m}
        padded = len(prompts) * max(len(s.prompt_ids) for s in m) + len(m) * max(len(s.response_ids) for s in m)
        assert padded <= budget or len(m) == 1


def test_answers_of_equal_length_are_packed_with_their_group():
    """So that a group's answers share their prompt's forward: a group is split only where a micro-batch ends."""
    samples = make_samples({g: [1, 0] * 4 for g in range(6)})
    for s in samples:
        s.response_ids = s.response_ids[:1].repeat(5)
    micro = pack_micro_batches(samples, 60)
    assert len(micro) > 1
    prompt_forwards = sum(len({s.group for s in m}) for m in micro)
    assert prompt_forwards <= 6 + len(micro) - 1


def test_mini_batches_hold_whole_groups_and_carry_step_totals():
    samples = make_samples({g: [1, 0, 0] for g in range(10)})
    set_group_stats(samples)
    steps = make_mini_batches(samples, groups_per_step=4, micro_batch_tokens=40, pad_id=3, seed=0)
    assert len(steps) == 3  # 4 + 4 + 2 groups
    for step in steps:
        rows = sum(b["response_ids"].shape[0] for b in step)
        assert rows % 3 == 0 and all(b["num_seqs"] == rows for b in step)
        tokens = sum(b["response_mask"].sum() for b in step)
        assert all(b["num_tokens"] == tokens for b in step)


def test_collate_holds_each_distinct_prompt_once_and_each_answer_with_its_prompts_row():
    samples = make_samples({0: [1, 0, 0], 1: [1, 1], 2: [0]})
    samples[-1].prompt_ids = samples[0].prompt_ids.clone()  # another group, the same prompt: one row for both
    batch = collate(samples, pad_id=3)
    assert batch["prompt_ids"].shape[0] == 2 and batch["response_ids"].shape[0] == len(samples)
    for i, s in enumerate(samples):
        row = batch["prompt_index"][i]
        width = batch["prompt_ids"].shape[1]
        assert batch["prompt_ids"][row, width - len(s.prompt_ids) :].tolist() == s.prompt_ids.tolist()  # left-padded
        assert batch["prompt_mask"][row].sum() == len(s.prompt_ids)
        assert batch["prompt_mask"][row, width - len(s.prompt_ids) :].all()
        length = int(batch["response_lengths"][i])
        assert length == len(s.response_ids) and batch["response_ids"][i, :length].tolist() == s.response_ids.tolist()
        assert batch["response_mask"][i].tolist() == [1.0] * length + [0.0] * (batch["response_ids"].shape[1] - length)


@pytest.mark.parametrize(
    "algorithm",
    [
        NFT(prompt_weight="grpo"),
        NFT(ratio="sequence", loss_agg="seq_mean_token_mean"),
        NFT(loss_agg="token_sum_norm"),
        RFT(loss_agg="seq_mean_token_sum"),
        GRPO(),
        GRPO(std="sample", kl_coef=0.1, loss_agg="token_mean"),
        DrGRPO(loss_norm=32),
        DAPO(),
    ],
    ids=["nft-grpo", "nft-sequence", "nft-token_sum_norm", "rft", "grpo", "grpo-sample-kl", "dr_grpo", "dapo"],
)
def test_gradient_accumulation_over_micro_batches_equals_one_big_batch(tokenizer, tiny_model, algorithm):
    """The same step split by a small token budget gives the gradient of one full batch, through the module's own loss
    call (optional inputs, reference model). In float64, so that 1e-6 is far above rounding and far below any bug."""
    tiny_model.double()
    samples = make_samples({0: [1, 0, 0, 1], 1: [0, 1, 1, 1], 2: [1, 0, 0, 0]}, seed=2)
    for i, s in enumerate(samples):  # shaped rewards, as DAPO's overlong penalty makes them
        s.reward = s.correct - 0.1 * (i % 3)
    set_group_stats(samples)
    module = PolicyModule(tiny_model, tokenizer, algorithm)
    assert (module.reference_model is not None) == algorithm.needs_reference
    if module.reference_model is not None:  # make the reference differ from the policy, so the KL term matters
        for p in module.reference_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    gradients = []
    for budget in (10_000, 30):
        step = make_mini_batches(samples, groups_per_step=3, micro_batch_tokens=budget, pad_id=3, seed=0)[0]
        assert len(step) == 1 if budget == 10_000 else len(step) > 3
        tiny_model.zero_grad()
        for batch in step:
            # Off-policy (random "behaviour" log-probs), so the ratio is not 1 and the clamps matter.
            batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
            batch["old_logp"] = batch["behaviour_logp"]
            loss, _ = module.micro_batch_loss(batch)
            loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in tiny_model.parameters()]))
    relative_error = (gradients[1] - gradients[0]).norm() / gradients[0].norm()
    assert gradients[0].norm() > 0 and relative_error < 1e-6


def test_group_stats_of_shaped_rewards():
    samples = make_samples({0: [1, 0, 0, 1]})
    for s, penalty in zip(samples, [0.0, 0.5, 0.0, 0.25], strict=True):
        s.reward = s.correct - penalty
    set_group_stats(samples)
    rewards = [1.0, -0.5, 0.0, 0.75]
    assert all(s.reward_mean == pytest.approx(statistics.fmean(rewards)) for s in samples)
    assert all(s.reward_std == pytest.approx(statistics.pstdev(rewards)) for s in samples)
    assert all(s.group_size == 4 and s.correct_rate == 0.5 for s in samples)
    batch = collate(samples, pad_id=3)
    assert batch["reward"].tolist() == rewards and batch["group_size"].tolist() == [4.0] * 4
    assert make_samples({0: [1, 0]})[0].reward == 1.0  # unshaped by default


def test_overlong_penalty_is_dapos_soft_ramp():
    # limit 20, buffer 4: no penalty up to 16 tokens, then -1/4 per token down to -factor at the limit
    assert [overlong_penalty(n, 20, 4, 1.0) for n in (10, 16, 17, 18, 20, 25)] == [0, 0, -0.25, -0.5, -1, -1]
    assert overlong_penalty(18, 20, 4, 0.5) == -0.25
    assert overlong_penalty(20, 20, 0, 1.0) == 0.0
