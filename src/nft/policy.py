"""Loading a policy (model + tokenizer) from the hub or a local ``save_pretrained`` folder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nft.lora import apply_lora


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object


def check_context(model: torch.nn.Module, max_prompt_tokens: int, max_response_tokens: int) -> None:
    """Refuse prompt and response limits that do not fit in the model's context (known once it is loaded)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and max_prompt_tokens + max_response_tokens > context:
        raise ValueError(
            f"model.max_prompt_tokens + model.max_response_tokens = {max_prompt_tokens} + {max_response_tokens} "
            f"exceeds the model's context of {context} tokens: lower one of them"
        )


def pretrained_policy(
    path: str,
    dtype: str = "bfloat16",
    max_prompt_tokens: int = 512,
    max_response_tokens: int = 3584,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    on_meta_device: bool = False,
    lora: dict | None = None,
) -> Policy:
    """A causal LM and its tokenizer from a hub name or a local folder, in train mode, tokenizer padding left.

    ``lora``: ``nft.lora.apply_lora`` settings (``model.lora``); enabled, the model comes back with adapters.
    ``on_meta_device``: the architecture only, no weights read (the ranks of a sharded run other than rank 0, which
    get their shards from rank 0's copy: ``nft.module.PolicyModule.configure_model``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    settings = dict(dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
    if on_meta_device:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code, **settings)
        try:
            model.generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the one derived from the config stays
            pass
    else:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **settings)
    model.train()  # from_pretrained returns eval mode
    check_context(model, max_prompt_tokens, max_response_tokens)
    return Policy(apply_lora(model, **(lora or {})), tokenizer)
