"""The vLLM backend: weight names and buckets (CPU, no vLLM), the sync/sleep protocol against a recording stand-in for
the engine (vLLM cannot run here), and real-engine tests marked ``vllm`` (they need vLLM and a CUDA GPU)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

from nft.rollout import SamplingParams
from nft.rollout.integrity import WeightSyncError, check_fingerprints, sync_and_check, trainer_fingerprints
from nft.rollout.vllm import VLLMGenerator, import_vllm
from nft.rollout.weights import checkpoint_name, weight_buckets

from .conftest import PolicyHandle

HAS_VLLM = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def test_wrapped_parameter_names_map_to_checkpoint_names(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = set(load_file(tmp_path / "model.safetensors"))
    plain = [name for name, _ in tiny_model.named_parameters()]
    apply_activation_checkpointing(tiny_model, check_fn=lambda m: type(m).__name__ == "Qwen2DecoderLayer")
    wrapped = [name for name, _ in tiny_model.named_parameters()]
    assert any("_checkpoint_wrapped_module" in name for name in wrapped)
    assert [checkpoint_name(name) for name in wrapped] == plain
    assert set(plain) <= saved  # tied lm_head.weight appears once, as the embeddings
    assert checkpoint_name("_orig_mod.model._fsdp_wrapped_module.layers.0.mlp.up_proj.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )


def test_buckets_keep_order_respect_the_budget_and_stream():
    pulled = []

    def tensors():
        for i, size in enumerate([10, 10, 15, 5, 100, 1, 1]):  # float32: 4 bytes each
            pulled.append(i)
            yield f"p{i}", torch.zeros(size)

    buckets = weight_buckets(tensors(), bucket_bytes=80)
    first = next(buckets)
    assert [name for name, _ in first] == ["p0", "p1"] and pulled == [0, 1, 2]  # one tensor past the bucket
    rest = list(buckets)
    assert [[name for name, _ in b] for b in rest] == [["p2", "p3"], ["p4"], ["p5", "p6"]]  # p4 alone: over budget
    assert all(sum(t.numel() * 4 for _, t in b) <= 80 for b in [first, *rest] if len(b) > 1)
    with pytest.raises(ValueError, match="bucket_bytes"):
        next(weight_buckets(tensors(), 0))


class RecordingEngine:
    """Stands in for ``vllm.LLM`` (which needs CUDA): records the calls the generator makes, in order."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.loaded: dict[str, torch.Tensor] = {}

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def apply_model(self, func):
        engine = self

        class Model:
            """vLLM's Qwen2: q/k/v and gate/up fused into one weight each (``packed_modules_mapping``)."""

            packed_modules_mapping = {
                "qkv_proj": ["q_proj", "k_proj", "v_proj"],
                "gate_up_proj": ["gate_proj", "up_proj"],
            }

            def load_weights(self, weights):
                weights = list(weights)
                engine.loaded.update(weights)
                engine.calls.append(("load_weights", len(weights)))

            def named_modules(self):
                return []  # no vLLM layers: every tensor whole, as at tensor_parallel_size=1

            def named_parameters(self):
                fused = {}
                for name, tensor in engine.loaded.items():
                    for target, parts in self.packed_modules_mapping.items():
                        for part in parts:
                            name = name.replace(f".{part}.", f".{target}.")
                    fused.setdefault(name, []).append(tensor)
                return [(name, torch.cat(tensors)) for name, tensors in fused.items()]

        return [func(Model())]

    def reload_weights(self, *args, **kwargs):
        raise AssertionError("reload_weights re-reads the checkpoint from disk: never after a sync")


