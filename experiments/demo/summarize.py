"""The demo's held-out accuracy per seed, from each run's ``results.jsonl`` (``experiments/demo/run.sh``).

python experiments/demo/summarize.py runs/demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRIC = "val/toy/avg@1"


def main(root: Path) -> None:
    print("| seed | start | final | best | wall time (s, warm-up included) |\n|---:|---:|---:|---:|---:|")
    starts, finals = [], []
    for run in sorted(root.glob("seed-*"), key=lambda p: int(p.name.split("-")[1])):
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
        values = [100 * row[METRIC] for row in rows]
        wall = run / "wall_seconds.txt"
        seconds = wall.read_text().strip() if wall.is_file() else "?"
        print(f"| {run.name.split('-')[1]} | {values[0]:.1f} | {values[-1]:.1f} | {max(values):.1f} | {seconds} |")
        starts.append(values[0])
        finals.append(values[-1])
    gains = [f - s for s, f in zip(starts, finals, strict=True)]
    print(
        f"\nA healthy run over {len(finals)} seeds: start {min(starts):.1f}-{max(starts):.1f}%, "
        f"final {min(finals):.1f}-{max(finals):.1f}% (mean {sum(finals) / len(finals):.1f}), "
        f"a gain of {min(gains):+.1f} to {max(gains):+.1f} points."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
