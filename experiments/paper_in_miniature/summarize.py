"""Summarise the paper-in-miniature sweep (``sweep.sh``) from the runs' own records.

    python experiments/paper_in_miniature/summarize.py RUNS [--out DIR]     # results.md and the plots
    python experiments/paper_in_miniature/summarize.py RUNS --chosen-lr     # LR_<algo>=<rate> lines for sweep.sh

Every job folder holds ``.hydra/overrides.yaml`` (what it changed), ``results.jsonl`` (its held-out evaluations) and
``logs/metrics.csv`` (every logged metric). The learning rate of each algorithm is the grid's best final held-out
avg@8 on the tuning seed. Comparisons are paired by seed (every algorithm starts from the same warm-up per seed):
the mean of the per-seed differences with a 95% confidence interval from Student's t over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HEADLINE = "val/toy_steps/avg@8"
GREEDY = "val/toy_steps_greedy/avg@1"
ALGOS = ("nft", "rft", "grpo", "dapo")
# (label, block folder, overrides that pick the runs) -> each is a "variant" of the sweep
COMPARISONS = [("NFT - RFT", "nft", "rft"), ("NFT - GRPO", "nft", "grpo"), ("NFT - DAPO", "nft", "dapo")]
ABLATIONS = [
    ("neg_weight 1 - 0 (RFT with NFT's weights)", "nft", "neg_weight=0"),
    ("neg_weight 1 - 0.5", "nft", "neg_weight=0.5"),
    ("prompt_weight dr_grpo - none", "nft", "prompt_weight=none"),
    ("prompt_weight dr_grpo - grpo", "nft", "prompt_weight=grpo"),
]
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
TRAIN_METRICS = ("rollout/accuracy", "train/neg_clamped_frac", "train/ratio", "train/neg_loss", "train/grad_norm")


@dataclass
class Run:
    folder: Path
    block: str  # lr_grid | compare/<algo> | ablate/<what>
    overrides: dict[str, str]
    results: list[dict]
    epochs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # per-epoch training metrics
    steps: dict[str, list[float]] = field(default_factory=dict)  # per-step training metrics

    @property
    def seed(self) -> int:
        return int(self.overrides.get("seed", 0))

    @property
    def algo(self) -> str:
        return self.overrides.get("algo", "nft")

    @property
    def final(self) -> dict:
        return self.results[-1]

    @property
    def variant(self) -> str:
        """Which arm of the sweep this run belongs to: the algorithm, or the ablated setting."""
        for key in ("neg_weight", "prompt_weight"):
            if f"algo.{key}" in self.overrides:
                return f"{key}={self.overrides[f'algo.{key}']}"
        return self.algo


def load_runs(root: Path) -> list[Run]:
    runs = []
    for overrides_file in sorted(root.glob("**/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        results = folder / "results.jsonl"
        if not results.is_file():
            print(f"skipping {folder}: no results.jsonl (unfinished?)")
            continue
        overrides = dict(item.split("=", 1) for item in yaml.safe_load(overrides_file.read_text()))
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        run = Run(folder, str(folder.parent.relative_to(root)), overrides, rows)
        metrics = folder / "logs" / "metrics.csv"
        if metrics.is_file():
            with metrics.open() as f:
                for row in csv.DictReader(f):
                    for name in TRAIN_METRICS:
                        if row.get(name) and name.startswith("rollout/"):
                            run.epochs.setdefault(name, []).append((int(row["epoch"]), float(row[name])))
                        elif row.get(name) and row.get("train/loss"):
                            run.steps.setdefault(name, []).append(float(row[name]))
        runs.append(run)
    return runs


def chosen_lrs(runs: list[Run]) -> dict[str, str]:
    """The grid's rate with the best final held-out avg@8, per algorithm (the same grid and seed for all)."""
    best: dict[str, tuple[float, str]] = {}
    for run in runs:
        if run.block == "lr_grid":
            value = run.final[HEADLINE]
            if run.algo not in best or value > best[run.algo][0]:
                best[run.algo] = (value, run.overrides["optim.lr"])
    return {algo: lr for algo, (_, lr) in best.items()}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval (nan for fewer than two values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def by_seed(runs: list[Run], variant: str, block_prefix: str) -> dict[int, Run]:
    return {r.seed: r for r in runs if r.variant == variant and r.block.startswith(block_prefix)}


def paired(runs: list[Run], metric: str, left: tuple[str, str], right: tuple[str, str]) -> list[float]:
    """Per-seed differences left - right of the final ``metric`` (seeds both have)."""
    a, b = by_seed(runs, *left), by_seed(runs, *right)
    return [100 * (a[s].final[metric] - b[s].final[metric]) for s in sorted(a.keys() & b.keys())]


def fmt(mean: float, half: float) -> str:
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]" if not math.isnan(half) else f"{mean:+.1f}"


