"""Evaluate a model: ``python src/evaluate.py model.path=DIR benchmarks=[math500,aime24]`` (see conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig

import nft  # noqa: F401  (registers the config resolvers)
from nft.pipeline import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["val/average"]


if __name__ == "__main__":
    main()
