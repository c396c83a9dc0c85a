"""Benchmark evaluation: sample answers to a benchmark's problems with the current policy, verify, write records.

Used by the ``BenchmarkEval`` callback during training and by ``src/evaluate.py`` (``nft.eval.checkpoint``) on saved
checkpoints. Both turn the records this module writes (one dict per answer) into metrics with
``nft.eval.metrics.BenchmarkMetrics``, so a number is always recomputable from the records on disk.

Prompts longer than ``max_prompt_tokens`` are skipped with a warning (``long_prompts="skip"``), as the reference
trainer (verl's ``filter_overlong_prompts``, used by NVlabs/NFT for validation too) does; ``"error"`` refuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nft.data.problems import Problem, load_problems
from nft.data.prompts import PromptTemplate
from nft.rollout.base import SamplingParams
from nft.verify import MathVerifier, last_boxed

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    """A problem file (or hub dataset) and its protocol: ``samples`` answers per problem at these sampling settings.

    ``title`` heads the benchmark's column in results tables; ``columns`` maps ``id``/``problem``/``answer`` to the
    source's column names; ``split`` is the hub dataset split; ``limit`` keeps the first N problems.
    """

    name: str
    path: str
    title: str | None = None
    samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    limit: int | None = None
    columns: dict | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"benchmarks.{self.name}.samples must be >= 1, got {self.samples}")
        self.title = self.title or self.name
        self.columns = dict(self.columns) if self.columns else None

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.max_new_tokens)

    @property
    def metric(self) -> str:
        """The headline metric: avg@samples."""
        return f"avg@{self.samples}"

    def protocol(self) -> dict:
        """What the records of this benchmark depend on (not ``limit``: more problems extend the same records)."""
        return {
            "path": self.path,
            "samples": self.samples,
            "sampling": [self.temperature, self.top_p, self.top_k, self.max_new_tokens],
            "columns": self.columns,
            "split": self.split,
        }


@dataclass
class PreparedBenchmark:
    """A benchmark's problems with their prompt token ids (long prompts already skipped)."""

    benchmark: Benchmark
    source: str
    problems: list[Problem]
    prompt_ids: list[list[int]]
    skipped: list[str] = field(default_factory=list)  # ids of problems skipped for a long prompt


class Evaluator:
    """Runs benchmarks with one prompt template and verifier.

    Args:
        benchmarks: name -> ``Benchmark`` fields (the ``benchmarks`` config group).
        prompt: how a problem becomes the prompt. verifier: scores the answers.
        max_prompt_tokens: longer prompts are skipped or refused (None: no limit).
        long_prompts: ``"skip"`` (with a warning) or ``"error"``.
    """

    def __init__(
        self,
        benchmarks: Mapping[str, Mapping],
        prompt: PromptTemplate,
        verifier: MathVerifier,
        max_prompt_tokens: int | None = None,
        long_prompts: str = "skip",
    ) -> None:
        if long_prompts not in ("skip", "error"):
            raise ValueError(f"long_prompts must be 'skip' or 'error', got {long_prompts!r}")
        if not benchmarks:
            raise ValueError("no benchmarks configured: choose some, e.g. benchmarks=[math500,aime24]")
        self.benchmarks = [Benchmark(name=name, **dict(spec)) for name, spec in benchmarks.items()]
        self.prompt = prompt
        self.verifier = verifier
        self.max_prompt_tokens = max_prompt_tokens
        self.long_prompts = long_prompts
        self._prepared: dict[str, PreparedBenchmark] = {}

    def prepare(self, benchmark: Benchmark, tokenizer) -> PreparedBenchmark:
        """Load and encode a benchmark's problems (once per evaluator)."""
        if benchmark.name in self._prepared:
            return self._prepared[benchmark.name]
        loaded = load_problems(benchmark.path, columns=benchmark.columns, split=benchmark.split, limit=benchmark.limit)
        encoded = self.prompt.encode([p.problem for p in loaded.problems], tokenizer)
        limit = self.max_prompt_tokens
        long = [i for i, ids in enumerate(encoded) if limit is not None and len(ids) > limit]
        if long and self.long_prompts == "error":
            raise ValueError(
                f"{loaded.source}: problem {loaded.problems[long[0]].id!r} has a {len(encoded[long[0]])}-token prompt, "
                f"over model.max_prompt_tokens={limit} ({len(long)} such problems; raise the limit, or skip them)"
            )
        if len(long) == len(encoded):
            raise ValueError(f"{loaded.source}: no prompt fits in model.max_prompt_tokens={limit}")
        if long:
            log.warning("%s: skipped %d of %d prompts over %d tokens", loaded.source, len(long), len(encoded), limit)
        skipped = set(long)
        keep = [i for i in range(len(encoded)) if i not in skipped]
        prepared = PreparedBenchmark(
            benchmark,
            loaded.source,
            [loaded.problems[i] for i in keep],
            [encoded[i] for i in keep],
            [loaded.problems[i].id for i in long],
        )
        self._prepared[benchmark.name] = prepared
        return prepared

    def sample(
        self, prepared: PreparedBenchmark, indices: Sequence[int], generator, tokenizer, seed: int
    ) -> list[dict]:
        """Answer the problems at ``indices`` (``samples`` answers each) and verify: one record per answer.

        ``generator`` must already hold the weights to evaluate (``generator.sync``).
        """
        benchmark = prepared.benchmark
        if not indices:
            return []
        completions = generator.generate(
            [prepared.prompt_ids[i] for i in indices], benchmark.samples, benchmark.sampling(), seed
        )
        flat = [
            (prepared.problems[i], j, c)
            for i, group in zip(indices, completions, strict=True)
            for j, c in enumerate(group)
        ]
        texts = tokenizer.batch_decode([c.token_ids for _, _, c in flat], skip_special_tokens=True)
        scores = self.verifier.score(texts, [problem.answer for problem, _, _ in flat])
        return [
            {
                "benchmark": benchmark.name,
                "problem_id": problem.id,
                "sample": sample,
                "response": text,
                "extracted": last_boxed(text),
                "answer": problem.answer,
                "correct": bool(score),
                "length": len(completion.token_ids),
                "finish_reason": completion.finish_reason,
            }
            for (problem, sample, completion), text, score in zip(flat, texts, scores, strict=True)
        ]
