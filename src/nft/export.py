"""ExportHF: the final policy as a ``save_pretrained`` folder that transformers or vLLM can load.

Under FSDP the full state dict is gathered on rank 0's CPU (every rank takes part) and saved in the dtype the model was
loaded in (``config.dtype``), not in the float32 of the sharded master weights.

A LoRA policy (``model.lora``) is saved merged (``nft.lora.effective_parameters``: ``W + (alpha / rank) B A`` in each
adapted layer), as a plain transformers model of the base architecture, in the base's dtype; with ``adapter=true``
its adapters alone are saved as well, as a ``peft`` folder (``<dirpath>/adapter``: ``PeftModel.from_pretrained(base,
folder)`` puts them back on the base model).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from nft.distributed import full_state_dict, is_sharded
from nft.lora import adapter_state_dict, base_model, effective_parameters, is_lora


class ExportHF(L.Callback):
    """Write ``<dirpath>`` (default ``<run_dir>/export``) with the model and tokenizer when training ends.

    Args:
        dirpath: the folder (default ``<run_dir>/export``).
        adapter: a LoRA policy's adapters alone too, in ``<dirpath>/adapter`` (ignored without LoRA).
    """

    def __init__(self, dirpath: str | None = None, adapter: bool = False) -> None:
        self.dirpath = dirpath
        self.adapter = adapter

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        if is_lora(model):
            return self._export_lora(trainer, pl_module)
        state = full_state_dict(model) if is_sharded(model) else None  # a collective: on every rank
        if not trainer.is_global_zero:
            return
        if state is not None:
            state = _in_dtype(state, model.config)
        model.save_pretrained(self._path(trainer), state_dict=state)
        pl_module.tokenizer.save_pretrained(self._path(trainer))

    def _export_lora(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        rank0 = trainer.is_global_zero
        # One merged tensor at a time (a collective under FSDP); only rank 0 keeps them.
        merged = {name: t.cpu() for name, t in effective_parameters(model) if rank0}
        adapters = adapter_state_dict(model) if self.adapter else None
        if not rank0:
            return
        path = self._path(trainer)
        base = base_model(model)
        # The base's own save, with the merged weights in place of its (adapter-carrying) modules' state.
        base.save_pretrained(path, state_dict=_in_dtype(merged, base.config))
        pl_module.tokenizer.save_pretrained(path)
        if adapters is not None:
            model.save_pretrained(path / "adapter", state_dict=adapters)

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.default_root_dir) / "export")


def _in_dtype(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """``state`` in the model's loading dtype (``config.dtype``), when it names one."""
    dtype = getattr(config, "dtype", None)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in state.items()}
