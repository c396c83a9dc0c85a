"""One forward per distinct prompt (nft.shared_prompt) against the naive reference: one unpadded forward over each
answer's prompt + answer, alone. Log-probs and gradients must agree, also under activation checkpointing."""

from __future__ import annotations

import pytest
import torch

from nft.algorithms import NFT
from nft.data.batching import Sample, collate
from nft.module import PolicyModule


def samples_of_mixed_shapes() -> list[Sample]:
    """Groups with prompts of different lengths, answers of different lengths (one of a single token), and two groups
    with the same prompt (one row for both)."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 200, (length,), generator=g) for length in (9, 5, 12)]
    prompts.append(prompts[1].clone())
    lengths = [[7, 3, 7], [1, 6], [4, 9, 2, 5], [8]]
    samples = []
    for group, (prompt, answer_lengths) in enumerate(zip(prompts, lengths, strict=True)):
        for t in answer_lengths:
            response = torch.randint(4, 200, (t,), generator=g)
            samples.append(Sample(group, prompt, response, torch.zeros(t), float(t % 2), "stop"))
    return samples


def naive_logprobs(model, samples: list[Sample], temperature: float) -> list[torch.Tensor]:
    """Each answer alone: one forward over its prompt + answer, log-softmax, the answer tokens' entries."""
    out = []
    for s in samples:
        ids = torch.cat([s.prompt_ids, s.response_ids])[None]
        logits = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1] / temperature
        out.append(logits.log_softmax(-1).gather(-1, s.response_ids[:, None]).squeeze(-1))
    return out


def weighted_sum(logps: list[torch.Tensor]) -> torch.Tensor:
    """A loss that weighs every token differently, so that a gradient sent to the wrong row or position shows."""
    return sum((lp * torch.arange(1, len(lp) + 1) * (i + 1)).sum() for i, lp in enumerate(logps))


def gradients(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompt_log_probs_and_gradients_match_one_forward_per_answer(
    tokenizer, tiny_model, checkpointing, temperature
):
    tiny_model = tiny_model.double()
    samples = samples_of_mixed_shapes()
    batch = collate(samples, pad_id=tokenizer.pad_token_id)
    assert batch["prompt_ids"].shape[0] == 3 < len({s.group for s in samples})
    if checkpointing:
        tiny_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tiny_model.train()
    module = PolicyModule(tiny_model, tokenizer, NFT(), temperature=temperature)

    logp = module.response_logprobs(batch)
    shared = [logp[i, : len(s.response_ids)] for i, s in enumerate(samples)]
    weighted_sum(shared).backward()
    shared_grads = gradients(tiny_model)

    reference = naive_logprobs(tiny_model, samples, temperature)
    weighted_sum(reference).backward()
    reference_grads = gradients(tiny_model)

    for got, want in zip(shared, reference, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # transformers' RMSNorm computes in float32 even in a float64 model, so gradients summed in another order agree
    # to float32's precision; a gradient lost or misrouted (the prompt's keys detached: 0.6) is off by far more.
    assert reference_grads.norm() > 0
    assert (shared_grads - reference_grads).norm() / reference_grads.norm() < 1e-7
    assert not any(
        hasattr(m, "_can_checkpoint_with_cache") and "_can_checkpoint_with_cache" in vars(m)
        for m in tiny_model.modules()
    )  # the layers' own setting is back


def test_gradients_are_bitwise_reproducible(tokenizer, tiny_model):
    """16 prompts x 8 answers, the answers of a prompt spread over the batch (as packing by length leaves them): a
    parallel scatter-add of the answers' gradients into their prompt (advanced indexing's backward on a CPU) summed
    them in a different order from one backward to the next."""
    g = torch.Generator().manual_seed(1)
    samples = []
    for group in range(16):
        prompt = torch.randint(4, 200, (15,), generator=g)
        for _ in range(8):
            response = torch.randint(4, 200, (int(torch.randint(5, 23, (1,), generator=g)),), generator=g)
            samples.append(Sample(group, prompt, response, torch.zeros(len(response)), 0.0, "stop"))
    samples = [samples[i] for i in torch.randperm(len(samples), generator=g)]
    batch = collate(samples, pad_id=tokenizer.pad_token_id)
    module = PolicyModule(tiny_model.train(), tokenizer, NFT())
    runs = []
    for _ in range(4):
        (module.response_logprobs(batch).logsumexp(-1) * batch["response_mask"].sum(-1)).sum().backward()
        runs.append(gradients(tiny_model))
    assert all(torch.equal(runs[0], other) for other in runs[1:])


def test_the_layers_are_left_as_they_were_and_a_models_own_hook_sees_one_call(tokenizer, tiny_model):
    """The recording forward swaps each layer's forward and suspends its hooks (FSDP's would gather its weights):
    both come back, and a hook of the model's own sees the one call that computes the layer."""
    calls = []
    tiny_model.model.layers[0].register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    batch = collate(samples_of_mixed_shapes(), pad_id=tokenizer.pad_token_id)
    PolicyModule(tiny_model, tokenizer, NFT()).response_logprobs(batch)
    assert calls == [batch["response_ids"].shape + (tiny_model.config.hidden_size,)]  # the answers' rows
    assert not any("forward" in vars(layer) for layer in tiny_model.model.layers)
