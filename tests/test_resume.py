"""Runs that survive a SIGKILL: resumed runs end with the same weights, bit for bit, as an uninterrupted run.

Every run is ``src/train.py`` in its own process (real tiny model, generation, verifier, Lightning and Hydra); faults
come from ``tests/faults.py`` through Hydra overrides.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nft.checkpoint import AtomicCheckpointIO, resume_path, rng_states, set_rng_states

from .conftest import ROOT
from .faults import SENT_AT

# 3 epochs of 32 prompts x 8 answers, two optimizer steps per epoch (so old_logp is used), a checkpoint and a small
# evaluation every epoch.
RUN = ["debug=resume"]


def train_in_subprocess(run_dir, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "src/train.py", *RUN, f"hydra.run.dir={run_dir}", *overrides]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=300)
        exited_at = time.time()
        time.sleep(0.5)  # the kernel's parent-death signals reach the verifier workers
        left = group_alive(process.pid)
    finally:  # whatever is left of the run (nothing should be: see left_behind)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    done = subprocess.CompletedProcess(command, process.returncode, output)
    done.left_behind, done.exited_at = left, exited_at
    return done


def group_alive(pgid: int) -> bool:
    """Whether a live process of the run's process group (its verifier workers, say) is left. A dead one whose
    parent died waits as a zombie until the machine's init reaps it: it holds no resources and does not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, pgrp, ...
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def weights_hash(run_dir) -> str:
    tensors = load_file(run_dir / "export" / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_epoch(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def final_state(run_dir) -> tuple:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["global_step"], checkpoint["OnlineMathDataModule"], checkpoint["nft"]["skipped_steps"]


def eval_rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that every interrupted one must end equal to (one for the module's tests)."""
    run_dir = tmp_path_factory.mktemp("reference")
    done = train_in_subprocess(run_dir)
    assert done.returncode == 0, done.stdout[-3000:]
    return run_dir


@pytest.mark.full
def test_killed_runs_resume_to_the_same_weights(tmp_path, reference):

    run_dir, last = tmp_path / "crashed", tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    # 1. Killed halfway through writing the epoch-1 checkpoint: the epoch-0 one stays valid.
    first = train_in_subprocess(run_dir, "trainer.plugins=[{_target_:tests.faults.KillDuringSave,save:2}]")
    assert first.returncode == -signal.SIGKILL, first.stdout[-3000:]
    [partial] = last.parent.glob("*.ckpt.partial")
    assert 0 < partial.stat().st_size < last.stat().st_size
    assert checkpoint_epoch(last) == 0  # last.ckpt links to the newest complete checkpoint
    # 2. Resumed, then killed in the middle of epoch 2, after its first optimizer step.
    kill_in_epoch_2 = ["+callbacks.kill._target_=tests.faults.KillAfterStep", "+callbacks.kill.epoch=2"]
    second = train_in_subprocess(run_dir, "resume=auto", *kill_in_epoch_2)
    assert second.returncode == -signal.SIGKILL, second.stdout[-3000:]
    assert not first.left_behind and not second.left_behind  # SIGKILLed, and no verifier worker outlived it
    assert "resuming from" in second.stdout and "a checkpoint save was interrupted" in second.stdout
    assert not list(last.parent.glob("*.partial")) and checkpoint_epoch(last) == 1
    # 3. Resumed again, to the end.
    third = train_in_subprocess(run_dir, "resume=auto")
    assert third.returncode == 0, third.stdout[-3000:]

    assert weights_hash(run_dir) == weights_hash(reference)
    # The same optimizer steps (two per epoch), and every answer verified once: no epoch was generated twice.
    assert final_state(run_dir) == final_state(reference)
    assert final_state(run_dir)[0] > 3
    assert eval_rows(run_dir) == eval_rows(reference)  # nothing evaluated twice, nothing lost
    # Every answer's record and every epoch's samples once, though the crash replayed an evaluation and an epoch.
    for written in ("eval/toy.jsonl", "logs/rollout_samples.md"):
        assert (run_dir / written).read_text() == (reference / written).read_text(), written
    assert (run_dir / "logs" / "metrics.1.csv").is_file() and (run_dir / "logs" / "metrics.2.csv").is_file()


@pytest.mark.full
def test_sigterm_saves_the_current_iteration_and_exits_and_resume_continues_it(tmp_path, reference):
    sigterm = {  # during the update of epoch 1 (after its first step), and during the rollout of epoch 1
        "update": [
            "+callbacks.kill._target_=tests.faults.KillAfterStep",
            "+callbacks.kill.epoch=1",
            "+callbacks.kill.signal_name=SIGTERM",
        ],
        "generation": ["rollout.backend._target_=tests.faults.SigtermDuringGeneration", "+rollout.backend.call=4"],
    }  # generate calls: 1 the start's evaluation, 2 epoch 0's rollout, 3 its evaluation, 4 epoch 1's rollout
    for when, fault in sigterm.items():
        run_dir = tmp_path / when
        stopped = train_in_subprocess(run_dir, *fault)
        assert stopped.returncode == 143, stopped.stdout[-3000:]  # 128 + SIGTERM: preempted, not failed
        assert "SIGTERM: policy iteration 1 is complete" in stopped.stdout and not stopped.left_behind
        sent = float(stopped.stdout.split(SENT_AT)[1].split()[0])
        assert stopped.exited_at - sent < 30  # a few seconds on an idle machine; clusters wait 30 s or more
        assert checkpoint_epoch(run_dir / "checkpoints" / "preempted.ckpt") == 1
        resumed = train_in_subprocess(run_dir, "resume=auto")
        assert resumed.returncode == 0 and "preempted.ckpt" in resumed.stdout, resumed.stdout[-3000:]
        assert weights_hash(run_dir) == weights_hash(reference), when


def test_resume_path_takes_the_newest_complete_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    assert resume_path(tmp_path) is None
    io.save_checkpoint({"global_step": 4, "epoch": 1}, tmp_path / "checkpoints" / "epoch=1.ckpt")
    io.save_checkpoint({"global_step": 8, "epoch": 3}, tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "checkpoints" / "epoch=5.ckpt").write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes()[:50])
    (tmp_path / "checkpoints" / "last.ckpt.partial").write_bytes(b"half a checkpoint")
    assert resume_path(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert not (tmp_path / "checkpoints" / "last.ckpt.partial").exists()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "epoch": 0}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable object
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "epoch": 1, "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    AtomicCheckpointIO().save_checkpoint({"rng": rng_states()}, tmp_path / "rng.ckpt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
