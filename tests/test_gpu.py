"""The GPU check (``make gpu-check``): what only a CUDA device shows, on a random Qwen2 of Qwen2.5-0.5B's shape (about
0.5B parameters) built in code and saved as a hub model would be: no network, no download.

- the transformers rollout's behaviour log-probs against the trainer's forward (``PolicyModule``), float32 and
  bfloat16, and greedy decoding against transformers' own ``generate``;
- ``trainer=gpu`` end to end through ``nft.pipeline.build``: float32 master weights that move at lr 1e-6 under bf16
  compute, activation checkpointing, several optimizer steps per rollout; rollout and update tokens/s, the update's
  MFU, and peak GPU memory against ``nft.plan``'s prediction for the same config;
- FSDP2 on one GPU (``trainer=fsdp``, Lightning's ``ModelParallelStrategy``): a sharded checkpoint, then the same
  command with ``resume=auto`` continues it;
- attention that differs from the tiny model's (``tests/attention_variants.py``: grouped key/value heads of other
  sizes, RoPE scaling, a sliding-window layer) under each attention implementation installed (``sdpa``, ``eager``,
  and ``flash_attention_2`` where ``flash-attn`` is): the shared-prompt forward against one forward per answer, and
  the transformers rollout's log-probs against the trainer's;
- vLLM end to end on the random model, where ``vllm`` is installed (also marked ``vllm``): the weight push and its
  fingerprint, a stale engine caught, the engine's log-probs against the trainer's, sleep and a second push.

Every figure goes to one JSON report (``NFT_GPU_REPORT``, default ``runs/gpu_check.json``). Marked ``gpu``: skipped
where no CUDA device is visible, which ``make gpu-check`` refuses before pytest starts (``tests/require_cuda.py``).
``NFT_GPU_CHECK_DEVICE=cpu`` runs the same checks on the CPU with a small model, to
try the check itself where no GPU is lent (its figures then say nothing about a GPU).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nft.algorithms import NFT
from nft.data.batching import Sample, collate
from nft.module import PolicyModule
from nft.plan import plan
from nft.policy import pretrained_policy
from nft.rollout import SamplingParams
from nft.rollout.hf import HFGenerator
from nft.rollout.integrity import mismatch_metrics, mismatch_sums
from nft.toy import build_tokenizer

from .attention_variants import VARIANTS, rollout_error, shared_prompt_error, variant_model
from .conftest import ROOT, compose_train

DEVICE = os.environ.get("NFT_GPU_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE == "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QWEN_05B = dict(  # Qwen2.5-0.5B's shape: 494M parameters
    vocab_size=151_936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
DRY_RUN = dict(QWEN_05B, vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
DRY_RUN["num_attention_heads"] = 4
PEAK_BF16_TFLOPS = {"H100": 989, "H200": 989, "H800": 989, "A100": 312, "L40S": 362}  # dense, per the vendors' sheets
PROMPTS = [f"What is {a}+{a + 30}? Think step by step.\n" * (1 + a % 3) for a in range(10, 22)]  # 3 lengths
REPORT: dict = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield REPORT
    path = Path(os.environ.get("NFT_GPU_REPORT", ROOT / "runs" / "gpu_check.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    import lightning
    import transformers

    REPORT["device"] = torch.cuda.get_device_name() if ON_GPU else "cpu (dry run of the check)"
    REPORT["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    REPORT["versions"]["lightning"] = lightning.__version__
    path.write_text(json.dumps(REPORT, indent=2, sort_keys=True))
    print(f"\nGPU check report: {path}\n{json.dumps(REPORT, indent=2, sort_keys=True)}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random Qwen2 and the toy byte tokenizer in a ``save_pretrained`` folder (``model.path`` of the runs)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        **(QWEN_05B if ON_GPU else DRY_RUN),
        max_position_embeddings=1024,
        initializer_range=0.05,  # peakier logits than 0.02: greedy decoding meets fewer near-ties
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    folder = tmp_path_factory.mktemp("qwen2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    REPORT["model_parameters"] = sum(p.numel() for p in model.parameters())
    return folder


def load(model_dir: Path, dtype: str):
    policy = pretrained_policy(str(model_dir), dtype, 128, 128)
    policy.model.to(DEVICE)
    return policy


def encode(tokenizer) -> list[list[int]]:
    return tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rollout_logprobs_equal_the_trainers_forward(model_dir, dtype):
    """What the engine sampled with is what the trainer computes: KV cache, left padding, compaction, grouped decoding
    attention against one full forward."""
    policy = load(model_dir, dtype)
    prompts = encode(policy.tokenizer)
    generator = HFGenerator(max_batch_rows=24, compact_when=0.01, show_progress=False)  # several batches, compacted
    generator.sync(policy)
    groups = generator.generate(prompts, 4, SamplingParams(max_new_tokens=64), seed=list(range(len(prompts))))
    samples = [
        Sample(i, torch.tensor(prompts[i]), c.token_ids, c.logprobs, 0.0, c.finish_reason)
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = {k: v.to(DEVICE) for k, v in collate(samples, policy.tokenizer.pad_token_id).items()}
    module = PolicyModule(policy.model, policy.tokenizer, NFT())
    policy.model.eval()
    with torch.no_grad():
        logp = module.response_logprobs(batch)
    metrics = mismatch_metrics(mismatch_sums(logp, batch["behaviour_logp"], batch["response_mask"]))
    REPORT[f"rollout_vs_trainer/{dtype}"] = {k.rsplit("/", 1)[1]: v for k, v in metrics.items()}
    if dtype == "float32":  # the same arithmetic up to kernel order
        assert metrics["rollout/mismatch/max_abs_diff"] < 1e-3
    else:  # rounding only: a default run would not warn (integrity.warn_kl)
        assert metrics["rollout/mismatch/mean_abs_diff"] < 0.05 and metrics["rollout/mismatch/kl"] < 1e-3


def test_greedy_decoding_equals_transformers_generate(model_dir):
    policy = load(model_dir, "float32")
    prompts = encode(policy.tokenizer)
    generator = HFGenerator(max_batch_rows=64, show_progress=False)
    generator.sync(policy)
    ours = generator.generate(prompts, 1, SamplingParams(temperature=1e-4, max_new_tokens=32), seed=0)
    pad = policy.tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=DEVICE)
    lengths = torch.tensor([len(p) for p in prompts], device=DEVICE)
    mask = torch.arange(width, device=DEVICE) >= width - lengths[:, None]
    policy.model.eval()
    with torch.no_grad():
        out = policy.model.generate(
            input_ids=ids, attention_mask=mask.long(), do_sample=False, max_new_tokens=32, pad_token_id=pad
        )
    reference = out[:, width:].cpu()
    same = [g[0].token_ids.tolist() == reference[i, : len(g[0].token_ids)].tolist() for i, g in enumerate(ours)]
    REPORT["greedy_equal_to_transformers_generate"] = f"{sum(same)}/{len(same)}"
    assert all(same)


GPU_RUN = [
    "model=qwen1.5b",  # a pretrained_policy from model.path, as for a hub model
    "model.max_prompt_tokens=128",
    "model.max_response_tokens=256",
    "trainer=gpu",
    "trainer.max_epochs=2",
    "data.batch.prompts_per_epoch=64",
    "data.batch.groups_per_step=16",  # 4 optimizer steps per rollout: old log-probs recomputed
    "data.dynamic_sampling.filter_groups=false",  # a random model is always wrong: keep its groups, to have a loss
    "data.batch.micro_batch_tokens=16384",
    "activation_checkpointing=true",
    "optim.lr=1e-6",
    "rollout.backend.max_batch_rows=512",
]
CPU_DRY_RUN = ["trainer.accelerator=cpu", "data.batch.prompts_per_epoch=16", "data.batch.groups_per_step=4"]


def gpu_run(model_dir: Path, extra: list[str] = ()) -> list[str]:
    return [*GPU_RUN, f"model.path={model_dir}", *([] if ON_GPU else CPU_DRY_RUN), *extra]


def test_one_gpu_trains_float32_masters_at_lr_1e_6_within_the_planned_memory(model_dir, tmp_path):
    from nft.pipeline import build

    cfg = compose_train([*gpu_run(model_dir), "debug=quiet"], run_dir=tmp_path)
    run = build(cfg)
    before = [p.detach().float().cpu().clone() for p in run.module.model.parameters()]
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run.trainer.fit(run.module, datamodule=run.datamodule)
    seconds = time.perf_counter() - start
    run.generator.close()

    after = list(run.module.model.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    moved = sum(int((a.detach().float().cpu() != b).sum()) for a, b in zip(after, before, strict=True))
    fraction = moved / sum(b.numel() for b in before)
    epochs = read_epochs(tmp_path)
    assert len(epochs) == 2 and all(e["rollout/steps"] == 4 for e in epochs)  # several steps per rollout
    last = epochs[-1]
    answers = cfg.data.batch.prompts_per_epoch * cfg.data.batch.samples_per_prompt
    generated = last["rollout/response_length"] * answers
    prompt_tokens = sum(map(len, run.datamodule.prompt_ids)) / len(run.datamodule.prompt_ids)  # the file's mean
    trained = answers * (last["rollout/response_length"] + prompt_tokens)
    parameters = REPORT["model_parameters"]
    result = {
        "fraction_of_weights_moved": fraction,
        "seconds_two_epochs": seconds,
        "rollout_tokens_per_s": generated / last["time/generate"],
        "update_tokens_per_s": trained / last["time/update"],
        "mismatch_kl": last.get("rollout/mismatch/kl"),
    }
    if ON_GPU:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        # 6 N per trained token, 8 N with activation checkpointing (the forward again), plus the old-log-prob pass
        flops = (8 + 2) * parameters * trained
        result["update_mfu"] = flops / last["time/update"] / (peak * 1e12) if peak else None
        gpu_bytes = torch.cuda.get_device_properties(0).total_memory
        result["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
        result["planned_peak_gb"] = plan(cfg).peak(gpu_bytes) / 1e9
        assert result["peak_reserved_gb"] <= result["planned_peak_gb"]
        assert result["update_mfu"] is None or 0 < result["update_mfu"] < 1
    REPORT["trainer_gpu"] = result
    assert fraction > 0.5  # bf16 master weights would keep about 1% of them still


def read_epochs(run_dir: Path) -> list[dict[str, float]]:
    """Each epoch's logged row, over the run's CSV logs (a resumed run keeps the earlier one as metrics.<n>.csv)."""
    rows = []
    for path in (run_dir / "logs").glob("metrics*.csv"):
        with path.open() as f:
            rows += [r for r in csv.DictReader(f) if r.get("rollout/accuracy")]
    epochs = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]
    return sorted(epochs, key=lambda e: e["epoch"])


def test_fsdp2_on_one_gpu_writes_a_sharded_checkpoint_that_resume_auto_continues(model_dir, tmp_path):
    fsdp = ["trainer=fsdp", "trainer.devices=1", "debug=resume", "callbacks.benchmark_eval=null"]
    if not ON_GPU:
        fsdp += ["fsdp.param_dtype=float32"]
    command = [sys.executable, "src/train.py", *gpu_run(model_dir, fsdp), f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.run([*command, "trainer.max_epochs=2"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-5000:]
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()  # sharded: a folder of torch.distributed.checkpoint files
    again = subprocess.run(
        [*command, "trainer.max_epochs=3", "resume=auto"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-5000:]
    assert "resuming from" in again.stdout + again.stderr
    epochs = [int(e["epoch"]) for e in read_epochs(tmp_path)]
    REPORT["fsdp_one_gpu_epochs_logged"] = epochs
    assert epochs == [0, 1, 2]  # the relaunch trained epoch 2 only


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flash_attention_2"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_variants_in_the_shared_prompt_forward_and_the_rollout(tokenizer, variant, attention):
    flash = attention == "flash_attention_2"
    if flash and not (ON_GPU and importlib.util.find_spec("flash_attn")):
        pytest.skip("flash-attn is not installed (or no GPU)")
    dtype = torch.bfloat16 if flash else torch.float32  # flash attention computes in half precision only
    model = variant_model(tokenizer, variant, attention).to(DEVICE, dtype)
    error, grad_error = shared_prompt_error(model, tokenizer, DEVICE)
    drift = rollout_error(model, tokenizer, DEVICE)
    REPORT[f"attention/{attention}/{variant}"] = {
        "shared_prompt_max_abs_logp_diff": error,
        "shared_prompt_relative_grad_diff": grad_error,
        "rollout_max_abs_logp_diff": drift,
    }
    bound = 0.1 if flash else 1e-4  # bf16 rounding in two different kernel orders; a misrouted row is off by ~1
    assert error < bound and grad_error < bound and drift < 2 * bound


@pytest.mark.vllm
def test_vllm_end_to_end_on_the_random_model(model_dir):
    pytest.importorskip("vllm")
    if not ON_GPU:
        pytest.skip("vLLM needs a CUDA device")
    from nft.rollout.integrity import WeightSyncError, check_fingerprints, sync_and_check, trainer_fingerprints
    from nft.rollout.vllm import VLLMGenerator

    policy = load(model_dir, "float32")
    generator = VLLMGenerator(gpu_memory_utilization=0.3, enforce_eager=True)
    compared = sync_and_check(generator, policy)
    assert compared.elements == sum(p.numel() for p in policy.model.parameters())  # every tensor, fused ones too
    prompts = encode(policy.tokenizer)
    sampling = SamplingParams(max_new_tokens=64)
    groups = generator.generate(prompts, 4, sampling, seed=list(range(len(prompts))))
    samples = [
        Sample(i, torch.tensor(prompts[i]), c.token_ids, c.logprobs, 0.0, c.finish_reason)
        for i, group in enumerate(groups)
        for c in group
    ]
    batch = {k: v.to(DEVICE) for k, v in collate(samples, policy.tokenizer.pad_token_id).items()}
    module = PolicyModule(policy.model.eval(), policy.tokenizer, NFT())
    with torch.no_grad():
        logp = module.response_logprobs(batch)
    metrics = mismatch_metrics(mismatch_sums(logp, batch["behaviour_logp"], batch["response_mask"]))

    last = len(policy.model.model.layers) - 1
    with torch.no_grad():  # trained, but the engine is not told: its fingerprint must say so
        policy.model.model.layers[last].mlp.down_proj.weight.mul_(-1.0)
    engine, fused = generator.fingerprints()
    wanted = {name: (held.full_shape, held.dtype) for name, held in engine.items()}
    with pytest.raises(WeightSyncError, match=rf"model\.layers\.{last}\.mlp\.down_proj\.weight"):
        check_fingerprints(engine, trainer_fingerprints(policy.model, wanted, fused, generator.weight_dtype))
    generator.release()
    assert generator.asleep
    again = sync_and_check(generator, policy)  # wakes the engine and pushes the changed weights
    changed = generator.generate(prompts, 4, sampling, seed=list(range(len(prompts))))
    generator.release()
    REPORT["vllm"] = {
        "tensors_compared": compared.tensors,
        "elements_compared": compared.elements,
        **{k.rsplit("/", 1)[1]: v for k, v in metrics.items()},
    }
    assert again.elements == compared.elements
    assert metrics["rollout/mismatch/mean_abs_diff"] < 0.05 and metrics["rollout/mismatch/kl"] < 1e-3  # bf16 engine
    assert [[c.token_ids.tolist() for c in g] for g in changed] != [[c.token_ids.tolist() for c in g] for g in groups]
