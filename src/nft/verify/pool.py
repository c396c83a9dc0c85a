"""Batched verification in supervised worker processes, and the one-shot process behind ``is_correct``.

math-verify cannot time out in threads (it uses SIGALRM), and sympy can hang in C code (huge integer powers,
factorials) where no signal reaches it. So grading runs in forked processes, each watched on its own: an answer
that is still running past ``timeout`` gets its worker killed (SIGKILL) and replaced, the answer scored 0 and
counted in ``counters["timeouts"]``; a worker that dies (a segfault, the memory cap) costs the answer it was on,
counted in ``counters["errors"]``; the rest of the batch goes on on the other workers. Each worker caps its
address space at what it inherited plus ``memory_mb``, so an adversarial answer cannot exhaust the machine.

Answers the cheap step decides (``nft.verify.grader.fast_judgement``: identical text, plain numbers, choices, text,
unsafe input) never leave the parent. The others are sent grouped by reference, so that a worker parses each
reference once per batch (and caches it across batches). Workers are plain ``os.fork`` children (not
``multiprocessing`` processes, which a daemonic process, e.g. a DataLoader worker, may not start).
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait

from nft.verify import reference
from nft.verify.extract import DEFAULT_FALLBACKS, check_fallbacks
from nft.verify.grader import fast_judgement, grade, warm_up

TASKS_PER_WORKER = 4  # a batch is cut into about this many tasks per worker, to spread one reference's answers


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def soft_timeout(timeout: float) -> float:
    """The budget given to the grading function: it stops itself this much before the worker would be killed."""
    return timeout - min(0.5, timeout / 2)


@dataclass
class _Task:
    answer: str
    items: list[tuple[int, str]]  # (index in the batch, response), graded in order


class _Worker:
    """A forked grading process: receives (answer, responses), sends (verdict or None on error, timed_out) each."""

    def __init__(self, grade_fn: Callable, timeout: float, strict: bool, memory_mb: int) -> None:
        parent_end, child_end = Pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller's code
            status = 1
            try:
                parent_end.close()
                _prepare_child(memory_mb, parent)
                _serve(child_end, grade_fn, soft_timeout(timeout), strict)
                status = 0
            finally:
                os._exit(status)
        child_end.close()
        self.pid, self.conn = pid, parent_end
        self.task: _Task | None = None
        self.deadline = math.inf

    def give(self, task: _Task, deadline: float) -> None:
        self.conn.send((task.answer, [response for _, response in task.items]))
        self.task, self.deadline = task, deadline

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.conn.close()


def _prepare_child(memory_mb: int, parent: int) -> None:
    # Ctrl-C belongs to the parent, and SIGTERM must just end the worker (not run the trainer's handlers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)
    _limit_memory(memory_mb)


def _die_with(parent: int) -> None:
    """The kernel kills this worker when its trainer dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the owner's finalizer is all there is
    if os.getppid() != parent:  # the trainer died before the request took effect
        os._exit(1)


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space at what is mapped now plus ``memory_mb``. Relative, because a fork of a trainer (and
    above all of a CUDA process) already maps far more than any absolute cap would allow."""
    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return  # not Linux: no cap
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _serve(conn: Connection, grade_fn: Callable, timeout: float, strict: bool) -> None:
    while True:
        try:
            answer, responses = conn.recv()
        except EOFError:  # the parent closed the pipe or died
            return
        for response in responses:
            start = time.monotonic()
            try:
                verdict = bool(grade_fn(response, answer, timeout, strict))
            except Exception:  # noqa: BLE001 - reported to the parent as an error for this answer
                verdict = None
            conn.send((verdict, time.monotonic() - start >= timeout))


def _stop_all(workers: list[_Worker], owner: int) -> None:
    if os.getpid() == owner:  # a forked child holding a copy of this list must not kill its siblings
        while workers:
            workers.pop().stop()


class MathVerifier:
    """Scores responses against reference answers: 1.0 right, 0.0 wrong (or unscorable).

    Args:
        num_workers: grading processes.
        timeout: seconds one answer may take before its worker is killed.
        strict: a response without ``\\boxed{}`` is wrong (DAPO's rule); off, the ``fallbacks`` are tried.
        grade_fn: what the workers call, ``grade_fn(response, answer, timeout, strict) -> bool`` (default
            ``nft.verify.grader.grade`` with ``fallbacks``). A custom one decides every answer: the parent's fast
            path is for the default grader only. Tests inject crashes and hangs with it.
        fallbacks: extraction fallbacks when not ``strict`` (names in ``nft.verify.extract.FALLBACKS``).
        memory_mb: address space each worker may add to what it inherits from the parent.
        grader: ``default`` (ours, ``nft.verify.grader``) or a reference grader of ``nft.verify.reference`` by name
            (``dapo_exact``, ``math_verify_boxed_gold``), which then decides every answer in the workers.

    ``counters``: ``answers`` scored, ``fast_path`` (decided in the parent), ``rejected`` (unsafe input, scored 0
    without sympy), ``timeouts`` and ``errors`` (see the module docstring). ``score`` is serialised by a lock.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout: float = 5.0,
        strict: bool = True,
        grade_fn: Callable | None = None,
        fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
        memory_mb: int = 1024,
        grader: str = "default",
    ) -> None:
        if grader != "default":  # the reference code's graders, by name
            if grade_fn is not None:
                raise ValueError("verifier: give grade_fn or a grader by name, not both")
            grade_fn = reference.grade_fn(grader)
        self.grader = grader
        if num_workers < 1 or timeout <= 0 or memory_mb < 64:
            raise ValueError("verifier: num_workers must be >= 1, timeout > 0 and memory_mb >= 64")
        self.fallbacks = check_fallbacks(fallbacks)
        self.grade_fn = grade_fn or partial(grade, fallbacks=self.fallbacks)
        self._fast_in_parent = grade_fn is None
        self.num_workers, self.timeout, self.strict, self.memory_mb = num_workers, timeout, strict, memory_mb
        self.counters = {"answers": 0, "fast_path": 0, "rejected": 0, "timeouts": 0, "errors": 0}
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._workers, os.getpid())

    def score(self, responses: Sequence[str], answers: Sequence[str]) -> list[float]:
        """1.0/0.0 per (response, reference answer) pair."""
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        with self._lock:
            scores: dict[int, float] = {}
            slow = []
            for index, (response, answer) in enumerate(zip(responses, answers, strict=True)):
                verdict = self._fast_score(response, answer) if self._fast_in_parent else None
                if verdict is None:
                    slow.append((index, response, answer))
                else:
                    scores[index] = verdict
            self.counters["answers"] += len(responses)
            self.counters["fast_path"] += len(scores)
            if slow:
                scores.update(self._pool_scores(slow))
            return [scores[i] for i in range(len(responses))]

    def _fast_score(self, response: str, answer: str) -> float | None:
        try:
            judgement = fast_judgement(response, answer, self.strict, self.fallbacks)
        except Exception:  # noqa: BLE001
            self.counters["errors"] += 1
            return 0.0
        self.counters["rejected"] += judgement.rejected
        return None if judgement.verdict is None else float(judgement.verdict)

    def _pool_scores(self, items: list[tuple[int, str, str]]) -> dict[int, float]:
        """Grade ``items`` on the workers, each answer under its own deadline."""
        tasks = deque(self._tasks(items))
        results: dict[int, float] = {}
        warm_up()
        while len(self._workers) < self.num_workers:
            self._workers.append(self._new_worker())
        while tasks or any(worker.task for worker in self._workers):
            for worker in self._workers:
                if worker.task is None and tasks:
                    self._give(worker, tasks.popleft())
            busy = [worker for worker in self._workers if worker.task]
            wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - time.monotonic()))
            for worker in busy:
                if worker.conn.poll():
                    self._receive(worker, tasks, results)
                elif time.monotonic() >= worker.deadline:
                    self._replace(worker, tasks, results, "timeouts")
        return results

    def _tasks(self, items: list[tuple[int, str, str]]) -> list[_Task]:
        by_answer: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for index, response, answer in items:
            by_answer[answer].append((index, response))
        size = max(1, math.ceil(len(items) / (TASKS_PER_WORKER * self.num_workers)))
        return [_Task(a, group[i : i + size]) for a, group in by_answer.items() for i in range(0, len(group), size)]

    def _new_worker(self) -> _Worker:
        return _Worker(self.grade_fn, self.timeout, self.strict, self.memory_mb)

    def _give(self, worker: _Worker, task: _Task) -> None:
        try:
            worker.give(task, time.monotonic() + self.timeout)
        except OSError:  # it died while idle: nothing of this batch was lost, so a fresh one just takes the task
            self._swap(worker).give(task, time.monotonic() + self.timeout)

    def _receive(self, worker: _Worker, tasks: deque, results: dict[int, float]) -> None:
        try:
            verdict, timed_out = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker, tasks, results, "errors")
            return
        index, _ = worker.task.items.pop(0)
        results[index] = float(bool(verdict))
        if verdict is None or timed_out:
            self.counters["errors" if verdict is None else "timeouts"] += 1
        if worker.task.items:
            worker.deadline = time.monotonic() + self.timeout
        else:
            worker.task, worker.deadline = None, math.inf

    def _replace(self, worker: _Worker, tasks: deque, results: dict[int, float], counter: str) -> None:
        """The worker hung or died on its current answer: score that 0, requeue the rest, start a fresh worker."""
        index, _ = worker.task.items.pop(0)
        results[index] = 0.0
        self.counters[counter] += 1
        if worker.task.items:
            tasks.appendleft(worker.task)
        self._swap(worker)

    def _swap(self, worker: _Worker) -> _Worker:
        worker.stop()
        fresh = self._new_worker()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        """Stop the workers (a later ``score`` starts new ones)."""
        _stop_all(self._workers, os.getpid())

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_workers", "_lock", "_finalizer")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_process_state()


def grade_isolated(
    response: str,
    answer: str,
    timeout: float,
    strict: bool,
    fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
    memory_mb: int = 1024,
) -> bool:
    """``grade`` in a short-lived forked process, killed at ``timeout`` seconds: bounded from any thread."""
    deadline = time.monotonic() + timeout
    warm_up()
    worker = _Worker(partial(grade, fallbacks=fallbacks), timeout, strict, memory_mb)
    try:
        worker.give(_Task(answer, [(0, response)]), deadline)
        if worker.conn.poll(max(0.0, deadline - time.monotonic())):
            verdict, _ = worker.conn.recv()
            return bool(verdict)
        return False
    except (EOFError, OSError):
        return False
    finally:
        worker.stop()