def table(runs: list[Run], lrs: dict[str, str]) -> str:
    lines = []
    starts = [
        100 * r.results[0][HEADLINE] for r in by_seed(runs, "nft", "compare").values() if r.results[0]["epoch"] == 0
    ]
    lines += ["## Held-out accuracy (%), mean and 95% CI over seeds", ""]
    if starts:
        lines.append(f"Start (the warm-up of each seed, before any update): avg@8 {fmt(*mean_ci(starts))[1:]}.")
        lines.append("")
    lines += ["| arm | lr | seeds | avg@8 | greedy | final rollout accuracy |", "|---|---:|---:|---:|---:|---:|"]
    arms = [(a, "compare") for a in ALGOS] + [
        (v, "ablate") for v in ("neg_weight=0", "neg_weight=0.5", "prompt_weight=none", "prompt_weight=grpo")
    ]
    for variant, block in arms:
        group = by_seed(runs, variant, block)
        if not group:
            continue
        avg = mean_ci([100 * r.final[HEADLINE] for r in group.values()])
        greedy = mean_ci([100 * r.final[GREEDY] for r in group.values()])
        rollout = mean_ci([100 * r.epochs["rollout/accuracy"][-1][1] for r in group.values() if r.epochs])
        lr = next(iter(group.values())).overrides.get("optim.lr", "")
        lines.append(
            f"| {variant} | {lr} | {len(group)} | {fmt(*avg)[1:]} | {fmt(*greedy)[1:]} | {fmt(*rollout)[1:]} |"
        )
    lines += ["", "## Paired differences (points), mean and 95% CI over seeds", ""]
    lines += ["| comparison | seeds | avg@8 | greedy |", "|---|---:|---:|---:|"]
    pairs = [(label, (left, "compare"), (right, "compare")) for label, left, right in COMPARISONS]
    pairs += [(label, ("nft", "compare"), (right, "ablate")) for label, _, right in ABLATIONS]
    for label, left, right in pairs:
        diffs = paired(runs, HEADLINE, left, right)
        if diffs:
            greedy = paired(runs, GREEDY, left, right)
            lines.append(f"| {label} | {len(diffs)} | {fmt(*mean_ci(diffs))} | {fmt(*mean_ci(greedy))} |")
    lines += ["", "## Learning-rate grid (tuning seed 100, final held-out avg@8 %)", ""]
    lines += [
        "`chosen` is the best of the grid the comparison was run with (`lr_grid`); other rates (`lr_grid_*`, run",
        "afterwards as a check) are shown but chose nothing.",
        "",
    ]
    grid = defaultdict(dict)
    for run in runs:
        if run.block.startswith("lr_grid"):
            grid[run.algo][float(run.overrides["optim.lr"])] = 100 * run.final[HEADLINE]
    rates = sorted({lr for row in grid.values() for lr in row})
    lines += ["| algorithm | " + " | ".join(f"{lr:g}" for lr in rates) + " | chosen |"]
    lines += ["|---|" + "---:|" * (len(rates) + 1)]
    for algo in ALGOS:
        if algo in grid:
            cells = " | ".join(f"{grid[algo].get(lr, math.nan):.1f}" for lr in rates)
            lines.append(f"| {algo} | {cells} | {lrs.get(algo, '')} |")
    lines += ["", "## What the negative term does (NFT runs of the comparison, mean over seeds and steps)", ""]
    lines += [
        "| arm | neg_clamped_frac | ratio (mean, spread over steps) | neg_loss | grad_norm |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, block in [("nft", "compare"), ("neg_weight=0.5", "ablate"), ("neg_weight=0", "ablate")]:
        group = list(by_seed(runs, variant, block).values())
        if not group or not group[0].steps:
            continue

        def over(name, group=group):
            return [v for r in group for v in r.steps.get(name, [])]

        ratio = over("train/ratio")
        lines.append(
            f"| {variant} | {statistics.fmean(over('train/neg_clamped_frac')):.4f} | "
            f"{statistics.fmean(ratio):.4f} (sd {statistics.pstdev(ratio):.4f}, max {max(ratio):.3f}) | "
            f"{statistics.fmean(over('train/neg_loss')):+.5f} | {statistics.fmean(over('train/grad_norm')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, forest) = plt.subplots(1, 2, figsize=(12, 4.5))
    for algo in ALGOS:
        group = by_seed(runs, algo, "compare")
        series = [dict(r.epochs.get("rollout/accuracy", [])) for r in group.values()]
        epochs = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not epochs:
            continue
        stats = [mean_ci([100 * s[e] for s in series]) for e in epochs]
        mean = [m for m, _ in stats]
        half = [0 if math.isnan(h) else h for _, h in stats]
        curves.plot(epochs, mean, label=algo)
        curves.fill_between(
            epochs,
            [m - h for m, h in zip(mean, half, strict=True)],
            [m + h for m, h in zip(mean, half, strict=True)],
            alpha=0.2,
        )
    curves.set(
        xlabel="epoch (one rollout, 8 optimizer steps)",
        ylabel="rollout accuracy (%)",
        title="Training rollouts: mean and 95% CI over seeds",
    )
    curves.legend()
    labels, values = [], []
    pairs = [(label, (left, "compare"), (right, "compare")) for label, left, right in COMPARISONS]
    pairs += [(label, ("nft", "compare"), (right, "ablate")) for label, _, right in ABLATIONS]
    for label, left, right in pairs:
        diffs = paired(runs, HEADLINE, left, right)
        if len(diffs) >= 2:
            labels.append(label)
            values.append(mean_ci(diffs))
    rows = range(len(labels))
    forest.errorbar([m for m, _ in values], rows, xerr=[h for _, h in values], fmt="o", capsize=4)
    forest.axvline(0, color="grey", lw=1)
    forest.set_yticks(list(rows), labels)
    forest.invert_yaxis()
    forest.set(xlabel="paired difference in held-out avg@8 (points)", title="Differences: mean and 95% CI over seeds")
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--chosen-lr", action="store_true", help="print LR_<algo>=<rate> lines and stop")
    args = parser.parse_args()
    runs = load_runs(args.runs)
    lrs = chosen_lrs(runs)
    if args.chosen_lr:
        missing = [a for a in ALGOS if a not in lrs]
        if missing:
            raise SystemExit(f"no learning-rate grid runs for {missing} under {args.runs}")
        print("\n".join(f"LR_{algo}={lr}" for algo, lr in lrs.items()))
        return
    wall = args.runs / "wall_time.txt"
    header = (
        f"# Results of the paper in miniature\n\nFrom `{args.runs.name}`"
        + (f" ({wall.read_text().strip()})" if wall.is_file() else "")
        + f"; {len(runs)} runs.\n\n"
    )
    (args.out / "results.md").write_text(header + table(runs, lrs))
    plot(runs, args.out)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
