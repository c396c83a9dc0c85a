"""Response logits with each distinct prompt computed once: a group's answers read their prompt's keys and values.

A micro-batch holds each distinct prompt once (``prompt_ids`` [u, P], left-padded) and its answers (``response_ids``
[b, T], right-padded) with ``prompt_index`` [b] naming each answer's prompt. The model runs once over the answers, and
each decoder layer, before its answers, runs the prompts (all but their last token) through itself and keeps their
keys and values (``_Capture``); the answers' attention then puts their prompt's keys and values in front of their own
(``_Prefix``), a KV cache that gradients flow through. Each answer's row starts with its prompt's last token, so the
row's T logits predict the answer's T tokens. The logits, and so the log-probs and every gradient, are those of one
forward over each answer's prompt + answer (tested against that), while the prompt tokens are computed once per
micro-batch instead of once per answer: with ``n`` answers per prompt, a prompt of P tokens and answers of T, the
forward covers P + nT tokens instead of n(P + T). The same idea as Prefix Grouper (arXiv 2506.05433); here through
transformers' cache interface and its own layer calls, so LoRA and FSDP work unchanged.
Departure from the reference code (verl's ``dp_actor``: one forward per answer over its prompt + response): the same
log-probs and gradients up to floating-point rounding, for less work; the saving is the prompt's share of the tokens,
large for short answers (the toy task, ``make bench``: the update's FLOPs halve) and a few percent for the paper's
answers of thousands of tokens.

Why the prompts go through each layer inside the answers' call of it, not in a forward of their own: under FSDP2 a
layer's call gathers its weights, and its backward gathers them again and reduce-scatters its gradient. With a forward
of the prompts first, every layer was gathered twice in forward and twice in backward (two layers: 9 all-gathers
instead of 5, ``tests/test_fsdp.py``); inside one call, once each, as for one plain forward. The prompts' inputs to the
layers (their embeddings, position embeddings and attention masks, in whatever form the model's attention
implementation takes) come from the model itself: a forward over the prompts whose decoder layers only record what
they are called with (``_recorded``), their hooks suspended, so that it gathers nothing but the root's weights. A model
whose forward does not call each decoder layer once is refused. The hook that runs the prompts (``_run_prompts_first``)
stays on each layer once installed, since a checkpointed layer's recomputation in backward calls it again; a call that
does not carry prompts passes through it untouched.

Activation checkpointing recomputes each layer in backward, the prompts' part of it included (it runs inside the
layer's call), and transformers then drops a layer's cache unless the layer declares it safe
(``_can_checkpoint_with_cache``). Both cache layers here are: ``_Prefix`` only reads, and ``_Capture`` overwrites what
it kept, so a recomputation leaves the same tensors (the answers' forward already read the first ones, through which
the gradient flows). Each layer's prompt input is kept (``inputs``) so that its recomputation starts from it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from nft.distributed import decoder_layers


class _Capture(DynamicLayer):
    """Keeps the keys and values of the (prompt) forward that writes it; a second write replaces them."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _Prefix(DynamicLayer):
    """Puts each answer's prompt keys and values, read from ``source`` when the layer runs, in front of its own."""

    def __init__(self, source: _Capture, index: torch.Tensor, length: int) -> None:
        super().__init__()
        self.source, self.index, self.length, self.is_initialized = source, index, length, True

    def get_seq_length(self) -> int:  # known before the prompts' keys exist (the mask is built first)
        return self.length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # index_select, not advanced indexing: the backward of ``keys[index]`` adds the answers' gradients into the
        # prompt's rows in parallel and in no fixed order on a CPU, so runs were not bitwise reproducible.
        keys = self.source.keys.index_select(0, self.index)
        values = self.source.values.index_select(0, self.index)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)


