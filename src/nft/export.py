"""ExportHF: the final policy as a ``save_pretrained`` folder that transformers or vLLM can load.

Under FSDP the full state dict is gathered on rank 0's CPU (every rank takes part) and saved in the dtype the model was
loaded in (``config.dtype``), not in the float32 of the sharded master weights.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from nft.distributed import full_state_dict, is_sharded


class ExportHF(L.Callback):
    """Write ``<dirpath>`` (default ``<run_dir>/export``) with the model and tokenizer when training ends."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        state = full_state_dict(model) if is_sharded(model) else None  # a collective: on every rank
        if not trainer.is_global_zero:
            return
        path = Path(self.dirpath or Path(trainer.default_root_dir) / "export")
        if state is not None:
            dtype = getattr(model.config, "dtype", None)
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in state.items()}
        model.save_pretrained(path, state_dict=state)
        pl_module.tokenizer.save_pretrained(path)
