"""The vLLM generation backend (``rollout=vllm``; ``pip install '.[vllm]'``, vllm 0.32, CUDA): colocated with training.

One engine per group of ``tensor_parallel_size`` consecutive ranks, on those ranks' GPUs, started by vLLM's
``external_launcher`` backend inside the training processes (the ranks of a group call it with the same prompts and
get the same answers; ``nft.distributed.RolloutShard`` splits the prompts between groups and the answers within one).
The engine starts from the policy's config with dummy weights (nothing is read from disk) and then lives through
the run in sleep mode around training:

    sync:     wake_up(tags=["weights"]) -> load_weights(bucket) for each bucket of full parameters gathered from the
              sharded policy (``nft.rollout.weights``) -> wake_up(tags=["kv_cache"]) -> reset_prefix_cache()
    generate: SamplingParams(n=samples_per_prompt, seed=<the prompt's seed>) over the unique prompts, with the
              sampled tokens' log-probs
    release:  sleep(level=2): weights and KV cache are dropped (the next sync pushes fresh weights), training gets
              the memory back

``reload_weights`` is never called: it would re-read the original checkpoint from disk and undo training.

A LoRA policy (``model.lora``) is pushed as its merged weights, ``W + (alpha / rank) B A`` for each adapted layer
(``nft.lora.effective_parameters``), rather than as a vLLM LoRA request: the engine then runs the base architecture
unchanged, every sync is the same full push the fingerprint checks, and the sampled log-probs are those of the merged
policy, which the trainer computes (vLLM's LoRA kernels add the adapter's product in the engine's dtype; the cost is a
full sync per epoch instead of the adapters' few MB).

The weight-sync proof (``nft.rollout.integrity``) reads each rank's shards where vLLM's layers put them
(``engine_shard``, checked against vLLM 0.32's ``linear.py`` and ``vocab_parallel_embedding.py``): column-parallel
layers hold a band of output rows (``qkv_proj``: its query heads, then its key and value heads, which ranks share when
there are fewer KV heads than ranks; ``gate_up_proj``: a band of each part), row-parallel layers a band of input
columns, vocabulary-parallel embeddings and LM heads a band of vocabulary rows padded to a multiple of 64; everything
else (norms, row-parallel biases) is whole on every rank.

Behaviour log-probs are vLLM's ``processed_logprobs``: after temperature, and after top-k/top-p renormalisation when
those are on. With the training defaults (top_p 1, top_k 0) they are the transformers backend's log-probs
``log softmax(logits / temperature)``; with truncation on they differ from it (the trainer recomputes ``old_logp``
with the training model in any case).
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence

import torch
import torch.distributed as dist

from nft.distributed import DTYPES, rank_and_world
from nft.lora import base_model, effective_parameters
from nft.rollout.base import Completion, SamplingParams, prompt_seeds, stop_token_ids
from nft.rollout.integrity import EngineFingerprint, Shard, shard_fingerprint
from nft.rollout.weights import checkpoint_name, weight_buckets


def import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "rollout=vllm needs vLLM: pip install '.[vllm]' (vllm 0.32, a CUDA GPU); or use rollout=hf"
        ) from error
    return vllm


def architecture_name(model) -> str:
    """The transformers class of ``model``, which names its vLLM implementation (FSDP2 subclasses it as FSDP<name>)."""
    from torch.distributed.fsdp import FSDPModule

    model = base_model(model)  # a LoRA policy's transformers model
    return next(cls.__name__ for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


# What ``_start`` passes to ``vllm.LLM`` itself (SETTINGS: those that are this backend's own settings).
SETTINGS = {
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "dtype",
    "max_model_len",
    "enforce_eager",
    "enable_prefix_caching",
}
ENGINE_ARGUMENTS = SETTINGS | {
    "model",
    "skip_tokenizer_init",
    "load_format",
    "distributed_executor_backend",
    "enable_sleep_mode",
    "logprobs_mode",
    "seed",
}


class VLLMGenerator:
    """Args:
    tensor_parallel_size: GPUs per engine (consecutive ranks; must divide the number of processes).
    gpu_memory_utilization: fraction of each GPU the engine may take while awake (weights + KV cache).
    dtype: the engine's weight dtype. max_model_len: None takes the model's context.
    bucket_mb: size of a weight-sync bucket. enforce_eager: skip CUDA graphs (less memory, slower decoding).
    engine_kwargs: more ``vllm.LLM`` arguments (e.g. max_num_seqs, max_num_batched_tokens).
    """

    def __init__(
        self,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.6,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        bucket_mb: int = 512,
        enforce_eager: bool = False,
        enable_prefix_caching: bool = True,
        show_progress: bool = False,
        engine_kwargs: dict | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"rollout.backend.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        repeated = sorted(set(engine_kwargs or {}) & ENGINE_ARGUMENTS)
        if repeated:
            hints = [f"set rollout.backend.{k}" if k in SETTINGS else f"{k} is fixed by the backend" for k in repeated]
            raise ValueError(
                f"rollout.backend.engine_kwargs repeats what the backend passes to vllm.LLM itself ({repeated}): "
                + "; ".join(hints)
            )
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.enforce_eager = enforce_eager
        self.enable_prefix_caching = enable_prefix_caching
        self.show_progress = show_progress
        self.engine_kwargs = dict(engine_kwargs or {})
        self.llm = None
        self.asleep = False
        self.stop_ids: list[int] = []
        self._config_folder: str | None = None  # the architecture-only folder the engine starts from

    # --- weights -----------------------------------------------------------------------------------------------------
    def sync(self, policy) -> None:
        """Push the policy's current weights into the engine (starting it on the first call)."""
        model = policy.model
        self.stop_ids = stop_token_ids(model, policy.tokenizer)
        if self.llm is None:
            self.llm = self._start(model)
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        for bucket in weight_buckets(effective_parameters(model, DTYPES[self.dtype]), self.bucket_bytes):
            self.llm.apply_model(lambda engine_model, bucket=bucket: engine_model.load_weights(bucket))
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights

    @property
    def weight_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def fingerprints(self) -> tuple[dict, dict]:
        """The fingerprints of this rank's shards of the engine's weights, read in the worker (``LLM.apply_model``;
        with the external launcher this process's own, tensor-parallel rank ``rank % tensor_parallel_size``), and the
        model's fused projections (``packed_modules_mapping``)."""
        size = self.tensor_parallel_size
        rank = rank_and_world()[0] % size

        def collect(engine_model):
            fused = dict(getattr(engine_model, "packed_modules_mapping", {}) or {})
            return engine_fingerprints(engine_model, rank, size), fused

        return self.llm.apply_model(collect)[0]

    def release(self) -> None:
        """Generation is over until the next sync: give the GPU memory back to training."""
        if self.llm is not None and not self.asleep:
            self.llm.sleep(level=2)  # drop the weights too: the next sync replaces them anyway
            self.asleep = True

    def close(self) -> None:
        """End the engine and remove its config folder."""
        if self._config_folder is not None:
            shutil.rmtree(self._config_folder, ignore_errors=True)
            self._config_folder = None
        self.llm = None

    def _start(self, model):
        vllm = import_vllm()
        _set_launcher_environment()
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if world % self.tensor_parallel_size:
            raise ValueError(
                f"rollout.backend.tensor_parallel_size={self.tensor_parallel_size} must divide the {world} processes"
            )
        folder = self._config_folder = tempfile.mkdtemp(prefix="nft-vllm-")
        config = copy.deepcopy(model.config)  # the architecture only: weights come from sync
        config.architectures = [architecture_name(model)]  # unset for a model built in code (the tiny one)
        config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        return vllm.LLM(
            model=folder,
            skip_tokenizer_init=True,
            load_format="dummy",
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            distributed_executor_backend="external_launcher",
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            enable_prefix_caching=self.enable_prefix_caching,
            enable_sleep_mode=True,
            logprobs_mode="processed_logprobs",
            seed=rank // self.tensor_parallel_size,  # the same within an engine's ranks
            **self.engine_kwargs,
        )

    # --- sampling ----------------------------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams, seed: int | Sequence[int]
    ) -> list[list[Completion]]:
        if self.llm is None or self.asleep:
            raise RuntimeError("VLLMGenerator.generate called before sync(module)")
        if not prompts:
            return []
        vllm = import_vllm()
        params = [
            vllm.SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=max(sampling.top_k, 0),
                max_tokens=sampling.max_new_tokens,
                seed=prompt_seed % 2**63,
                stop_token_ids=self.stop_ids,
                logprobs=0,  # the sampled token's log-prob only
                detokenize=False,
            )
            for prompt_seed in prompt_seeds(seed, len(prompts))
        ]
        requests = [vllm.TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=self.show_progress)
        return [[_completion(answer) for answer in output.outputs] for output in outputs]


