"""Fast decoding on a CPU: attention without copying the KV cache per query head, and a preallocated cache.

transformers' ``sdpa`` attention repeats each key/value head for its query heads (``repeat_kv``: a copy of the whole
cache, every layer, every decoding step) whenever a mask is passed, which it is as soon as prompts are left-padded.
On a CPU that copy and the flash kernel's per-call overhead took half of the toy workload's generation time. With
one query token the attention is two small batched matmuls over the grouped heads, with no copy. Longer queries
(the prefill, training) go to ``sdpa`` unchanged.

``grouped_decoding(model)`` switches a model whose attention is ``sdpa`` or ``eager`` to this function for the
duration of a ``with`` block (the generator's); other implementations (flash attention on GPUs) are left alone. Only
where it was measured to help: a model on the CPU computing in float32. On GPUs (never measured) and under autocast
(where its bf16 scores and probabilities are rounded where ``sdpa``'s fused kernel keeps float32, and the rollout's
log-probs would drift further from the update's full forward) ``sdpa`` stays.

``preallocated_cache`` holds each layer's keys and values in a buffer sized for prompt + answer, written in place:
transformers' ``DynamicCache`` concatenates (allocates and copies the whole cache) at every step.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "nft_grouped_decoding"


def grouped_decoding_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query [b, heads, q, d], key/value [b, kv_heads, t, d], boolean mask [b, 1, q, t] or None; returns
    [b, q, heads, d] as ``sdpa_attention_forward`` does."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    # Query head i reads key/value head i // groups (repeat_kv's layout): view the heads as [kv_heads, groups].
    grouped = query.view(batch, kv_heads, heads // kv_heads, dim)
    scale = scaling if scaling is not None else dim**-0.5
    scores = torch.matmul(grouped, key.transpose(-1, -2)) * scale  # [b, kv_heads, groups, t]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # [b, kv_heads, groups, d]
    return out.reshape(batch, 1, heads, dim), None


AttentionInterface.register(NAME, grouped_decoding_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def grouped_decoding(model: torch.nn.Module):
    """Use ``grouped_decoding_attention`` in ``model`` inside the block, when its attention is sdpa or eager and it
    computes in float32 on the CPU (module docstring)."""
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    device = next(model.parameters()).device.type
    measured = device == "cpu" and not torch.is_autocast_enabled(device)
    if previous not in ("sdpa", "eager") or not measured:
        yield
        return
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer with room for ``capacity`` positions: each step writes in place instead of ``torch.cat``
    (which allocates and copies the whole cache, every layer, every step). ``keys``/``values`` are views."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
            batch, heads, _, dim = key_states.shape
            self._keys = key_states.new_empty(batch, heads, self.capacity, dim)
            self._values = value_states.new_empty(batch, value_states.shape[1], self.capacity, value_states.shape[-1])
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions > capacity {self.capacity}")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._refresh()
        return self.keys, self.values

    def _refresh(self) -> None:
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._refresh()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._refresh()


def preallocated_cache(config, capacity: int) -> Cache:
    """A cache of ``PreallocatedLayer``s, one per decoder layer of ``config``."""
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(config.num_hidden_layers)])
