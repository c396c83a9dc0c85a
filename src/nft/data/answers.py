"""From problems to verified answers: the one path that training rollouts and benchmark evaluation share.

- ``encode_problems``: a problem set's prompt token ids; a prompt over the token limit is refused with an error that
  names the file, the line and the field, or skipped with a warning.
- ``answer_problems``: the generator answers this rank's share of the problems (``n`` answers each, from one seed per
  problem), the answers are decoded and verified. Every rank passes the same problems; with several ranks (or a vLLM
  engine spanning several) ``nft.distributed.RolloutShard`` decides which this rank generates and keeps, so the
  answers to a problem are the same whichever rank or batch produced them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from nft.data.problems import Problem, ProblemFileError, ProblemSet
from nft.data.prompts import PromptTemplate
from nft.distributed import rollout_shard
from nft.rollout.base import Completion, Generator, SamplingParams
from nft.verify import MathVerifier

log = logging.getLogger(__name__)


@dataclass
class EncodedProblems:
    """Problems whose prompt fits, with their prompt token ids, and those skipped for a long prompt."""

    source: str
    problems: list[Problem]
    prompt_ids: list[list[int]]
    skipped: list[Problem] = field(default_factory=list)


@dataclass
class VerifiedAnswer:
    """One answer: to problem ``index`` (a position in its ``EncodedProblems``), the ``sample``-th of its answers."""

    index: int
    sample: int
    completion: Completion
    text: str
    correct: float


def encode_problems(
    problem_set: ProblemSet,
    prompt: PromptTemplate,
    tokenizer,
    max_prompt_tokens: int | None,
    long_prompts: str = "error",
    *,
    limit_key: str = "data.max_prompt_tokens",
    skip_key: str = "data.long_prompts=skip",
    field_name: str = "problem",
) -> EncodedProblems:
    """Encode every problem's prompt; those over ``max_prompt_tokens`` are an error or (``long_prompts="skip"``)
    skipped. ``limit_key`` and ``skip_key`` name the settings the error message points to."""
    if long_prompts not in ("error", "skip"):
        raise ValueError(f"long prompts must be 'error' or 'skip', got {long_prompts!r}")
    problems = problem_set.problems
    encoded = prompt.encode([p.problem for p in problems], tokenizer)
    too_long = [i for i, ids in enumerate(encoded) if max_prompt_tokens is not None and len(ids) > max_prompt_tokens]
    if too_long and long_prompts == "error":
        first = problems[too_long[0]]
        raise ProblemFileError(
            f"{problem_set.source}, line {first.line}, field '{field_name}': the prompt of problem {first.id!r} is "
            f"{len(encoded[too_long[0]])} tokens, over {limit_key}={max_prompt_tokens} ({len(too_long)} such rows; "
            f"raise model.max_prompt_tokens or set {skip_key})"
        )
    if problems and len(too_long) == len(problems):
        raise ProblemFileError(
            f"{problem_set.source}, field '{field_name}': no prompt fits in {limit_key}={max_prompt_tokens}"
        )
    if too_long:
        lines = ", ".join(str(problems[i].line) for i in too_long[:10]) + (", ..." if len(too_long) > 10 else "")
        log.warning(
            "%s: skipped %d rows whose prompt is over %s=%d (field '%s', lines %s)",
            problem_set.source,
            len(too_long),
            limit_key,
            max_prompt_tokens,
            field_name,
            lines,
        )
    skip = set(too_long)
    keep = [i for i in range(len(problems)) if i not in skip]
    return EncodedProblems(
        problem_set.source,
        [problems[i] for i in keep],
        [encoded[i] for i in keep],
        [problems[i] for i in too_long],
    )


def answer_problems(
    encoded: EncodedProblems,
    indices: Sequence[int],
    seeds: Sequence[int],
    samples: int,
    sampling: SamplingParams,
    generator: Generator,
    tokenizer,
    verifier: MathVerifier,
) -> tuple[list[VerifiedAnswer], dict[str, float]]:
    """Answer the problems at ``indices`` (``seeds`` gives each its sampling seed): this rank's share, verified.

    ``generator`` must already hold the weights to sample (``generator.sync``). Returns the answers this rank owns,
    problem by problem, and the seconds spent generating and verifying them.
    """
    if len(seeds) != len(indices):
        raise ValueError(f"got {len(seeds)} seeds for {len(indices)} problems")
    shard = rollout_shard(generator.tensor_parallel_size)
    share = shard.take(list(range(len(indices))))
    start = time.perf_counter()
    completions = (
        generator.generate(
            [encoded.prompt_ids[indices[k]] for k in share], samples, sampling, [seeds[k] for k in share]
        )
        if share
        else []
    )
    generated = time.perf_counter()
    owned = [
        (indices[k], sample, completion)
        for j, (k, group) in enumerate(zip(share, completions, strict=True))
        if shard.owns(j)
        for sample, completion in enumerate(group)
    ]
    texts = tokenizer.batch_decode([c.token_ids for _, _, c in owned], skip_special_tokens=True)
    scores = verifier.score(texts, [encoded.problems[i].answer for i, _, _ in owned]) if owned else []
    answers = [
        VerifiedAnswer(i, sample, completion, text, score)
        for (i, sample, completion), text, score in zip(owned, texts, scores, strict=True)
    ]
    return answers, {"generate": generated - start, "verify": time.perf_counter() - generated}
