"""Why the negative term helps or not on this task: one rollout of each evaluation seed's warmed-up model, and

- how much a wrong answer shares with a right one of its group: the longest common prefix with any right answer,
  as a fraction of the wrong answer's tokens (on real math a wrong trace departs early; here a slip in one column);
- NFT's gradient split into its correct-answer and wrong-answer parts (``neg_weight`` 0 vs 1 of the same loss,
  ``experiment=paper_in_miniature``'s NFT settings): their norms and the cosine between them, on-policy (R = 1),
  where the wrong-answer part is ``r / (1 - r)`` times (1 - r) of the gradient of the wrong tokens' log-likelihood.

    python experiments/paper_in_miniature/diagnose.py [--seeds 0 1 2 3 4] [--out diagnose.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import nft
from nft.algorithms import NFT
from nft.pipeline import build


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def diagnose(seed: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(Path(nft.project_root()) / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_in_miniature", f"seed={seed}", "debug=quiet"])
    with open_dict(cfg):
        cfg.run_dir = f"runs/diagnose/seed={seed}"
    run = build(cfg)
    datamodule, module = run.datamodule, run.module
    datamodule.setup()
    run.generator.sync(module)
    rounds = datamodule._generation_rounds(0, {"time/generate": 0.0, "time/verify": 0.0})
    by_group: dict[int, list] = {}
    for s in rounds.kept:
        by_group.setdefault(s.group, []).append(s)
    shares = []
    for members in by_group.values():
        right = [s.response_ids.tolist() for s in members if s.correct]
        for s in members:
            if not s.correct:
                wrong = s.response_ids.tolist()
                shares.append(max(common_prefix(wrong, r) for r in right) / len(wrong))
    steps = datamodule._mini_batches(rounds.kept, 0)
    settings = dict(cfg.algo)
    settings.pop("_target_")
    gradients = {}
    for part, weight in (("right", 0.0), ("all", 1.0)):
        algorithm = NFT(**{**settings, "neg_weight": weight})
        module.model.zero_grad(set_to_none=True)
        for batch in (b for step in steps for b in step):
            logp = module.response_logprobs(batch)
            loss, _ = algorithm.loss(
                logp,
                logp.detach(),
                batch["response_mask"],
                batch["correct"],
                batch["correct_rate"],
                num_tokens=batch["num_tokens"],
                num_seqs=batch["num_seqs"],
            )
            loss.backward()
        gradients[part] = torch.cat([p.grad.flatten() for p in module.model.parameters() if p.grad is not None])
    right, wrong = gradients["right"], gradients["all"] - gradients["right"]
    return {
        "groups": len(by_group),
        "wrong_shared_prefix": statistics.fmean(shares),
        "wrong_shared_prefix_median": statistics.median(shares),
        "grad_right": float(right.norm()),
        "grad_wrong": float(wrong.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(right, wrong, dim=0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "diagnose.md")
    args = parser.parse_args()
    rows = [diagnose(seed) | {"seed": seed} for seed in args.seeds]
    lines = [
        "| seed | mixed groups | wrong answer's prefix shared with a right one (mean, median) | |grad right| "
        "| |grad wrong| | cosine(right, wrong) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['groups']} | {r['wrong_shared_prefix']:.2f}, {r['wrong_shared_prefix_median']:.2f} "
            f"| {r['grad_right']:.4f} | {r['grad_wrong']:.4f} | {r['cosine']:+.3f} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
