"""LoRA (``model.lora``) with the real tiny Qwen2, real generation, verifier and Lightning: only the adapters train,
they reach the sampler every epoch (and a stale engine is stopped), a resumed run ends bit for bit where an
uninterrupted one does, and the merged export is the trained policy."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from nft.algorithms import GRPO, NFT
from nft.export import ExportHF
from nft.lora import apply_lora, effective_parameters, is_lora
from nft.module import PolicyModule
from nft.pipeline import build, train
from nft.rollout.base import SamplingParams
from nft.rollout.integrity import WeightSyncError

from .conftest import ROOT, compose_train
from .test_module import fit_one_step, toy_step

LORA = ["model.lora.enabled=true", "optim.lr=3e-3"]
SMALL = ["debug=small", *LORA]


def lora_model(tiny_model, seed: int = 0):
    return apply_lora(tiny_model, enabled=True, rank=4, alpha=8, seed=seed)


def randomize_adapters(model, seed: int = 1) -> None:
    """Non-zero B (zero at initialisation), so that the adapters change what the model computes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def weights_hash(path) -> str:
    tensors = load_file(path)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- the adapters and their merged weights ---------------------------------------------------------------------------
def test_effective_weights_are_peft_own_merge_and_the_base_when_adapters_are_off(tiny_model):
    base = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    model = lora_model(tiny_model)
    assert is_lora(model) and model.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n
    }
    randomize_adapters(model)
    effective = dict(effective_parameters(model))
    assert set(effective) == set(base)  # checkpoint names, the tied head once
    merged = copy.deepcopy(model).merge_and_unload()  # peft's own merge
    for name, tensor in merged.named_parameters():
        torch.testing.assert_close(effective[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert any(not torch.equal(effective[n], base[n]) for n in base)
    with model.disable_adapter():  # what an engine that samples the base would hold
        assert all(torch.equal(t, base[n]) for n, t in effective_parameters(model))
    assert [n for n, _ in effective_parameters(model, torch.bfloat16)] == list(effective)


def test_the_adapters_start_from_their_seed_and_leave_the_global_generator_alone(tiny_model):
    def adapters_after(global_seed: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(global_seed)
        model = lora_model(copy.deepcopy(tiny_model), seed=seed)
        return [p.detach() for n, p in model.named_parameters() if p.requires_grad], torch.rand(1)

    first, drawn = adapters_after(global_seed=1, seed=0)
    again, _ = adapters_after(global_seed=2, seed=0)
    other, _ = adapters_after(global_seed=1, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    torch.manual_seed(1)
    assert torch.equal(drawn, torch.rand(1))  # the run's own random stream did not move


def test_the_kl_reference_is_the_base_without_a_second_copy(tokenizer, tiny_model):
    step = toy_step({0: [1, 0, 1, 0], 1: [0, 1, 1, 1]})
    batch = step[0]
    initial = PolicyModule(copy.deepcopy(tiny_model), tokenizer, GRPO(kl_coef=0.1))
    expected = initial.response_logprobs(batch).detach()
    module = PolicyModule(lora_model(tiny_model), tokenizer, GRPO(kl_coef=0.1))
    assert module.reference_model is None  # full fine-tuning keeps a frozen copy; LoRA disables its adapters
    randomize_adapters(module.model)
    assert not torch.allclose(module.response_logprobs(batch), expected)  # the adapted policy has moved ...
    torch.testing.assert_close(module.reference_logprobs(batch), expected, rtol=0, atol=1e-6)  # ... its base has not
    assert not any(layer.disable_adapters for layer in module.model.modules() if hasattr(layer, "lora_A"))


def test_vllm_is_pushed_the_merged_weights_and_a_stale_engine_is_named(tiny_model, tokenizer):
    """Against the recording stand-in of ``vllm.LLM`` (tests/test_vllm.py): the engine gets the base architecture's
    names with the adapters merged (in bf16), and an engine not told of an update fails the fused-weight check."""
    from nft.rollout.integrity import check_fingerprints, sync_and_check
    from nft.rollout.vllm import VLLMGenerator, architecture_name

    from .conftest import PolicyHandle
    from .test_vllm import RecordingEngine, _stale_check

    plain = copy.deepcopy(tiny_model)
    model = lora_model(tiny_model)
    randomize_adapters(model)
    assert architecture_name(model) == "Qwen2ForCausalLM"  # vLLM's implementation of the base
    generator = VLLMGenerator(bucket_mb=0.05)
    engine = generator.llm = RecordingEngine()
    policy = PolicyHandle(model, tokenizer)
    assert sync_and_check(generator, policy).tensors == len(generator.fingerprints()[0])
    assert engine.loaded.keys() == dict(plain.named_parameters()).keys()  # no lora_A/B, no base_layer
    merged = copy.deepcopy(model).merge_and_unload()
    for name, param in merged.named_parameters():
        torch.testing.assert_close(engine.loaded[name].float(), param.detach().bfloat16().float(), msg=name)
    with torch.no_grad():
        model.base_model.model.model.layers[1].self_attn.k_proj.lora_B["default"].weight.add_(0.5)  # an update
    with pytest.raises(WeightSyncError, match=r"model\.layers\.1\.self_attn\.qkv_proj\.weight"):
        check_fingerprints(*_stale_check(generator, policy))
    assert sync_and_check(generator, policy).tensors > 0  # synced again: it holds the update


# --- training ------------------------------------------------------------------------------------------------------
def test_under_bf16_mixed_the_base_stays_bfloat16_and_the_adapters_train_in_float32(tokenizer, tiny_model):
    """trainer=gpu's precision, on the CPU: the base arrives in bf16 (model.dtype) and stays so (no float32 master of a
    frozen weight); the adapters are float32 and move."""
    model = lora_model(tiny_model.to(torch.bfloat16))
    module = PolicyModule(model, tokenizer, NFT(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit_one_step(module, toy_step({0: [1, 0, 0, 1], 1: [0, 1, 1, 1]}), precision="bf16-mixed")
    for name, param in model.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else torch.bfloat16), name
        # B moves; A not yet (its gradient is 0 while B is); the base never
        assert torch.equal(param, before[name]) != (".lora_B." in name), name


def test_only_the_adapters_train_and_the_optimizer_holds_them_alone(tmp_path):
    overrides = ["algo=grpo", "algo.kl_coef=0.04", "activation_checkpointing=true"]
    run = build(compose_train([*SMALL, *overrides], run_dir=tmp_path))
    model = run.module.model
    assert is_lora(model) and run.module.reference_model is None
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    run.trainer.fit(run.module, datamodule=run.datamodule)

    [optimizer] = run.trainer.optimizers
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(optimizer.state) == len(adapters)
    after = dict(model.named_parameters())
    assert all(torch.equal(frozen[n], after[n]) for n in frozen)  # the base did not move
    assert any(not torch.equal(adapters[n], after[n]) for n in adapters if ".lora_B." in n)
    assert run.module.global_step == 2 and run.module.skipped_steps == 0
    assert "train/kl" in run.trainer.callback_metrics


@pytest.mark.parametrize("algo", ["rft", "dr_grpo", "dapo"])
def test_every_algorithm_trains_the_adapters(tmp_path, algo):
    """(NFT: the tests here; GRPO with its KL: the one above.) The adapters move, the base does not."""
    run = build(compose_train([*SMALL, f"algo={algo}"], run_dir=tmp_path))
    before = {n: p.detach().clone() for n, p in run.module.model.named_parameters()}
    run.trainer.fit(run.module, datamodule=run.datamodule)
    moved = {n for n, p in run.module.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".lora_" in n for n in moved) and run.module.skipped_steps == 0


def test_the_generator_samples_the_current_adapters(tmp_path):
    """The same prompts and seeds give the same answers unless the weights changed: after one update they differ."""
    run = build(compose_train([*SMALL, "trainer.max_epochs=1"], run_dir=tmp_path))
    prompts = [run.module.tokenizer.encode(f"{a}+{b}=") for a, b in [(12, 34), (56, 7), (80, 19), (45, 45)]]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=16)

    def answers():
        run.generator.sync(run.module)
        return [[c.token_ids.tolist() for c in group] for group in run.generator.generate(prompts, 4, sampling, 7)]

    before = answers()
    assert answers() == before  # seeded: nothing else changes them
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.global_step == 1
    assert answers() != before


def test_an_engine_left_with_the_first_merged_adapters_is_stopped(tmp_path):
    """The classic LoRA bug: the engine got the merged policy once and keeps sampling it. The weight-sync
    fingerprint (of the effective, merged weights) stops the run at the first rollout after the first update."""
    stale = ["rollout.backend._target_=tests.faults.StaleMergeGenerator"]
    run = build(compose_train([*SMALL, "trainer.max_epochs=3", *stale], run_dir=tmp_path))
    with pytest.raises(WeightSyncError, match=r"before the rollout of epoch 1: the rollout engine's model\.\S+ "):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.global_step == 1


# --- checkpoints, resume and export -----------------------------------------------------------------------------------
RESUME = ["debug=resume", *LORA, "callbacks.export.adapter=true", "benchmarks.toy.limit=4"]


@pytest.mark.full
def test_a_resumed_lora_run_ends_bit_for_bit_where_an_uninterrupted_one_does(tmp_path):
    train(compose_train(RESUME, run_dir=tmp_path / "whole"))
    checkpoint = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"] and all(".lora_" in k for k in checkpoint["state_dict"])  # the adapters only
    assert "lora_base" in checkpoint["nft"]

    train(compose_train([*RESUME, "trainer.max_epochs=1"], run_dir=tmp_path / "first"))
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = compose_train([*RESUME, f"ckpt_path={first}"], run_dir=tmp_path / "resumed")
    train(resumed)
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        whole, again = (tmp_path / run / "export" / name for run in ("whole", "resumed"))
        assert weights_hash(again) == weights_hash(whole)

    # Adapters trained on another base are refused before they are put on this one.
    tampered = torch.load(first, map_location="cpu", weights_only=True)
    name = next(iter(tampered["nft"]["lora_base"]))
    tampered["nft"]["lora_base"][name] *= 1 + 1e-6  # as a base one small fine-tuning step away would
    torch.save(tampered, tmp_path / "tampered.ckpt")
    with pytest.raises(ValueError, match=f"trained on another base model .*first at {name}"):
        train(compose_train([*RESUME, f"ckpt_path={tmp_path / 'tampered.ckpt'}"], run_dir=tmp_path / "refused"))


def test_the_merged_export_loads_with_from_pretrained_and_is_the_trained_policy(tmp_path):
    run = build(compose_train(SMALL, run_dir=tmp_path))  # debug=small exports nothing: the callback is added here
    run.trainer.callbacks.append(ExportHF(dirpath=str(tmp_path / "export"), adapter=True))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    model = run.module.model.eval()

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert not is_lora(exported) and type(exported).__name__ == "Qwen2ForCausalLM"
    batch = toy_step({0: [1, 0, 1, 0], 1: [0, 1, 1, 1]})[0]
    expected = run.module.response_logprobs(batch)
    got = PolicyModule(exported, run.module.tokenizer, run.module.algorithm).response_logprobs(batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    base = copy.deepcopy(model).unload()  # the frozen base, adapters removed
    adapted = PeftModel.from_pretrained(base, tmp_path / "export" / "adapter")
    again = PolicyModule(adapted, run.module.tokenizer, run.module.algorithm).response_logprobs(batch)
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-6)


@pytest.mark.full
def test_the_command_line_trains_with_lora(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "src/train.py", "model.lora.enabled=true", "debug=small", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PeftModelForCausalLM" in result.stdout + result.stderr


# --- FSDP ------------------------------------------------------------------------------------------------------------
@pytest.mark.full
def test_two_ranks_with_lora_train_like_one_process(tmp_path):
    """As tests/test_fsdp.py for full weights: ``trainer=fsdp`` over 2 gloo ranks (the adapters sharded with their
    layers, like every other parameter) takes the one-process run's steps, resumes from its sharded checkpoint and
    exports the same merged model."""
    from .test_fsdp import TOY_RUN, TWO_RANKS, logged_steps, run_script

    # The KL reference (adapters off) too. At lr 3e-3 GRPO's gradient norm here reaches 57 by step 2 and rounding
    # differences grow chaotically (1e-4 by step 6); at 1e-3 the runs stay within float noise of each other.
    run = [*TOY_RUN, "model.lora.enabled=true", "optim.lr=1e-3", "algo=grpo", "algo.kl_coef=0.04"]
    run_script(["src/train.py", *run, f"hydra.run.dir={tmp_path / 'one'}"])
    run_script(["src/train.py", *TWO_RANKS, *run, f"hydra.run.dir={tmp_path / 'two'}"])
    expected, got = logged_steps(tmp_path / "one"), logged_steps(tmp_path / "two")
    assert len(expected) >= 4 and sorted(got) == sorted(expected)
    for step in expected:
        assert got[step]["train/loss"] == pytest.approx(expected[step]["train/loss"], rel=1e-4, abs=1e-7), step
        assert got[step]["train/grad_norm"] == pytest.approx(expected[step]["train/grad_norm"], rel=1e-3), step
    # Resumed from the sharded checkpoint of the first epoch (it keeps the frozen base too: nft.module), the second
    # epoch's steps are the uninterrupted run's.
    [first_epoch] = sorted((tmp_path / "two" / "checkpoints").glob("epoch=0-*.ckpt"))
    resumed = tmp_path / "resumed"
    run_script(["src/train.py", *TWO_RANKS, *run, f'ckpt_path="{first_epoch}"', f"hydra.run.dir={resumed}"])
    again = logged_steps(resumed)
    assert sorted(again) == [step for step in sorted(got) if step >= min(again)] and len(again) >= 2
    for step, values in again.items():
        assert values == pytest.approx(got[step], rel=1e-5, abs=1e-8), step
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "export")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "export")
    for (name, p), (_, q) in zip(exported.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(exported.parameters(), initial_weights(tmp_path), strict=True))


def initial_weights(tmp_path):
    """The run's starting model (the cached warmed-up tiny policy), for the check that training moved it."""
    from hydra.utils import instantiate

    cfg = compose_train([], run_dir=tmp_path)
    return list(instantiate(cfg.model).model.parameters())
