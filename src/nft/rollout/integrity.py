"""Rollout integrity: the engine samples the policy being trained, and the gap between them is measured.

Weight-sync proof (``sync_and_check``): after every sync, a fingerprint of each weight the engine holds is compared
with the same fingerprint of the trainer's weights (gathered under FSDP, cast to the engine's dtype). A stale or
partial sync stops the run with ``WeightSyncError``, naming the first tensor that differs. The fingerprint of a tensor
is its position-weighted sum, ``sum_i t_i * (1 + i mod 1021)``, taken in float32 chunks and added up in float64: it
reads every element (a change anywhere shows; a sample of elements would miss the few bf16 values that an update of
lr 1e-6 moves), costs about one pass over the weights, and both sides compute it with the same kernel on the same
bits, so a faithful sync matches exactly. A LoRA policy's weights are its effective ones, adapters merged
(``nft.lora.effective_parameters``): an engine that samples the base, or adapters of an earlier epoch, differs from
the trainer from the first update on. Engines that fuse projections (vLLM's ``qkv_proj``, ``gate_up_proj``) name
their parts (``fused``); the trainer's side concatenates them. Tensors whose shapes differ (sharded by the engine's
tensor parallelism, or padded) are not compared; a sync with nothing in common is an error too.

Mismatch metrics (``mismatch_sums`` / ``mismatch_metrics``): over the counted tokens, with ``d = log pi_trainer -
log pi_behaviour`` for the same sampled tokens: the mean and max of ``|d|``, the mean of ``exp(|d|)`` (the
``token_mult_prob_error`` others log), a KL estimate (k3: ``mean(exp(d) - 1 - d)``, an estimate of
KL(behaviour || trainer) from the behaviour's own samples) and the effective sample size of the importance weights
``exp(d)`` as a fraction of the tokens (``(sum w)^2 / (n sum w^2)``; 1 when the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from nft.distributed import all_reduce_max, all_reduce_sum
from nft.lora import effective_parameters
from nft.rollout.weights import checkpoint_name

CHUNK = 1 << 24  # elements per fingerprint chunk: bounds the temporary to 64 MiB of float32
MISMATCH_FIELDS = ("tokens", "abs_diff", "exp_abs_diff", "k3", "weight", "weight_sq")


class WeightSyncError(RuntimeError):
    """The engine does not hold the trainer's weights after a sync."""


class RolloutMismatchError(RuntimeError):
    """The engine's log-probs differ from the trainer's beyond the stop threshold."""


def fingerprint(tensor: torch.Tensor) -> float:
    """The position-weighted sum of ``tensor``'s elements (see the module docstring)."""
    flat = tensor.detach().reshape(-1)
    total = 0.0
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start : start + CHUNK].float()
        positions = torch.arange(start, start + chunk.numel(), device=chunk.device) % 1021 + 1
        total += float((chunk * positions).sum(dtype=torch.float64))
    return total


def fingerprints(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, tuple[tuple[int, ...], float]]:
    """``{checkpoint name: (shape, fingerprint)}`` of an engine's weights."""
    return {checkpoint_name(name): (tuple(t.shape), fingerprint(t)) for name, t in named_tensors}


def trainer_fingerprints(
    model: torch.nn.Module,
    wanted: Mapping[str, tuple[int, ...]],
    fused: Mapping[str, list[str]],
    dtype: torch.dtype | None,
) -> dict[str, tuple[tuple[int, ...], float]]:
    """The fingerprints of the trainer's weights for the engine's ``wanted`` names, in the engine's ``dtype``.

    Every rank of a sharded model must call it (each weight is gathered in turn). A fused name (``...qkv_proj.weight``)
    is the concatenation, along dim 0, of its parts (``fused["qkv_proj"] = ["q_proj", "k_proj", "v_proj"]``).
    """
    parts_of = {}
    for name in wanted:
        for fused_name, parts in fused.items():
            if f".{fused_name}." in name:
                parts_of[name] = [name.replace(f".{fused_name}.", f".{part}.") for part in parts]
    needed = set(wanted) | {part for parts in parts_of.values() for part in parts}
    tensors: dict[str, torch.Tensor] = {}
    out = {}
    for name, tensor in effective_parameters(model, dtype):  # a collective under FSDP: every weight, in order
        if name not in needed:
            continue
        tensors[name] = tensor.to(dtype) if dtype is not None else tensor
        for target in [n for n in wanted if n not in out]:
            sources = parts_of.get(target, [target])
            if all(s in tensors for s in sources):
                joined = torch.cat([tensors[s] for s in sources]) if len(sources) > 1 else tensors[sources[0]]
                out[target] = (tuple(joined.shape), fingerprint(joined))
        done = {s for target in out for s in parts_of.get(target, [target])}
        tensors = {k: v for k, v in tensors.items() if k not in done}  # hold at most one layer's parts
    return out


