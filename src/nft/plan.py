"""Memory planner: ``python -m nft.plan [overrides]`` estimates what each GPU of a run needs, before anything loads.

It plans ``trainer=fsdp`` (FSDP2 over every GPU; the default) and ``trainer=gpu`` (one GPU: float32 master weights,
bf16 compute under autocast, the same terms with ``W = 1``, nothing gathered, and generation with the float32 weights
themselves under the same autocast, so the KV cache is bf16: ``rollout.backend.kv_cache_gb`` bounds it).
``check_fits`` refuses a run that cannot fit, naming the settings to change (``nft.pipeline`` calls it on a GPU before
loading the model).

Nothing is loaded: the config is composed as ``src/train.py`` would (with ``trainer=fsdp`` unless a trainer is given
or an experiment picks a GPU one)
and the architecture comes from ``model.path/config.json`` when that is a local folder, else from ``KNOWN`` (the
models of ``conf/model``), else from ``model.architecture`` (the tiny model). With ``N`` parameters (``N_layer`` per
decoder layer, ``N_root`` in embeddings, head and final norm), ``W = trainer.devices x trainer.num_nodes`` ranks,
``b`` bytes per value of ``fsdp.param_dtype``, ``T = max(data.batch.micro_batch_tokens, prompt + response tokens)``
padded tokens per forward, of which ``R = min(T x n response / (prompt + n response), T - prompt)`` are response
positions (whole groups of ``n = data.batch.samples_per_prompt`` answers sharing their prompt's forward,
``nft.shared_prompt``, and at least one prompt), ``L`` layers, hidden ``h``, MLP width ``I``, key/value width
``kv x d`` and vocabulary ``V``, the estimates per GPU are (bytes):

    parameters       4 N / W        float32 shards: the optimizer's master weights
    gradients        4 N / W        float32 shards
    optimizer        8 N / W        AdamW's two moments in float32
    gathered         b (N_root + 2 N_layer) + 4 N_layer
                                    the root's and two layers' full weights (the running one and the prefetched one),
                                    and one layer's full float32 gradient before its reduce-scatter
    activations      L T h r + S with activation checkpointing (each layer's input, r bytes a value: 4 in float32
                     and under autocast, 2 with bf16 weights; one layer recomputed),
                     L S without; S = what autograd saves in one layer: per answer token
                     4 f + 2 l + 2 h k (P + T_r) / T_r, per prompt token 4 f + 2 l + 2 kv d k, where f and l count
                     the float32 and the bf16 values a token leaves (``layer_bytes``), k is the compute dtype's bytes,
                     and each answer keeps its prompt's keys and values at every head (transformers' sdpa repeats
                     grouped heads when a mask is given, as the shared-prompt forward always does); plus the
                     attention mask, k (P + T_r) per answer token, once
    weight copies    2 x the weight matrices' parameters (every layer's and the head's; not biases, norms or the
                     embedding lookup) under autocast (``trainer=gpu``): the bf16 casts the matmuls save for their
                     backward (with LoRA on a bf16 base: the adapters' only)
    logits           R V (b + 8)   the response positions' logits, their float32 copy (the only part autograd
                     saves: 4 R V) and its gradient
    overhead         2 GB           CUDA context, communication buffers, allocator slack

The activation and weight-copy terms are held against the bytes autograd saves in one update micro-batch
(``torch.autograd.graph.saved_tensors_hooks``) for the tiny model and a mid-size random Qwen2 in float32, under bf16
autocast and with bf16 weights (FSDP2's ``param_dtype``), within 10% (``tests/test_plan_memory.py``).

With LoRA (``model.lora.enabled``; ``M`` adapter parameters: ``rank x (in + out)`` for each ``target_modules``
linear layer of each decoder layer) only the adapters have gradients and optimizer state, in float32:

    parameters       B N + 4 M      the frozen base in its loading dtype (``model.dtype``, B bytes: bfloat16 = 2) on
                     (4 N + 4 M) / W  one GPU; under FSDP the shards are float32 whatever is trained (shard_model)
    gradients        4 M / W
    optimizer        8 M / W
    gathered         b (N_root + 2 N_layer) + 4 M_layer    (a layer's adapter gradient, not the layer's)

and on one GPU the transformers rollout's KV cache is in the base's dtype. Activations and logits are those of full
fine-tuning: the backward still runs through every layer (to the adapters of the layers below).

Generation keeps parameters and optimizer state resident (gradients are freed after each step) and adds, for
``rollout=vllm``, the engine's ``gpu_memory_utilization`` x GPU memory (its weights ``2 N / tensor_parallel_size`` and
KV cache); for ``rollout=hf``, the gathered full weights ``b N``, the KV cache ``2 L kv d b`` per token for
``max_batch_rows`` rows of prompt + response tokens, and ``12 V`` per row for the sampling step's float32 logits.
The peak is the larger of training and generation; it is checked against 80 GB and 141 GB GPUs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

GPU_SIZES_GB = (80, 141)
OVERHEAD_BYTES = 2 * 10**9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.hidden_size // self.num_attention_heads

    @property
    def layer_parameters(self) -> int:
        """A Qwen2/Llama decoder layer: q, k, v (with biases), o, a gated MLP, two RMSNorms."""
        h, kv = self.hidden_size, self.kv_width
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h
        return attention + 3 * h * self.intermediate_size + 2 * h

    @property
    def weight_matrices(self) -> int:
        """The parameters of the matrices a forward multiplies (every layer's and the head's; not the embedding
        lookup, biases or norms): what autocast casts to bf16."""
        h, kv = self.hidden_size, self.kv_width
        return self.num_hidden_layers * (self.layer_parameters - 3 * h - 2 * kv) + self.vocab_size * h

    @property
    def root_parameters(self) -> int:
        embeddings = self.vocab_size * self.hidden_size
        return embeddings * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def parameters(self) -> int:
        return self.num_hidden_layers * self.layer_parameters + self.root_parameters

    def lora_layer_parameters(self, rank: int, target_modules) -> int:
        """LoRA's A and B in one decoder layer: ``rank x (in + out)`` for each adapted linear layer."""
        h, kv, inner = self.hidden_size, self.kv_width, self.intermediate_size
        shapes = {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, inner),
            "up_proj": (h, inner),
            "down_proj": (inner, h),
        }
        unknown = sorted(set(target_modules) - set(shapes))
        if unknown:
            raise ValueError(f"model.lora.target_modules: nft.plan knows {sorted(shapes)}, not {unknown}")
        return sum(rank * sum(shapes[name]) for name in target_modules)


