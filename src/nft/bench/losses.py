"""Time NFT's loss against GRPO's (forward + backward) on one mini-batch of per-token log-probs.

    python -m nft.bench.losses [--rows 512] [--tokens 4096] [--repeats 15]

Both algorithms run with their default settings (``conf/algo/*.yaml``) on the same off-policy inputs: groups of 16
answers with random correct rates, random response lengths, and random current/old log-probs. Prints the median
seconds of each and the ratio NFT / GRPO (the target is <= 1.1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nft.algorithms import GRPO, NFT


def make_inputs(rows: int, tokens: int, group_size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the loss contract: [rows, tokens] log-probs and mask, [rows] correctness and group rate."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(tokens // 8, tokens + 1, (rows,), generator=g)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float()
    old_logp = -torch.rand(rows, tokens, generator=g) * 3
    logp = old_logp + 0.1 * torch.randn(rows, tokens, generator=g)
    correct = (torch.rand(rows, generator=g) < 0.5).float()
    groups = correct.view(-1, group_size)
    correct_rate = groups.mean(-1, keepdim=True).expand_as(groups).reshape(-1)
    return dict(logp=logp, old_logp=old_logp, mask=mask, correct=correct, correct_rate=correct_rate)


def time_loss(algorithm, inputs: dict[str, torch.Tensor], repeats: int) -> list[float]:
    """Seconds of ``loss`` + ``backward`` per call, after one warm-up call."""
    times = []
    for i in range(repeats + 1):
        logp = inputs["logp"].clone().requires_grad_(True)
        start = time.perf_counter()
        loss, _ = algorithm.loss(logp, inputs["old_logp"], inputs["mask"], inputs["correct"], inputs["correct_rate"])
        loss.backward()
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    inputs = make_inputs(args.rows, args.tokens)
    algorithms = {"grpo": GRPO(), "nft": NFT()}
    medians = {}
    for _ in range(2):  # interleave the two so that machine noise hits both alike
        for name, algorithm in algorithms.items():
            medians.setdefault(name, []).extend(time_loss(algorithm, inputs, args.repeats))
    result = {name: statistics.median(times) for name, times in medians.items()}
    print(f"inputs: [{args.rows}, {args.tokens}], torch threads {torch.get_num_threads()}")
    for name, seconds in result.items():
        print(f"{name}_loss_seconds={seconds:.4f}  (median of {len(medians[name])})")
    ratio = result["nft"] / result["grpo"]
    print(f"nft_over_grpo={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