def engine_fingerprints(engine_model, tp_rank: int, tp_size: int) -> dict[str, EngineFingerprint]:
    """``{checkpoint name: EngineFingerprint}`` of one tensor-parallel rank's shards of the engine's weights."""
    modules = dict(engine_model.named_modules())
    out = {}
    for name, param in engine_model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        shard = engine_shard(modules.get(owner), leaf, tuple(param.shape), tp_rank, tp_size)
        out[checkpoint_name(name)] = EngineFingerprint(shard.full_shape, param.dtype, *shard_fingerprint(param, shard))
    return out


def engine_shard(module, leaf: str, shape: tuple[int, ...], tp_rank: int, tp_size: int) -> Shard:
    """Where the parameter ``leaf`` of a vLLM layer lies in the trainer's tensor, on tensor-parallel rank ``tp_rank``.

    Read from the attributes vLLM 0.32's layers set in ``__init__`` (the layer's own ``tp_rank``/``tp_size``: 0 and 1
    for a layer built with ``disable_tp``, whose weights every rank then holds whole). Layers are known by class name,
    so that this runs without vLLM (tests build stand-ins); anything else is whole on every rank.
    """
    kinds = {cls.__name__ for cls in type(module).__mro__}
    parallel = kinds & {"ColumnParallelLinear", "QKVParallelLinear", "MergedColumnParallelLinear"}
    parallel |= kinds & {"RowParallelLinear", "VocabParallelEmbedding"}
    if not parallel:
        return Shard.whole(shape, tp_rank, tp_size)
    if leaf not in ("weight", "bias"):
        raise ValueError(f"{type(module).__name__}.{leaf}: the weight-sync proof reads unquantized weights only")
    rank, size, rest = module.tp_rank, module.tp_size, shape[1:]
    if "RowParallelLinear" in kinds and leaf == "bias":  # whole: added once, after the sum over ranks
        shard = Shard.whole(shape, rank, size)
    elif "RowParallelLinear" in kinds:  # a band of the input columns
        per = module.input_size_per_partition
        shard = Shard((module.output_size, module.input_size), ((0, rank * per, per, 0, 1),), dim=1)
    elif "VocabParallelEmbedding" in kinds:  # ParallelLMHead too: rows past the real vocabulary are padding
        start, end = module.shard_indices.org_vocab_start_index, module.shard_indices.org_vocab_end_index
        shard = Shard((module.num_embeddings, *rest), ((0, start, end - start, 0, 1),))
    elif "QKVParallelLinear" in kinds:
        shard = _qkv_shard(module, rest)
    else:  # MergedColumnParallelLinear (gate_up_proj: a band of each part) or ColumnParallelLinear (one part)
        sizes = module.output_sizes if hasattr(module, "output_sizes") else [module.output_size]
        runs, local, start = [], 0, 0
        for part in sizes:
            per = part // size
            runs.append((local, start + rank * per, per, 0, 1))
            local, start = local + per, start + part
        shard = Shard((sum(sizes), *rest), tuple(runs))
    if size == 1 and tp_size > 1:  # disable_tp: whole on every rank of the engine
        shard = Shard(shard.full_shape, tuple(run[:3] + (tp_rank, tp_size) for run in shard.runs), shard.dim)
    return shard


