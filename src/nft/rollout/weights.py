"""Weight sync to a separate inference engine: the policy's parameters as (checkpoint name, full tensor) buckets.

The training model's parameter names are those of its transformers checkpoint, except for what wrappers add: FSDP1's
``_fsdp_wrapped_module``, ``checkpoint_wrapper``'s ``_checkpoint_wrapped_module`` and ``torch.compile``'s
``_orig_mod`` (FSDP2 and transformers' own gradient checkpointing add nothing). ``checkpoint_name`` removes them, so
an engine's ``load_weights`` (which maps checkpoint names onto its fused layers, e.g. vLLM's ``qkv_proj``) accepts them.
Tied weights appear once (``named_parameters`` deduplicates), as in a checkpoint.

``weight_buckets`` streams: each parameter is gathered (``nft.distributed.full_parameters``) only when its bucket is
being filled, and a bucket is handed over before the next one starts, so a rank holds at most one bucket (or one
parameter larger than a bucket) of full tensors, never the whole model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

WRAPPER_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def checkpoint_name(name: str) -> str:
    """The checkpoint name of a (possibly wrapped) parameter name."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_PARTS)


def weight_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group (name, tensor) pairs, in order, into lists of at most ``bucket_bytes`` (a larger tensor goes alone).

    Names are mapped with ``checkpoint_name``. The input is consumed lazily, one tensor past the bucket it closes.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((checkpoint_name(name), tensor))
        size += nbytes
    if bucket:
        yield bucket
