"""The tiny policy: a byte-level tokenizer and a ~1M-parameter Qwen2 model, built offline.

The tokenizer is a byte-level BPE with no merges (one token per UTF-8 byte, so it round-trips any text) and four
special tokens first: ``<|endoftext|>`` (EOS), ``<|im_start|>``, ``<|im_end|>``, ``<|pad|>``. It is deliberately not a
WordLevel tokenizer: transformers 5 loads ``model_type=qwen2`` folders through ``Qwen2Tokenizer``, which corrupts a
WordLevel vocabulary but keeps a byte-level BPE intact. The shapes match ``docs/bench_workload.md``.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
# The pre-tokenizer regex of Qwen2's tokenizer (splits digits one by one, words, punctuation, spaces).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A 260-token byte-level tokenizer: 4 special tokens, then the 256 byte symbols in sorted order."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(QWEN2_SPLIT, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        bos_token=None,
        padding_side="left",
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 512,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
    **config_settings,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for a CPU (about 1M parameters with the defaults);
    ``config_settings`` go to ``Qwen2Config`` as they are (attention variants, ``attn_implementation``)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **config_settings,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
