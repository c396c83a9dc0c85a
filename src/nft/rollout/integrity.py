"""Rollout integrity: the engine samples the policy being trained, and the gap between them is measured.

Weight-sync proof (``sync_and_check``): after every sync, a fingerprint of each weight the engine holds is compared
with the same fingerprint of the trainer's weights (gathered under FSDP, cast to the engine's dtype). A stale or
partial sync stops the run with ``WeightSyncError``, naming the first tensor that differs. The fingerprint of a tensor
is an exact integer, the position-weighted sum of its elements' bit patterns, ``sum_i bits(t_i) * (1 + i mod 1021)``
(``shard_fingerprint``): it reads every element (a change anywhere shows; a sample of elements would miss the few bf16
values that an update of lr 1e-6 moves) and costs about one pass over the weights. Being a sum of integers it does not
depend on the order of addition, so the engine may hold a tensor in pieces: each tensor-parallel rank fingerprints its
shard with the global positions of its elements (``Shard``; vLLM's layouts are read in ``nft.rollout.vllm``), the
ranks' fingerprints are added up, and a faithful sync matches the trainer's fingerprint exactly. Elements that several
ranks hold (grouped KV heads at a tensor parallelism above their number, norms, row-parallel biases) are counted once,
each replica counting its own slice, so a stale replica shows too; padding (vocabulary rows past the real ones) is not
counted. Every tensor is compared, element counts included: an engine tensor that is not the trainer's, a trainer
weight that no engine tensor holds, or shards that do not cover their tensor exactly once are errors too.
A LoRA policy's weights are its effective ones, adapters merged (``nft.lora.effective_parameters``): an engine that
samples the base, or adapters of an earlier epoch, differs from the trainer from the first update on. Engines that fuse
projections (vLLM's ``qkv_proj``, ``gate_up_proj``) name their parts (``fused``); the trainer's side concatenates them.

``fingerprint`` is the older float form of the same weighted sum (float32 values added in float64, which depends on
the order of addition): what LoRA checkpoints record of their frozen base (``nft.module``), kept so that they resume.

Mismatch metrics (``mismatch_sums`` / ``mismatch_metrics``): over the counted tokens, with ``d = log pi_trainer -
log pi_behaviour`` for the same sampled tokens: the mean and max of ``|d|``, the mean of ``exp(|d|)`` (the
``token_mult_prob_error`` others log), a KL estimate (k3: ``mean(exp(d) - 1 - d)``, an estimate of
KL(behaviour || trainer) from the behaviour's own samples) and the effective sample size of the importance weights
``exp(d)`` as a fraction of the tokens (``(sum w)^2 / (n sum w^2)``; 1 when the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from nft.distributed import all_gather_objects, all_reduce_max, all_reduce_sum, rank_and_world
from nft.lora import effective_parameters
from nft.rollout.weights import checkpoint_name

CHUNK = 1 << 24  # elements per chunk of the float fingerprint: bounds the temporary to 64 MiB of float32
BITS_CHUNK = 1 << 20  # of the exact one: |bits x weight| < 2^41, so a chunk's int64 sum stays under 2^61
INTEGERS = {1: torch.int8, 2: torch.int16, 4: torch.int32}  # bit patterns by element size (weights of 4 bytes at most)
MISMATCH_FIELDS = ("tokens", "abs_diff", "exp_abs_diff", "k3", "weight", "weight_sq")


class WeightSyncError(RuntimeError):
    """The engine does not hold the trainer's weights after a sync."""


class RolloutMismatchError(RuntimeError):
    """The engine's log-probs differ from the trainer's beyond the stop threshold."""


def fingerprint(tensor: torch.Tensor) -> float:
    """The float position-weighted sum of ``tensor``'s elements (see the module docstring)."""
    flat = tensor.detach().reshape(-1)
    total = 0.0
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start : start + CHUNK].float()
        positions = torch.arange(start, start + chunk.numel(), device=chunk.device) % 1021 + 1
        total += float((chunk * positions).sum(dtype=torch.float64))
    return total


