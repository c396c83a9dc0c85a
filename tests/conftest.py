"""Shared fixtures: the real tiny Qwen2 model and tokenizer, and composed Hydra configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import nft  # noqa: F401  (registers the config resolvers)
from nft.toy import build_tiny_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# At most two threads (fewer while other processes keep cores busy: nft.threads); OMP_NUM_THREADS fixes the count.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fixed_threads(monkeypatch):
    """torch's thread count fixed for the test (``OMP_NUM_THREADS``), not following the machine's load
    (``nft.threads``): for tests that compare runs bit for bit, as thread counts change floating-point sums."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


def compose_train(overrides: list[str] = (), run_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` as ``src/train.py`` would, with the run directory pointed at ``run_dir``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir is not None else "unused"
    return cfg


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return build_tiny_model(tokenizer, num_hidden_layers=2, seed=0)


class PolicyHandle:
    """What the generator's ``sync`` needs: a model and its tokenizer."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
