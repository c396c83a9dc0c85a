"""Evaluate a saved model on benchmarks (``src/evaluate.py``) and add its row to a results table shaped like Table 1.

Each benchmark's problems are answered a chunk at a time (about ``eval.chunk_answers`` answers); a chunk's records are
appended to ``<eval.dir>/<name>/<benchmark>.jsonl`` as soon as they are verified. The records are the state: running
the same command again reads them, skips the problems already answered and goes on, so an interruption (Ctrl-C, a lost
machine) costs at most the chunk in flight. Each problem is sampled from a seed of its own (``nft.eval.evaluator``), so
a resumed evaluation samples what an uninterrupted one would have, and the same model and seed give the records of the
in-training evaluation. Metrics and the table are computed from the records on disk.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from nft.eval.evaluator import Benchmark, Evaluator
from nft.eval.metrics import BenchmarkMetrics
from nft.eval.records import RecordFile
from nft.eval.table import add_row, score
from nft.rollout.integrity import sync_and_check
from nft.threads import decide_threads

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.model`` on ``cfg.benchmarks``; print the table. Returns ``val/<benchmark>/<metric>`` values."""
    name = cfg.eval.name or model_name(cfg.model.path)
    records_dir = Path(cfg.eval.dir) / slug(name)
    log.info(decide_threads(cfg.threads))
    policy = instantiate(cfg.model)
    policy.model.to(_device(cfg.eval.device))
    generator = instantiate(cfg.rollout.backend)
    sync_and_check(generator, policy)
    evaluator: Evaluator = instantiate(cfg.eval.evaluator)
    context = {"prompt": repr(evaluator.prompt), "model": cfg.model.path, "seed": cfg.seed}
    metrics: dict[str, float] = {}
    cells: dict[str, dict] = {}
    try:
        for benchmark in evaluator.benchmarks:
            store = RecordFile(records_dir / f"{benchmark.name}.jsonl", {**benchmark.protocol(), **context})
            values, problems, skipped = evaluate_benchmark(
                benchmark, evaluator, policy, generator, store, cfg.eval.chunk_answers
            )
            metrics.update({f"val/{benchmark.name}/{k}": v for k, v in values.items()})
            cells[benchmark.name] = score(
                benchmark.title, benchmark.metric, values[benchmark.metric], problems, skipped
            )
    except KeyboardInterrupt:
        log.warning("interrupted: the answers so far are kept in %s; run the same command to resume", records_dir)
        raise SystemExit(130) from None
    finally:
        evaluator.close()
        generator.close()
    metrics["val/average"] = evaluator.average(metrics)
    table = add_row(cfg.eval.dir, name, cells)
    print(f"\n{table}")
    log.info("table: %s; records: %s", Path(cfg.eval.dir) / "table.md", records_dir)
    return metrics


def evaluate_benchmark(
    benchmark: Benchmark, evaluator: Evaluator, policy, generator, store: RecordFile, chunk_answers: int
) -> tuple[dict[str, float], int, int]:
    """Answer the problems ``store`` lacks, chunk by chunk. Returns (metrics, problems, problems skipped)."""
    prepared = evaluator.prepare(benchmark, policy.tokenizer)
    problems = prepared.problems
    done = finished_problems(store.read(), benchmark.samples)
    per_chunk = max(1, chunk_answers // benchmark.samples)
    bar = tqdm(total=len(problems), initial=sum(p.id in done for p in problems), desc=benchmark.name, unit="problem")
    start, answers = time.perf_counter(), 0
    for first in range(0, len(problems), per_chunk):
        chunk = [i for i in range(first, min(first + per_chunk, len(problems))) if problems[i].id not in done]
        if not chunk:
            continue
        records = evaluator.sample(benchmark, prepared, chunk, generator, policy.tokenizer)
        store.append(records)
        answers += len(records)
        bar.update(len(chunk))
        bar.set_postfix_str(f"{answers / (time.perf_counter() - start):.1f} answers/s")
    bar.close()
    ids = {p.id for p in problems}
    metrics = BenchmarkMetrics(benchmark.samples)
    metrics.update([r for r in store.read() if r["problem_id"] in ids])
    values = metrics.compute()
    log.info(
        "%s: %d problems x %d answers (%d new, %.1f answers/s): %s",
        benchmark.name,
        len(problems),
        benchmark.samples,
        answers,
        answers / max(time.perf_counter() - start, 1e-9),
        ", ".join(f"{k} {v:.3f}" for k, v in values.items()),
    )
    return values, len(problems), len(prepared.skipped)


def finished_problems(records: list[dict], samples: int) -> set[str]:
    """Ids of the problems that have a record for each of their ``samples`` answers."""
    seen: dict[str, set[int]] = {}
    for record in records:
        seen.setdefault(record["problem_id"], set()).add(record["sample"])
    return {problem_id for problem_id, got in seen.items() if got >= set(range(samples))}


def model_name(path: str | None) -> str:
    """A row name: a hub name as it is, the last two parts of a local folder, ``tiny`` for the built-in model."""
    if path is None:
        return "tiny"
    local = Path(path).expanduser()
    return "/".join(local.resolve().parts[-2:]) if local.exists() else str(path)


def slug(name: str) -> str:
    """A folder name for a row name (``Qwen/Qwen2.5-Math-7B`` -> ``Qwen--Qwen2.5-Math-7B``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-") or "model"


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