def _qkv_shard(module, rest: tuple[int, ...]) -> Shard:
    """The rank's query heads, then its key and value heads: with fewer KV heads than ranks, each KV head is held by
    ``num_kv_head_replicas`` consecutive ranks (``QKVParallelLinear.weight_loader``: ``tp_rank // replicas``)."""
    q, k = module.num_heads * module.head_size, module.num_kv_heads * module.head_size
    v = module.num_kv_heads * module.v_head_size
    total_q, total_k = module.total_num_heads * module.head_size, module.total_num_kv_heads * module.head_size
    total_v = module.total_num_kv_heads * module.v_head_size
    kv_rank, replica = divmod(module.tp_rank, module.num_kv_head_replicas)
    replicas = module.num_kv_head_replicas
    runs = (
        (0, module.tp_rank * q, q, 0, 1),
        (q, total_q + kv_rank * k, k, replica, replicas),
        (q + k, total_q + total_k + kv_rank * v, v, replica, replicas),
    )
    return Shard((total_q + total_k + total_v, *rest), runs)


def _completion(answer) -> Completion:
    token_ids = list(answer.token_ids)
    logprobs = [position[token].logprob for position, token in zip(answer.logprobs, token_ids, strict=True)]
    return Completion(
        torch.tensor(token_ids, dtype=torch.long),
        torch.tensor(logprobs, dtype=torch.float32),
        "stop" if answer.finish_reason == "stop" else "length",
    )


def _set_launcher_environment() -> None:
    """What vLLM's external launcher reads: torchrun sets it; Lightning's own launcher sets only some of it."""
    if dist.is_initialized():
        os.environ["RANK"] = str(dist.get_rank())
        os.environ["WORLD_SIZE"] = str(dist.get_world_size())
        os.environ.setdefault("LOCAL_RANK", str(torch.cuda.current_device()))
        return
    with socket.socket() as s:  # a single process: vLLM initialises a one-rank group itself
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(port))
