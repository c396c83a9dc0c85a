"""The memory plan's activation, weight-copy and logit terms against the bytes autograd saves in one update
micro-batch (``torch.autograd.graph.saved_tensors_hooks``), for the tiny model and a mid-size random Qwen2, in
float32, under bf16 autocast and with bf16 weights (FSDP2's ``param_dtype``), through the shared-prompt forward."""

from __future__ import annotations

import collections

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from nft.plan import Architecture, activation_bytes
from nft.shared_prompt import response_logits

# (architecture, prompts, prompt tokens, answers per prompt, answer tokens): no activation shares a weight's shape
TINY = (Architecture(128, 512, 4, 4, 2, 260, True), 2, 24, 8, 44)
MID = (Architecture(384, 1024, 2, 6, 2, 8192, False), 1, 48, 4, 70)


def saved_bytes(arch: Architecture, regime: str, prompts: int, prompt: int, answers: int, response: int):
    """Bytes saved for backward by the decoder layers, by autocast's weight casts, and after the model (the
    log-softmax), each storage once; parameters and the micro-batch's own tensors excluded."""
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config)
    if regime == "bf16 weights":
        model = model.to(torch.bfloat16)
    rows = prompts * answers
    batch = {
        "prompt_ids": torch.randint(arch.vocab_size, (prompts, prompt)),
        "prompt_mask": torch.ones(prompts, prompt, dtype=torch.long),
        "prompt_index": torch.arange(prompts).repeat_interleave(answers),
        "response_ids": torch.randint(arch.vocab_size, (rows, response)),
        "response_lengths": torch.full((rows,), response),
    }
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inputs = {t.untyped_storage().data_ptr() for t in batch.values()}  # the micro-batch itself: no new memory
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape[::-1]) for p in model.parameters()}
    where, seen = ["outside"], {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            kind = where[0]
            if storage.data_ptr() in parameters:
                kind = "parameter"
            elif storage.data_ptr() in inputs:
                kind = "input"
            elif regime == "autocast" and tensor.dtype == torch.bfloat16 and tuple(tensor.shape) in weight_shapes:
                kind = "weight copies"
            seen[storage.data_ptr()] = (kind, storage.nbytes())
        return tensor

    for layer in model.model.layers:
        layer.register_forward_pre_hook(lambda *_: where.__setitem__(0, "layers"))
    model.model.norm.register_forward_pre_hook(lambda *_: where.__setitem__(0, "head"))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=regime == "autocast"):
            logits = response_logits(model, batch)
        where[0] = "logits"  # as nft.module.NFTModule.response_logprobs
        logits = logits.float()
        logits.gather(-1, batch["response_ids"][..., None]).squeeze(-1) - logits.logsumexp(-1)
    totals = collections.Counter()
    for kind, size in seen.values():
        totals[kind] += size
    # what autocast casts: every weight matrix it multiplies (the head's, tied or not; not the embedding lookup)
    matrices = [p for name, p in model.named_parameters() if p.ndim == 2 and "embed_tokens" not in name]
    totals["weight matrices"] = sum(p.numel() for p in matrices) + (
        arch.tie_word_embeddings and model.lm_head.weight.numel()
    )
    return totals


@pytest.mark.parametrize("regime", ["float32", "autocast", "bf16 weights"])
@pytest.mark.parametrize("shape", [TINY, MID], ids=["tiny", "mid"])
def test_the_plan_counts_what_autograd_saves(shape, regime):
    arch, prompts, prompt, answers, response = shape
    measured = saved_bytes(arch, regime, prompts, prompt, answers, response)
    answer_tokens = prompts * answers * response
    tokens = prompts * prompt + answer_tokens
    planned, _ = activation_bytes(arch, regime, prompt, response, tokens, answer_tokens)
    assert measured["layers"] == pytest.approx(planned, rel=0.10)
    assert arch.weight_matrices == measured["weight matrices"]  # the plan's count of what autocast casts
    assert measured["weight copies"] == (2 * arch.weight_matrices if regime == "autocast" else 0)
    # of the plan's R V (b + 8) for the logits, autograd saves the float32 copy (the rest is forward and backward
    # working memory); the logits of the prompts' last tokens and the log-probs are the rest
    logits = 4 * answer_tokens * arch.vocab_size
    assert logits <= measured["logits"] <= logits * 1.01


def test_the_planned_activation_terms_differ_by_regime_as_measured():
    """bf16 compute saves less than float32, but not half: the norms stay float32 and autocast casts the same
    input once per matmul; the plan and the measurement agree on the order and on the ratios within 10%."""
    arch, prompts, prompt, answers, response = MID
    answer_tokens = prompts * answers * response
    tokens = prompts * prompt + answer_tokens
    planned = {
        r: activation_bytes(arch, r, prompt, response, tokens, answer_tokens)[0] for r in ("float32", "autocast")
    }
    measured = {r: saved_bytes(arch, r, prompts, prompt, answers, response)["layers"] for r in planned}
    assert measured["float32"] > measured["autocast"] > measured["float32"] / 2
    ratio = planned["autocast"] / planned["float32"]
    assert measured["autocast"] / measured["float32"] == pytest.approx(ratio, rel=0.10)
