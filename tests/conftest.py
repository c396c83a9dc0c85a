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

# At most two threads, fixed for the whole session and its subprocesses: a run decides its count at start from the
# machine's load (nft.threads), and tests that compare runs bit for bit need the same count whatever that load is.
os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
