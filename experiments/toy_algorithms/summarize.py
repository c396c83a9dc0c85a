"""Summarise a Hydra sweep of the toy run: a Markdown table and an accuracy-vs-epoch plot per algorithm.

    python experiments/toy_algorithms/summarize.py runs/multirun/<date>/<time> [--out experiments/toy_algorithms]

Every job directory of the sweep holds ``.hydra/overrides.yaml`` (what the job changed) and ``results.jsonl`` (one
row per evaluation, written by ``nft.eval.BenchmarkEval``). Jobs are grouped by their overrides other than ``seed``
and ``experiment``; each group reports the mean and standard deviation over its seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

IGNORED_KEYS = ("seed", "experiment")


def load_sweep(sweep: Path, metric: str) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """{label: {seed: [(epoch, value), ...]}} for every finished job of the sweep."""
    runs: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    for overrides_file in sorted(sweep.glob("*/.hydra/overrides.yaml")):
        job = overrides_file.parent.parent
        results = job / "results.jsonl"
        if not results.is_file():
            print(f"skipping {job.name}: no results.jsonl (unfinished?)")
            continue
        overrides = dict(item.split("=", 1) for item in yaml.safe_load(overrides_file.read_text()))
        label = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()) if k not in IGNORED_KEYS) or "default"
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        curve = sorted({row["epoch"]: row[metric] for row in rows if metric in row}.items())
        runs[label.removeprefix("algo=")][int(overrides.get("seed", 0))] = curve
    if not runs:
        raise SystemExit(f"{sweep}: no finished jobs with {metric!r} in results.jsonl")
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_rows(runs: dict[str, dict[int, list[tuple[int, float]]]], last: int) -> list[dict]:
    rows = []
    for label, seeds in runs.items():
        curves = list(seeds.values())
        start = [c[0][1] for c in curves]
        final = [c[-1][1] for c in curves]
        best = [max(v for _, v in c) for c in curves]
        tail = [statistics.fmean(v for _, v in c[-last:]) for c in curves]
        rows.append(
            {
                "label": label,
                "seeds": len(curves),
                "epochs": curves[0][-1][0],
                "start": mean_std(start),
                "final": mean_std(final),
                "best": mean_std(best),
                "tail": mean_std(tail),
                "gain": mean_std([f - s for f, s in zip(final, start, strict=True)]),
            }
        )
    return sorted(rows, key=lambda r: -r["tail"][0])


def markdown_table(rows: list[dict], metric: str, last: int) -> str:
    def cell(pair: tuple[float, float]) -> str:
        return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"

    lines = [
        f"Held-out toy accuracy (`{metric}`, %), mean ± std over seeds.",
        "",
        f"| algorithm | seeds | epochs | start | final | best | mean of last {last} evals | final - start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['seeds']} | {r['epochs']} | {cell(r['start'])} | {cell(r['final'])} | "
            f"{cell(r['best'])} | {cell(r['tail'])} | {cell(r['gain'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, list[tuple[int, float]]]], path: Path, metric: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=130)
    for label in sorted(runs):
        curves = list(runs[label].values())
        epochs = [e for e, _ in curves[0]]
        by_epoch = [[dict(c)[e] for c in curves if e in dict(c)] for e in epochs]
        mean = [statistics.fmean(v) for v in by_epoch]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_epoch]
        (line,) = ax.plot(epochs, mean, label=f"{label} (n={len(curves)})", linewidth=1.8)
        ax.fill_between(
            epochs,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
    ax.set_xlabel("epoch (policy iterations)")
    ax.set_ylabel(f"held-out accuracy ({metric})")
    ax.set_title("Toy task: mean over seeds, band = ±1 std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep directory (runs/multirun/<date>/<time>)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where results.md and accuracy.png go")
    parser.add_argument("--metric", default="val/toy/avg@1")
    parser.add_argument("--last", type=int, default=3, help="evaluations averaged at the end (accuracy is noisy)")
    args = parser.parse_args()
    runs = load_sweep(args.sweep, args.metric)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(summary_rows(runs, args.last), args.metric, args.last)
    (args.out / "results.md").write_text(table)
    plot(runs, args.out / "accuracy.png", args.metric)
    print(table)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'accuracy.png'}")


if __name__ == "__main__":
    main()
