"""The CPU thread policy: torch's speed on an idle machine, a fair share of a busy one.

torch runs each operation on all its OpenMP threads (one per physical core). When another process keeps a core busy
(a laptop with a browser open, a CI runner), every operation waits at its barrier for the thread that lost its core:
an iteration of ``make bench`` took 25x its idle time beside one busy one-core loop (91 s against 3.7 s, 2 cores).
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning; this project's previous policy) brings that to 1.4x its
own idle time, but costs 36-47% on an idle machine (4.80 and 4.97 s against 3.54 and 3.39 s), because each of this
workload's many small operations wakes sleeping threads.

So the thread count follows the load instead: ``rebalance_threads`` (called at each decoding step, before each forward
of the update when they run on the CPU and at each step of the toy warm-up, acting at most once a second) measures the
CPU time that *other* processes used since it last acted (``/proc``: the machine's busy time minus this process's and
its children's, such as the verifier workers) and runs torch on the cores they leave free, between 1 and the count torch
had when it first acted. An idle machine keeps every thread and OpenMP's default wait policy: no cost. A busy core costs
one thread: beside the same loop the iteration took 1.5x its idle time, the workload's one-thread speed.

``OMP_NUM_THREADS`` in the environment fixes the count (Lightning sets it in each process of a multi-process CPU run).
Thread counts change floating-point sums in the last bits, so a run whose machine got busy does not repeat bit for bit
a run on an idle one: set ``OMP_NUM_THREADS`` where that matters. Without ``/proc`` (macOS, Windows) the count stays
fixed. ``describe_thread_policy`` is the line each run logs at start.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

INTERVAL_S = 1.0  # the shortest window measured: a /proc scan costs about 20 us per process (1.4 ms for 66)


class ForeignCpu:
    """CPU seconds spent by processes other than this one and its children since the last ``lap``.

    Reads ``/proc``; elsewhere ``available`` is False and every lap returns 0.0."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").is_file()
        self.tick = os.sysconf("SC_CLK_TCK") if self.available else 100
        self._last = self._read()

    def lap(self) -> float:
        now = self._read()
        busy, own = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return max(0.0, busy - own)

    def _read(self) -> tuple[float, float]:
        if not self.available:
            return 0.0, 0.0
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / self.tick
        return busy, self._own_ticks() / self.tick

    def _own_ticks(self) -> int:
        me, total = os.getpid(), 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            if int(entry.name) == me or int(fields[1]) == me:  # this process or a child (verifier workers)
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total


class ThreadBalancer:
    """Sets torch's thread count to the cores that other processes leave free (see the module docstring)."""

    def __init__(self, cores: int | None = None, interval_s: float = INTERVAL_S) -> None:
        self.most = torch.get_num_threads()  # torch's default (physical cores), or what the caller set before
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        self.cores = cores or len(usable)
        self.interval_s = interval_s
        self.cpu = ForeignCpu()
        self._since = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.cpu.available and self.most > 1 and "OMP_NUM_THREADS" not in os.environ

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._since < self.interval_s or not self.enabled:
            return
        others = self.cpu.lap() / (now - self._since)  # cores busy with other processes' work
        self._since = now
        self.set(max(1, min(self.most, self.cores - math.floor(others + 0.5))), others)

    def set(self, threads: int, others: float) -> None:
        if threads != torch.get_num_threads():
            log.info(
                "CPU threads %d -> %d: other processes use %.1f of %d cores",
                torch.get_num_threads(),
                threads,
                others,
                self.cores,
            )
            torch.set_num_threads(threads)


_balancer: ThreadBalancer | None = None


def rebalance_threads() -> None:
    """Adapt torch's thread count to the machine's load; cheap to call often (it acts at most once a second)."""
    global _balancer
    if _balancer is None:
        _balancer = ThreadBalancer()
    _balancer()


def describe_thread_policy() -> str:
    if "OMP_NUM_THREADS" in os.environ:
        return f"CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS, fixed)"
    if not Path("/proc/stat").is_file():
        return f"CPU threads: {torch.get_num_threads()} (torch's default; no /proc to measure other processes' load)"
    return (
        f"CPU threads: {torch.get_num_threads()}, fewer while other processes keep cores busy "
        "(nft.threads; export OMP_NUM_THREADS to fix the count)"
    )
