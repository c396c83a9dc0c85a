"""The transformers generation backend: a batched sampling loop over the training model itself (no weight copy).

A hand-written decode loop rather than ``model.generate`` because it must return the behaviour log-prob of each
sampled token without keeping ``[steps, rows, vocab]`` scores, prefill each prompt once for its ``n`` samples,
and stop paying for rows that have finished.

Sampling is by inverse CDF from a counter-based random stream per answer (a hash of the prompt's seed, the answer's
index and the step) rather than a shared ``torch.Generator``: an answer then depends only on its prompt's seed and
the weights, not on which other prompts share its batch or its rank, so one process and several ranks sample the same
answers. A LoRA policy samples with its current adapters, since it is the training model itself (and the weight-sync
fingerprint compares its effective, merged weights with the trainer's). Under FSDP the full weights are gathered once
per ``generate`` call (``nft.distributed.gathered_parameters``): decoding runs no collective, so ranks with different
prompts and answer lengths never wait on each other.

It samples in the precision the update computes in: under a policy module's mixed precision (``trainer=gpu``:
bf16-mixed, float32 master weights) the decoding forwards run in the trainer's autocast, so the behaviour log-probs
are the update's ``pi_old`` up to kernel order rather than those of the float32 masters (a gap of bf16 rounding that
``integrity.warn_kl`` would report as a mismatch of the engine). A bare policy (evaluating a checkpoint) samples in
its weights' own dtype. Under FSDP2 the update computes with bf16 parameters (``fsdp.param_dtype``) while generation
gathers the float32 shards: that gap remains, and is measured by the mismatch metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from nft.distributed import gathered_parameters
from nft.lora import effective_parameters
from nft.rollout.attention import grouped_decoding, preallocated_cache
from nft.rollout.base import Completion, SamplingParams, prompt_seeds, stop_token_ids
from nft.rollout.integrity import fingerprints

MASK32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of int64 values in [0, 2^32) (products stay below 2^63, so no overflow)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    return (x >> 16) ^ x


def answer_keys(seeds: list[int], n: int, device: torch.device) -> torch.Tensor:
    """[len(seeds) * n] stream keys, prompt-major: answer j of prompt p gets a key of (seeds[p], j)."""
    base = mix32(torch.tensor([s & MASK32 for s in seeds], dtype=torch.long, device=device))
    index = torch.arange(n, device=device, dtype=torch.long) * 0x9E3779B9
    return mix32((base[:, None] + index[None, :]) & MASK32).flatten()


def uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in (0, 1) per key for decoding step ``step``."""
    bits = mix32(keys ^ mix32(torch.tensor(step, dtype=torch.long, device=keys.device)))
    return (bits.double() + 0.5).div(2.0**32).float()


