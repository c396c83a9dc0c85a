"""Every config composes, and bad choices get clear messages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nft.validate import ConfigError, validate

from .conftest import CONF, ROOT, compose_train

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
ALGOS = sorted(p.stem for p in (CONF / "algo").glob("*.yaml"))


def test_config_groups_hold_the_contracted_options():
    assert {"tiny", "qwen1.5b", "qwen7b", "qwen32b"} <= set(MODELS)
    assert "nft" in ALGOS
    for group in ("model", "algo", "data", "rollout", "trainer", "logger", "callbacks", "experiment", "prompt"):
        assert (CONF / group).is_dir(), group


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_algo_pair_composes(model, algo):
    cfg = compose_train([f"model={model}", f"algo={algo}"])
    validate(cfg)  # a run that can start, not only a config that composes
    algorithm = instantiate(cfg.algo)
    written = {k: v for k, v in OmegaConf.to_container(cfg.algo, resolve=True).items() if k != "_target_"}
    assert set(written) <= set(algorithm.settings)  # every key of the file is a setting of the class ...
    for key, value in written.items():  # ... and the instance holds the file's value
        assert algorithm.settings[key] == (tuple(value) if isinstance(value, list) else value), key


def test_qwen32b_composes_from_the_command_line_without_downloading():
    result = subprocess.run(
        [sys.executable, "src/train.py", "model=qwen32b", "algo=nft", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "path: Qwen/Qwen2.5-32B" in result.stdout
    assert "max_response_tokens: 14336" in result.stdout


def test_unknown_option_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(["model=qwen9000"])
    message = str(error.value)
    assert "qwen9000" in message and "tiny" in message and "qwen7b" in message


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="optim.learning_rate"):
        compose_train(["optim.learning_rate=0.1"])


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    try:
        validate(cfg)
    except ConfigError as error:  # the GPU recipes ask for vLLM; nothing else may be wrong with them
        problems = str(error).split("\n  - ")[1:]
        assert importlib.util.find_spec("vllm") is None and all("needs vLLM" in p for p in problems), problems
    assert callable(instantiate(cfg.algo).loss)


@pytest.mark.parametrize("experiment", ["paper_7b", "paper_32b"])
def test_paper_recipes_hold_the_reference_settings(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    batch = cfg.data.batch
    assert (batch.prompts_per_epoch, batch.samples_per_prompt, batch.groups_per_step) == (512, 16, 32)
    assert (cfg.data.dynamic_sampling.max_gen_rounds, cfg.data.dynamic_sampling.filter_groups) == (10, True)
    optim = cfg.optim
    assert (optim.lr, optim.warmup_steps, optim.weight_decay, optim.grad_clip) == (1e-6, 10, 0.1, 1.0)
    tokens = {"paper_7b": (512, 3584), "paper_32b": (2048, 14336)}[experiment]
    assert (cfg.model.max_prompt_tokens, cfg.model.max_response_tokens) == tokens
    assert cfg.callbacks.benchmark_eval.eval_every == 2
    assert set(cfg.benchmarks) == {"aime24", "aime25", "amc23", "math500", "minerva", "olympiad"}
    assert cfg.trainer.strategy.data_parallel_size == cfg.trainer.devices * cfg.trainer.num_nodes
    assert cfg.rollout.backend._target_ == "nft.rollout.vllm.VLLMGenerator"
    assert cfg.rollout.backend.tensor_parallel_size == 4
