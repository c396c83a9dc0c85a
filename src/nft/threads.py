"""The CPU thread count: decided once, when a run starts, from the cores other processes leave free, and logged.

torch runs each operation on all its OpenMP threads (one per physical core). When another process keeps a core busy
(a laptop with a browser open, a CI runner), every operation waits at its barrier for the thread that lost its core:
an iteration of ``make bench`` took 25x its idle time beside one busy one-core loop (91 s against 3.7 s, 2 cores).
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning) brings that to 1.4x, but costs 36-47% on an idle
machine, because each of this workload's many small operations wakes sleeping threads.

So ``decide_threads`` (called by ``nft.pipeline.build``, ``nft.eval.offline`` and ``nft.bench`` before any work)
measures, over half a second, the CPU time that *other* processes use (``/proc``: the machine's busy time minus this
process's and its children's, such as the verifier workers) and runs torch on the cores they leave free, between 1 and
torch's default; it logs the count and why. The count then stays for the whole run: thread counts change
floating-point sums in the last bits, so a run's figures depend on its seed and its thread count only (a count that
followed the load would make the same command give different figures on a busy machine). The config key ``threads``
(or ``OMP_NUM_THREADS``) fixes the count instead. Without ``/proc`` (macOS, Windows) torch's default stays.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

WINDOW_S = 0.5  # the load measured before deciding: a /proc scan costs about 20 us per process (1.4 ms for 66)


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


def free_cores(others: float, cores: int, most: int) -> int:
    """Threads for the cores that ``others`` (busy cores' worth of other processes' work) leave free, in [1, most]."""
    return max(1, min(most, cores - math.floor(others + 0.5)))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_DEFAULT = torch.get_num_threads()  # torch's own choice (physical cores), before any run changed it


def decide_threads(threads: int | None = None, window_s: float = WINDOW_S) -> str:
    """Set torch's thread count for the run and return the line that says it (each run logs it at start).

    ``threads``: a fixed count (the config's ``threads``); ``OMP_NUM_THREADS`` in the environment fixes it too
    (Lightning sets it in each process of a multi-process CPU run). Otherwise the cores other processes leave free."""
    if "OMP_NUM_THREADS" in os.environ:
        return f"CPU threads: {torch.get_num_threads()} (fixed by OMP_NUM_THREADS)"
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or null (decided at start), got {threads}")
        torch.set_num_threads(threads)
        return f"CPU threads: {threads} (fixed by threads={threads})"
    cpu = ForeignCpu()
    if not cpu.available:
        torch.set_num_threads(_DEFAULT)
        return f"CPU threads: {_DEFAULT} (torch's default; no /proc to measure other processes' load)"
    time.sleep(window_s)
    others = cpu.lap() / window_s
    count = free_cores(others, usable_cores(), _DEFAULT)
    torch.set_num_threads(count)
    return (
        f"CPU threads: {count}, decided at start for the whole run (other processes used {others:.1f} of "
        f"{usable_cores()} cores; threads=N fixes the count)"
    )


class ContentionWatch:
    """Says once, in the log, when other processes come to take cores that the run's threads were decided for: the
    count stays (the run's figures depend on it), but each operation then waits for the thread that lost its core, so
    the run slows down many times over; the warning says how to restart it faster."""

    def __init__(self) -> None:
        self.cpu = ForeignCpu()
        self.since = time.monotonic()
        self.warned = False

    def check(self) -> None:
        """Cheap enough to call every epoch (one ``/proc`` scan)."""
        now = time.monotonic()
        if self.warned or not self.cpu.available or now - self.since < WINDOW_S:
            return
        others = self.cpu.lap() / (now - self.since)
        self.since = now
        free = free_cores(others, usable_cores(), _DEFAULT)
        if free < torch.get_num_threads():
            self.warned = True
            log.warning(
                "other processes now use %.1f of %d cores: this run keeps its %d CPU threads (its figures depend on "
                "the count) and runs much slower; resume it with threads=%d to run at the speed of the free cores",
                others,
                usable_cores(),
                torch.get_num_threads(),
                free,
            )
