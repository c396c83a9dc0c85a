"""Verifier throughput: answers per second of ``MathVerifier.score`` on 2 workers.

Workloads, built deterministically from the shipped data (``python -m nft.bench.verifier --answers 2000``):

- typical: half toy-task responses (``a+b=c \\boxed{c}``, half of them wrong by a few units), half MATH500-style
  responses (the reference solution's text ending in a box holding the reference answer as written (40%), the
  reference reformatted (20%: ``\\dfrac``, ``$...$``, spacing) or the reference with a different number (40%));
- adversarial: the same with 5% of the responses replaced by adversarial outputs (power towers,
  ``1000000!``, 100 KB of nested braces, a lone surrogate, NUL bytes, and a few variants).

Each repeat uses a fresh verifier whose workers are started (and warmed) before the clock starts, with the
parsed-reference caches emptied, so that every batch parses its references itself. Prints the median.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

from nft import project_root
from nft.verify import MathVerifier
from nft.verify.grader import clear_caches

ADVERSARIAL = (
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{1000000!}",
    "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}",
    "the answer is \\boxed{\ud800}",
    "\\boxed{12\x00}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{(10^{6})!}",
    "\\boxed{" + "\\frac{1}{" * 40 + "2" + "}" * 40 + "}",
    "\\boxed{2^{1000000000}}",
    "\\boxed{" * 20_000,
)


def with_different_number(answer: str) -> str:
    """``answer`` with its first integer increased by one (``+1`` appended if it has no digit)."""
    match = re.search(r"\d+", answer)
    if match is None:
        return answer + "+1"
    return answer[: match.start()] + str(int(match.group()) + 1) + answer[match.end() :]


def _reformatted(answer: str) -> str:
    return "$" + answer.replace("\\frac", "\\dfrac").replace(",", ", ") + "$"


def typical_workload(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(responses, answers): half toy task, half MATH500-style, shuffled."""
    rng = random.Random(seed)
    data = Path(project_root()) / "data"
    toy = [json.loads(line) for line in (data / "toy" / "test.jsonl").read_text().splitlines()]
    math = [json.loads(line) for line in (data / "benchmarks" / "math500.jsonl").read_text().splitlines()]
    pairs = []
    for i in range(size):
        if i % 2 == 0:
            row = rng.choice(toy)
            value = int(row["answer"]) + (0 if rng.random() < 0.5 else rng.choice((-10, -1, 1, 2)))
            pairs.append((f"{row['problem'][8:-1]}={value} \\boxed{{{value}}}", row["answer"]))
        else:
            row = rng.choice(math)
            draw = rng.random()
            boxed = row["answer"] if draw < 0.4 else _reformatted(row["answer"]) if draw < 0.6 else None
            boxed = boxed if boxed is not None else with_different_number(row["answer"])
            reasoning = row["solution"][: row["solution"].rfind("\\boxed")]
            pairs.append((f"{reasoning}\\boxed{{{boxed}}}.", row["answer"]))
    rng.shuffle(pairs)
    return [r for r, _ in pairs], [a for _, a in pairs]


def adversarial_workload(size: int, fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """The typical workload with ``fraction`` of its responses replaced by adversarial outputs."""
    responses, answers = typical_workload(size, seed)
    rng = random.Random(seed + 1)
    for k, i in enumerate(rng.sample(range(size), round(fraction * size))):
        responses[i] = ADVERSARIAL[k % len(ADVERSARIAL)]
    return responses, answers


def measure(responses: list[str], answers: list[str], num_workers: int, repeats: int) -> tuple[float, dict]:
    """Median seconds of one ``score`` call over ``repeats`` fresh verifiers, and the last one's counters."""
    seconds = []
    for _ in range(repeats):
        verifier = MathVerifier(num_workers=num_workers, timeout=5, strict=True)
        verifier.score(["\\boxed{x+1}"], ["1+x"])  # start and warm the workers outside the clock
        verifier.counters.update(dict.fromkeys(verifier.counters, 0))
        clear_caches()
        start = time.perf_counter()
        verifier.score(responses, answers)
        seconds.append(time.perf_counter() - start)
        counters = dict(verifier.counters)
        verifier.close()
    return statistics.median(seconds), counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rates = {}
    for name, workload in (("typical", typical_workload), ("adversarial_5pct", adversarial_workload)):
        responses, answers = workload(args.answers)
        median, counters = measure(responses, answers, args.workers, args.repeats)
        rates[name] = args.answers / median
        print(f"{name}: {args.answers} answers, median {median:.3f} s -> {rates[name]:.0f} answers/s  {counters}")
    print(f"answers_per_second_typical={rates['typical']:.0f}")
    print(f"answers_per_second_adversarial={rates['adversarial_5pct']:.0f}")
    print(f"adversarial_slowdown={rates['typical'] / rates['adversarial_5pct']:.2f}")


if __name__ == "__main__":
    main()
