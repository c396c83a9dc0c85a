"""The transformers rollout samples in the precision the update computes in (``trainer=gpu``: bf16-mixed), rehearsed
with CPU autocast: its behaviour log-probs are then closer to the update's than those of the float32 masters."""

from __future__ import annotations

import lightning as L
import torch

from nft.algorithms import NFT
from nft.data.batching import Sample, collate
from nft.module import PolicyModule
from nft.rollout import SamplingParams
from nft.rollout.attention import NAME as GROUPED_DECODING
from nft.rollout.hf import HFGenerator
from nft.rollout.integrity import mismatch_metrics, mismatch_sums

from .conftest import PolicyHandle


def bf16_mixed_module(model, tokenizer) -> PolicyModule:
    module = PolicyModule(model, tokenizer, NFT())
    module.trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return module


def sample(policy, module, tokenizer, seen: list) -> dict[str, float]:
    """Answers from ``policy`` (recording each forward's autocast and attention), and their mismatch with the
    update's log-probs (``module``, under its trainer's precision)."""
    model = module.model
    hook = model.register_forward_pre_hook(
        lambda *_: seen.append((torch.is_autocast_enabled("cpu"), model.config._attn_implementation))
    )
    prompts = tokenizer([f"What is {a}+{3 * a}?\n" for a in range(10, 18)], add_special_tokens=False)["input_ids"]
    generator = HFGenerator(max_batch_rows=64, show_progress=False)
    generator.sync(policy)
    groups = generator.generate(prompts, 4, SamplingParams(max_new_tokens=24), seed=list(range(len(prompts))))
    hook.remove()
    samples = [
        Sample(i, torch.tensor(prompts[i]), c.token_ids, c.logprobs, 0.0, c.finish_reason)
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = collate(samples, tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        logp = module.response_logprobs(batch)
    return mismatch_metrics(mismatch_sums(logp, batch["behaviour_logp"], batch["response_mask"]))


def test_the_rollout_samples_under_the_trainers_autocast_and_comes_closer_to_the_update(tiny_model, tokenizer):
    module = bf16_mixed_module(tiny_model, tokenizer)
    in_autocast, in_float32 = [], []
    ours = sample(module, module, tokenizer, in_autocast)
    masters = sample(PolicyHandle(tiny_model, tokenizer), module, tokenizer, in_float32)  # as before: float32
    assert in_autocast and all(seen == (True, "sdpa") for seen in in_autocast)  # sdpa's kernel under autocast
    assert in_float32 and all(seen == (False, GROUPED_DECODING) for seen in in_float32)  # measured on CPUs in float32
    # Measured: mean |log-prob gap| 0.00045 against 0.00102 (the rest: decoding with a cache vs one full forward).
    assert ours["rollout/mismatch/mean_abs_diff"] < 0.75 * masters["rollout/mismatch/mean_abs_diff"]
    assert ours["rollout/mismatch/kl"] < masters["rollout/mismatch/kl"]


def test_under_autocast_the_kv_cache_budget_counts_bf16(tiny_model, tokenizer):
    generator = HFGenerator(max_batch_rows=512, kv_cache_gb=1e-3, show_progress=False)
    generator.sync(PolicyHandle(tiny_model, tokenizer))
    float32_rows = generator.rows_per_batch(96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert generator.rows_per_batch(96) == 2 * float32_rows
