"""NFT: Negative-aware Fine-Tuning of language models on math, from their own right and wrong answers."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"


def project_root() -> str:
    """The repository root (where ``conf/`` and ``data/`` live) for a source checkout, else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return str(root) if (root / "conf").is_dir() else str(Path.cwd())


def product(*values) -> int:
    """``${product:${trainer.devices},${trainer.num_nodes}}``: the number of processes of a run."""
    result = 1
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected whole numbers (e.g. trainer.devices=8 trainer.num_nodes=2), got {values}")
        result *= value
    return result


OmegaConf.register_new_resolver("project_root", project_root, replace=True)
OmegaConf.register_new_resolver("product", product, replace=True)
