"""Benchmark evaluation: sample answers to a benchmark's problems with the current policy, verify, write records.

Used by the ``BenchmarkEval`` callback during training and by ``src/evaluate.py`` (``nft.eval.offline``) on saved
models, through the answer path that training uses too (``nft.data.answers``). Both turn the records this module
writes (one dict per answer) into metrics with ``nft.eval.metrics.BenchmarkMetrics``, so a number is always
recomputable from the records on disk.

Each problem's answers are sampled from a seed of its own, derived from the run's seed, the benchmark and the
problem's id (``nft.seeds``): the records do not depend on the number of ranks, the tensor-parallel size, the chunk
an offline evaluation is in, or the epoch (every evaluation of a run samples with the same random numbers, so the
difference between two epochs is the models', not the draws').

Prompts longer than ``max_prompt_tokens`` are skipped with a warning (``long_prompts="skip"``), as the reference
trainer (verl's ``filter_overlong_prompts``, used by NVlabs/NFT for validation too) does; ``"error"`` refuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nft.data.answers import EncodedProblems, answer_problems, encode_problems
from nft.data.problems import load_problems
from nft.data.prompts import PromptTemplate
from nft.rollout.base import SamplingParams
from nft.seeds import derive_seed
from nft.verify import MathVerifier, last_boxed

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    """A problem file (or hub dataset) and its protocol: ``samples`` answers per problem at these sampling settings.

    ``title`` heads the benchmark's column in results tables; ``columns`` maps ``id``/``problem``/``answer`` to the
    source's column names; ``split`` is the hub dataset split; ``limit`` keeps the first N problems; ``grader``
    scores this benchmark with a grader of its own (a name of ``nft.verify.reference``; None: the run's verifier);
    ``final_only`` keeps it out of the evaluations during training (a test set read once, after the last epoch).
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
    grader: str | None = None
    final_only: bool = False

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"benchmarks.{self.name}.samples must be >= 1, got {self.samples}")
        try:
            self.sampling()
        except ValueError as error:
            raise ValueError(f"benchmarks.{self.name}: {error}") from None
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
        protocol = {
            "path": self.path,
            "samples": self.samples,
            "sampling": [self.temperature, self.top_p, self.top_k, self.max_new_tokens],
            "columns": self.columns,
            "split": self.split,
        }
        if self.grader is not None:  # only then: records written before graders were named keep their protocol
            protocol["grader"] = self.grader
        return protocol


class Evaluator:
    """Runs benchmarks with one prompt template and verifier.

    Args:
        benchmarks: name -> ``Benchmark`` fields (the ``benchmarks`` config group).
        prompt: how a problem becomes the prompt. verifier: scores the answers.
        max_prompt_tokens: longer prompts are skipped or refused (None: no limit).
        long_prompts: ``"skip"`` (with a warning) or ``"error"``.
        seed: the run's seed, from which each problem's sampling seed is derived.
    """

    def __init__(
        self,
        benchmarks: Mapping[str, Mapping],
        prompt: PromptTemplate,
        verifier: MathVerifier,
        max_prompt_tokens: int | None = None,
        long_prompts: str = "skip",
        seed: int = 0,
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
        self.seed = seed
        self._prepared: dict[str, EncodedProblems] = {}
        self._graders: dict[str, MathVerifier] = {}  # a benchmark's own grader, one verifier each

    def verifier_for(self, benchmark: Benchmark) -> MathVerifier:
        """The run's verifier, or one with the benchmark's grader and the run's pool settings."""
        if benchmark.grader is None or benchmark.grader == self.verifier.grader:
            return self.verifier
        if benchmark.grader not in self._graders:
            v = self.verifier
            self._graders[benchmark.grader] = MathVerifier(
                v.num_workers, v.timeout, memory_mb=v.memory_mb, grader=benchmark.grader
            )
        return self._graders[benchmark.grader]

    def close(self) -> None:
        """Stop every verifier's workers."""
        for verifier in (self.verifier, *self._graders.values()):
            verifier.close()

    def prepare(self, benchmark: Benchmark, tokenizer) -> EncodedProblems:
        """Load and encode a benchmark's problems (once per evaluator)."""
        if benchmark.name not in self._prepared:
            loaded = load_problems(
                benchmark.path, columns=benchmark.columns, split=benchmark.split, limit=benchmark.limit
            )
            self._prepared[benchmark.name] = encode_problems(
                loaded,
                self.prompt,
                tokenizer,
                self.max_prompt_tokens,
                self.long_prompts,
                limit_key="model.max_prompt_tokens",
                skip_key="callbacks.benchmark_eval.evaluator.long_prompts=skip",
                field_name=(benchmark.columns or {}).get("problem", "problem"),
            )
        return self._prepared[benchmark.name]

    def sample(
        self, benchmark: Benchmark, prepared: EncodedProblems, indices: Sequence[int], generator, tokenizer
    ) -> list[dict]:
        """Answer the problems at ``indices`` (``samples`` answers each) and verify: one record per answer this rank
        owns (every rank passes the same ``indices``; see ``nft.data.answers``).

        ``generator`` must already hold the weights to evaluate (``generator.sync``).
        """
        problems = prepared.problems
        seeds = [derive_seed(self.seed, "eval", benchmark.name, problems[i].id) for i in indices]
        answers, _ = answer_problems(
            prepared,
            indices,
            seeds,
            benchmark.samples,
            benchmark.sampling(),
            generator,
            tokenizer,
            self.verifier_for(benchmark),
        )
        return [
            {
                "benchmark": benchmark.name,
                "problem_id": problems[a.index].id,
                "sample": a.sample,
                "response": a.text,
                "extracted": last_boxed(a.text),
                "answer": problems[a.index].answer,
                "correct": bool(a.correct),
                "length": len(a.completion.token_ids),
                "finish_reason": a.completion.finish_reason,
            }
            for a in answers
        ]

    def average(self, metrics: Mapping[str, float]) -> float:
        """``val/average``: the mean headline metric (avg@samples) of the benchmarks that ``metrics`` holds."""
        headline = [metrics[name] for b in self.benchmarks if (name := f"val/{b.name}/{b.metric}") in metrics]
        return sum(headline) / len(headline)
