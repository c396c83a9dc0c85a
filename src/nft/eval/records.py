"""Per-sample evaluation records on disk: one JSONL file per benchmark, the state an evaluation resumes from.

Line 1 is a header, ``{"protocol": {...}}``: what the records depend on (the benchmark's file and sampling settings,
the prompt, the model). Every other line is one answer's record. Records are appended a chunk at a time and flushed,
so an interrupted run loses at most the chunk in flight; a last line cut short by a kill is dropped when the file is
read. Reading a file written under another protocol is an error: mixing the two would corrupt the numbers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class RecordFile:
    """The records of one benchmark under one ``protocol`` (a JSON-serialisable dict)."""

    def __init__(self, path: str | Path, protocol: dict) -> None:
        self.path = Path(path)
        self.protocol = json.loads(json.dumps(protocol))  # as it reads back: tuples become lists

    def read(self) -> list[dict]:
        """Every record in the file ([] when there is none yet), after checking its protocol."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return []
        text = self.path.read_text(encoding="utf-8")
        complete, _, torn = text.rpartition("\n")
        if torn:  # killed while writing: keep what was whole, so the next append starts on a fresh line
            log.warning("%s: dropping a last line cut short (%d characters)", self.path, len(torn))
            with self.path.open("r+", encoding="utf-8") as f:
                f.truncate(len((complete + "\n").encode("utf-8")) if complete else 0)
        lines = complete.split("\n") if complete else []
        rows = [self._parse(number, line) for number, line in enumerate(lines, start=1)]
        if not rows:
            return []
        self._check_header(rows[0])
        return rows[1:]

    def append(self, records: Iterable[dict]) -> None:
        """Append records (the header first, for a new file), flushed to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        lines = ([json.dumps({"protocol": self.protocol})] if new else []) + [json.dumps(r) for r in records]
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def replace_from(self, epoch: int, records: Iterable[dict]) -> None:
        """Append ``records`` of ``epoch`` after dropping any record of ``epoch`` or later (a resumed training run
        repeating evaluations its checkpoint did not see), so that every record appears once. The rewrite, when one
        is needed, is atomic."""
        existing = self.read()
        if all(r["epoch"] < epoch for r in existing):
            self.append(records)
            return
        kept = [r for r in existing if r["epoch"] < epoch]
        log.info("%s: replacing %d records of epoch %d and later", self.path, len(existing) - len(kept), epoch)
        partial = self.path.with_name(self.path.name + ".partial")
        lines = [json.dumps({"protocol": self.protocol}), *(json.dumps(r) for r in [*kept, *records])]
        with partial.open("w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, self.path)

    def _parse(self, number: int, line: str) -> dict:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{self.path}, line {number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{self.path}, line {number}: expected a JSON object, got {type(row).__name__}")
        return row

    def _check_header(self, header: dict) -> None:
        if "protocol" not in header:
            raise ValueError(f'{self.path}, line 1: expected the header {{"protocol": ...}}, got keys {sorted(header)}')
        old = header["protocol"]
        changed = sorted(k for k in old.keys() | self.protocol.keys() if old.get(k) != self.protocol.get(k))
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} then, {self.protocol.get(k)!r} now" for k in changed)
            raise ValueError(
                f"{self.path}: these records were made under another protocol ({details}). Evaluate into another "
                "folder (eval.dir or eval.name), or delete the file to start over"
            )