KNOWN = {  # from each model's config.json on the hub
    "Qwen/Qwen2.5-0.5B": Architecture(896, 4864, 24, 14, 2, 151936, True),
    "Qwen/Qwen2.5-Math-1.5B": Architecture(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen/Qwen2.5-Math-7B": Architecture(3584, 18944, 28, 28, 4, 152064, False),
    "Qwen/Qwen2.5-32B": Architecture(5120, 27648, 64, 40, 8, 152064, False),
}
TINY_VOCAB = 260  # nft.toy.build_tokenizer: 4 special tokens + 256 bytes


@dataclass(frozen=True)
class Plan:
    """Per-GPU bytes of a run (see the module docstring for each term)."""

    model: str
    architecture: Architecture
    sharded: bool  # FSDP2 (trainer=fsdp) or one GPU (trainer=gpu)
    nodes: int
    devices: int
    checkpointing: bool
    tokens: int
    response_tokens: int
    parameters: int
    gradients: int
    optimizer: int
    gathered: int
    activations_checkpointed: int
    activations_full: int
    weight_copies: int  # autocast's bf16 casts of the weights, saved for the backward
    logits: int
    rollout: str  # "vllm" or "hf"
    vllm_fraction: float  # vLLM: its share of each GPU
    vllm_weights: int
    hf_generation: int  # hf: gathered weights + KV cache + sampling logits
    lora_parameters: int = 0  # M: the adapters' parameters (0: full fine-tuning)

    @property
    def ranks(self) -> int:
        return self.nodes * self.devices

    @property
    def activations(self) -> int:
        return self.activations_checkpointed if self.checkpointing else self.activations_full

    @property
    def training(self) -> int:
        state = self.parameters + self.gradients + self.optimizer
        return state + self.gathered + self.activations + self.weight_copies + self.logits + OVERHEAD_BYTES

    @property
    def resident(self) -> int:
        return self.parameters + self.optimizer + OVERHEAD_BYTES

    def generation(self, gpu_bytes: int) -> int:
        share = self.vllm_fraction * gpu_bytes if self.rollout == "vllm" else self.hf_generation
        return self.resident + int(share)

    def peak(self, gpu_bytes: int) -> int:
        return max(self.training, self.generation(gpu_bytes))


# How a decoder layer's saved activations split by dtype, per regime (measured; tests/test_plan_memory.py):
# (float32 values per token, bf16 values per token) of the layer outside the attention's keys and values, as
# functions of (h, I, heads); the bytes of the keys, values and mask; the bytes of the residual stream.
REGIMES = {
    # everything in float32: norm inputs and outputs, q, k, v, attention and projection inputs, the MLP's four
    "float32": (lambda h, i, heads: (8 * h + 4 * i + heads, 0), 4, 4),
    # bf16 autocast over float32 weights: the norms and the residual stream stay float32, each matmul saves its
    # own bf16 copy of its input (q, k and v each cast the normed hidden state)
    "autocast": (lambda h, i, heads: (4 * h + heads, 7 * h + 4 * i), 2, 4),
    # bf16 weights (FSDP2's param_dtype): bf16 throughout, each norm's float32 upcast aside
    "bf16 weights": (lambda h, i, heads: (2 * h + heads, 6 * h + 4 * i), 2, 2),
}


def layer_bytes(arch: Architecture, regime: str, prompt: int, response: int) -> tuple[float, float]:
    """Bytes autograd saves in one decoder layer (``REGIMES``) for (one answer token, one prompt token) of a
    shared-prompt micro-batch with prompts of ``prompt`` and answers of ``response`` tokens."""
    per_token, kv_bytes, _ = REGIMES[regime]
    full, low = per_token(arch.hidden_size, arch.intermediate_size, arch.num_attention_heads)
    own = 4 * full + 2 * low
    answer = own + kv_bytes * 2 * arch.hidden_size * (prompt + response) / response
    return answer, own + kv_bytes * 2 * arch.kv_width


def activation_bytes(arch: Architecture, regime: str, prompt: int, response: int, tokens: int, answer_tokens: int):
    """(without, with activation checkpointing): what one micro-batch of ``tokens`` padded tokens, ``answer_tokens``
    of them answer positions, saves for its backward (``layer_bytes``, the mask, each layer's input)."""
    answer, prompt_token = layer_bytes(arch, regime, prompt, response)
    _, kv_bytes, residual_bytes = REGIMES[regime]
    one_layer = answer * answer_tokens + prompt_token * (tokens - answer_tokens)
    mask = kv_bytes * answer_tokens * (prompt + response)
    layers = arch.num_hidden_layers
    return int(layers * one_layer + mask), int(layers * tokens * arch.hidden_size * residual_bytes + one_layer + mask)


def architecture_of(cfg: DictConfig) -> Architecture:
    model = cfg.model
    path = model.get("path")
    if path is not None and (Path(path).expanduser() / "config.json").is_file():
        config = json.loads((Path(path).expanduser() / "config.json").read_text())
        config = config.get("text_config", config)
        return Architecture(
            config["hidden_size"],
            config["intermediate_size"],
            config["num_hidden_layers"],
            config["num_attention_heads"],
            config.get("num_key_value_heads", config["num_attention_heads"]),
            config["vocab_size"],
            bool(config.get("tie_word_embeddings", False)),
        )
    if path in KNOWN:
        return KNOWN[path]
    if path is None and model.get("architecture") is not None:
        a = model.architecture
        return Architecture(
            a.hidden_size,
            a.intermediate_size,
            a.num_hidden_layers,
            a.num_attention_heads,
            a.num_key_value_heads,
            TINY_VOCAB,
            True,
        )
    raise ValueError(
        f"model.path={path!r}: unknown architecture; give a local folder with its config.json or one of {sorted(KNOWN)}"
    )


def plan(cfg: DictConfig) -> Plan:
    """The memory plan of a composed ``train`` config."""
    arch = architecture_of(cfg)
    sharded = is_fsdp(cfg)
    if sharded:
        if cfg.fsdp.param_dtype not in DTYPE_BYTES:
            raise ValueError(f"fsdp.param_dtype must be one of {sorted(DTYPE_BYTES)}, got {cfg.fsdp.param_dtype!r}")
        b = DTYPE_BYTES[cfg.fsdp.param_dtype]
    else:
        b = 2 if "16" in str(cfg.trainer.precision) else 4  # autocast activations (bf16-mixed), or float32
    nodes, devices = int(cfg.trainer.get("num_nodes", 1)), int(cfg.trainer.devices)
    ranks = nodes * devices
    n, n_layer, n_root = arch.parameters, arch.layer_parameters, arch.root_parameters
    lora = cfg.model.get("lora")
    lora_layer = 0
    if lora is not None and lora.enabled:
        lora_layer = arch.lora_layer_parameters(int(lora.rank), list(lora.target_modules))
    m = arch.num_hidden_layers * lora_layer
    base_bytes = DTYPE_BYTES.get(str(cfg.model.get("dtype") or "float32"), 4) if m and not sharded else 4
    trained = m if m else n
    layers = arch.num_hidden_layers
    prompt, response = int(cfg.model.max_prompt_tokens), int(cfg.model.max_response_tokens)
    tokens = max(int(cfg.data.batch.micro_batch_tokens), prompt + response)
    answers = int(cfg.data.batch.samples_per_prompt)  # per prompt, sharing its forward
    response_tokens = min(tokens * answers * response // (prompt + answers * response), tokens - prompt)
    mixed = "mixed" in str(cfg.trainer.precision)
    # a LoRA base loaded in bf16 computes as bf16 weights do; autocast then only casts the float32 adapters
    bf16_weights = b == 2 if sharded else bool(m) and base_bytes == 2
    regime = "bf16 weights" if bf16_weights else ("autocast" if mixed else "float32")
    activations_full, activations_checkpointed = activation_bytes(
        arch, regime, prompt, response, tokens, response_tokens
    )
    # autocast's bf16 copies of the float32 weights it multiplies (a LoRA base is loaded in bf16: its adapters only)
    copied = m if m else arch.weight_matrices
    backend = cfg.rollout.backend
    rollout = "vllm" if str(backend._target_).endswith("VLLMGenerator") else "hf"
    rows = 0 if rollout == "vllm" else int(backend.max_batch_rows)
    # The KV cache's dtype: the gathered weights', autocast's under a mixed precision (the transformers rollout samples
    # in the update's precision), else the weights' own (float32 masters or a LoRA base).
    weight_bytes = b if sharded or mixed else base_bytes
    kv_cache = rows * (prompt + response) * 2 * layers * arch.kv_width * weight_bytes
    if rollout == "hf" and backend.get("kv_cache_gb") is not None:
        kv_cache = min(kv_cache, int(float(backend.kv_cache_gb) * 1e9))
        rows = min(rows, max(1, kv_cache // ((prompt + response) * 2 * layers * arch.kv_width * weight_bytes)))
    return Plan(
        model=str(cfg.model.get("path") or "tiny"),
        architecture=arch,
        sharded=sharded,
        nodes=nodes,
        devices=devices,
        checkpointing=bool(cfg.activation_checkpointing),
        tokens=tokens,
        response_tokens=response_tokens,
        parameters=(base_bytes * n + 4 * m) // ranks,
        gradients=4 * trained // ranks,
        optimizer=8 * trained // ranks,
        gathered=b * (n_root + 2 * n_layer) + 4 * (lora_layer if m else n_layer) if sharded else 0,
        activations_checkpointed=activations_checkpointed,
        activations_full=activations_full,
        weight_copies=2 * copied if mixed and not sharded else 0,
        logits=response_tokens * arch.vocab_size * (b + 8),
        rollout=rollout,
        vllm_fraction=float(backend.gpu_memory_utilization) if rollout == "vllm" else 0.0,
        vllm_weights=2 * n // int(backend.tensor_parallel_size) if rollout == "vllm" else 0,
        hf_generation=(b * n if sharded else 0) + kv_cache + rows * arch.vocab_size * 12,
        lora_parameters=m,
    )


def is_fsdp(cfg: DictConfig) -> bool:
    strategy = cfg.trainer.get("strategy")
    return strategy is not None and str(strategy.get("_target_", "")).endswith("ModelParallelStrategy")


def check_fits(p: Plan, gpu_bytes: int) -> None:
    """Refuse a run whose peak exceeds ``gpu_bytes`` per GPU, naming what to change."""
    if p.peak(gpu_bytes) > gpu_bytes:
        raise MemoryError(
            f"{p.model} does not fit this {gpu_bytes / 1e9:.0f} GB GPU: about {p.peak(gpu_bytes) / 1e9:.1f} GB per GPU "
            f"(training {p.training / 1e9:.1f} GB, generation {p.generation(gpu_bytes) / 1e9:.1f} GB; "
            "`python -m nft.plan` with the same overrides shows each term). " + advice(p)
        )


def advice(p: Plan) -> str:
    if p.sharded:
        return (
            "Options: more GPUs (trainer.num_nodes), fewer data.batch.micro_batch_tokens, "
            "activation_checkpointing=true, "
            "rollout=vllm (rollout.backend.tensor_parallel_size, gpu_memory_utilization)"
        )
    return (
        "Options: a smaller model (model=qwen1.5b), trainer=fsdp over several GPUs, activation_checkpointing=true, "
        "fewer data.batch.micro_batch_tokens, rollout.backend.kv_cache_gb (the transformers rollout's KV cache)"
    )


def report(p: Plan) -> str:
    """The plan as the lines ``python -m nft.plan`` prints."""
    a = p.architecture
    count = f"{a.parameters / 1e9:.2f}B" if a.parameters >= 1e9 else f"{a.parameters / 1e6:.2f}M"
    lora = p.lora_parameters > 0
    lines = [
        f"{p.model}: {count} parameters ({a.num_hidden_layers} layers, hidden {a.hidden_size}, vocab "
        f"{a.vocab_size}) on {p.nodes} node(s) x {p.devices} GPUs = {p.ranks} ranks. Per GPU:",
        _training_title(p),
        _row(_parameters_label(p), p.parameters),
        _row("gradients (float32" + (" shard" if p.sharded else "") + (", adapters)" if lora else ")"), p.gradients),
        _row("optimizer state (AdamW, float32" + (", adapters)" if lora else ")"), p.optimizer),
        *([_row("gathered weights, a layer's gradient", p.gathered)] if p.sharded else []),
        _row(f"activations, {p.tokens} tokens, checkpointing", p.activations_checkpointed, _used(p.checkpointing)),
        _row(f"activations, {p.tokens} tokens, no checkpointing", p.activations_full, _used(not p.checkpointing)),
        *([_row("bf16 copies of the weights (autocast)", p.weight_copies)] if p.weight_copies else []),
        _row(f"logits of {p.response_tokens} response tokens", p.logits),
        _row("CUDA context, buffers, slack", OVERHEAD_BYTES),
        _row("total", p.training),
        "generation (parameters and optimizer state stay resident)",
    ]
    if p.rollout == "vllm":
        lines.append(_row(f"vLLM share: {p.vllm_fraction:.2f} x GPU; its weights", p.vllm_weights))
    else:
        what = "full weights, KV cache" if p.sharded else "KV cache, sampling logits (the masters' float32)"
        what = "KV cache, sampling logits (the base's dtype)" if lora and not p.sharded else what
        lines.append(_row(f"transformers: {what}", p.hf_generation))
    warnings = []
    for size in GPU_SIZES_GB:
        gpu, fits = size * 10**9, p.peak(size * 10**9) <= size * 10**9
        lines.append(_row(f"peak on a {size} GB GPU", p.peak(gpu), "fits" if fits else "DOES NOT FIT"))
        if not fits:
            warnings.append(f"WARNING: does not fit a {size} GB GPU (needs {p.peak(gpu) / 1e9:.1f} GB)")
        if p.rollout == "vllm" and p.vllm_weights > p.vllm_fraction * gpu:
            warnings.append(f"WARNING: on a {size} GB GPU the vLLM share cannot hold its weights")
    if warnings:
        warnings.append(advice(p))
    return "\n".join(lines + warnings)


def _training_title(p: Plan) -> str:
    if p.lora_parameters:
        adapters = f"{p.lora_parameters / 1e6:.1f}M"
        where = "FSDP2" if p.sharded else "one GPU, bf16 math"
        return f"training (LoRA: {adapters} adapter parameters train in float32, the base is frozen; {where})"
    return "training (FSDP2, float32 master weights)" if p.sharded else "training (one GPU: float32 masters, bf16 math)"


def _parameters_label(p: Plan) -> str:
    if p.lora_parameters:
        return "parameters (frozen base + adapters" + (", float32 shards)" if p.sharded else ")")
    return "parameters (float32" + (" shard)" if p.sharded else ")")


def _used(used: bool) -> str:
    return "<- counted (activation_checkpointing)" if used else ""


def _row(label: str, value: int, note: str = "") -> str:
    return f"  {label:<48} {value / 1e9:9.2f} GB  {note}".rstrip()


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import nft

    with initialize_config_dir(config_dir=str(Path(nft.project_root()) / "conf"), version_base="1.3"):
        if any(o.startswith("trainer=") for o in overrides) or _picks_a_gpu_trainer(overrides):
            cfg = hydra_compose("train", overrides=overrides)
        else:  # the default trainer (cpu): plan FSDP
            cfg = hydra_compose("train", overrides=["trainer=fsdp", *overrides])
    if not is_fsdp(cfg) and cfg.trainer.accelerator != "gpu":
        raise SystemExit(
            f"nft.plan plans GPU runs: trainer=fsdp (FSDP2 over several GPUs) or trainer=gpu (one GPU); this config "
            f"runs on {cfg.trainer.accelerator!r} (trainer=cpu needs no plan)"
        )
    if not is_fsdp(cfg) and int(cfg.trainer.devices) != 1:
        raise SystemExit("nft.plan: trainer=gpu plans one GPU (trainer.devices=1); several GPUs: trainer=fsdp")
    return cfg


def _picks_a_gpu_trainer(overrides: list[str]) -> bool:
    """Whether the config as given (an experiment such as paper_7b_lora) already trains on GPUs."""
    from hydra import compose as hydra_compose
    from hydra.errors import ConfigCompositionException

    try:
        return hydra_compose("train", overrides=overrides).trainer.accelerator != "cpu"
    except ConfigCompositionException:  # e.g. trainer.num_nodes, which only trainer=fsdp has
        return False


def budget(cfg: DictConfig) -> str:
    """The run's length in the units a user checks against a reference: iterations, steps, prompts and answers; and
    the loss normaliser of a constant-divisor loss (``token_sum_norm``), which sets the gradient's scale."""
    data, optim = cfg.data, cfg.optim
    iterations = int(cfg.trainer.max_epochs)
    steps_per_iteration = int(data.batch.prompts_per_epoch) // int(data.batch.groups_per_step)
    round_prompts = int(data.dynamic_sampling.round_prompts or data.batch.prompts_per_epoch)
    rounds = int(data.dynamic_sampling.max_gen_rounds)
    warmup, unit = int(optim.warmup_steps), optim.get("warmup_unit", "step")
    warmup_steps = warmup * steps_per_iteration if unit == "iteration" else warmup
    kept = int(data.batch.prompts_per_epoch) * int(data.batch.samples_per_prompt)
    lines = [
        "budget",
        f"  policy iterations (epochs)        {iterations:>12,}",
        f"  optimizer steps                   {iterations * steps_per_iteration:>12,}  ({steps_per_iteration} per "
        f"iteration: {data.batch.prompts_per_epoch} groups in steps of {data.batch.groups_per_step})",
        f"  prompts generated                 {iterations * round_prompts:>12,} to "
        f"{iterations * round_prompts * rounds:,}  ({round_prompts} a round, 1 to {rounds} rounds an iteration)",
        f"  answers trained on                {iterations * kept:>12,}  ({data.batch.prompts_per_epoch} groups x "
        f"{data.batch.samples_per_prompt} an iteration, at most)",
        f"  learning-rate warm-up             {warmup:>12,} {unit}s = {warmup_steps:,} optimizer steps, the first at 0",
    ]
    if cfg.algo.get("loss_agg") == "token_sum_norm":  # a constant divisor: its size sets the gradient's scale
        norm, ranks = float(cfg.algo.loss_norm), int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)
        lines.append(
            f"  loss normaliser                   {norm:>12,.0f}  (a step's token losses over all ranks / this: "
            f"1,000 x {norm / 1000:,g} ranks in the reference's terms; this run has {ranks})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = compose(list(sys.argv[1:] if argv is None else argv))
    print(report(plan(cfg)))
    print(budget(cfg))


if __name__ == "__main__":
    main()
