"""Checks of the composed config before any work is done (no model loaded, nothing generated).

``validate(cfg)`` reports every problem it finds at once, each with the setting to change. What needs the model
itself (its context length, for a hub model) is checked when it is loaded (``nft.policy.Policy``).
``explain_overrides(argv)`` adds a "did you mean" to Hydra's refusal of an unknown key on the command line.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

HYDRA_KEYS = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
VLLM_MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams refuses more, at the first generate call


class ConfigError(ValueError):
    """The configuration cannot work; the message says which settings to change."""


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem of ``cfg`` (a composed ``train.yaml``)."""
    problems = [
        *_resume(cfg),
        *_batches(cfg),
        *_lengths(cfg),
        *_backend(cfg),
        *_benchmarks(cfg),
        *_unknown_keys(cfg),
    ]
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _resume(cfg: DictConfig) -> Iterator[str]:
    if cfg.resume not in (None, "auto"):
        yield f"resume={cfg.resume!r}: use resume=auto (newest checkpoint in the run directory) or ckpt_path=FILE"
    if cfg.resume and cfg.ckpt_path:
        yield "resume=auto and ckpt_path are both set: keep one"
    if cfg.ckpt_path and not Path(cfg.ckpt_path).exists():  # a file, or a folder when sharded (FSDP)
        yield f"ckpt_path={cfg.ckpt_path}: no such checkpoint file or folder"


def _batches(cfg: DictConfig) -> Iterator[str]:
    prompts, groups = cfg.data.batch.prompts_per_epoch, cfg.data.batch.groups_per_step
    if prompts % groups:
        yield (
            f"data.batch.prompts_per_epoch={prompts} is not a multiple of data.batch.groups_per_step={groups}: every "
            f"optimizer step should see as many groups; make data.batch.groups_per_step a divisor of {prompts}"
        )
    world = _world_size(cfg.trainer)
    if world and prompts % world:
        yield (
            f"data.batch.prompts_per_epoch={prompts} does not split over {world} processes (trainer.devices x "
            f"trainer.num_nodes): make it a multiple of {world}"
        )


def _world_size(trainer: DictConfig) -> int | None:
    """Processes the trainer will run, when the config says (not for ``devices: auto`` or ``-1``)."""
    devices = trainer.devices
    if OmegaConf.is_list(devices):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:  # "0,1": device ids
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).lstrip("-").isdigit():
        count = int(devices)
    else:
        return None
    return count * trainer.get("num_nodes", 1) if count > 0 else None  # Lightning's default: one node


def _lengths(cfg: DictConfig) -> Iterator[str]:
    model = cfg.model
    context = OmegaConf.select(cfg, "model.architecture.max_position_embeddings")  # known before loading: tiny
    if context is not None and model.max_prompt_tokens + model.max_response_tokens > context:
        yield (
            f"model.max_prompt_tokens + model.max_response_tokens = {model.max_prompt_tokens} + "
            f"{model.max_response_tokens} exceeds the context of {context} tokens "
            "(model.architecture.max_position_embeddings): lower one of them"
        )
    if cfg.rollout.sampling.max_new_tokens > model.max_response_tokens:
        yield (
            f"rollout.sampling.max_new_tokens={cfg.rollout.sampling.max_new_tokens} is over "
            f"model.max_response_tokens={model.max_response_tokens}, the response length checked against the "
            "model's context: raise model.max_response_tokens or lower rollout.sampling.max_new_tokens"
        )
    if cfg.data.max_prompt_tokens > model.max_prompt_tokens:
        yield (
            f"data.max_prompt_tokens={cfg.data.max_prompt_tokens} is over model.max_prompt_tokens="
            f"{model.max_prompt_tokens}: set model.max_prompt_tokens instead (data follows it)"
        )


def _backend(cfg: DictConfig) -> Iterator[str]:
    vllm = "vllm" in cfg.rollout.backend._target_
    if vllm and importlib.util.find_spec("vllm") is None:
        yield (
            "rollout=vllm needs vLLM, which is not installed: `pip install -e '.[vllm]'` on a machine with a GPU, "
            "or use rollout=hf"
        )
    if vllm and _in_multirun():
        yield (
            "rollout=vllm cannot run a -m sweep in one process: vLLM allows one engine per process and keeps its "
            "process groups after a job ends, so the second job would fail. Start one process per job instead, e.g. "
            "`for seed in 0 1 2; do python src/train.py seed=$seed ...; done` (or one SLURM job each)"
        )
    if vllm:
        yield from _vllm_temperatures(cfg)