@dataclass(frozen=True)
class Shard:
    """Where an engine rank's tensor lies in the trainer's full tensor (of ``full_shape``), and what it counts.

    ``runs``: ``(local, start, length, replica, replicas)``: along ``dim`` (0: rows, the output features; 1: columns,
    the input features), the local indices ``[local, local + length)`` hold the full tensor's ``[start, start +
    length)``; a run that ``replicas`` ranks hold alike is counted in slices, this rank counting the ``replica``-th.
    Local indices outside every run are padding.
    """

    full_shape: tuple[int, ...]
    runs: tuple[tuple[int, int, int, int, int], ...]
    dim: int = 0

    @classmethod
    def whole(cls, shape: Sequence[int], replica: int = 0, replicas: int = 1) -> Shard:
        """The full tensor, held alike by ``replicas`` ranks."""
        shape = tuple(shape) or (1,)
        return cls(shape, ((0, 0, shape[0], replica, replicas),))


class EngineFingerprint(NamedTuple):
    """One engine tensor's fingerprint (summed over the ranks that hold it), its full shape and its dtype."""

    full_shape: tuple[int, ...]
    dtype: torch.dtype
    value: int
    elements: int  # how many elements the fingerprint counted


class Compared(NamedTuple):
    """What a weight-sync proof compared."""

    tensors: int
    elements: int


def shard_fingerprint(tensor: torch.Tensor, shard: Shard) -> tuple[int, int]:
    """(fingerprint, elements counted) of one rank's ``tensor`` placed by ``shard`` (see the module docstring)."""
    bits = tensor.detach().view(INTEGERS[tensor.element_size()])
    bits = bits.reshape(1) if bits.dim() == 0 else bits
    columns = math.prod(shard.full_shape[1:])
    value = elements = 0
    for local, start, length, replica, replicas in shard.runs:
        low, high = length * replica // replicas, length * (replica + 1) // replicas
        block = bits.narrow(shard.dim, local + low, high - low)
        if shard.dim == 0:  # whole rows: one contiguous range of global positions
            value += _weighted_sum(block.reshape(1, -1), (start + low) * columns, 0)
        else:  # a band of columns in every row
            value += _weighted_sum(block, start + low, shard.full_shape[1])
        elements += block.numel()
    return value, elements


