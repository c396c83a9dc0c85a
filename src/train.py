"""Train a policy: ``python src/train.py [model=...] [algo=...] [key=value ...]`` (Hydra; ``-m`` sweeps)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import nft  # noqa: F401  (registers the config resolvers)
from nft.validate import explain_overrides

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, so that `--cfg job` and config errors answer at once.
    from nft.distributed import pin_hydra_job_for_relaunch
    from nft.pipeline import train

    pin_hydra_job_for_relaunch()  # several processes under -m: see its docstring
    metrics = train(cfg)
    return metrics.get("val/average")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as failure:  # Hydra has reported the error; an unknown key gets a "did you mean" too
        if failure.code:
            for line in explain_overrides(sys.argv[1:], CONFIG_DIR):
                print(line, file=sys.stderr)
        raise
