"""How seconds per iteration grow with answers per iteration and with answer length.

    python -m nft.bench.scaling [--out FILE.md]

Runs ``python -m nft.bench --no-trl`` (each point in its own process) at 128, 512 and 2048 answers per iteration
(32 tokens) and at 32, 128 and 512 tokens per answer (512 answers), and prints a Markdown table of the medians with
the tokens generated per iteration and the seconds per thousand tokens: constant seconds per token is linear scaling.
An untrained model stops at EOS now and then (about 1 token in 260), so long answers average fewer tokens than the
limit; the table counts the tokens actually generated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# (label, overrides): 8 answers per prompt, one optimizer step per iteration.
POINTS = [
    ("128 answers x 32 tokens", ["data.batch.prompts_per_epoch=16", "data.batch.groups_per_step=16"]),
    ("512 answers x 32 tokens", []),
    ("2048 answers x 32 tokens", ["data.batch.prompts_per_epoch=256", "data.batch.groups_per_step=256"]),
    ("512 answers x 128 tokens", ["model.max_response_tokens=128"]),
    ("512 answers x 512 tokens", ["model.max_response_tokens=512", "model.architecture.max_position_embeddings=1024"]),
]


def measure(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run(
            [sys.executable, "-m", "nft.bench", "--no-trl", "--json", str(out), *overrides],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    lines = [
        "| workload | s / iteration | generate s | update s | tokens / iteration | s / 1k tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, overrides in POINTS:
        result = measure(overrides)
        summary, timed = result["summary"], result["iterations"][1:]
        tokens = result["answers"] * sum(it["response_length"] for it in timed) / len(timed)
        lines.append(
            f"| {label} | {summary['median']:.2f} | {summary['generate']:.2f} | {summary['update']:.2f} | "
            f"{tokens:,.0f} | {1000 * summary['median'] / tokens:.3f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
