"""Supervised warm-up of the tiny model: gives it a partial, non-zero accuracy so online training has both right and
wrong answers to learn from.

Accuracy after a fixed number of steps is steep and seed-dependent, so the warm-up is gated: every ``check_every``
steps it samples (temperature 1) answers to ``check_prompts`` training prompts and stops once their accuracy reaches
``target_accuracy``, or at ``max_steps``.
"""

from __future__ import annotations

import logging
import random
import time
from types import SimpleNamespace

import torch

from nft.data.prompts import PromptTemplate
from nft.rollout.base import SamplingParams
from nft.rollout.hf import HFGenerator
from nft.verify.grader import grade

log = logging.getLogger(__name__)


def supervised_batch(rows: list[dict], prompt: PromptTemplate, tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded prompt + solution + EOS, with labels only on the solution and EOS."""
    prompts = prompt.encode([r["problem"] for r in rows], tokenizer)
    solutions = tokenizer([r["solution"] for r in rows], add_special_tokens=False)["input_ids"]
    sequences = [p + s + [tokenizer.eos_token_id] for p, s in zip(prompts, solutions, strict=True)]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, seq) in enumerate(zip(prompts, sequences, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(seq[len(p) :])
        attention_mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def sampled_accuracy(
    model, tokenizer, rows: list[dict], prompt: PromptTemplate, max_new_tokens: int, seed: int
) -> float:
    """Fraction of ``rows`` answered right with one answer each, sampled at temperature 1."""
    generator = HFGenerator(show_progress=False)
    generator.sync(SimpleNamespace(model=model, tokenizer=tokenizer))
    completions = generator.generate(
        prompt.encode([r["problem"] for r in rows], tokenizer), 1, SamplingParams(max_new_tokens=max_new_tokens), seed
    )
    texts = tokenizer.batch_decode([group[0].token_ids for group in completions], skip_special_tokens=True)
    return sum(grade(t, r["answer"], strict=True) for t, r in zip(texts, rows, strict=True)) / len(rows)


def warm_up(
    model,
    tokenizer,
    rows: list[dict],
    prompt: PromptTemplate,
    *,
    target_accuracy: float = 0.2,
    check_every: int = 25,
    check_prompts: int = 256,
    max_steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_new_tokens: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Train on worked solutions until sampled accuracy reaches ``target_accuracy``. Returns steps and accuracy."""
    rng = random.Random(seed)
    check_rows = rng.sample(rows, min(check_prompts, len(rows)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    start, accuracy, step = time.perf_counter(), 0.0, 0
    while step < max_steps:
        batch = supervised_batch(rng.sample(rows, batch_size), prompt, tokenizer)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % check_every == 0 or step == max_steps:
            accuracy = sampled_accuracy(model, tokenizer, check_rows, prompt, max_new_tokens, seed + step)
            log.info(
                "warm-up step %d: loss %.3f, sampled accuracy %.3f (%.0fs)",
                step,
                loss.item(),
                accuracy,
                time.perf_counter() - start,
            )
            if accuracy >= target_accuracy:
                break
    model.train()
    return {"steps": step, "accuracy": accuracy, "seconds": time.perf_counter() - start}
