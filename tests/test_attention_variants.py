"""Attention that differs from the tiny model's (grouped key/value heads of other sizes, RoPE scaling, sliding-window
layers): the shared-prompt forward equals one forward per answer, and the transformers rollout samples with the
log-probs the trainer computes. ``make gpu-check`` runs the same checks on a GPU (``tests/test_gpu.py``)."""

from __future__ import annotations

import pytest
import torch

from .attention_variants import VARIANTS, rollout_error, shared_prompt_error, variant_model


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_shared_prompt_forward_equals_one_forward_per_answer(tokenizer, variant):
    model = variant_model(tokenizer, variant).double()
    error, grad_error = shared_prompt_error(model, tokenizer)
    assert error < 1e-10
    assert grad_error < 1e-7  # RMSNorm computes in float32 even in a float64 model


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_rollout_samples_with_the_trainers_log_probs(tokenizer, variant):
    assert rollout_error(variant_model(tokenizer, variant), tokenizer) < 1e-4


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "num_key_value_heads" not in VARIANTS[v]])
def test_each_variant_changes_what_the_model_computes(tokenizer, variant):
    """Past the window and the scalings' original length, the same weights give other logits: the checks above test
    the variant, not the tiny model's own attention again."""
    ids = torch.randint(4, 200, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        changed = variant_model(tokenizer, variant).eval()(input_ids=ids).logits
        plain = variant_model(tokenizer, None).eval()(input_ids=ids).logits
    assert (changed - plain).abs().max() > 1e-3
