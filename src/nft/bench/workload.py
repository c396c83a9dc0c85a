"""The fixed timing workload of ``make bench`` (``docs/bench_workload.md``), and how it is measured.

- the prompts: 384 distinct ``a + b`` pairs from ``random.Random(0)``, 64 per iteration, 8 answers each;
- the FLOP model of one iteration (docs/bench_workload.md section 8), for the hardware floor;
- the machine's fp32 matmul throughput, measured like the workload says (best of large square matmuls);
- a competing busy process, for the contended timing (``--contended``).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

PROMPTS_PER_ITERATION = 64
ITERATIONS = 6
PROMPT = "What is {a} + {b}? Put the final answer in \\boxed{{}}."

# The workload's model (docs/bench_workload.md section 2): block matmul parameters N, tied embedding V x d, layers,
# width.
BLOCK_MATMUL_PARAMS = 983_040
EMBEDDING_PARAMS = 260 * 128
LAYERS, WIDTH = 4, 128


def pairs(count: int = ITERATIONS * PROMPTS_PER_ITERATION, seed: int = 0) -> list[tuple[int, int]]:
    """Distinct (a, b) pairs in [0, 999]^2, in the order ``random.Random(seed)`` draws them."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < count:
        pair = (rng.randint(0, 999), rng.randint(0, 999))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def rows(count: int = ITERATIONS * PROMPTS_PER_ITERATION) -> list[dict]:
    """The workload's problems as rows of a problem file (``id``, ``problem``, ``answer``)."""
    return [
        {"id": f"add-{i}", "problem": PROMPT.format(a=a, b=b), "answer": str(a + b)}
        for i, (a, b) in enumerate(pairs(count))
    ]


def attention_flops(n: int) -> int:
    """Causal attention scores and values, forward, for a sequence of n tokens."""
    return 4 * LAYERS * WIDTH * n * (n + 1) // 2


def iteration_flops(
    prompt_lengths: list[int], samples: int = 8, completion: int = 32, prompt_once: bool = False
) -> tuple[float, float]:
    """Nominal (generation, update) FLOPs of one iteration whose prompts have these lengths (section 8).

    ``prompt_once``: the FLOPs nft does, where each prompt goes through the model once for its samples, in generation
    (one prefill) and in the update (``nft.shared_prompt``: the prompt but its last token forward and backward, then
    each answer's ``completion`` tokens, its prompt's last token first, reading the prompt's keys and values), instead
    of once per sample."""
    n, vd, c = BLOCK_MATMUL_PARAMS, EMBEDDING_PARAMS, completion
    generate = update = 0.0
    for p in prompt_lengths:
        if prompt_once:
            answer_attention = attention_flops(p - 1 + c) - attention_flops(p - 1)
            generate += 2 * n * p + 2 * vd + attention_flops(p)
            generate += samples * (2 * n * (c - 1) + 2 * vd * (c - 1) + attention_flops(p + c - 1) - attention_flops(p))
            update += 6 * n * (p - 1) + 3 * attention_flops(p - 1) + samples * (6 * (n + vd) * c + 3 * answer_attention)
        else:
            generate += samples * (2 * n * (p + c - 1) + 2 * vd * c + attention_flops(p + c - 1))
            update += samples * (6 * n * (p + c) + 6 * vd * c + 3 * attention_flops(p + c))
    return generate, update


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul throughput of torch here (with the current thread setting), over a few square sizes."""
    best = 0.0
    for n in (size // 2, size):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` where there is ``/proc``: ``ru_maxrss`` survives ``exec`` on Linux, so a
    child would report its parent's peak when that is higher."""
    try:
        with open("/proc/self/status") as status:
            line = next(x for x in status if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def competing_process() -> Iterator[None]:
    """Another process keeping one core busy (a pure-Python loop, as a browser tab or a second job would).

    Started through a short-lived parent, so that it is not this process's child: ``nft.threads`` counts children
    (verifier workers) as this run's own work, and a browser is not."""
    launcher = subprocess.run(
        [sys.executable, "-c", BUSY_LAUNCHER, str(os.getpid())], capture_output=True, text=True, check=True, timeout=30
    )
    pid = int(launcher.stdout)
    try:
        time.sleep(0.5)  # running before the timed work starts
        yield
    finally:
        os.kill(pid, signal.SIGKILL)


# The competing process: a pure-Python loop that checks every few milliseconds that the bench (argv[1]) is still
# alive, so that it ends with a bench that was killed.
BUSY_LOOP = "import os, sys\nwhile True:\n    for _ in range(100000): pass\n    os.kill(int(sys.argv[1]), 0)"
# Starts it and exits at once, printing its pid: the loop is left to the init process.
BUSY_LAUNCHER = f"""
import subprocess, sys
quiet = subprocess.DEVNULL
args = [sys.executable, "-c", {BUSY_LOOP!r}, sys.argv[1]]
print(subprocess.Popen(args, start_new_session=True, stdout=quiet, stderr=quiet).pid)
"""
