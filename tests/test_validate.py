"""Config validation before any work: each mistake gets a message that names the setting to change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from nft.pipeline import build
from nft.validate import ConfigError, validate

from .conftest import CONF, ROOT, compose_train

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_shipped_configs_are_valid(model):
    validate(compose_train([f"model={model}"]))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data.batch.groups_per_step=24"],
            "data.batch.prompts_per_epoch=64 is not a multiple of data.batch.groups_per_step=24",
        ),
        (["trainer.devices=3"], "does not split over 3 processes (trainer.devices x trainer.num_nodes)"),
        (["trainer.devices=[0,1,2]"], "does not split over 3 processes"),
        (["trainer.devices=3", "+trainer.num_nodes=2"], "does not split over 6 processes"),
        (["model.max_response_tokens=460"], "64 + 460 exceeds the context of 512 tokens"),
        (["rollout.sampling.max_new_tokens=40"], "raise model.max_response_tokens or lower rollout.sampling"),
        (["data.max_prompt_tokens=100"], "set model.max_prompt_tokens instead"),
        (["+optim.learning_rate=0.1"], "optim.learning_rate is not a setting of optim"),
        (["+data.promts_per_epoch=8"], "did you mean data.batch.prompts_per_epoch?"),
        (["+data.prompts_per_epoch=8"], "did you mean data.batch.prompts_per_epoch?"),  # a key now in a group
        (["+verifier.time_out=3"], "did you mean verifier.timeout?"),
        (["callbacks.checkpoint._target_=nft.nowhere.Saver"], "checkpoint._target_=nft.nowhere.Saver: cannot be"),
        (["resume=yes"], "use resume=auto"),
        (["resume=auto", "ckpt_path=/no/such.ckpt"], "resume=auto and ckpt_path are both set"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt: no such checkpoint"),
        (["benchmarks.toy.temperature=0"], "benchmarks.toy: temperature must be > 0"),
        (["benchmarks.toy.samples=0"], "benchmarks.toy.samples must be >= 1"),
    ],
)
def test_each_mistake_is_named(overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(overrides))
    assert expected in str(error.value)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_requested_but_not_installed():
    with pytest.raises(ConfigError, match=r"rollout=vllm needs vLLM.*pip install -e '\.\[vllm\]'.*rollout=hf"):
        validate(compose_train(["rollout.backend._target_=nft.rollout.vllm.VLLMGenerator"]))


@pytest.mark.parametrize(
    ("key", "value"), [("rollout.sampling.temperature", "2.5"), ("benchmarks.toy.temperature", "3")]
)
def test_vllm_refuses_a_temperature_over_2(key, value):
    refused = f"{key}={value} is over 2, the highest temperature vLLM samples at (rollout=vllm)"
    assert refused in problems(["rollout=vllm", f"{key}={value}"])
    assert "temperature" not in problems(["rollout=vllm", f"{key}=2"])
    validate(compose_train([f"{key}={value}"]))  # the transformers backend samples at any temperature


def problems(overrides: list[str]) -> str:
    """``validate``'s message ("" when valid): here rollout=vllm also reports vLLM missing."""
    try:
        validate(compose_train(overrides))
    except ConfigError as error:
        return str(error)
    return ""


def test_every_problem_is_reported_at_once_and_before_any_work(tmp_path):
    cfg = compose_train(["data.batch.groups_per_step=24", "+optim.learning_rate=0.1"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        build(cfg)
    assert "data.batch.groups_per_step=24" in str(error.value) and "optim.learning_rate" in str(error.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory, the model or the data


def test_unknown_keys_on_the_command_line_get_a_suggestion():
    result = subprocess.run(
        [
            sys.executable,
            "src/train.py",
            "experiment=toy",
            "optim.learning_rate=0.1",
            "trainer.max_epoch=3",
            "data.prompts_per_epoch=8",
            "--cfg",
            "job",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Could not override 'optim.learning_rate'" in result.stderr  # Hydra's own refusal, then the hint
    assert "optim.learning_rate is not a setting of this config: optim has betas, grad_clip, lr," in result.stderr
    assert "trainer.max_epoch is not a setting of this config: did you mean trainer.max_epochs?" in result.stderr
    assert "data.prompts_per_epoch is not a setting of this config: did you mean data.batch.prompts_per_epoch?" in (
        result.stderr
    )
    assert "experiment is not a setting" not in result.stderr  # a group choice is not a key


@pytest.mark.full
def test_a_vllm_sweep_in_one_process_is_refused_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "rollout=vllm", "seed=0,1", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "rollout=vllm cannot run a -m sweep in one process" in result.stderr
    assert "Start one process per job" in result.stderr
    assert not list(tmp_path.glob("*/config.yaml"))  # no job got as far as its run directory