def test_sync_wakes_weights_streams_buckets_wakes_kv_cache_and_resets_the_prefix_cache(tiny_model, tokenizer):
    generator = VLLMGenerator(bucket_mb=0.05)  # ~52 kB buckets: the tiny model's 2 layers need several
    engine = generator.llm = RecordingEngine()  # as if started; the real start needs vLLM
    policy = PolicyHandle(tiny_model, tokenizer)
    generator.sync(policy)  # a fresh engine is awake: weights only
    assert {name: t.float() for name, t in engine.loaded.items()}.keys() == dict(tiny_model.named_parameters()).keys()
    for name, param in tiny_model.named_parameters():
        assert engine.loaded[name].dtype == torch.bfloat16
        torch.testing.assert_close(engine.loaded[name].float(), param.detach().bfloat16().float())
    loads = [c for c in engine.calls if c[0] == "load_weights"]
    assert len(loads) > 1 and engine.calls[-1] == ("reset_prefix_cache",)

    generator.release()
    assert engine.calls[-1] == ("sleep", 2) and generator.asleep
    engine.calls.clear()
    with torch.no_grad():
        tiny_model.lm_head.weight.add_(1.0)  # tied: the embeddings change too
    generator.sync(policy)
    names = [c[0] for c in engine.calls]
    assert names[0] == "wake_up" and engine.calls[0][1] == ("weights",)
    assert names[-2:] == ["wake_up", "reset_prefix_cache"] and engine.calls[-2][1] == ("kv_cache",)
    assert set(names[1:-2]) == {"load_weights"}
    torch.testing.assert_close(
        engine.loaded["model.embed_tokens.weight"].float(), tiny_model.model.embed_tokens.weight.bfloat16().float()
    )
    generator.release()
    with pytest.raises(RuntimeError, match="before sync"):
        generator.generate([[1, 2]], 2, SamplingParams(), seed=0)


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[vllm\]'"):
        import_vllm()


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM and a CUDA GPU")
def test_vllm_answers_carry_the_policys_logprobs_and_follow_each_sync(tiny_model, tokenizer):
    from nft.algorithms import NFT
    from nft.data.batching import Sample, collate
    from nft.module import PolicyModule

    tiny_model.cuda()
    generator = VLLMGenerator(gpu_memory_utilization=0.3, enforce_eager=True)
    policy = PolicyHandle(tiny_model, tokenizer)
    generator.sync(policy)
    prompts = tokenizer(["What is 12+30?\n", "What is 7+8?\n"], add_special_tokens=False)["input_ids"]
    groups = generator.generate(prompts, 4, SamplingParams(max_new_tokens=16), seed=[1, 2])
    assert [len(g) for g in groups] == [4, 4]
    samples = [
        Sample(i, torch.tensor(prompts[i]), c.token_ids, c.logprobs, 0.0, c.finish_reason)
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = {k: v.cuda() for k, v in collate(samples, tokenizer.pad_token_id).items()}
    module = PolicyModule(tiny_model, tokenizer, NFT())
    with torch.no_grad():
        logp = module.response_logprobs(batch)
    mask = batch["response_mask"].bool()
    torch.testing.assert_close(logp[mask], batch["behaviour_logp"][mask], atol=0.05, rtol=0.05)  # bf16 engine
    again = generator.generate(prompts, 4, SamplingParams(max_new_tokens=16), seed=[1, 2])
    assert [[c.token_ids.tolist() for c in g] for g in again] == [[c.token_ids.tolist() for c in g] for g in groups]
    generator.release()
    with torch.no_grad():
        tiny_model.lm_head.weight.mul_(-1.0)  # a different policy: the engine must see it after the next sync
    generator.sync(policy)
    changed = generator.generate(prompts, 4, SamplingParams(max_new_tokens=16), seed=[1, 2])
    assert [[c.token_ids.tolist() for c in g] for g in changed] != [[c.token_ids.tolist() for c in g] for g in groups]
    generator.release()


def test_the_sync_check_reads_the_engines_fused_weights_and_names_a_stale_one(tiny_model, tokenizer):
    generator = VLLMGenerator()
    engine = generator.llm = RecordingEngine()
    policy = PolicyHandle(tiny_model, tokenizer)
    compared = sync_and_check(generator, policy)  # bf16 on both sides, q/k/v and gate/up concatenated
    names = generator.fingerprints()[0]
    assert compared.tensors == len(names) and any(".qkv_proj." in name for name in names)
    assert compared.elements == sum(p.numel() for p in tiny_model.parameters())  # every tensor, fused ones too
    with torch.no_grad():
        tiny_model.model.layers[1].self_attn.k_proj.weight.add_(0.5)  # trained, but the engine is not told
    with pytest.raises(WeightSyncError, match=r"model\.layers\.1\.self_attn\.qkv_proj\.weight"):
        check_fingerprints(*_stale_check(generator, policy))
    assert engine.calls[-1] == ("reset_prefix_cache",)  # the check read the engine; it changed nothing


def _stale_check(generator, policy):
    engine, fused = generator.fingerprints()  # no sync: what the engine still holds
    wanted = {name: (held.full_shape, held.dtype) for name, held in engine.items()}
    return engine, trainer_fingerprints(policy.model, wanted, fused, generator.weight_dtype)


def test_engine_kwargs_that_repeat_an_argument_are_a_clear_error():
    with pytest.raises(ValueError, match=r"repeats .*\['dtype', 'seed'\].*set rollout.backend.dtype; seed is fixed"):
        VLLMGenerator(engine_kwargs={"dtype": "float16", "seed": 3, "max_num_seqs": 8})
    VLLMGenerator(engine_kwargs={"max_num_seqs": 8})  # a setting of vllm.LLM the backend leaves alone
