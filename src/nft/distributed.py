"""Data parallelism: FSDP2 sharding of a transformers causal LM, and the few collectives the rest of the code needs.

Every function here is a no-op (or the identity) in a single process, so callers never branch on the world size.

Sharding (``shard_model``, called by ``PolicyModule.configure_model`` under Lightning's ``ModelParallelStrategy``):
``fully_shard`` on each decoder layer, then on the root (embeddings, final norm, LM head). The sharded parameters are
kept in float32: they are the optimizer's master weights, and an update of lr 1e-6 vanishes in bfloat16. The
``MixedPrecisionPolicy`` all-gathers them in ``param_dtype`` (bfloat16) for compute and reduce-scatters gradients in
``reduce_dtype`` (float32).

Gradient reduction is a SUM, not FSDP's default average over ranks: every loss is normalised by the totals of the
whole optimizer step across all ranks (``num_tokens``/``num_seqs``, computed by the data module from every rank's
groups), so the sum of the ranks' gradients is the full-batch gradient and 2 ranks x half a batch == 1 rank x the
whole batch, even when the ranks hold different numbers of tokens.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --- who am I ------------------------------------------------------------------------------------------------------
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) in a single process."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


@dataclass(frozen=True)
class RolloutShard:
    """Which prompts this rank generates for, and which of their answers it keeps.

    The ranks form ``engines`` groups of ``size`` consecutive ranks (a vLLM engine with tensor parallelism ``size``
    spans one group; with the transformers backend ``size`` is 1). Every rank of a group generates the same prompts,
    ``items[engine::engines]``, and gets the same answers; the group's ranks then split those prompts (whole groups of
    answers), member ``m`` keeping positions ``m, m + size, ...``.
    """

    engine: int
    engines: int
    member: int
    size: int

    def take(self, items: list) -> list:
        return items[self.engine :: self.engines]

    def owns(self, position: int) -> bool:
        return position % self.size == self.member


def rollout_shard(tensor_parallel_size: int = 1) -> RolloutShard:
    rank, world = rank_and_world()
    if world % tensor_parallel_size:
        raise ValueError(
            f"rollout.tensor_parallel_size={tensor_parallel_size} must divide the number of processes ({world})"
        )
    return RolloutShard(
        rank // tensor_parallel_size, world // tensor_parallel_size, rank % tensor_parallel_size, tensor_parallel_size
    )


# --- collectives -----------------------------------------------------------------------------------------------------
def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor; the input is left alone)."""
    return _all_reduce(tensor, "SUM")


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise max of ``tensor`` over ranks (a new tensor; the input is left alone)."""
    return _all_reduce(tensor, "MAX")


def _all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=getattr(dist.ReduceOp, op))
    return reduced


# --- FSDP2 -----------------------------------------------------------------------------------------------------------
def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model: the classes it names in ``_no_split_modules`` (and FSDP2's
    subclasses of them, once sharded)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if any(cls.__name__ in names for cls in type(m).__mro__)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class in _no_split_modules ({sorted(names)}): "
            "FSDP needs one unit per layer"
        )
    return layers


def shard_model(
    model: torch.nn.Module,
    mesh,
    param_dtype: str = "bfloat16",
    reduce_dtype: str = "float32",
    reshard_after_forward: bool = True,
) -> None:
    """Shard ``model`` in place over ``mesh`` (the data-parallel mesh): each decoder layer, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
        if value not in DTYPES:
            raise ValueError(f"fsdp.{name} must be one of {sorted(DTYPES)}, got {value!r}")
    policy = MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype], reduce_dtype=DTYPES[reduce_dtype])
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # The root's parameters (embeddings, LM head) are needed again right at the start of backward: keep them.
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    model.to(torch.float32)  # casts the local shards only: the fp32 master weights
    for module in fsdp_modules(model):
        module.set_gradient_divide_factor(1.0)  # sum over ranks (see the module docstring)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum
    model._nft_reshard_after_forward = reshard_after_forward