def _vllm_temperatures(cfg: DictConfig) -> Iterator[str]:
    """The rollout's and the benchmarks' temperatures (the same engine samples both) within vLLM's range."""
    temperatures = {"rollout.sampling.temperature": cfg.rollout.sampling.temperature}
    for name, spec in (cfg.get("benchmarks") or {}).items():
        if "temperature" in spec:  # else the benchmark's default, 1.0
            temperatures[f"benchmarks.{name}.temperature"] = spec.temperature
    for key, temperature in temperatures.items():
        if temperature > VLLM_MAX_TEMPERATURE:
            yield (
                f"{key}={temperature} is over {VLLM_MAX_TEMPERATURE:g}, the highest temperature vLLM samples at "
                "(rollout=vllm): lower it, or use rollout=hf"
            )


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _benchmarks(cfg: DictConfig) -> Iterator[str]:
    """Each benchmark's protocol (samples, sampling settings), checked now rather than at the first evaluation."""
    from nft.eval.evaluator import Benchmark

    for name, spec in (cfg.get("benchmarks") or {}).items():
        try:
            Benchmark(name=name, **OmegaConf.to_container(spec, resolve=True))
        except (TypeError, ValueError) as error:
            yield str(error)


def _unknown_keys(cfg: DictConfig) -> Iterator[str]:
    """Keys added with ``+key=value`` (which Hydra accepts) that the component they configure does not take."""
    from nft.module import PolicyModule

    # `optim` is passed to PolicyModule as keyword arguments, next to what the pipeline gives it.
    given = {"model", "tokenizer", "algorithm", "temperature", "fsdp", "activation_checkpointing", "report"}
    given |= {"weights_from_rank0"}
    given |= {"mismatch_warn_kl", "mismatch_stop_kl"}
    accepted = set(inspect.signature(PolicyModule).parameters) - given
    yield from _refuse("optim", set(cfg.optim) - accepted, accepted)
    for path, node in _targets(OmegaConf.to_container(cfg, resolve=False)):
        if "vllm" in node["_target_"] and importlib.util.find_spec("vllm") is None:
            continue  # reported by _backend
        try:
            target = get_object(node["_target_"])
        except Exception as error:  # noqa: BLE001 - any failure to import it is the message
            yield f"{path}._target_={node['_target_']}: cannot be imported ({error})"
            continue
        try:
            parameters = inspect.signature(target).parameters
        except ValueError:  # a builtin (datetime.timedelta): its arguments cannot be listed, nor checked
            continue
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            # A key of one of its groups is a likely meaning too (`data.prompts_per_epoch`: data.batch's).
            grouped = {f"{k}.{sub}" for k, v in node.items() if isinstance(v, dict) for sub in v if sub != "_target_"}
            yield from _refuse(path, set(node) - HYDRA_KEYS - set(parameters), set(parameters) | grouped)


def _targets(node: object, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield path, node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}" if path else str(key))


def _refuse(path: str, unknown: set[str], accepted: set[str]) -> Iterator[str]:
    for key in sorted(unknown):
        close = [a for a in sorted(accepted) if a.rpartition(".")[2] == key]  # in one of its groups
        close = close or difflib.get_close_matches(key, sorted(accepted), n=1)
        direct = sorted(a for a in accepted if "." not in a)
        hint = f"did you mean {path}.{close[0]}?" if close else f"it takes: {', '.join(direct)}"
        yield f"{path}.{key} is not a setting of {path}: {hint}"


def explain_overrides(overrides: list[str], config_dir: str | Path) -> list[str]:
    """For each command-line ``key=value`` whose key is not in the config, a line with the closest known keys."""
    from hydra import compose, initialize_config_dir

    try:
        # Overrides are the `key=value` words (flags such as `--cfg job` are not).
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and o[0] != "-"])
    except Exception:  # noqa: BLE001 - Hydra itself reports a malformed override
        return []
    config_dir = Path(config_dir).resolve()
    choices = [o.input_line for o in parsed if (config_dir / o.key_or_group).is_dir() and not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("train", overrides=choices)
    except Exception:  # noqa: BLE001 - a bad group choice: Hydra's message already lists the options
        return []
    known = _flat_keys(OmegaConf.to_container(cfg, resolve=False))
    lines = []
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra.") or key in known:
            continue
        if (config_dir / key).is_dir():  # a group choice (e.g. experiment=toy): Hydra checks those itself
            continue
        parent = key.rpartition(".")[0]
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent and parent)
        leaf = key.rpartition(".")[2]
        moved = [k for k in sorted(known) if k.startswith(f"{parent}.") and k.rpartition(".")[2] == leaf]
        close = moved or difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.75)
        if close:
            hint = f"did you mean {' or '.join(close)}?"
        elif siblings:
            hint = f"{parent} has {', '.join(siblings)}."
        else:
            hint = "no setting has a similar name."
        lines.append(f"{key} is not a setting of this config: {hint} (`python src/train.py --cfg job` lists them all)")
    return lines


def _flat_keys(node: object, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            keys |= {name} | _flat_keys(value, name)
    return keys
