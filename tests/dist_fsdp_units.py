"""Run by test_fsdp: two gloo ranks shard the real tiny model with ``nft.distributed.shard_model`` and check, against
an unsharded copy of the same model in each process, that

- gradients: each rank holding its own groups (different sizes, padded micro-batches) sums to the full-batch gradient;
- generation: ranks generating different prompts (so different numbers of forwards) get the unsharded model's
  answers, and training works after it;
- weight streaming: ``full_parameters`` yields the full weights, and ``weight_buckets`` covers every one; the
  engine's architecture name is the unwrapped class's;
- communication: one micro-batch's shared-prompt forward and backward run the collectives of one plain forward and
  backward (counted at ``torch.distributed``, where FSDP2 calls them), with activation checkpointing and without.

Usage: python tests/dist_fsdp_units.py DIR  (rank<r>.json is written to DIR)
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
from dist_launch import launch
from torch.distributed.device_mesh import init_device_mesh

from nft.algorithms import NFT
from nft.data.batching import Sample, group_totals, make_mini_batches, pad_micro_batches, set_group_stats
from nft.distributed import all_gather_objects, full_parameters, gathered_parameters, shard_model
from nft.module import PolicyModule
from nft.rollout import SamplingParams
from nft.rollout.hf import HFGenerator
from nft.rollout.vllm import architecture_name
from nft.rollout.weights import weight_buckets
from nft.toy import build_tiny_model, build_tokenizer


def samples_of(groups: range) -> list[Sample]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for group in groups:
        for answer in range(4):
            length = 3 + (group * 7 + answer * 3) % 9
            samples.append(
                Sample(
                    group=group,
                    prompt_ids=torch.randint(4, 200, (5 + group % 3,), generator=generator),
                    response_ids=torch.randint(4, 200, (length,), generator=generator),
                    behaviour_logp=torch.zeros(length),
                    correct=float((group + answer) % 3 == 0),
                    finish_reason="stop",
                )
            )
    set_group_stats(samples)
    return samples


def accumulate(module: PolicyModule, micro_batches: list[dict]) -> None:
    for batch in micro_batches:
        logp = module.response_logprobs(batch)
        loss, _ = module.algorithm.loss(
            logp,
            logp.detach(),
            batch["response_mask"],
            batch["correct"],
            batch["correct_rate"],
            num_tokens=batch["num_tokens"],
            num_seqs=batch["num_seqs"],
        )
        loss.backward()


def check_gradients(module, reference, rank, pad_id) -> dict:
    everything = samples_of(range(6))
    mine = [s for s in everything if (s.group < 4) == (rank == 0)]  # rank 0: four groups, rank 1: two
    totals = {}
    for rank_totals in all_gather_objects(group_totals(mine)):
        totals.update(rank_totals)
    (step,) = make_mini_batches(mine, 6, 60, pad_id, seed=0, totals=totals)
    counts = all_gather_objects(len(step))
    pad_micro_batches([step], [max(counts)], pad_id)
    accumulate(module, step)
    (full_step,) = make_mini_batches(everything, 6, 60, pad_id, seed=0)
    accumulate(reference, full_step)
    sharded = dict(module.model.named_parameters())
    pairs = [(sharded[n].grad.full_tensor(), p.grad) for n, p in reference.model.named_parameters()]
    error = max((got - want).abs().max().item() for got, want in pairs)
    scale = max(p.grad.abs().max().item() for p in reference.model.parameters())
    return {"micro_batches": counts, "grad_error": error, "grad_scale": scale}


def check_generation(module, reference, rank, tokenizer) -> dict:
    texts = ["What is 12+30?\n", "What is 7+8?\n", "What is 45+54?\n"]
    prompts = tokenizer(texts[: 1 + 2 * rank], add_special_tokens=False)["input_ids"]  # 1 prompt vs 3 prompts
    seeds = list(range(10, 10 + len(prompts)))
    sampling = SamplingParams(max_new_tokens=12)
    sharded, plain = HFGenerator(max_batch_rows=4), HFGenerator(max_batch_rows=4)
    sharded.sync(module)
    plain.sync(reference)
    got = sharded.generate(prompts, 3, sampling, seeds)
    want = plain.generate(prompts, 3, sampling, seeds)
    same = all(
        torch.equal(a.token_ids, b.token_ids)
        for ga, gb in zip(got, want, strict=True)
        for a, b in zip(ga, gb, strict=True)
    )
    with gathered_parameters(module.model):  # the context restores resharding: a training step works after it
        pass
    accumulate(module, make_mini_batches(samples_of(range(1)), 1, 1000, tokenizer.pad_token_id, seed=0)[0])
    return {"same_answers": same, "answers": sum(len(g) for g in got)}


def check_weights(module, reference) -> dict:
    full = dict(full_parameters(module.model, torch.bfloat16))
    expected = {n: p.detach().to(torch.bfloat16) for n, p in reference.model.named_parameters()}
    buckets = list(weight_buckets(full_parameters(module.model, torch.bfloat16), 200_000))
    names = [name for bucket in buckets for name, _ in bucket]
    return {
        "weights_equal": full.keys() == expected.keys() and all(torch.equal(full[n], expected[n]) for n in expected),
        "bucketed_names": names == list(expected),
        "buckets": len(buckets),
        "architecture": architecture_name(module.model),  # the vLLM engine's config names the unwrapped class
    }


@contextlib.contextmanager
def counted_collectives():
    """Count FSDP2's all-gathers and reduce-scatters inside (``torch.distributed``'s functions it calls)."""
    counts: Counter = Counter()
    originals = {name: getattr(dist, name) for name in ("all_gather_single", "reduce_scatter_single")}

    def counting(name):
        def call(*args, **kwargs):
            counts[name.removesuffix("_single")] += 1
            return originals[name](*args, **kwargs)

        return call

    for name in originals:
        setattr(dist, name, counting(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def check_collectives(tokenizer, mesh) -> dict:
    result = {}
    batch = make_mini_batches(samples_of(range(2)), 2, 10_000, tokenizer.pad_token_id, seed=0)[0][0]
    for checkpointing in (False, True):
        model = build_tiny_model(tokenizer, num_hidden_layers=2, seed=0)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        shard_model(model, mesh, param_dtype="float32")
        module = PolicyModule(model, tokenizer, NFT())
        with counted_collectives() as shared:
            module.response_logprobs(batch).sum().backward()
        with counted_collectives() as plain:  # one forward over the answers alone: the communication to match
            model(input_ids=batch["response_ids"]).logits.sum().backward()
        result[f"collectives_checkpointing_{checkpointing}"] = {"shared_prompt": shared, "one_forward": plain}
    return result


def run(rank: int, world: int, directory: str) -> None:
    tokenizer = build_tokenizer()
    modules = []
    for _ in range(2):
        model = build_tiny_model(tokenizer, num_hidden_layers=2, seed=0)
        modules.append(PolicyModule(model, tokenizer, NFT()))
    module, reference = modules
    mesh = init_device_mesh("cpu", (world,))
    module.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    shard_model(module.model, mesh, param_dtype="float32")
    result = check_gradients(module, reference, rank, tokenizer.pad_token_id)
    result.update(check_weights(module, reference))
    result.update(check_generation(module, reference, rank, tokenizer))
    result.update(check_collectives(tokenizer, mesh))
    (Path(directory) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    launch(run, sys.argv[1])
