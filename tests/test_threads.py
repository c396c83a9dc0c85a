"""nft.threads: torch's thread count follows the cores that other processes leave free, and only theirs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch

from nft import threads
from nft.bench.workload import competing_process
from nft.threads import ForeignCpu, ThreadBalancer

from .conftest import ROOT

needs_proc = pytest.mark.skipif(not ForeignCpu().available, reason="measures other processes' load through /proc")


@pytest.fixture
def two_threads(monkeypatch):
    """torch on 2 threads for the test, then as before; no OMP_NUM_THREADS (which would fix the count)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class Load:
    """Other processes' CPU seconds per lap, as told (the balancer's input, for its arithmetic)."""

    available = True

    def __init__(self) -> None:
        self.cores = 0.0
        self.window = 0.0

    def lap(self) -> float:
        return self.cores * self.window


@pytest.mark.parametrize(
    ("others", "cores", "expected"),
    [(0.0, 2, 2), (0.3, 2, 2), (0.7, 2, 1), (1.0, 2, 1), (3.0, 2, 1), (1.0, 8, 2), (6.6, 8, 1), (5.2, 8, 2)],
)
def test_threads_are_the_cores_others_leave_free(two_threads, others, cores, expected):
    balancer = ThreadBalancer(cores=cores, interval_s=0.0)
    balancer.cpu = load = Load()
    load.cores, load.window = others, 10.0
    balancer._since = time.monotonic() - load.window  # a 10 s window, as if measured since then
    balancer()
    assert torch.get_num_threads() == expected  # between 1 and the count torch started with


def test_the_balancer_acts_at_most_once_an_interval_and_not_when_the_user_fixed_the_count(two_threads, monkeypatch):
    balancer = ThreadBalancer(cores=2, interval_s=3600.0)
    balancer.cpu = load = Load()
    load.cores, load.window = 2.0, 3600.0
    balancer()
    assert torch.get_num_threads() == 2  # the interval has not passed
    balancer.interval_s = 0.0
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    balancer()
    assert torch.get_num_threads() == 2 and not balancer.enabled
    assert "fixed" in threads.describe_thread_policy()


def quiet_balancer() -> ThreadBalancer:
    """A balancer for 2 cores, measuring from now; skips the test when other processes keep the machine busy."""
    balancer = ThreadBalancer(cores=2, interval_s=0.5)
    time.sleep(0.5)
    if balancer.cpu.lap() > 0.3 * 0.5:
        pytest.skip("the machine is busy already: the measurement would not be the test's process")
    balancer._since = time.monotonic()
    return balancer


@needs_proc
def test_a_busy_process_takes_a_thread_and_gives_it_back(two_threads):
    balancer = quiet_balancer()
    with competing_process():  # not this process's child, as a browser is not
        time.sleep(1.0)
        balancer()
        assert torch.get_num_threads() == 1
    time.sleep(1.0)
    balancer()
    assert torch.get_num_threads() == 2


@needs_proc
def test_this_processs_children_are_its_own_work(two_threads):
    """Verifier workers busy while the trainer waits for them must not take the trainer's threads."""
    balancer = quiet_balancer()
    busy = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        time.sleep(1.0)
        balancer()
        assert torch.get_num_threads() == 2
    finally:
        child.wait(timeout=30)


@needs_proc
def test_training_gives_a_busy_core_back(tmp_path):
    """``src/train.py`` beside a busy process: its log says the policy at start, then that it dropped a thread."""
    quiet_balancer()  # skips on a machine that is busy already
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [
        *(sys.executable, "src/train.py", "debug=small", "model.warmup=null", "trainer.max_epochs=4"),
        f"hydra.run.dir={tmp_path}",
    ]
    with competing_process():
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "fewer while other processes keep cores busy" in log
    changes = re.findall(r"CPU threads (\d+) -> (\d+): other processes use ([\d.]+)", log)
    assert changes, log[-3000:]
    before, after, others = changes[0]
    assert int(after) < int(before) and float(others) >= 0.5
