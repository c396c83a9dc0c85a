"""The transformers generation backend with the real tiny model."""

from __future__ import annotations

import pytest
import torch

from nft.algorithms import NFT
from nft.data.batching import Sample, collate
from nft.module import PolicyModule
from nft.rollout import SamplingParams
from nft.rollout.hf import HFGenerator, answer_keys, sample_tokens, uniforms

from .conftest import PolicyHandle


def prompts_of(tokenizer, texts):
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_completions_stop_at_eos_and_report_finish_reasons(tokenizer, tiny_model):
    # Thirty stop tokens (as a generation config may list several EOS ids): about half the rows stop early.
    stop_ids = list(range(30))
    tiny_model.generation_config.eos_token_id = stop_ids
    generator = HFGenerator(max_batch_rows=16)
    generator.sync(PolicyHandle(tiny_model, tokenizer))
    prompts = prompts_of(tokenizer, ["What is 1+2?\n", "What is 10+22?\n", "Hi\n"])
    groups = generator.generate(prompts, 6, SamplingParams(max_new_tokens=12), seed=0)
    assert [len(g) for g in groups] == [6, 6, 6]
    completions = [c for g in groups for c in g]
    assert {c.finish_reason for c in completions} == {"stop", "length"}
    for completion in completions:
        ids = completion.token_ids.tolist()
        assert 1 <= len(ids) <= 12 and len(completion.logprobs) == len(ids)
        assert not set(ids[:-1]) & set(stop_ids)  # nothing after the first stop token
        if completion.finish_reason == "stop":
            assert ids[-1] in stop_ids
        else:
            assert completion.finish_reason == "length" and len(ids) == 12
        assert torch.all(completion.logprobs <= 0)


def test_same_seed_same_samples_and_batching_does_not_matter(tokenizer, tiny_model):
    prompts = prompts_of(tokenizer, ["a\n", "What is 10+22?\n", "b c d e f\n"])
    sampling = SamplingParams(max_new_tokens=8)
    big, small = HFGenerator(max_batch_rows=64), HFGenerator(max_batch_rows=4, compact_when=0.01)
    for g in (big, small):
        g.sync(PolicyHandle(tiny_model, tokenizer))
    first = big.generate(prompts, 4, sampling, seed=3)
    again = small.generate(prompts, 4, sampling, seed=3)  # one prompt per batch, compacted as rows finish
    same = [
        torch.equal(a.token_ids, b.token_ids)
        for ga, gb in zip(first, again, strict=True)
        for a, b in zip(ga, gb, strict=True)
    ]
    assert all(same)
    other = big.generate(prompts, 4, sampling, seed=4)
    different = [
        not torch.equal(a.token_ids, b.token_ids)
        for ga, gb in zip(first, other, strict=True)
        for a, b in zip(ga, gb, strict=True)
    ]
    assert any(different)


