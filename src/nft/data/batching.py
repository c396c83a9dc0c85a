"""Rollout bookkeeping: group statistics, group filtering, and mini-/micro-batches of whole groups.

A mini-batch (one optimizer step) holds ``groups_per_step`` whole groups, so a group's answers are always updated
together. Inside it, samples are sorted by length and packed into micro-batches under a budget of padded tokens per
forward (each distinct prompt counted once: ``nft.shared_prompt``); each micro-batch carries the mini-batch's totals
(``num_tokens``, ``num_seqs``) so that accumulating micro-batch losses gives exactly the mini-batch loss.

With several ranks, each holds the samples of its own groups; the plan of which groups make each step and the step's
totals come from every rank's ``group_totals``, so each rank's micro-batches carry the totals of the whole step.
``pad_micro_batches`` gives every rank the same number of micro-batches per step (a sharded model's forward is a
collective), adding empty ones that count for nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Sample:
    """One answer with everything the update needs."""

    group: int
    prompt_ids: torch.Tensor  # [P] long
    response_ids: torch.Tensor  # [T] long
    behaviour_logp: torch.Tensor  # [T] float
    correct: float
    finish_reason: str
    correct_rate: float = 0.0
    loss_mask: bool = True  # False drops the answer from the loss (e.g. truncated answers when masked)
    reward: float | None = None  # the shaped reward (``nft.data.rewards``); None: ``correct``
    reward_mean: float = 0.0  # the group's mean and population std of ``reward``, and its size (set_group_stats)
    reward_std: float = 0.0
    group_size: int = 0
    text: str = ""  # the decoded answer (for the loggers)

    def __post_init__(self) -> None:
        if self.reward is None:
            self.reward = float(self.correct)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def set_group_stats(samples: list[Sample]) -> None:
    """Set each sample's ``correct_rate`` (mean correctness of its group), the group's reward mean and population
    std, and the group size."""
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    for members in groups.values():
        size = len(members)
        correct_rate = sum(s.correct for s in members) / size
        mean = sum(s.reward for s in members) / size
        std = (sum((s.reward - mean) ** 2 for s in members) / size) ** 0.5
        for s in members:
            s.correct_rate, s.reward_mean, s.reward_std, s.group_size = correct_rate, mean, std, size


def mixed_groups(samples: list[Sample]) -> set[int]:
    """Groups with at least one right and one wrong answer (the only ones that carry a learning signal)."""
    return {s.group for s in samples if 0.0 < s.correct_rate < 1.0}


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a micro-batch: each distinct prompt once (``prompt_ids`` [u, P], left-padded) and each answer
    (``response_ids`` [b, T], right-padded) with the row of its prompt (``prompt_index`` [b]), the layout of
    ``nft.shared_prompt``."""
    prompts: dict[tuple[int, ...], int] = {}  # a prompt's tokens -> its row
    prompt_index = [prompts.setdefault(tuple(s.prompt_ids.tolist()), len(prompts)) for s in samples]
    prompt_width = max(map(len, prompts))
    response_width = max(len(s.response_ids) for s in samples)
    b = len(samples)
    prompt_ids = torch.full((len(prompts), prompt_width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), prompt_width), dtype=torch.long)
    for row, tokens in enumerate(prompts):
        prompt_ids[row, prompt_width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
        prompt_mask[row, prompt_width - len(tokens) :] = 1
    response_ids = torch.full((b, response_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((b, response_width), dtype=torch.float32)
    behaviour_logp = torch.zeros((b, response_width), dtype=torch.float32)
    for i, s in enumerate(samples):
        t = len(s.response_ids)
        response_ids[i, :t] = s.response_ids
        response_mask[i, :t] = float(s.loss_mask)
        behaviour_logp[i, :t] = s.behaviour_logp
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "prompt_index": torch.tensor(prompt_index, dtype=torch.long),
        "response_ids": response_ids,
        "response_lengths": torch.tensor([len(s.response_ids) for s in samples], dtype=torch.long),
        "response_mask": response_mask,
        "behaviour_logp": behaviour_logp,
        "correct": torch.tensor([s.correct for s in samples], dtype=torch.float32),
        "correct_rate": torch.tensor([s.correct_rate for s in samples], dtype=torch.float32),
        "reward": torch.tensor([s.reward for s in samples], dtype=torch.float32),
        "reward_mean": torch.tensor([s.reward_mean for s in samples], dtype=torch.float32),
        "reward_std": torch.tensor([s.reward_std for s in samples], dtype=torch.float32),
        "group_size": torch.tensor([s.group_size for s in samples], dtype=torch.float32),
    }


def forward_tokens(prompts: int, prompt_width: int, answers: int, response_width: int) -> int:
    """Padded tokens in the forward of a micro-batch: each distinct prompt once, each answer once."""
    return prompts * prompt_width + answers * response_width


def pack_micro_batches(samples: list[Sample], micro_batch_tokens: int) -> list[list[Sample]]:
    """Sort by length (longest first; a group's answers of equal length next to each other, so that they share their
    prompt's forward) and cut into micro-batches whose padded forward stays within the budget."""
    ordered = sorted(samples, key=lambda s: (len(s.response_ids), len(s.prompt_ids), s.group), reverse=True)
    micro_batches: list[list[Sample]] = []
    current: list[Sample] = []
    groups: set[int] = set()
    prompt_width = response_width = 0
    for s in ordered:
        new_prompt, new_response = max(prompt_width, len(s.prompt_ids)), max(response_width, len(s.response_ids))
        new_groups = len(groups | {s.group})
        if current and forward_tokens(new_groups, new_prompt, len(current) + 1, new_response) > micro_batch_tokens:
            micro_batches.append(current)
            current, groups, new_prompt, new_response = [], set(), len(s.prompt_ids), len(s.response_ids)
        current.append(s)
        groups.add(s.group)
        prompt_width, response_width = new_prompt, new_response
    if current:
        micro_batches.append(current)
    return micro_batches


def group_totals(samples: list[Sample]) -> dict[int, tuple[int, int]]:
    """Per group: (response tokens, answers) that count in the loss."""
    totals: dict[int, tuple[int, int]] = {}
    for s in samples:
        tokens, seqs = totals.get(s.group, (0, 0))
        totals[s.group] = (tokens + int(s.loss_mask) * len(s.response_ids), seqs + int(s.loss_mask))
    return totals


def make_mini_batches(
    samples: list[Sample],
    groups_per_step: int,
    micro_batch_tokens: int,
    pad_id: int,
    seed: int,
    totals: dict[int, tuple[int, int]] | None = None,
) -> list[list[dict[str, torch.Tensor]]]:
    """Shuffle groups (seeded), take ``groups_per_step`` at a time, and collate each step's micro-batches.

    ``totals`` (``group_totals`` of every rank's samples, merged) makes the plan and the step totals global; by default
    they are those of ``samples``. A step holding none of ``samples`` (another rank's groups) has no micro-batch.
    """
    totals = group_totals(samples) if totals is None else totals
    by_group: dict[int, list[Sample]] = {}
    for s in samples:
        by_group.setdefault(s.group, []).append(s)
    groups = sorted(totals)
    random.Random(seed).shuffle(groups)
    steps = []
    for start in range(0, len(groups), groups_per_step):
        step_groups = groups[start : start + groups_per_step]
        step_samples = [s for g in step_groups for s in by_group.get(g, [])]
        num_tokens = torch.tensor(max(float(sum(totals[g][0] for g in step_groups)), 1.0))
        num_seqs = torch.tensor(max(float(sum(totals[g][1] for g in step_groups)), 1.0))
        micro_batches = []
        for micro in pack_micro_batches(step_samples, micro_batch_tokens) if step_samples else []:
            batch = collate(micro, pad_id)
            batch["num_tokens"], batch["num_seqs"] = num_tokens, num_seqs
            micro_batches.append(batch)
        steps.append(micro_batches)
    return steps


def pad_micro_batches(steps: list[list[dict[str, torch.Tensor]]], counts: list[int], pad_id: int) -> None:
    """Append empty micro-batches so that step i has ``counts[i]`` of them (every rank: the most any rank has)."""
    for micro_batches, count in zip(steps, counts, strict=True):
        while len(micro_batches) < count:
            micro_batches.append(padding_micro_batch(pad_id))


def padding_micro_batch(pad_id: int) -> dict[str, torch.Tensor]:
    """One pad token answering one pad token, with nothing counted: zero loss and zero gradient, one forward."""
    empty = Sample(-1, torch.tensor([pad_id]), torch.tensor([pad_id]), torch.zeros(1), 0.0, "length", 0.5, False)
    batch = collate([empty], pad_id)
    batch.update(num_tokens=torch.tensor(1.0), num_seqs=torch.tensor(1.0), padding=torch.tensor(True))
    return batch


def is_padding(batch: dict[str, torch.Tensor]) -> bool:
    return "padding" in batch
