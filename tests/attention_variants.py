"""Model configs that change attention, and the two checks each must pass: the shared-prompt forward against one
forward per answer (log-probs and gradients), and the transformers rollout's behaviour log-probs against the trainer's.
Used by ``test_attention_variants`` (CPU, float64/float32) and ``test_gpu`` (CUDA, the attention implementations
installed there)."""

from __future__ import annotations

import torch
from transformers import Qwen2ForCausalLM

from nft.algorithms import NFT
from nft.data.batching import Sample, collate
from nft.module import PolicyModule
from nft.rollout import SamplingParams
from nft.rollout.hf import HFGenerator
from nft.toy import build_tiny_model

from .conftest import PolicyHandle

ROPE = 10_000.0
# Each one against the tiny model's own (4 heads sharing 2 key/value heads, plain RoPE, full attention), small enough
# that the windows and scalings act on the test's prompts (5-12 tokens) and answers (up to 16).
VARIANTS = {
    "one key/value head": dict(num_key_value_heads=1),
    "a key/value head per head": dict(num_key_value_heads=4),
    "linear RoPE scaling": dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": ROPE}),
    "YaRN RoPE scaling": dict(
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": ROPE, "original_max_position_embeddings": 16}
    ),
    "sliding window of 6 on the second layer": dict(use_sliding_window=True, sliding_window=6, max_window_layers=1),
}


def variant_model(tokenizer, variant: str | None, attn_implementation: str = "sdpa") -> Qwen2ForCausalLM:
    """The tiny model at the variants' size, with ``variant``'s settings (none: the tiny model's own attention)."""
    return build_tiny_model(
        tokenizer,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=64,
        attn_implementation=attn_implementation,
        **(VARIANTS[variant] if variant else {}),
    )


def mixed_samples(device="cpu") -> list[Sample]:
    """Prompts of three lengths (so left padding), answers of several (one of a single token), two answers a prompt."""
    g = torch.Generator().manual_seed(0)
    samples = []
    for group, (prompt_length, answer_lengths) in enumerate([(9, (7, 16)), (5, (1, 12)), (12, (4, 9))]):
        prompt = torch.randint(4, 200, (prompt_length,), generator=g)
        for t in answer_lengths:
            response = torch.randint(4, 200, (t,), generator=g)
            samples.append(Sample(group, prompt, response, torch.zeros(t), float(t % 2), "stop"))
    return samples


def shared_prompt_error(model, tokenizer, device="cpu") -> tuple[float, float]:
    """(max |log-prob difference|, relative gradient difference) between ``nft.shared_prompt`` over a padded
    micro-batch and one unpadded forward per answer."""
    samples = mixed_samples()
    batch = {k: v.to(device) for k, v in collate(samples, pad_id=tokenizer.pad_token_id).items()}
    module = PolicyModule(model.train(), tokenizer, NFT())
    logp = module.response_logprobs(batch)
    shared = [logp[i, : len(s.response_ids)] for i, s in enumerate(samples)]
    shared_grads = _gradients(model, shared)
    naive = []
    for s in samples:
        ids = torch.cat([s.prompt_ids, s.response_ids])[None].to(device)
        logits = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # as the trainer
        naive.append(logits.log_softmax(-1).gather(-1, s.response_ids[:, None].to(device)).squeeze(-1))
    naive_grads = _gradients(model, naive)
    error = max((a.double() - b.double()).abs().max().item() for a, b in zip(shared, naive, strict=True))
    return error, ((shared_grads - naive_grads).norm() / naive_grads.norm()).item()


def _gradients(model, logps: list[torch.Tensor]) -> torch.Tensor:
    """The gradient of a loss that weighs every token differently (a misrouted gradient shows)."""
    sum((lp * torch.arange(1, len(lp) + 1, device=lp.device) * (i + 1)).sum() for i, lp in enumerate(logps)).backward()
    grads = torch.cat([p.grad.flatten().double() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads


def rollout_error(model, tokenizer, device="cpu") -> float:
    """Max |behaviour log-prob - trainer log-prob| over answers the transformers rollout samples (64 tokens: past the
    windows and the scalings' original lengths)."""
    prompts = tokenizer(["What is 12+30?\n", "What is 7+8? Think.\n", "Add 45 and 54.\n"], add_special_tokens=False)
    prompts = prompts["input_ids"]
    generator = HFGenerator(max_batch_rows=8, show_progress=False)
    generator.sync(PolicyHandle(model, tokenizer))
    groups = generator.generate(prompts, 2, SamplingParams(max_new_tokens=64), seed=[1, 2, 3])
    samples = [
        Sample(i, torch.tensor(prompts[i]), c.token_ids, c.logprobs, 0.0, c.finish_reason)
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = {k: v.to(device) for k, v in collate(samples, tokenizer.pad_token_id).items()}
    with torch.no_grad():
        logp = PolicyModule(model.eval(), tokenizer, NFT()).response_logprobs(batch)
    mask = batch["response_mask"].bool()
    return (logp[mask] - batch["behaviour_logp"][mask]).abs().max().item()