@contextlib.contextmanager
def load_from_rank0(models: list[torch.nn.Module], rank: int) -> Iterator[None]:
    """Shard ``models`` inside; rank 0 holds their weights, the other ranks the same modules on the meta device.

    Rank 0's full state dicts and non-persistent buffers (RoPE's ``inv_freq``, which a state dict leaves out) are kept
    before sharding; after it every rank allocates its shards (``to_empty``) and, one tensor at a time, rank 0
    broadcasts the full tensor and each rank copies its shard out of it. Host memory holds one full copy, rank 0's,
    and one tensor in flight (``set_model_state_dict(broadcast_from_rank0=True)`` keeps every broadcast tensor until
    the end: a full copy on every rank).
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    kept = [(m.state_dict() if rank == 0 else {}, _volatile_buffers(m) if rank == 0 else {}) for m in models]
    yield
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    for model, (state, buffers) in zip(models, kept, strict=True):
        model.to_empty(device=device)
        for name, target in model.state_dict().items():
            shape, dtype = (target.shape, target.dtype)
            full = state[name].to(device, dtype) if rank == 0 else torch.empty(shape, dtype=dtype, device=device)
            dist.broadcast(full, src=0)
            if isinstance(target, DTensor):  # this rank's shard of it, without more communication
                full = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
                target = target.to_local()
            with torch.no_grad():
                target.copy_(full)
            del full
        for name, buffer in _volatile_buffers(model).items():
            if rank == 0:
                buffer.copy_(buffers[name])
            dist.broadcast(buffer, src=0)
    del kept


def _volatile_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers a state dict does not hold (``persistent=False``), by name."""
    persistent = set(model.state_dict())
    return {name: b for name, b in model.named_buffers() if name not in persistent}


def fsdp_modules(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: torch.nn.Module) -> bool:
    return bool(fsdp_modules(model))


@contextlib.contextmanager
def gathered_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Hold the full (unsharded) parameters on every rank for the duration, e.g. for generation.

    Inside, forwards run no collective, so ranks may run different numbers of them (different prompts, different
    answer lengths) without a hang. Costs one all-gather of the model and the memory of the whole model in
    ``param_dtype`` on each rank. A no-op for an unsharded model.
    """
    modules = fsdp_modules(model)
    if not modules:
        yield
        return
    for module in modules:  # outside inference mode: the unsharded buffers are reused by training
        module.unshard()
        module.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        after_forward = getattr(model, "_nft_reshard_after_forward", True)
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(after_forward and module is not model, recurse=False)


def full_parameters(model: torch.nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for each parameter, one at a time: a sharded one is all-gathered (a collective: every
    rank must iterate the same model in step) in ``dtype``, so no rank ever holds the whole state at once."""
    for name, param in model.named_parameters():
        tensor = param.detach()
        if dtype is not None:
            tensor = tensor.to(dtype)  # before the gather: half the bytes on the wire for bfloat16
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        yield name, tensor


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on CPU, on rank 0 (empty elsewhere); every rank must call it."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# --- launching -------------------------------------------------------------------------------------------------------
def launch_world(cfg) -> int:
    """The processes a run will have (trainer.devices x trainer.num_nodes), known before any process group exists."""
    devices = cfg.trainer.devices
    return (int(devices) if str(devices).isdigit() else 1) * int(cfg.trainer.get("num_nodes", 1))


def launch_rank(cfg) -> int:
    """This process's global rank before the process group exists: torchrun's ``RANK``, SLURM's ``SLURM_PROCID``, or
    Lightning's own launcher (``NODE_RANK`` x devices + ``LOCAL_RANK``, which it sets in the processes it starts)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return int(env["SLURM_PROCID"])
    devices = int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1
    return int(env.get("NODE_RANK", 0)) * devices + int(env.get("LOCAL_RANK", 0))


@contextlib.contextmanager
def run_scope() -> Iterator[None]:
    """Leave no process group and no launcher environment behind a run, so the next run in this process (the next job
    of a ``-m`` sweep) starts its own ranks: Lightning's launcher sets ``LOCAL_RANK`` & co. in the process that starts
    the others, and a second run would otherwise take them for ranks started by someone else and wait for them."""
    environment = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)


def pin_hydra_job_for_relaunch() -> None:
    """Make Lightning's relaunch of ranks 1..N-1 run this Hydra job, not the whole ``-m`` sweep again.

    On one node, Lightning starts the other ranks by re-running the command line (``sys.argv``) with
    ``hydra.run.dir`` set to this job's directory. Under ``-m`` that command line is the sweep: each child would run
    every job of it, in the wrong directory. Here, in a multirun job, the command line becomes this job's own
    overrides (no ``-m``) and the run directory the job's output directory. Nothing changes in a single run, in
    the relaunched ranks themselves, or under torchrun/SLURM (which start every rank with the same command).
    """
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    flags = [a for a in sys.argv[1:] if a not in ("-m", "--multirun") and (a.startswith("-") or "=" not in a)]
    sys.argv = [sys.argv[0], *flags, *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