def test_a_prompts_answers_depend_on_its_seed_only(tokenizer, tiny_model):
    """Per-prompt seeds: the same prompt and seed give the same answers whatever else is in the call (how ranks
    sharing the prompts of an epoch sample what one process would)."""
    generator = HFGenerator(max_batch_rows=64)
    generator.sync(PolicyHandle(tiny_model, tokenizer))
    prompts = prompts_of(tokenizer, ["What is 1+2?\n", "x y\n", "What is 45+67? Think.\n", "q\n"])
    sampling = SamplingParams(max_new_tokens=10)
    together = generator.generate(prompts, 3, sampling, seed=[11, 12, 13, 14])
    apart = generator.generate(prompts[2:], 3, sampling, seed=[13, 14]) + generator.generate(
        prompts[:2], 3, sampling, seed=[11, 12]
    )
    apart = apart[2:] + apart[:2]
    for a, b in zip(together, apart, strict=True):
        assert [c.token_ids.tolist() for c in a] == [c.token_ids.tolist() for c in b]
    assert len({tuple(c.token_ids.tolist()) for c in together[0]}) > 1  # a group's answers differ from each other


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_match_the_trainers_logprobs(tokenizer, tiny_model, temperature):
    """The generator's per-token log-probs (KV cache, left padding) equal a full forward's, as the trainer sees it."""
    generator = HFGenerator(max_batch_rows=64, compact_when=0.01)
    generator.sync(PolicyHandle(tiny_model, tokenizer))
    prompts = prompts_of(tokenizer, ["What is 1+2?\n", "x\n", "What is 45+67? Think.\n"])
    groups = generator.generate(prompts, 3, SamplingParams(temperature=temperature, max_new_tokens=10), seed=1)
    samples = [
        Sample(
            group=i,
            prompt_ids=torch.tensor(prompts[i]),
            response_ids=c.token_ids,
            behaviour_logp=c.logprobs,
            correct=0.0,
            finish_reason=c.finish_reason,
        )
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = collate(samples, pad_id=tokenizer.pad_token_id)
    module = PolicyModule(tiny_model, tokenizer, NFT(), temperature=temperature)
    tiny_model.eval()
    with torch.no_grad():
        logp = module.response_logprobs(batch)
    mask = batch["response_mask"].bool()
    torch.testing.assert_close(logp[mask], batch["behaviour_logp"][mask], atol=2e-5, rtol=1e-4)


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    keys = answer_keys([0], 2000, torch.device("cpu"))
    tokens, logprobs = sample_tokens(logits, SamplingParams(top_p=0.7), uniforms(keys, 0))
    assert set(tokens.tolist()) == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there
    torch.testing.assert_close(logprobs, logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1))
    tokens, _ = sample_tokens(logits, SamplingParams(top_k=3), uniforms(keys, 1))
    assert set(tokens.tolist()) == {0, 1, 2}
    for step in range(3):  # the hashed streams are uniform: frequencies match the probabilities at every step
        tokens, _ = sample_tokens(logits, SamplingParams(temperature=1.0), uniforms(keys, step))
        frequencies = torch.bincount(tokens, minlength=4).float() / len(tokens)
        torch.testing.assert_close(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.035, rtol=0)


def test_hashed_uniforms_are_uniform_and_independent_across_steps():
    keys = answer_keys(list(range(50)), 40, torch.device("cpu"))
    first, second = uniforms(keys, 0), uniforms(keys, 1)
    assert 0 < first.min() and first.max() < 1 and len(set(first.tolist())) > 1990
    histogram = torch.histc(first, bins=10, min=0, max=1) / len(first)
    torch.testing.assert_close(histogram, torch.full((10,), 0.1), atol=0.025, rtol=0)
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1]) < 0.1


def test_sampling_params_refuse_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=1.5)


def test_an_answer_that_never_emits_eos_is_cut_at_the_limit_and_marked_length(tokenizer, tiny_model):
    tiny_model.generation_config.eos_token_id = list(range(30))  # without the hook below, many rows stop early
    generator = HFGenerator(max_batch_rows=64)
    generator.sync(PolicyHandle(tiny_model, tokenizer))
    stop_ids = torch.tensor(generator.stop_ids)
    prompts = prompts_of(tokenizer, ["What is 1+2?\n", "What is 10+22?\n"])
    sampling = SamplingParams(max_new_tokens=16)
    assert any(c.finish_reason == "stop" for g in generator.generate(prompts, 8, sampling, seed=0) for c in g)

    never_stop = tiny_model.lm_head.register_forward_hook(lambda _, __, logits: logits.index_fill(-1, stop_ids, -1e9))
    try:
        groups = generator.generate(prompts, 8, sampling, seed=0)
    finally:
        never_stop.remove()
    for completion in (c for g in groups for c in g):
        assert completion.finish_reason == "length" and len(completion.token_ids) == 16
        assert not torch.isin(completion.token_ids, stop_ids).any()


def test_grouped_decoding_attention_equals_sdpa_with_repeated_heads():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from nft.rollout.attention import grouped_decoding_attention

    class Layer(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    layer = Layer().eval()
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(5, h, q, 16, generator=g) for h, q in ((6, 1), (2, 9), (2, 9)))
    mask = torch.ones(5, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False  # left padding
    mask[3, ..., :2] = False
    for m in (mask, None):
        expected, _ = sdpa_attention_forward(layer, query, key, value, m, scaling=0.25)
        got, _ = grouped_decoding_attention(layer, query, key, value, m, scaling=0.25)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