def _weighted_sum(block: torch.Tensor, base: int, row_stride: int) -> int:
    """``sum block[i, j] * (1 + (base + i * row_stride + j) mod 1021)`` over the 2-D integer ``block``, exactly."""
    rows, columns = block.shape
    row_step = max(1, BITS_CHUNK // max(columns, 1))
    sums = [torch.zeros((), dtype=torch.int64, device=block.device)]
    for row in range(0, rows, row_step):
        for column in range(0, columns, BITS_CHUNK):
            part = block[row : row + row_step, column : column + BITS_CHUNK]
            device = part.device
            positions = torch.arange(row, row + part.shape[0], device=device)[:, None] * row_stride + base
            positions = positions + torch.arange(column, column + part.shape[1], device=device)
            sums.append((part.long() * (positions % 1021 + 1)).sum())
    return sum(torch.stack(sums).tolist())  # Python integers: no overflow however many chunks


def fingerprints(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, EngineFingerprint]:
    """``{checkpoint name: EngineFingerprint}`` of an engine that holds its weights whole (one rank)."""
    out = {}
    for name, tensor in named_tensors:
        shard = Shard.whole(tensor.shape)
        out[checkpoint_name(name)] = EngineFingerprint(
            shard.full_shape, tensor.dtype, *shard_fingerprint(tensor, shard)
        )
    return out


def engine_totals(ranks: Sequence[Mapping[str, EngineFingerprint]]) -> dict[str, EngineFingerprint]:
    """The fingerprints of one engine's tensor-parallel ranks added up, tensor by tensor."""
    totals = dict(ranks[0])
    for rank in ranks[1:]:
        if rank.keys() != totals.keys():
            raise WeightSyncError(f"the engine's ranks hold different tensors: {sorted(rank.keys() ^ totals.keys())}")
        for name, (shape, dtype, value, elements) in rank.items():
            total = totals[name]
            if (shape, dtype) != (total.full_shape, total.dtype):
                raise WeightSyncError(f"the engine's ranks place {name} differently: {shape} {dtype} vs {total[:2]}")
            totals[name] = total._replace(value=total.value + value, elements=total.elements + elements)
    return totals


def trainer_fingerprints(
    model: torch.nn.Module,
    wanted: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    fused: Mapping[str, list[str]],
    dtype: torch.dtype | None,
) -> dict[str, tuple[tuple[int, ...], int | None]]:
    """``{name: (shape, fingerprint)}`` of the trainer's weights for the engine's ``wanted`` names and dtypes.

    Every rank of a sharded model must call it (each weight is gathered in turn, cast to ``dtype``). A fused name
    (``...qkv_proj.weight``) is the concatenation, along dim 0, of its parts (``fused["qkv_proj"] = ["q_proj",
    "k_proj", "v_proj"]``). A trainer weight that no wanted name covers is returned with the fingerprint ``None``.
    """
    parts_of = {}
    for name in wanted:
        for fused_name, parts in fused.items():
            if f".{fused_name}." in name:
                parts_of[name] = [name.replace(f".{fused_name}.", f".{part}.") for part in parts]
    needed = set(wanted) | {part for parts in parts_of.values() for part in parts}
    tensors: dict[str, torch.Tensor] = {}
    out: dict[str, tuple[tuple[int, ...], int | None]] = {}
    for name, tensor in effective_parameters(model, dtype):  # a collective under FSDP: every weight, in order
        if name not in needed:
            out[name] = (tuple(tensor.shape), None)
            continue
        tensors[name] = tensor
        for target in [n for n in wanted if n not in out]:
            sources = parts_of.get(target, [target])
            if all(s in tensors for s in sources):
                joined = torch.cat([tensors[s] for s in sources]) if len(sources) > 1 else tensors[sources[0]]
                joined = joined.to(wanted[target][1])
                out[target] = (tuple(joined.shape), shard_fingerprint(joined, Shard.whole(joined.shape))[0])
        done = {s for target in out for s in parts_of.get(target, [target])}
        tensors = {k: v for k, v in tensors.items() if k not in done}  # hold at most one layer's parts
    return out


def check_fingerprints(
    engine: Mapping[str, EngineFingerprint], trainer: Mapping[str, tuple], epoch_hint: str = ""
) -> Compared:
    """Raise ``WeightSyncError`` at the first tensor that differs or is not compared; returns what was compared."""
    elements = 0
    for name, (shape, _, value, counted) in engine.items():
        if name not in trainer:
            raise WeightSyncError(
                f"weight sync cannot be checked{epoch_hint}: the rollout engine's {name} {list(shape)} is not one of "
                "the trainer's weights (nor a fusion of them)"
            )
        trainer_shape, expected = trainer[name]
        if trainer_shape != shape or counted != math.prod(shape):
            raise WeightSyncError(
                f"weight sync cannot be checked{epoch_hint}: the rollout engine's shards of {name} count {counted} "
                f"elements of a {list(shape)} tensor, the trainer's is {list(trainer_shape)}: their layout is not "
                "understood (nft.rollout.vllm.engine_shard)"
            )
        if expected != value:
            raise WeightSyncError(
                f"weight sync failed{epoch_hint}: the rollout engine's {name} {list(shape)} differs from the "
                f"trainer's (fingerprint {value} vs {expected}); it would sample another policy than the one being "
                "trained. Check the backend's sync (rollout.backend) or report it"
            )
        elements += counted
    missing = [name for name, (_, value) in trainer.items() if value is None]
    if missing or not engine:
        raise WeightSyncError(
            f"weight sync cannot be checked{epoch_hint}: no tensor of the rollout engine ({len(engine)} tensors) "
            f"holds the trainer's {missing[:3]}{' ...' if len(missing) > 3 else ''}"
        )
    return Compared(len(engine), elements)


def sync_and_check(generator, policy, epoch_hint: str = "") -> Compared:
    """``generator.sync(policy)``, then the proof that the engine holds the policy's weights (see above)."""
    generator.sync(policy)
    engine, fused = generator.fingerprints()
    size = generator.tensor_parallel_size
    if size > 1:  # this rank's engine: the `size` consecutive ranks from its first
        group = rank_and_world()[0] // size
        engine = engine_totals(all_gather_objects(engine)[group * size : (group + 1) * size])
    wanted = {name: (held.full_shape, held.dtype) for name, held in engine.items()}
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
