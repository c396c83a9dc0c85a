"""LoRA (``model.lora.enabled=true``): low-rank adapters on a frozen policy, through ``peft``, and the weights such a
policy effectively computes with.

``apply_lora`` wraps the loaded causal LM in ``peft``'s ``PeftModelForCausalLM``: every ``target_modules`` linear layer
of the decoder gets ``W x + (alpha / rank) B A x`` with ``A`` (rank x in, Kaiming-uniform, drawn from ``seed``, so
a run's adapters do not depend on what drew from the global generator before) and ``B`` (out x rank, zeros: the
adapted policy starts as the base one). Only ``A`` and ``B`` require gradients; ``peft`` keeps them in float32
whatever the base's dtype.

``effective_parameters`` yields, under checkpoint names (``model.layers.0.self_attn.q_proj.weight``), the weights the
model computes with: for a LoRA layer whose adapters are on, ``W + (alpha / rank) B A`` (in float32, or in the asked
dtype); for a layer whose adapters are disabled (or already merged into ``W``), ``W`` itself; every other parameter
as it is. It is what a separate engine must hold (``rollout=vllm`` pushes it: merged weights, one full tensor at a
time), what the weight-sync fingerprint compares (``nft.rollout.integrity``: an engine left with the base weights,
or with adapters from an earlier epoch, differs from the trainer as soon as ``B`` is not zero, which the first update
makes it), and what ``ExportHF`` saves as a plain transformers model. Under FSDP each tensor is gathered in turn (a
collective: every rank iterates in step).

Under FSDP (``trainer=fsdp``) the adapters are sharded with the decoder layer they belong to, like every other
parameter (one ``fully_shard`` unit per layer holds its frozen weights and its adapters); the base's shards are float32
as in full fine-tuning (``nft.distributed.shard_model``), only the adapters have gradients and optimizer state.

Choices that differ from the most general LoRA setup, each with its reason:
- adapters only on the decoder's linear layers (``target_modules``; ``peft``'s names, default all seven of a
  Qwen2/Llama layer), never the embeddings or the LM head: what every peer framework's LoRA for RL does, and what
  ``nft.plan`` counts;
- ``dropout`` defaults to 0: with dropout the log-probs of an update differ from the ones of the same policy without
  it (``old_logp``, the engine's), so the ratio of a strictly on-policy step would not be 1;
- DoRA and the other ``peft`` variants are refused (``effective_parameters`` merges plain LoRA only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from nft.distributed import full_parameters
from nft.rollout.weights import checkpoint_name

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(
    model: torch.nn.Module,
    enabled: bool = False,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TARGETS,
    seed: int = 0,
) -> torch.nn.Module:
    """``model`` with LoRA adapters (a ``peft`` model, in train mode) when ``enabled``, else ``model`` itself."""
    if not enabled:
        return model
    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(
            f"model.lora: rank must be >= 1, alpha > 0 and dropout in [0, 1); got {rank}, {alpha}, {dropout}"
        )
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):  # the adapters' initial A from the run's seed, nothing else
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    return peft_model.train()


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a ``peft`` model (``apply_lora`` wrapped it)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a ``peft`` model (its layers carry the adapters); ``model`` itself otherwise."""
    return model.get_base_model() if is_lora(model) else model


def trainable_names(module: torch.nn.Module) -> set[str]:
    """Names (as in ``module.state_dict()``) of the parameters that train."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def effective_parameters(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, full tensor) of each weight ``model`` computes with, adapters merged (module docstring)."""
    if not is_lora(model):
        for name, tensor in full_parameters(model, dtype):
            yield checkpoint_name(name), tensor
        return
    from peft.tuners.lora import LoraLayer

    seen: set[int] = set()
    for prefix, module in base_model(model).named_modules():
        if isinstance(module, LoraLayer):
            seen.update(id(p) for p in module.parameters())
            yield from _merged(checkpoint_name(prefix), module, dtype)
            continue
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # tied (the LM head and the embeddings): once, as in a checkpoint
                continue
            seen.add(id(param))
            yield checkpoint_name(f"{prefix}.{name}" if prefix else name), _full(param, dtype)


def _merged(prefix: str, layer, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    """The LoRA layer's effective weight (and the base layer's bias)."""
    base = layer.get_base_layer()
    weight = _full(base.weight, None)
    if not layer.disable_adapters and not layer.merged:  # merged: the deltas are in W already
        merged = weight.float()
        for adapter in layer.active_adapters:
            if adapter not in layer.lora_A:
                continue
            if layer.use_dora.get(adapter, False):
                raise NotImplementedError("DoRA adapters cannot be merged here: use plain LoRA (model.lora)")
            a = _full(layer.lora_A[adapter].weight, None).float()
            b = _full(layer.lora_B[adapter].weight, None).float()
            delta = (b @ a) * layer.scaling[adapter]
            merged = merged + (delta.T if layer.fan_in_fan_out else delta)
        weight = merged  # float32: a bfloat16 base plus float32 adapters is not a bfloat16 weight
    yield f"{prefix}.weight", weight.to(dtype) if dtype is not None else weight
    if getattr(base, "bias", None) is not None:
        yield f"{prefix}.bias", _full(base.bias, dtype)


def _full(param: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = param.detach()
    if dtype is not None:
        tensor = tensor.to(dtype)  # before the gather, as full_parameters does
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters' full tensors, on CPU, by ``model.state_dict()`` name (a collective under FSDP)."""
    return {name: _full(p, None).cpu() for name, p in model.named_parameters() if p.requires_grad}
