"""The memory planner against hand-computed numbers (formulas in the nft.plan docstring)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nft.plan import KNOWN, architecture_of, check_fits, compose, plan
from nft.toy import build_tiny_model, build_tokenizer

from .conftest import ROOT

GB = 10**9


def test_tiny_plan_by_hand():
    p = plan(compose(["trainer.devices=2", "data.batch.micro_batch_tokens=65536", "activation_checkpointing=true"]))
    # 4 layers of h=128, I=512, 4 heads, 2 kv heads (d=32, kv width 64), vocab 260, tied embeddings:
    # layer = q (128*128+128) + k, v 2*(128*64+64) + o 128*128 + mlp 3*128*512 + norms 2*128 = 246,272
    # root = embeddings 260*128 + final norm 128 = 33,408; N = 4*246,272 + 33,408 = 1,018,496
    model = build_tiny_model(build_tokenizer(), num_hidden_layers=4)
    assert p.architecture.parameters == 1_018_496 == sum(t.numel() for t in model.parameters())
    assert (p.parameters, p.gradients, p.optimizer) == (2_036_992, 2_036_992, 4_073_984)  # 4N/2, 4N/2, 8N/2
    assert p.gathered == 2 * (33_408 + 2 * 246_272) + 4 * 246_272 == 2_036_992
    # R: groups of 8 answers of 32 tokens share a 64-token prompt; T = 65,536 tokens, 13,108 of them prompt tokens
    assert p.response_tokens == 65_536 * 8 * 32 // (64 + 8 * 32) == 52_428
    # bf16 weights: per token and layer 4 (2h + heads) + 2 (6h + 4I) = 6,672 bytes; an answer token adds its
    # prompt's and its own keys and values at every head, 2 x 2h x (64 + 32) / 32 = 1,536; a prompt token its own,
    # 2 x 2 kv d = 256; the bf16 mask 2 x 96 per answer token, once
    layer = 52_428 * (6_672 + 1_536) + 13_108 * (6_672 + 256)
    assert p.activations_full == 4 * layer + 52_428 * 96 * 2 == 2_094_631_168
    assert p.activations_checkpointed == 4 * 65_536 * 128 * 2 + layer + 52_428 * 96 * 2 == 598_316_288
    assert p.weight_copies == 0  # FSDP2 gathers bf16 weights: nothing to cast
    assert p.logits == 52_428 * 260 * 10 == 136_312_800
    assert p.training == 2_036_992 * 3 + 4_073_984 + 598_316_288 + 136_312_800 + 2 * GB
    # rollout=hf: full bf16 weights + KV cache of 512 rows x 96 tokens x 4 layers x (k, v) x 64 + sampling logits
    assert p.hf_generation == 2 * 1_018_496 + 512 * 96 * 2 * 4 * 64 * 2 + 512 * 260 * 12


def test_paper_7b_plan_by_hand():
    p = plan(compose(["experiment=paper_7b"]))  # 8 GPUs, 4096-token micro-batches, vLLM at 0.7, tp 4
    # Qwen2.5-Math-7B: h=3584, I=18944, 28 layers, 28 heads, 4 kv heads (kv width 512), vocab 152064, untied:
    # layer = (3584^2 + 3584) + 2*(3584*512 + 512) + 3584^2 + 3*3584*18944 + 2*3584 = 233,057,792
    # root = 2 * 152064*3584 + 3584 = 1,089,998,336; N = 28 * 233,057,792 + 1,089,998,336 = 7,615,616,512
    assert p.architecture.parameters == 7_615_616_512
    assert (p.parameters, p.optimizer) == (3_807_808_256, 7_615_616_512)
    assert p.gathered == 2 * (1_089_998_336 + 2 * 233_057_792) + 4 * 233_057_792 == 4_044_459_008
    # T = 4096 (= 512 + 3584), R = 3584; per token and layer 4 (2h + 28) + 2 (6h + 4I) = 223,344 bytes, an answer
    # token's keys and values 2 x 2h x 4096 / 3584 = 16,384, a prompt token's 2 x 2 x 512 = 2,048; the mask 2 x 4096
    layer = 3584 * (223_344 + 16_384) + 512 * (223_344 + 2_048)
    assert p.activations_checkpointed == 28 * 4096 * 3584 * 2 + layer + 3584 * 4096 * 2 == 1_826_029_568
    assert p.activations_full == 28 * layer + 3584 * 4096 * 2 == 27_317_764_096
    assert p.logits == 3584 * 152_064 * 10 == 5_449_973_760
    assert p.training == 2 * 3_807_808_256 + 7_615_616_512 + 4_044_459_008 + 1_826_029_568 + 5_449_973_760 + 2 * GB
    resident = 3_807_808_256 + 7_615_616_512 + 2 * GB
    assert p.generation(80 * GB) == resident + int(0.7 * 80 * GB)  # 69.4 GB: fits
    assert p.peak(80 * GB) <= 80 * GB and p.vllm_weights == 2 * 7_615_616_512 // 4


def test_known_architectures_match_their_parameter_counts():
    assert KNOWN["Qwen/Qwen2.5-32B"].parameters == 32_763_876_352
    assert KNOWN["Qwen/Qwen2.5-0.5B"].parameters == 494_032_768


def test_local_config_json_wins_and_unknown_models_are_refused(tmp_path):
    config = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 2, "vocab_size": 100}))
    arch = architecture_of(compose(["model=qwen7b", f"model.path={tmp_path}"]))
    assert (arch.hidden_size, arch.num_hidden_layers, arch.kv_width, arch.tie_word_embeddings) == (64, 2, 32, False)
    with pytest.raises(ValueError, match="model.path='someone/unknown'"):
        architecture_of(compose(["model=qwen7b", "model.path=someone/unknown"]))


def test_the_command_line_prints_and_warns():
    command = [sys.executable, "-m", "nft.plan", "model=qwen32b", "trainer.num_nodes=1", "trainer.devices=8"]
    result = subprocess.run(
        [*command, "data=dapo17k", "rollout=vllm", "rollout.backend.tensor_parallel_size=4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "32.76B parameters" in out and "8 GPUs = 8 ranks" in out
    assert "optimizer state (AdamW, float32)" in out and "activations" in out and "vLLM share: 0.60" in out
    assert "WARNING: does not fit a 80 GB GPU" in out  # 32B on 8 x 80 GB: 16 N / 8 = 65.5 GB of state alone


ONE_GPU = ["trainer=gpu", "data=dapo17k", "activation_checkpointing=true", "rollout.backend.kv_cache_gb=20"]


def test_one_gpu_plans_float32_masters_bf16_compute_and_a_bounded_kv_cache():
    small = plan(compose(["model=qwen1.5b", *ONE_GPU]))
    n = small.architecture.parameters  # Qwen2.5-Math-1.5B: 1,543,714,304
    assert n == 1_543_714_304 and not small.sharded and small.ranks == 1
    assert (small.parameters, small.gradients, small.optimizer, small.gathered) == (4 * n, 4 * n, 8 * n, 0)
    # autocast over float32 weights, 16,384-token micro-batches, checkpointed: each layer's float32 input, and one
    # layer's saves: per token 4 (4h + 12 heads) + 2 (7h + 4I), the keys and values at every head, the bf16 mask
    h, i, kv = 1536, 8960, 256
    tokens, answers = small.tokens, small.response_tokens
    own = 4 * (4 * h + 12) + 2 * (7 * h + 4 * i)
    layer = answers * (own + 2 * 2 * h * 4096 / 3584) + (tokens - answers) * (own + 2 * 2 * kv)
    assert small.activations_checkpointed == int(28 * tokens * h * 4 + layer + answers * 4096 * 2)
    # autocast keeps a bf16 copy of every weight matrix it multiplies until the backward
    assert small.weight_copies == 2 * small.architecture.weight_matrices > 2.9 * GB
    # The transformers rollout generates with the float32 masters under bf16 autocast; its bf16 KV cache is held to
    # 20 GB (fewer rows)
    rows = 20 * GB // ((512 + 3584) * 2 * 28 * kv * 2)
    assert small.hf_generation == 20 * GB + rows * 151_936 * 12
    assert small.peak(80 * GB) == small.training < 60 * GB  # fits an 80 GB GPU, as the README's one-GPU command
    check_fits(small, 80 * GB)

    big = plan(compose(["model=qwen7b", *ONE_GPU]))
    assert big.training > 16 * big.architecture.parameters > 120 * GB  # float32 state alone: 16 bytes a parameter
    with pytest.raises(MemoryError, match=r"does not fit this 80 GB GPU.*model=qwen1\.5b.*trainer=fsdp"):
        check_fits(big, 80 * GB)


def test_the_planner_answers_a_config_it_does_not_plan_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "nft.plan", "trainer=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nft.plan plans GPU runs: trainer=fsdp" in result.stderr


def test_lora_plan_by_hand():
    p = plan(compose(["experiment=paper_7b_lora"]))  # one GPU (trainer=gpu), rank 64 on the seven linear layers
    assert not p.sharded and p.ranks == 1
    # per layer 64 x (q 2*3584 + k, v 2*(3584+512) + o 2*3584 + gate, up 2*(3584+18944) + down 18944+3584)
    # = 64 x 90,112 = 5,767,168; M = 28 x 5,767,168 = 161,480,704
    assert p.lora_parameters == 161_480_704
    assert p.parameters == 2 * 7_615_616_512 + 4 * 161_480_704  # the frozen base in bf16, the adapters in float32
    assert (p.gradients, p.optimizer) == (4 * 161_480_704, 8 * 161_480_704)
    full = plan(compose(["experiment=paper_7b_lora", "model.lora.enabled=false"]))  # float32 masters, one GPU
    assert p.peak(80 * GB) <= 80 * GB < full.peak(80 * GB)
    sharded = plan(compose(["model=qwen7b", "model.lora.enabled=true", "trainer.devices=8"]))  # FSDP: float32 shards
    m = 28 * 16 * 90_112
    assert (sharded.parameters, sharded.optimizer) == ((4 * 7_615_616_512 + 4 * m) // 8, 8 * m // 8)
    with pytest.raises(ValueError, match="lm_head"):
        plan(compose(["model=qwen7b", "model.lora.enabled=true", "model.lora.target_modules=[lm_head]"]))