@contextlib.contextmanager
def _cache_under_checkpointing(model: torch.nn.Module) -> Iterator[None]:
    """Let checkpointed layers keep the caches above (see the module docstring)."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            del layer._can_checkpoint_with_cache  # back to the class's own value


@contextlib.contextmanager
def _recorded(layers: list[torch.nn.Module]) -> Iterator[list[tuple[torch.nn.Module, torch.Tensor, dict]]]:
    """Inside, each layer computes nothing and runs no hook (FSDP's would gather its weights): it returns its hidden
    states unchanged and appends (layer, hidden states, keyword arguments) to the list yielded."""
    calls: list[tuple[torch.nn.Module, torch.Tensor, dict]] = []
    kept = [(vars(layer).get("forward"), layer._forward_pre_hooks, layer._forward_hooks) for layer in layers]
    for layer in layers:

        def record(hidden_states, _layer=layer, **kwargs):
            calls.append((_layer, hidden_states, kwargs))
            return hidden_states

        layer.forward = record
        layer._forward_pre_hooks, layer._forward_hooks = OrderedDict(), OrderedDict()
    try:
        yield calls
    finally:
        for layer, (forward, pre_hooks, hooks) in zip(layers, kept, strict=True):
            del layer.forward  # the class's method again, or what the instance had
            if forward is not None:
                layer.forward = forward
            layer._forward_pre_hooks, layer._forward_hooks = pre_hooks, hooks


class _Prompts:
    """The prompts' side of one answers' forward: each decoder layer's prompt input and keyword arguments, recorded."""

    def __init__(self, calls: list[tuple[torch.nn.Module, torch.Tensor, dict]]) -> None:
        order = [layer for layer, _, _ in calls]
        self.inputs = {order[0]: calls[0][1]}  # each layer's, kept: a checkpointed layer's recomputation starts there
        self.kwargs = {layer: layer_kwargs for layer, _, layer_kwargs in calls}
        self.following = dict(zip(order, order[1:], strict=False))

    def run(self, layer: torch.nn.Module) -> None:
        out = layer.forward(self.inputs[layer], **self.kwargs[layer])  # the method, not the call: no hook, no gather
        if layer in self.following:
            self.inputs[self.following[layer]] = out


_PROMPTS = "nft_shared_prompts"  # the keyword that carries the prompts through the model to its layers


def _run_prompts_first(layer: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A decoder layer's forward pre-hook (after FSDP's, which gathered its weights): the prompts go through the layer
    before the answers when the call carries them. It stays on the layer: a checkpointed layer's recomputation, in
    backward, calls it again with the same keyword arguments."""
    prompts = kwargs.pop(_PROMPTS, None)
    if prompts is not None:
        prompts.run(layer)
    return args, kwargs


def _install(layers: list[torch.nn.Module]) -> None:
    for layer in layers:
        if _run_prompts_first not in layer._forward_pre_hooks.values():  # once (a deep copy keeps it too)
            layer.register_forward_pre_hook(_run_prompts_first, with_kwargs=True)


def response_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [b, T, V] predicting each response token of ``batch`` (``nft.data.batching.collate``'s layout): row i,
    position t is the model's output after prompt ``prompt_index[i]`` and the first t tokens of answer i."""
    prompt_ids, prompt_mask, index = batch["prompt_ids"], batch["prompt_mask"], batch["prompt_index"]
    response_ids = batch["response_ids"]
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    last_token, last_position = prompt_ids[:, -1:], positions[:, -1:]  # left-padded: the last column is real
    head_ids, head_mask, head_positions = prompt_ids[:, :-1], prompt_mask[:, :-1], positions[:, :-1]
    if head_ids.shape[1] == 0:  # one-token prompts (a padding micro-batch): one masked column keeps the shapes
        head_ids, head_mask, head_positions = (torch.zeros_like(t[:, :1]) for t in (prompt_ids, prompt_mask, positions))
    layers = decoder_layers(model)
    captured = Cache(layers=[_Capture() for _ in layers])
    width = response_ids.shape[1]
    response_mask = torch.arange(width, device=response_ids.device) < batch["response_lengths"][:, None]
    with _cache_under_checkpointing(model):
        with _recorded(layers) as calls:
            model(
                input_ids=head_ids,
                attention_mask=head_mask,
                position_ids=head_positions,
                past_key_values=captured,
                use_cache=False,
                logits_to_keep=1,
            )
        if len(calls) != len(layers) or {id(layer) for layer, _, _ in calls} != set(map(id, layers)):
            raise ValueError(
                f"{type(model).__name__}'s forward does not call each of its {len(layers)} decoder layers once; "
                "nft.shared_prompt needs it to"
            )
        prefix = Cache(layers=[_Prefix(layer, index, head_ids.shape[1]) for layer in captured.layers])
        _install(layers)
        out = model(
            input_ids=torch.cat([last_token.index_select(0, index), response_ids[:, :-1]], dim=1),
            attention_mask=torch.cat(
                [
                    head_mask.index_select(0, index),
                    torch.ones_like(index[:, None], dtype=prompt_mask.dtype),
                    response_mask[:, :-1].to(prompt_mask.dtype),
                ],
                dim=1,
            ),
            position_ids=last_position.index_select(0, index) + torch.arange(width, device=index.device),
            past_key_values=prefix,
            use_cache=False,
            **{_PROMPTS: _Prompts(calls)},
        )
    return out.logits
