"""Accuracy-vs-epoch plots (PNG, matplotlib's headless backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_accuracy(history: list[dict], path: str | Path, names: list[str], title: str = "held-out accuracy") -> Path:
    """One line per metric in ``names``, from ``history`` rows of ``{"epoch": e, "<metric>": value, ...}``."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name in names:
        points = [(row["epoch"], row[name]) for row in history if name in row]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch (policy iterations)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
