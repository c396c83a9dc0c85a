"""Problem files: JSONL or Parquet rows with ``id``, ``problem`` and ``answer``, or a hub dataset.

Every row is checked when the file is loaded; a bad row is refused with an error that names the file, the line
(1-based, as editors count) and the field, unless ``on_bad_row="skip"``, in which case it is skipped and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("problem", "answer")


class ProblemFileError(ValueError):
    """A problem file (or one of its rows) cannot be used."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    extra: dict = field(default_factory=dict, compare=False)
    line: int = field(default=0, compare=False)  # where it is in its file (1-based), for error messages


@dataclass
class ProblemSet:
    """The loaded problems of one file, with what was skipped and why."""

    source: str
    problems: list[Problem]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]


def _read_rows(path: Path) -> list[tuple[int, object]]:
    """(line number, decoded row or the JSON error) for each non-empty line/row of a JSONL or Parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    rows: list[tuple[int, object]] = []
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((line_number, error))
    return rows


def _check_row(row: object, columns: Mapping[str, str]) -> tuple[str | None, str]:
    """Return (field at fault or None, message); field is None when the row is good."""
    if isinstance(row, json.JSONDecodeError):
        return "json", f"not valid JSON ({row.msg} at column {row.colno})"
    if not isinstance(row, dict):
        return "row", f"expected a JSON object, got {type(row).__name__}"
    for name in REQUIRED_FIELDS:
        column = columns.get(name, name)
        if row.get(column) is None:  # Parquet gives a missing value as None
            return column, f"missing field '{column}'"
        value = row[column]
        if not isinstance(value, str):
            return column, f"field '{column}' must be a string, got {type(value).__name__} ({value!r:.40})"
        if not value.strip():
            return column, f"field '{column}' is empty"
    return None, ""


def load_problems(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    on_bad_row: str = "error",
    split: str = "train",
    limit: int | None = None,
) -> ProblemSet:
    """Load problems from a JSONL/Parquet file or, if ``path`` is not a file, a hub dataset name.

    Args:
        path: a ``.jsonl``/``.parquet`` file, or a dataset name for ``datasets.load_dataset``.
        columns: maps our field names (``id``, ``problem``, ``answer``) to the source's column names.
        on_bad_row: ``"error"`` raises on the first bad row; ``"skip"`` skips and counts bad rows.
        split: the dataset split, for hub datasets.
        limit: keep only the first ``limit`` problems.
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    columns = dict(columns or {})
    local = Path(path)
    if local.is_file():
        rows, source = _read_rows(local), str(local)
    elif local.suffix in (".jsonl", ".parquet", ".json") or local.is_dir():
        raise ProblemFileError(f"{path}: no such problem file")
    else:
        rows, source = _read_hub(str(path), split), f"{path}[{split}]"

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    skipped: dict[str, int] = {}
    id_column = columns.get("id", "id")
    for line, row in rows:
        bad_field, message = _check_row(row, columns)
        if bad_field is None:
            row_id = str(row.get(id_column, f"{Path(source).stem}/{line}"))
            if row_id in seen:
                bad_field, message = id_column, f"duplicate id {row_id!r} (first seen on line {seen[row_id]})"
        if bad_field is not None:
            if on_bad_row == "error":
                raise ProblemFileError(f"{source}, line {line}, field '{bad_field}': {message}")
            skipped[bad_field] = skipped.get(bad_field, 0) + 1
            continue
        seen[row_id] = line
        used = {id_column, columns.get("problem", "problem"), columns.get("answer", "answer")}
        extra = {k: v for k, v in row.items() if k not in used}
        problems.append(
            Problem(row_id, row[columns.get("problem", "problem")], row[columns.get("answer", "answer")], extra, line)
        )
        if limit is not None and len(problems) >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d bad rows %s", source, sum(skipped.values()), skipped)
    if not problems:
        raise ProblemFileError(f"{source}: no usable problems")
    return ProblemSet(source, problems, skipped)


def _read_hub(name: str, split: str) -> list[tuple[int, object]]:
    try:
        import datasets
    except ImportError as error:
        raise ProblemFileError(
            f"{name}: not a local file, and loading it from the hub needs `pip install datasets`"
        ) from error
    return list(enumerate(datasets.load_dataset(name, split=split), start=1))