def sample_tokens(
    logits: torch.Tensor, sampling: SamplingParams, uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverse CDF at ``uniform`` [B] (values in (0, 1)).

    Returns (tokens [B], log-probs [B] under ``softmax(logits / temperature)``)."""
    logprobs = torch.log_softmax(logits.float() / sampling.temperature, dim=-1)
    filtered = logprobs
    if sampling.top_k > 0 and sampling.top_k < logprobs.shape[-1]:
        kth = torch.topk(filtered, sampling.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, -math.inf)
    if sampling.top_p < 1.0:
        sorted_logprobs, order = torch.sort(filtered, dim=-1, descending=True)
        cumulative = sorted_logprobs.exp().cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p; the top token always stays.
        drop_sorted = (cumulative - sorted_logprobs.exp()) >= sampling.top_p
        filtered = filtered.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), -math.inf)
    cdf = torch.softmax(filtered, dim=-1).cumsum(dim=-1)
    # The first token whose cumulative probability reaches u: never one that top-k/top-p removed (a flat step).
    tokens = torch.searchsorted(cdf, (uniform.to(cdf.dtype) * cdf[:, -1])[:, None]).squeeze(-1)
    tokens = tokens.clamp(max=logits.shape[-1] - 1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


class HFGenerator:
    """Samples with the policy being trained, in batches of at most ``max_batch_rows`` rows (prompts x samples).

    Args:
        max_batch_rows: rows decoded together at most.
        kv_cache_gb: a memory budget for the KV cache: fewer rows per decoding batch when their cache (every row
            preallocated for its prompt and the whole answer) would exceed it (None: ``max_batch_rows`` only). A
            prompt's ``n`` answers always decode together.
        compact_when: drop finished rows from the batch once this fraction of it has finished.
        show_progress: a progress bar over answers when generation takes more than a couple of seconds.
    """

    tensor_parallel_size = 1  # every rank samples on its own
    weight_dtype = None  # it samples with the weights it is given, in their own dtype

    def __init__(
        self,
        max_batch_rows: int = 512,
        kv_cache_gb: float | None = None,
        compact_when: float = 0.25,
        show_progress: bool = True,
    ) -> None:
        if kv_cache_gb is not None and kv_cache_gb <= 0:
            raise ValueError(f"rollout.backend.kv_cache_gb must be > 0 (or null), got {kv_cache_gb}")
        self.max_batch_rows = max_batch_rows
        self.kv_cache_bytes = None if kv_cache_gb is None else int(kv_cache_gb * 1e9)
        self.compact_when = compact_when
        self.show_progress = show_progress
        self.model = None
        self.compute_precision = contextlib.nullcontext
        self.stop_ids: list[int] = []
        self.pad_id = 0

    def sync(self, policy) -> None:
        """The HF backend samples from the training model itself, so syncing is taking a reference to it."""
        self.model = policy.model
        # A PolicyModule computes in its trainer's precision; a bare policy (model and tokenizer) in its own dtype.
        self.compute_precision = getattr(policy, "compute_precision", contextlib.nullcontext)
        tokenizer = policy.tokenizer
        self.stop_ids = stop_token_ids(policy.model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    def release(self) -> None:
        """Nothing to free: the weights are the training model's."""

    def fingerprints(self) -> tuple[dict, dict]:
        """The fingerprints of the weights it samples with (``nft.rollout.integrity``), and no fused names: a LoRA
        policy's effective weights, with the adapters as its layers apply them now (``nft.lora``)."""
        return fingerprints(effective_parameters(self.model)), {}

    def close(self) -> None:
        """Nothing to end."""

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams, seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        if self.model is None:
            raise RuntimeError("HFGenerator.generate called before sync(policy)")
        seeds = prompt_seeds(seed, len(prompts))
        # The precision first: grouped_decoding is switched on only where it computes in float32.
        with gathered_parameters(self.model), self.compute_precision(), grouped_decoding(self.model):
            with torch.inference_mode():
                return self._generate(prompts, n, sampling, seeds)

    def _generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams, seeds: list[int]
    ) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        # Prompts of similar length share a batch, so little compute goes to padding.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_batch = max(1, self.rows_per_batch(max(map(len, prompts), default=0) + sampling.max_new_tokens) // n)
        results: list[list[Completion]] = [[] for _ in prompts]
        bar = tqdm(
            total=len(prompts) * n,
            desc="generate",
            unit="answer",
            delay=2.0,
            disable=not self.show_progress,
            leave=False,
        )
        try:
            for start in range(0, len(order), per_batch):
                chunk = order[start : start + per_batch]
                keys = answer_keys([seeds[i] for i in chunk], n, self._device())
                completions = self._generate_batch([prompts[i] for i in chunk], n, sampling, keys)
                for j, index in enumerate(chunk):
                    results[index] = completions[j * n : (j + 1) * n]
                bar.update(len(chunk) * n)
        finally:
            bar.close()
            self.model.train(was_training)
        return results

    def rows_per_batch(self, positions: int) -> int:
        """Rows decoded together when each needs a cache of ``positions`` tokens: within the memory budget."""
        if self.kv_cache_bytes is None:
            return self.max_batch_rows
        config = self.model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        element = next(self.model.parameters()).element_size()
        device = self._device().type
        if torch.is_autocast_enabled(device):  # keys and values come out of autocast's matmuls (bf16)
            element = torch.get_autocast_dtype(device).itemsize
        per_row = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element * positions
        return max(1, min(self.max_batch_rows, self.kv_cache_bytes // per_row))

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generate_batch(
        self, prompts: list[Sequence[int]], n: int, sampling: SamplingParams, keys: torch.Tensor
    ) -> list[Completion]:
        device = self._device()
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

        # Prefill each prompt once, then copy its cache for its n samples.
        cache = preallocated_cache(self.model.config, width + sampling.max_new_tokens)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].repeat_interleave(n, dim=0)
        cache.batch_repeat_interleave(n)
        attention_mask = attention_mask.repeat_interleave(n, dim=0)
        next_position = position_ids[:, -1].repeat_interleave(n, dim=0) + 1

        rows = logits.shape[0]
        stop_ids = torch.tensor(self.stop_ids, device=device)
        tokens = torch.full((rows, sampling.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((rows, sampling.max_new_tokens), dtype=torch.float32, device=device)
        lengths = torch.full((rows,), sampling.max_new_tokens, dtype=torch.long, device=device)
        active = torch.arange(rows, device=device)  # original row index of each row still in the batch
        running = torch.ones(rows, dtype=torch.bool, device=device)
        for step in range(sampling.max_new_tokens):
            sampled, sampled_logprobs = sample_tokens(logits, sampling, uniforms(keys[active], step))
            tokens[active, step] = sampled
            logprobs[active, step] = sampled_logprobs
            stopped = torch.isin(sampled, stop_ids) & running  # a row that stopped earlier keeps its length
            lengths[active[stopped]] = step + 1
            if step + 1 == sampling.max_new_tokens:
                break
            running &= ~stopped
            if not running.any():
                break
            if running.sum() <= (1 - self.compact_when) * running.numel():
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, sampled, running = active[keep], sampled[keep], running[keep]
                attention_mask, next_position = attention_mask[keep], next_position[keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
            out = self.model(
                input_ids=sampled[:, None],
                attention_mask=attention_mask,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1]
            next_position = next_position + 1

        lengths, tokens, logprobs = lengths.cpu(), tokens.cpu(), logprobs.cpu()
        stopped_rows = torch.isin(tokens.gather(1, (lengths - 1)[:, None]).squeeze(1), stop_ids.cpu())
        return [
            Completion(
                tokens[i, : lengths[i]].clone(),
                logprobs[i, : lengths[i]].clone(),
                "stop" if stopped_rows[i] else "length",
            )
            for i in range(rows)
        ]
