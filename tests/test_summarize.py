"""The toy sweep's summary script reads a Hydra multirun layout and reports mean ± std per algorithm."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT

SCRIPT = ROOT / "experiments" / "toy_algorithms" / "summarize.py"


def write_job(sweep, algo: str, seed: int, curve: list[float]) -> None:
    job = sweep / f"algo={algo},experiment=toy,seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- experiment=toy\n- algo={algo}\n- seed={seed}\n")
    rows = [{"epoch": 10 * i, "step": 10 * i, "val/toy/avg@1": v} for i, v in enumerate(curve)]
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_table_and_plot(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, "nft", 0, [0.2, 0.5, 0.8])
    write_job(sweep, "nft", 1, [0.3, 0.4, 0.6])
    write_job(sweep, "rft", 0, [0.2, 0.3, 0.4])
    write_job(sweep, "rft", 1, [])
    (sweep / "algo=rft,experiment=toy,seed=1" / "results.jsonl").unlink()  # an unfinished job is skipped
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(sweep), "--out", str(tmp_path / "out"), "--last", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = (tmp_path / "out" / "results.md").read_text()
    nft_row = next(line for line in table.splitlines() if line.startswith("| nft "))
    # final 0.8 and 0.6 -> 70.0 ± 14.1; best the same; last-2 means 0.65 and 0.5 -> 57.5 ± 10.6; gain 0.6, 0.3
    assert "| nft | 2 | 20 | 25.0 ± 7.1 | 70.0 ± 14.1 | 70.0 ± 14.1 | 57.5 ± 10.6 | 45.0 ± 21.2 |" == nft_row
    assert "| rft | 1 | 20 |" in table and table.index("| nft ") < table.index("| rft ")
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000
    assert "unfinished" in result.stdout
