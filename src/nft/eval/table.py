"""Results tables shaped like the paper's Table 1: a row per model, a column per benchmark, then their average.

The rows live in ``table.jsonl`` (one object per model with its benchmarks' headline scores); ``table.md`` is redrawn
from all rows whenever a row changes, so evaluating several ``model.path`` one after another builds one table. A model
evaluated again keeps its row: benchmarks new to it are added, re-evaluated ones replaced. Scores are accuracies in
percent with one decimal, as in the paper; the Average is the mean of the row's benchmarks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PAPER_ORDER = ("aime24", "math500", "aime25", "amc23", "olympiad", "minerva")  # Table 1's columns, left to right


def score(title: str, metric: str, value: float, problems: int, skipped: int = 0) -> dict:
    """One cell: the benchmark's column title, its headline metric (e.g. ``avg@32``) and value in [0, 1]."""
    return {"title": title, "metric": metric, "value": value, "problems": problems, "skipped": skipped}


def read_rows(directory: str | Path) -> list[dict]:
    path = Path(directory) / "table.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def add_row(directory: str | Path, model: str, scores: dict[str, dict]) -> str:
    """Merge ``scores`` (benchmark name -> ``score(...)``) into ``model``'s row; rewrite the files; return the table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = read_rows(directory)
    row = next((r for r in rows if r["model"] == model), None)
    if row is None:
        rows.append({"model": model, "scores": {}})
        row = rows[-1]
    row["scores"].update(scores)
    _write(directory / "table.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    markdown = render(rows)
    _write(directory / "table.md", markdown)
    return markdown


def render(rows: list[dict]) -> str:
    """The Markdown table: the paper's columns first (those present), then others in order of appearance."""
    names = [n for n in PAPER_ORDER if any(n in r["scores"] for r in rows)]
    names += [n for r in rows for n in r["scores"] if n not in names and n not in PAPER_ORDER]
    names = list(dict.fromkeys(names))
    first = {n: next(r["scores"][n] for r in rows if n in r["scores"]) for n in names}
    header = ["Model", *(first[n]["title"] for n in names), "Average"]
    lines = ["| " + " | ".join(header) + " |", "| :--- |" + " ---: |" * (len(header) - 1)]
    for row in rows:
        cells = [row["model"]]
        for name in names:
            cell = row["scores"].get(name)
            if cell is None:
                cells.append("–")
            else:
                note = "" if cell["metric"] == first[name]["metric"] else f" ({cell['metric']})"
                cells.append(f"{100 * cell['value']:.1f}{note}")
        values = [s["value"] for s in row["scores"].values()]
        cells.append(f"{100 * sum(values) / len(values):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    protocol = ", ".join(f"{first[n]['title']} {first[n]['metric']}" for n in names)
    lines += ["", f"Accuracy (%): {protocol}. Average: the mean of the row's benchmarks."]
    cells = [(r["model"], r["scores"][n]) for r in rows for n in names if n in r["scores"]]
    skipped = [f"{model} {cell['title']} {cell['skipped']}" for model, cell in cells if cell["skipped"]]
    if skipped:
        lines.append(f"Problems left out for a prompt over the length limit: {', '.join(skipped)}.")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
