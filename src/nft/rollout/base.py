"""What every generation backend provides: sampling settings in, completions (tokens, log-probs, finish reason) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from nft.seeds import derive_seed


@dataclass(frozen=True)
class SamplingParams:
    """How answers are sampled. ``top_k <= 0`` and ``top_p >= 1`` switch those filters off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature}); use a small value for near-greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    """One sampled answer.

    Attributes:
        token_ids: [T] long, the generated tokens up to and including the stop token (if any).
        logprobs: [T] float, behaviour log-probability of each token under the sampling policy at ``temperature``
            (before top-p/top-k truncation, matching what the trainer recomputes).
        finish_reason: ``"stop"`` (ended with a stop token) or ``"length"`` (cut at ``max_new_tokens``).
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor
    finish_reason: str


class Generator(Protocol):
    """A rollout backend.

    ``sync(policy)`` is the named weight-sync step: the current weights of ``policy.model`` become the sampling
    policy (``policy.tokenizer`` gives the stop tokens); ``fingerprints()`` returns the fingerprints of the weights
    this rank of the engine now holds (``nft.rollout.integrity.EngineFingerprint``), with the names of its fused
    projections, so that ``nft.rollout.integrity.sync_and_check`` proves each sync; ``generate`` samples ``n``
    answers per prompt; ``release()`` says generation is over for now (vLLM frees its memory for training; the
    transformers backend has nothing to free); ``close()`` ends the backend for good (its engine and files). ``seed``
    is one seed per prompt, or one int from which per-prompt seeds are derived by position: a prompt's answers depend
    only on its seed, not on the batch it is in. ``tensor_parallel_size`` ranks share one engine and must call
    ``generate`` with the same prompts.
    """

    tensor_parallel_size: int
    weight_dtype: torch.dtype | None  # what the engine holds the weights in (None: the trainer's own dtype)

    def sync(self, policy) -> None: ...

    def fingerprints(self) -> tuple[dict, dict[str, list[str]]]: ...

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams, seed: int | Sequence[int]
    ) -> list[list[Completion]]: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def prompt_seeds(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per prompt: ``seed`` itself when it is a sequence, else derived from ``seed`` and the position."""
    if isinstance(seed, int):
        return [derive_seed(seed, "prompt", i) for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
    return seeds


def stop_token_ids(model, tokenizer) -> list[int]:
    """The generation config's EOS ids and the tokenizer's EOS: generation stops at any of them."""
    stop = model.generation_config.eos_token_id
    stop = [stop] if isinstance(stop, int) else list(stop or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stop:
        stop.append(tokenizer.eos_token_id)
    if not stop:
        raise ValueError("the tokenizer and generation config define no EOS token: generation could not stop")
    return stop
