"""nft.threads: a run's thread count is decided once, at start, from the cores that other processes leave free."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from nft import threads
from nft.bench.workload import competing_process
from nft.threads import ContentionWatch, ForeignCpu, decide_threads, free_cores

from .conftest import ROOT

needs_proc = pytest.mark.skipif(not ForeignCpu().available, reason="measures other processes' load through /proc")


@pytest.fixture
def undecided(monkeypatch):
    """No OMP_NUM_THREADS (which fixes the count) for the test; torch's count restored after it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_DEFAULT", 2)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("others", "cores", "most", "expected"),
    [(0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.7, 2, 2, 1), (1.0, 2, 2, 1), (3.0, 2, 2, 1), (1.0, 8, 2, 2), (6.6, 8, 8, 1)],
)
def test_threads_are_the_cores_others_leave_free(others, cores, most, expected):
    assert free_cores(others, cores, most) == expected  # between 1 and torch's default


def test_a_fixed_count_is_kept_and_said(undecided, monkeypatch):
    assert decide_threads(1) == "CPU threads: 1 (fixed by threads=1)" and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "fixed by OMP_NUM_THREADS" in decide_threads(None)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        monkeypatch.delenv("OMP_NUM_THREADS")
        decide_threads(0)


def quiet_machine() -> None:
    """Skips the test when other processes keep the machine busy: the measurement would not be the test's process."""
    cpu = ForeignCpu()
    time.sleep(0.5)
    if cpu.lap() > 0.3 * 0.5:
        pytest.skip("the machine is busy already")


@needs_proc
def test_a_busy_process_at_start_takes_a_thread_for_the_whole_run(undecided):
    quiet_machine()
    assert decide_threads().startswith("CPU threads: 2, decided at start")
    with competing_process():  # not this process's child, as a browser is not
        line = decide_threads()
    assert torch.get_num_threads() == 1 and line.startswith("CPU threads: 1, decided at start"), line


@needs_proc
def test_a_busy_process_after_the_start_keeps_the_count_and_is_warned_about_once(undecided, caplog):
    quiet_machine()
    torch.set_num_threads(2)
    watch = ContentionWatch()
    with competing_process(), caplog.at_level(logging.WARNING, logger="nft.threads"):
        time.sleep(1.0)
        watch.check()
        time.sleep(1.0)
        watch.check()
    assert torch.get_num_threads() == 2 and caplog.text.count("resume it with threads=1") == 1, caplog.text


@needs_proc
def test_this_processs_children_are_its_own_work(undecided):
    """Verifier workers busy while the run starts must not take its threads."""
    quiet_machine()
    busy = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        time.sleep(0.3)
        decide_threads()
        assert torch.get_num_threads() == 2
    finally:
        child.wait(timeout=30)


@pytest.mark.slow
@needs_proc
def test_the_same_seed_gives_the_same_figures_idle_and_beside_a_busy_process(tmp_path):
    """``src/train.py threads=1`` idle and beside a busy process: the same logged count, the same figures."""
    quiet_machine()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def run(name: str) -> str:
        command = [sys.executable, "src/train.py", "debug=small", "threads=1", f"hydra.run.dir={tmp_path / name}"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    idle = run("idle")
    with competing_process():
        busy = run("busy")
    figures = [re.findall(r"val/toy/avg@1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", log) for log in (idle, busy)]
    assert figures[0] and figures[0] == figures[1]
    assert "CPU threads: 1 (fixed by threads=1)" in idle and "CPU threads: 1 (fixed by threads=1)" in busy
