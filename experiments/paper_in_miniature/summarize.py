"""The paper in miniature (README.md here): the runs' records to one CSV, and every table and figure from that CSV.

    python experiments/paper_in_miniature/summarize.py collect RUNS --csv runs.csv   # the runs -> one CSV
    python experiments/paper_in_miniature/summarize.py choose runs.csv               # LR_<arm>=<rate> for sweep.sh
    python experiments/paper_in_miniature/summarize.py report runs.csv --out DIR     # results.md and the figures

``collect`` reads each finished run (``RUNS/{tune,final}/<arm>/[lr<rate>/]seed<seed>/``): its ``results.jsonl``
(held-out evaluations) and ``logs/metrics.csv`` (every optimizer step). One CSV row per (phase, arm, seed, lr,
epoch): row ``epoch = k`` holds the evaluations after k epochs and the means over the steps of the k-th epoch (empty
at k = 0, the warmed-up model). ``choose`` and ``report`` read nothing but that CSV.

Rules fixed before the runs (the plan in README.md): each arm's rate is the grid's best validation avg@4 at the last
epoch, averaged over the tuning seeds; comparisons are paired by seed (every run starts from the same base model),
the mean of the per-seed differences of test avg@16 with a 95% Student-t interval over the ten seeds; a difference
is decided when its interval excludes 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ARMS = ("nft", "rft", "rft_text", "grpo", "dr_grpo", "dapo")
LABELS = {
    "nft": "NFT",
    "rft": "RFT (reference: neg_weight=0)",
    "rft_text": "RFT (text: w(q)=1)",
    "grpo": "GRPO",
    "dr_grpo": "Dr.GRPO",
    "dapo": "DAPO",
}
PRIMARY = ("nft", "rft")
SECONDARY = (("nft", "rft_text"), ("nft", "grpo"), ("nft", "dr_grpo"), ("nft", "dapo"))
VALIDATION, TEST = "val/toy_steps_validation", "val/toy_steps_test"
EVALUATED = {
    "val_avg": f"{VALIDATION}/avg@4",
    "val_pass4": f"{VALIDATION}/pass@4",
    "test_avg": f"{TEST}/avg@16",
    **{f"test_pass{k}": f"{TEST}/pass@{k}" for k in (1, 2, 4, 8, 16)},
}
TRAINED = {  # means over the epoch's optimizer steps
    "rollout_accuracy": "rollout/accuracy",
    "entropy": "train/entropy",
    "move_abs": "train/move_abs",
    "move_kl": "train/move_kl",
    "move_far_frac": "train/move_far_frac",
    "clip_frac": "train/clip_frac",
    "neg_clamped_frac": "train/neg_clamped_frac",
    "grad_norm": "train/grad_norm",
}
COLUMNS = ["phase", "arm", "seed", "lr", "epoch", *EVALUATED, *TRAINED, "steps"]
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
GRID_STEP = 1.6  # between neighbouring rates of the grid
PLATEAU_POINTS = 1.0  # the best arm's validation gain over its last evaluation interval below which it has flattened


# --- collect: the runs -> one CSV ----------------------------------------------------------------------------------
def collect(root: Path) -> list[dict]:
    rows = []
    for done in sorted(root.glob("*/*/**/done")):
        folder = done.parent
        phase, arm = folder.relative_to(root).parts[:2]
        items = yaml.safe_load((folder / ".hydra/overrides.yaml").read_text())
        overrides = dict(item.split("=", 1) for item in items if "=" in item)  # not `~key` (a deletion)
        evaluations = {r["epoch"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}
        steps = defaultdict(lambda: defaultdict(list))  # epoch index -> metric -> values
        with (folder / "logs" / "metrics.csv").open() as f:
            for row in csv.DictReader(f):
                for name, logged in TRAINED.items():
                    if row.get(logged):
                        steps[int(row["epoch"])][name].append(float(row[logged]))
        for epoch in sorted(set(evaluations) | {e + 1 for e in steps}):
            trained = steps.get(epoch - 1, {})
            rows.append(
                {
                    "phase": phase,
                    "arm": arm,
                    "seed": int(overrides["seed"]),
                    "lr": float(overrides["optim.lr"]),
                    "epoch": epoch,
                    **{k: evaluations.get(epoch, {}).get(v, "") for k, v in EVALUATED.items()},
                    **{k: statistics.fmean(trained[k]) if trained.get(k) else "" for k in TRAINED},
                    "steps": len(trained.get("grad_norm", [])) or "",
                }
            )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{path}: {len(rows)} rows from {len({(r['phase'], r['arm'], r['seed'], r['lr']) for r in rows})} runs")


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key not in ("phase", "arm"):
                row[key] = float(value) if value != "" else math.nan
        row["seed"], row["epoch"] = int(row["seed"]), int(row["epoch"])
    return rows


# --- statistics -----------------------------------------------------------------------------------------------------
def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval."""
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return (values[0] if values else math.nan), math.nan
    return statistics.fmean(values), T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def fmt(mean: float, half: float, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """``mean [low, high]`` (the 95% interval), scaled; ``signed``: a difference, every number with its sign."""
    sign = "+" if signed else ""
    if math.isnan(half):
        return f"{mean * scale:{sign}.{digits}f}"
    low, high = (mean - half) * scale, (mean + half) * scale
    return f"{mean * scale:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def last_epoch(rows: list[dict]) -> int:
    return max(r["epoch"] for r in rows)


def pick(rows: list[dict], **where) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def per_seed(rows: list[dict], arm: str, column: str, epoch: int) -> dict[int, float]:
    return {r["seed"]: r[column] for r in pick(rows, phase="final", arm=arm, epoch=epoch)}


# --- choose: the tuning grid -> each arm's rate ----------------------------------------------------------------------
def grid(rows: list[dict]) -> dict[str, dict[float, float]]:
    """arm -> rate -> validation avg@4 at the last epoch, mean over the tuning seeds."""
    tune = pick(rows, phase="tune")
    end = last_epoch(tune)
    scores = defaultdict(lambda: defaultdict(list))
    for r in pick(tune, epoch=end):
        scores[r["arm"]][r["lr"]].append(r["val_avg"])
    return {arm: {lr: statistics.fmean(v) for lr, v in sorted(by_lr.items())} for arm, by_lr in scores.items()}


def chosen_rates(rows: list[dict]) -> dict[str, float]:
    return {arm: max(by_lr, key=by_lr.get) for arm, by_lr in grid(rows).items()}


def choose(rows: list[dict]) -> None:
    """``LR_<arm>=<rate>`` lines, and ``EDGE_<arm>=<rate>`` (the next rate beyond, a grid step of 1.6x) for an arm
    whose best rate is at the edge of the rates it was tuned at."""
    for arm, lr in chosen_rates(rows).items():
        rates = sorted(grid(rows)[arm])
        print(f"LR_{arm}={lr:g}")
        if lr in (rates[0], rates[-1]):
            beyond = lr / GRID_STEP if lr == rates[0] else lr * GRID_STEP
            print(f"# {arm}: the best rate {lr:g} is at the edge of {rates}", file=sys.stderr)
            print(f"EDGE_{arm}={beyond:.2g}")


# --- report: the CSV -> results.md and the figures -------------------------------------------------------------------
def report(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    final = pick(rows, phase="final")
    end = last_epoch(final)
    seeds = sorted({r["seed"] for r in final})
    lines = [
        "# The paper in miniature: results",
        "",
        f"Computed by `summarize.py report runs.csv` from `runs.csv` alone: {len(seeds)} paired seeds, {end} epochs.",
        "Accuracies in %, differences in points, each with its 95% Student-t interval over seeds.",
        "",
        *tuning_section(rows),
        *comparison_section(final, seeds, end),
        *movement_section(final),
        *entropy_section(final, end),
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_results(final, seeds, end, out / "results.png")
    plot_tuning(rows, out / "tuning.png")
    print(f"wrote {out / 'results.md'}, {out / 'results.png'}, {out / 'tuning.png'}")


def tuning_section(rows: list[dict]) -> list[str]:
    scores, chosen = grid(rows), chosen_rates(rows)
    rates = sorted({lr for by_lr in scores.values() for lr in by_lr})
    tune = pick(rows, phase="tune")
    tuning_seeds = sorted({r["seed"] for r in tune})
    lines = [
        f"## Learning rates (validation split only; tuning seeds {', '.join(map(str, tuning_seeds))})",
        "",
        f"Validation avg@4 after {last_epoch(tune)} epochs (%), mean over the tuning seeds; **bold**: the chosen rate.",
        "",
        "| arm | " + " | ".join(f"{lr:g}" for lr in rates) + " | chosen | interior |",
        "|---|" + "---:|" * (len(rates) + 2),
    ]
    for arm in ARMS:
        if arm not in scores:
            continue
        cells = [
            (f"**{scores[arm][lr] * 100:.1f}**" if lr == chosen[arm] else f"{scores[arm][lr] * 100:.1f}")
            if lr in scores[arm]
            else ""
            for lr in rates
        ]
        interior = "yes" if chosen[arm] not in (min(scores[arm]), max(scores[arm])) else "**no**"
        lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + f" | {chosen[arm]:g} | {interior} |")
    best = max(chosen, key=lambda arm: scores[arm][chosen[arm]])
    curve = {}
    for r in pick(tune, arm=best, lr=chosen[best]):
        if not math.isnan(r["val_avg"]):
            curve.setdefault(r["epoch"], []).append(r["val_avg"])
    epochs = sorted(e for e in curve if e > 0)
    means = [statistics.fmean(curve[e]) for e in epochs]
    gain = (means[-1] - means[-2]) * 100 if len(means) > 1 else math.nan
    verdict = "flattened" if gain < PLATEAU_POINTS else "still rising" if gain >= PLATEAU_POINTS else "too few points"
    lines += [
        "",
        f"The horizon: the best arm on validation ({LABELS[best]}) reads "
        + ", ".join(f"{m * 100:.1f}" for m in means)
        + f" at epochs {', '.join(map(str, epochs))}: {gain:+.1f} points over the last interval, {verdict} "
        f"(the plan's threshold: {PLATEAU_POINTS:g} point).",
        "",
    ]
    return lines


def comparison_section(final: list[dict], seeds: list[int], end: int) -> list[str]:
    start = [r["val_avg"] for r in pick(final, epoch=0) if not math.isnan(r["val_avg"])]
    lines = [
        f"## Test set (read once, after epoch {end}): avg@16 and pass@16 on 500 problems",
        "",
        f"Every run starts from the same base model: validation avg@4 {statistics.fmean(start) * 100:.1f} at epoch 0"
        f" (mean over {len(start)} seeds' start evaluations).",
        "",
        "| arm | rate | test avg@16 | test pass@16 | validation avg@4 |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        ends = pick(final, arm=arm, epoch=end)
        if not ends:
            continue
        cells = [fmt(*mean_ci([r[c] for r in ends])) for c in ("test_avg", "test_pass16", "val_avg")]
        lines.append(f"| {LABELS[arm]} | {ends[0]['lr']:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences (test, points); the first row is the primary comparison, the others secondary.",
        "",
        "| comparison | avg@16 | pass@16 | seeds where the first is ahead (avg@16) | decided |",
        "|---|---:|---:|---:|---|",
    ]
    for first, second in (PRIMARY, *SECONDARY):
        avg = paired(final, first, second, "test_avg", end)
        if not avg:
            continue
        pass16 = paired(final, first, second, "test_pass16", end)
        mean, half = mean_ci(avg)
        decided = "no" if abs(mean) <= half else ("yes: ahead" if mean > 0 else "yes: behind")
        label = f"{LABELS[first]} - {LABELS[second]}"
        label = f"**{label}** (primary)" if (first, second) == PRIMARY else label
        wins = sum(d > 0 for d in avg)
        cells = [fmt(mean, half, signed=True), fmt(*mean_ci(pass16), signed=True), f"{wins} of {len(avg)}", decided]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def paired(final: list[dict], first: str, second: str, column: str, epoch: int) -> list[float]:
    a, b = per_seed(final, first, column, epoch), per_seed(final, second, column, epoch)
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def run_means(final: list[dict], arm: str, column: str) -> list[float]:
    """Per seed: the mean over the run's epochs of a per-epoch training statistic."""
    by_seed = defaultdict(list)
    for r in pick(final, arm=arm):
        if not math.isnan(r[column]):
            by_seed[r["seed"]].append(r[column])
    return [statistics.fmean(v) for v in by_seed.values()]


def movement_section(final: list[dict]) -> list[str]:
    lines = [
        "## How far the policy moves within a rollout (sampled tokens, every optimizer step)",
        "",
        "Per run the mean over its steps, then the mean over seeds [95% interval]; in brackets after it, the largest "
        "epoch mean of any seed. For scale, public verl runs at lr 1e-6 log pg_clipfrac about 0.1% and ppo_kl 1e-5 "
        "to 1e-4.",
        "",
        "| arm | mean abs(R - 1) | k3 KL(old, new) | frac abs(log R) > 0.2 | clip_frac | neg_clamped_frac |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        if not pick(final, arm=arm):
            continue
        cells = []
        for column in ("move_abs", "move_kl", "move_far_frac", "clip_frac", "neg_clamped_frac"):
            values = run_means(final, arm, column)
            if not values or (column == "neg_clamped_frac" and arm != "nft"):  # RFT: its negative term is off
                cells.append("-")
                continue
            mean, half = mean_ci(values)
            peak = max(r[column] for r in pick(final, arm=arm) if not math.isnan(r[column]))
            cells.append(f"{mean:.2e} [{max(mean - half, 0):.1e}, {mean + half:.1e}] (max {peak:.1e})")
        lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def entropy_section(final: list[dict], end: int) -> list[str]:
    lines = [
        "## Entropy and pass@k over training (the paper's section 5.3)",
        "",
        "Entropy: the mean negative log-prob of the sampled tokens during the update (an estimate of the policy's "
        "entropy), in the first and the last epoch, and its change per seed. pass@k: validation pass@4 over training "
        "(every run starts at the base model's), test pass@k after the last epoch.",
        "",
        "| arm | entropy, epoch 1 | entropy, last | change [95%] | validation pass@4 by epoch | test pass@1 | "
        "pass@4 | pass@16 | pass@16 - pass@1 |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        first, last = per_seed(final, arm, "entropy", 1), per_seed(final, arm, "entropy", end)
        if not first:
            continue
        change = [last[s] - first[s] for s in sorted(first)]
        ends = pick(final, arm=arm, epoch=end)
        passes = [mean_ci([r[f"test_pass{k}"] for r in ends]) for k in (1, 4, 16)]
        spread = mean_ci([r["test_pass16"] - r["test_pass1"] for r in ends])
        _, curve, _ = band(final, arm, "val_pass4")
        cells = [
            f"{statistics.fmean(first.values()):.3f}",
            f"{statistics.fmean(last.values()):.3f}",
            fmt(*mean_ci(change), scale=1.0, digits=3, signed=True),
            " -> ".join(f"{v * 100:.1f}" for v in curve),
            *(f"{m * 100:.1f}" for m, _ in passes),
            fmt(*spread, signed=True),
        ]
        lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def band(final: list[dict], arm: str, column: str) -> tuple[list[int], list[float], list[float]]:
    by_epoch = defaultdict(list)
    rows = pick(final, arm=arm)
    if not pick(rows, epoch=0):  # the start is evaluated once per seed: the same base model for every arm
        rows += pick(final, arm=next(r["arm"] for r in final if r["epoch"] == 0), epoch=0)
    for r in rows:
        if not math.isnan(r[column]):
            by_epoch[r["epoch"]].append(r[column])
    epochs = sorted(by_epoch)
    stats = [mean_ci(by_epoch[e]) for e in epochs]
    return epochs, [m for m, _ in stats], [0.0 if math.isnan(h) else h for _, h in stats]


def plot_results(final: list[dict], seeds: list[int], end: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), dpi=110)
    panels = [
        (axes[0, 0], "val_avg", 100.0, "validation avg@4 (%)"),
        (axes[1, 0], "entropy", 1.0, "entropy estimate (nats per token)"),
        (axes[1, 1], "move_kl", 1.0, "k3 KL(old, new) per token"),
    ]
    for ax, column, scale, title in panels:
        for arm in ARMS:
            epochs, means, halves = band(final, arm, column)
            if not epochs:
                continue
            m = [v * scale for v in means]
            ax.plot(epochs, m, marker="o", markersize=3, label=LABELS[arm])
            ax.fill_between(
                epochs,
                [a - h * scale for a, h in zip(m, halves, strict=True)],
                [a + h * scale for a, h in zip(m, halves, strict=True)],
                alpha=0.15,
            )
        ax.set_xlabel("epoch (rollouts)")
        ax.set_title(f"{title}: mean and 95% band over {len(seeds)} seeds", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1, 1].set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, 1]
    comparisons = [c for c in (PRIMARY, *SECONDARY) if paired(final, *c, "test_avg", end)]
    for i, (first, second) in enumerate(comparisons):
        mean, half = mean_ci(paired(final, first, second, "test_avg", end))
        ax.errorbar(mean * 100, i, xerr=half * 100, fmt="o", color="C3" if i == 0 else "C0", capsize=4)
    ax.set_yticks(range(len(comparisons)), [f"{LABELS[a]} - {LABELS[b]}" for a, b in comparisons], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("paired difference, test avg@16 (points)")
    ax.set_title(f"paired differences after epoch {end}, 95% intervals (red: primary)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tuning(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tune = pick(rows, phase="tune")
    end = last_epoch(tune)
    scores = grid(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for i, arm in enumerate(a for a in ARMS if a in scores):
        rates = sorted(scores[arm])
        ax.plot(rates, [scores[arm][lr] * 100 for lr in rates], marker="o", color=f"C{i}", label=LABELS[arm])
        for r in pick(tune, arm=arm, epoch=end):
            ax.plot(r["lr"], r["val_avg"] * 100, ".", color=f"C{i}", alpha=0.4)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation avg@4 after epoch {end} (%)")
    ax.set_title("the grid: mean over the tuning seeds (line), each seed (dots)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect")
    p.add_argument("runs", type=Path)
    p.add_argument("--csv", type=Path, required=True)
    sub.add_parser("choose").add_argument("csv", type=Path)
    p = sub.add_parser("report")
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    if args.command == "collect":
        write_csv(collect(args.runs), args.csv)
    elif args.command == "choose":
        choose(read_csv(args.csv))
    else:
        report(read_csv(args.csv), args.out)


if __name__ == "__main__":
    main()
