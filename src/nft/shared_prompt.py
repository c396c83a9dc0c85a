"""Response logits with one forward per distinct prompt: a group's answers share their prompt's keys and values.

A micro-batch holds each distinct prompt once (``prompt_ids`` [u, P], left-padded) and its answers (``response_ids``
[b, T], right-padded) with ``prompt_index`` [b] naming each answer's prompt. The prompts go through the model first,
and each layer's keys and values are kept (``_Capture``); the answers then go through it with their prompt's keys and
values in front (``_Prefix``), as a KV cache that gradients flow through. The logits, and so the log-probs and every
gradient, are those of one forward over each answer's prompt + answer (tested against that), while the prompt tokens
are computed once per micro-batch instead of once per answer: with ``n`` answers per prompt, a prompt of P tokens and
answers of T, the forward covers P + nT tokens instead of n(P + T). The same idea as Prefix Grouper
(arXiv 2506.05433); here through transformers' cache interface, so any cached causal LM, LoRA and FSDP work unchanged.
Departure from the reference code (verl's ``dp_actor``: one forward per answer over its prompt + response): the same
log-probs and gradients up to floating-point rounding, for less work; the saving is the prompt's share of the tokens,
large for short answers (the toy task, ``make bench``: the update's FLOPs halve) and a few percent for the paper's
answers of thousands of tokens.

Activation checkpointing recomputes each layer in backward, and transformers then drops a layer's cache unless the
layer declares it safe (``_can_checkpoint_with_cache``). Both cache layers here are: ``_Prefix`` only reads, and
``_Capture`` overwrites what it kept, so a recomputation leaves the same tensors (the answers' forward already read
the first ones, through which the gradient flows).
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer


class _Capture(DynamicLayer):
    """Keeps the keys and values of the (prompt) forward that writes it; a second write replaces them."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _Prefix(DynamicLayer):
    """Puts fixed keys and values (each answer's prompt) in front of the forward's own, keeping nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


@contextlib.contextmanager
def _cache_under_checkpointing(model: torch.nn.Module):
    """Let checkpointed layers keep the caches above (see the module docstring)."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            del layer._can_checkpoint_with_cache  # back to the class's own value


def response_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [b, T, V] predicting each response token of ``batch`` (``nft.data.batching.collate``'s layout): row i,
    position t is the model's output after prompt ``prompt_index[i]`` and the first t tokens of answer i."""
    prompt_mask, index = batch["prompt_mask"], batch["prompt_index"]
    response_ids = batch["response_ids"]
    layers = model.config.get_text_config().num_hidden_layers
    prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    captured = Cache(layers=[_Capture() for _ in range(layers)])
    with _cache_under_checkpointing(model):
        prompt_out = model(
            input_ids=batch["prompt_ids"],
            attention_mask=prompt_mask,
            position_ids=prompt_positions,
            past_key_values=captured,
            use_cache=False,
            logits_to_keep=1,  # the last prompt token predicts each answer's first
        )
        # index_select, not advanced indexing: the backward of ``keys[index]`` adds the answers' gradients into the
        # prompt's rows in parallel and in no fixed order on a CPU, so runs were not bitwise reproducible.
        prefix = Cache(
            layers=[
                _Prefix(layer.keys.index_select(0, index), layer.values.index_select(0, index))
                for layer in captured.layers
            ]
        )
        width = response_ids.shape[1]
        response_mask = torch.arange(width, device=response_ids.device) < batch["response_lengths"][:, None]
        answer_out = model(
            input_ids=response_ids,
            attention_mask=torch.cat([prompt_mask.index_select(0, index), response_mask.to(prompt_mask.dtype)], dim=1),
            position_ids=prompt_positions[:, -1:].index_select(0, index) + 1 + torch.arange(width, device=index.device),
            past_key_values=prefix,
            use_cache=False,
        )
    # The answer's last token predicts nothing trained; it goes through anyway, so that a one-token answer (a padding
    # micro-batch) still runs both forwards, as every rank of a sharded model must.
    return torch.cat([prompt_out.logits.index_select(0, index), answer_out.logits[:, :-1]], dim=1)