def check_fingerprints(engine: Mapping, trainer: Mapping, epoch_hint: str = "") -> int:
    """Raise ``WeightSyncError`` at the first tensor whose fingerprint differs; returns the number compared."""
    compared = 0
    for name, (shape, value) in engine.items():
        if name not in trainer or trainer[name][0] != shape:
            continue  # sharded, padded or not the trainer's: not comparable
        if trainer[name][1] != value:
            raise WeightSyncError(
                f"weight sync failed{epoch_hint}: the rollout engine's {name} {list(shape)} differs from the "
                f"trainer's (fingerprint {value!r} vs {trainer[name][1]!r}); it would sample another policy than the "
                "one being trained. Check the backend's sync (rollout.backend) or report it"
            )
        compared += 1
    if compared == 0:
        raise WeightSyncError(
            f"weight sync cannot be checked{epoch_hint}: no weight of the engine ({len(engine)} tensors) matches one "
            "of the trainer's by name and shape"
        )
    return compared


def sync_and_check(generator, policy, epoch_hint: str = "") -> int:
    """``generator.sync(policy)``, then the proof that the engine holds the policy's weights (see above)."""
    generator.sync(policy)
    engine, fused = generator.fingerprints()
    wanted = {name: shape for name, (shape, _) in engine.items()}
    trainer = trainer_fingerprints(policy.model, wanted, fused, generator.weight_dtype)
    return check_fingerprints(engine, trainer, epoch_hint)


# --- behaviour vs trainer log-probs ----------------------------------------------------------------------------------
def mismatch_sums(trainer_logp: torch.Tensor, behaviour_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[len(MISMATCH_FIELDS) + 1] sums over the counted tokens (the last entry: the max ``|d|``), on their device."""
    counted = mask > 0
    diff = torch.where(counted, trainer_logp.detach().float() - behaviour_logp.float(), 0.0)
    absolute = diff.abs()
    weight = torch.where(counted, diff.clamp(max=20.0).exp(), 0.0)
    k3 = torch.where(counted, weight - 1.0 - diff, 0.0)
    exp_abs = torch.where(counted, absolute.clamp(max=20.0).exp(), 0.0)
    values = [counted.sum(), absolute.sum(), exp_abs.sum(), k3.sum(), weight.sum(), (weight**2).sum(), absolute.max()]
    return torch.stack([v.to(torch.float64) for v in values])


def reduce_mismatch(sums: torch.Tensor) -> torch.Tensor:
    """Sums over ranks (and the max of the max)."""
    return torch.cat([all_reduce_sum(sums[:-1]), all_reduce_max(sums[-1:])])


def mismatch_metrics(sums: torch.Tensor) -> dict[str, float]:
    """``rollout/mismatch/*`` from (possibly accumulated) ``mismatch_sums``; {} when no token was counted."""
    tokens, abs_diff, exp_abs, k3, weight, weight_sq, max_abs = (float(v) for v in sums)
    if tokens == 0:
        return {}
    return {
        "rollout/mismatch/mean_abs_diff": abs_diff / tokens,
        "rollout/mismatch/max_abs_diff": max_abs,
        "rollout/mismatch/token_mult_prob_error": exp_abs / tokens,
        "rollout/mismatch/kl": k3 / tokens,
        "rollout/mismatch/ess_frac": weight**2 / (tokens * weight_sq) if weight_sq > 0 else 1.0,
        "rollout/mismatch/tokens": tokens,
    }
