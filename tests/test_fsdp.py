"""FSDP2 data parallelism on CPU with two gloo ranks, always in subprocesses (never a multi-process strategy in pytest).

The end-to-end test runs the real ``src/train.py`` with ``trainer=fsdp`` (Lightning's ModelParallelStrategy relaunches
the script for rank 1, as on a GPU node) and compares its per-step losses with ``src/train.py`` in one process on the
same prompts, then resumes from the sharded checkpoint of the first epoch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from nft.checkpoint import progress_of, resume_path

from .conftest import ROOT

# Several optimizer steps per epoch (old_logp), several micro-batches per step with different counts on the two ranks
# (padding), a small evaluation at the start and the end (each rank its share), a checkpoint every epoch.
TOY_RUN = [
    "debug=resume",
    "trainer.max_epochs=2",
    "data.batch.prompts_per_epoch=64",
    "data.batch.micro_batch_tokens=2048",
    "callbacks.benchmark_eval.eval_every=0",
    "benchmarks.toy.limit=16",
    "callbacks.checkpoint.save_top_k=-1",
]
TWO_RANKS = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "fsdp.param_dtype=float32"]


def run_script(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    # One thread per process: the two ranks share two cores (and oversubscribed OpenMP threads crawl).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def logged_steps(run_dir) -> dict[int, dict[str, float]]:
    """step -> the training metrics logged at that step (rank zero's CSV)."""
    with (run_dir / "logs" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return {int(r["step"]): {k: float(r[k]) for k in ("train/loss", "train/grad_norm")} for r in rows}


def logged_epochs(run_dir) -> list[dict[str, float]]:
    with (run_dir / "logs" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("rollout/accuracy")]
    return [{k: float(r[k]) for k in ("rollout/accuracy", "rollout/groups", "rollout/steps")} for r in rows]


def eval_records(run_dir, epoch: int) -> list[dict]:
    lines = (run_dir / "eval" / "toy.jsonl").read_text().splitlines()[1:]  # after the protocol header
    records = [json.loads(line) for line in lines]
    return sorted((r for r in records if r["epoch"] == epoch), key=lambda r: (r["problem_id"], r["sample"]))


@pytest.mark.full
def test_sharded_gradients_generation_and_weight_streaming(tmp_path):
    run_script([str(ROOT / "tests" / "dist_fsdp_units.py"), str(tmp_path)], timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        assert result["micro_batches"][0] != result["micro_batches"][1]  # padding had to even them out
        assert result["grad_error"] <= 1e-5 * result["grad_scale"]  # 2 ranks x their groups == 1 x all groups
        assert result["weights_equal"] and result["bucketed_names"] and result["buckets"] > 1
        assert result["architecture"] == "Qwen2ForCausalLM"
        assert result["same_answers"]
        for checkpointing in (False, True):  # 2 layers: each gathered in forward and in backward, then the root
            counts = result[f"collectives_checkpointing_{checkpointing}"]
            assert counts["shared_prompt"] == counts["one_forward"] == {"all_gather": 5, "reduce_scatter": 3}
    assert [r["answers"] for r in ranks] == [3, 9]  # one prompt vs three: different numbers of forwards, no hang


def test_two_ranks_train_like_one_process_and_resume_from_the_sharded_checkpoint(tmp_path):
    run_script(["src/train.py", *TOY_RUN, f"hydra.run.dir={tmp_path / 'one'}"])  # trainer=cpu: one process
    two = tmp_path / "two"
    run_script(["src/train.py", *TWO_RANKS, *TOY_RUN, f"hydra.run.dir={two}"])

    expected, got = logged_steps(tmp_path / "one"), logged_steps(two)
    assert len(expected) >= 4 and sorted(got) == sorted(expected)
    for step in expected:  # the same answers, batches and updates: float-level differences only
        assert got[step]["train/loss"] == pytest.approx(expected[step]["train/loss"], rel=1e-4, abs=1e-7), step
        assert got[step]["train/grad_norm"] == pytest.approx(expected[step]["train/grad_norm"], rel=1e-3), step
    assert any(abs(s["train/loss"]) > 1e-4 for s in expected.values())  # not a curve of zeros
    assert logged_epochs(two) == logged_epochs(tmp_path / "one")  # same answers verified, same groups kept
    # Benchmark answers are seeded by problem: before any update, two ranks give one process's records exactly.
    start = [eval_records(run_dir, epoch=0) for run_dir in (tmp_path / "one", two)]
    assert len(start[0]) == 16 and start[0] == start[1]

    first_epoch = sorted((two / "checkpoints").glob("epoch=0-*.ckpt"))
    assert len(first_epoch) == 1 and first_epoch[0].is_dir()  # a sharded (distributed) checkpoint
    resumed = tmp_path / "resumed"
    run_script(["src/train.py", *TWO_RANKS, *TOY_RUN, f'ckpt_path="{first_epoch[0]}"', f"hydra.run.dir={resumed}"])
    again = logged_steps(resumed)
    second_epoch = {step: got[step] for step in got if step >= min(again)}
    assert sorted(again) == sorted(second_epoch) and len(again) >= 2
    for step, values in again.items():
        assert values == pytest.approx(second_epoch[step], rel=1e-5, abs=1e-8), step

    exported = AutoModelForCausalLM.from_pretrained(two / "export")  # gathered from the shards by rank 0
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "export")
    for (name, p), (_, q) in zip(exported.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)


def run_until_killed(args: list[str]) -> int:
    """Run a 2-rank training command until a fault kills it; then end its whole process group (the other rank)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)  # the faults live in tests/
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return process.wait(timeout=300)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def exported_hash(run_dir) -> str:
    tensors = load_file(run_dir / "export" / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.full
def test_a_killed_two_rank_run_resumes_from_its_sharded_checkpoint_to_the_same_weights(tmp_path):
    run = ["src/train.py", *TWO_RANKS, *TOY_RUN, "trainer.max_epochs=3", "callbacks.checkpoint.save_top_k=1"]
    run_script([*run, f"hydra.run.dir={tmp_path / 'reference'}"])
    crashed = tmp_path / "crashed"
    same_command = [*run, f"hydra.run.dir={crashed}", "resume=auto"]
    # 1. Killed on every rank while its second sharded checkpoint is being saved: the first stays valid.
    strategy = "trainer.strategy._target_=tests.faults.KillDuringShardedSave"
    assert run_until_killed([*same_command, strategy, "+trainer.strategy.save=2"]) == -signal.SIGKILL
    checkpoints = crashed / "checkpoints"
    [partial] = checkpoints.glob("*.ckpt.partial")
    assert partial.is_dir() and (partial / "meta.pt").is_file()  # written, never renamed into place
    assert progress_of(Path(resume_path(crashed)))[1] == 0  # epoch 0's checkpoint, whole
    # 2. Relaunched with the same command: it resumes from epoch 0's sharded checkpoint and ends where the
    #    uninterrupted run ends, bit for bit.
    result = run_script(same_command)
    assert "resume=auto: resuming from" in result.stdout + result.stderr
    assert not list(checkpoints.glob("*.partial")) and not list(checkpoints.glob("last-v*"))
    assert exported_hash(crashed) == exported_hash(tmp_path / "reference")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fsdp_trains_in_bfloat16_on_cuda(tmp_path):
    devices = min(torch.cuda.device_count(), 2)
    run_script(["src/train.py", "trainer=fsdp", f"trainer.devices={devices}", *TOY_RUN, f"hydra.run.dir={tmp_path}"])
    steps = logged_steps(tmp_path)
    assert len(steps) >= 4 and all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in steps.values())
    assert (tmp_path / "export" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_sweep_with_two_ranks_runs_each_job_once_in_its_folder(tmp_path):
    """Lightning relaunches rank 1 from the command line; under -m it must run its job, not the sweep again."""
    sweep = ["trainer.max_epochs=1", "data.batch.groups_per_step=32,64", "callbacks.benchmark_eval.at_start=false"]
    run_script(["src/train.py", "-m", *TWO_RANKS, *sweep, "benchmarks.toy.limit=8", f"hydra.sweep.dir={tmp_path}"])
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job, steps in zip(jobs, (2, 1), strict=True):  # 64 groups in steps of 32, then of 64
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 of this job wrote here
        assert len(logged_steps(job)) == steps


@pytest.mark.full
def test_only_rank_0_holds_a_full_copy_of_the_weights_when_loading(tmp_path):
    """A random ~100M-parameter Qwen2 from a save_pretrained folder, sharded over 2 ranks: rank 0 reads it, rank 1
    builds on the meta device and gets its shard from rank 0; the sharded model holds exactly the saved weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nft.toy import build_tokenizer

    config = Qwen2Config(
        vocab_size=32_000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert 90e6 < model_bytes / 4 < 130e6
    model.save_pretrained(tmp_path / "model")
    build_tokenizer().save_pretrained(tmp_path / "model")
    del model
    peaks = {}
    for mode in ("from_rank0", "every_rank"):
        script = [str(ROOT / "tests" / "dist_load_rank0.py"), str(tmp_path), str(tmp_path / "model"), mode]
        run_script(script, timeout=300)
        ranks = [json.loads((tmp_path / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["weights_equal"] and all(r["buffers_equal"] and not r["meta_left"] for r in ranks), mode
        peaks[mode] = [(round(r["peak_mb"]), round(r["sharding_peak_mb"])) for r in ranks]
    full_mb = model_bytes / 2**20
    # Rank 0 reads the full copy; rank 1 holds its half of the shards and one broadcast tensor at a time, never the
    # whole model (transformers maps the file lazily, so every_rank's rank 1 pays only what sharding touches). The
    # allocator's slack puts its sharding peak a few MB over "half plus the largest tensor" (357 MB against 355 on one
    # CI run), so the bound is the claim itself: less than 90% of a full copy (rank 0's own peak is above it). Its
    # whole-run peak also counts the modules that building the model imports (about 140 MB).
    assert peaks["from_rank0"][0][0] > 0.9 * full_mb
    assert peaks["from_rank0"][1][1] < 0.9 * full_mb
    print(
        f"full model {full_mb:.0f} MB; peak host MB added (whole run, sharding) for ranks 0 and 1: every rank loads "
        f"{peaks['every_rank']}, rank 0 loads {peaks['from_rank0']}"
    )
