"""PolicyModule on real Lightning steps with the tiny model: non-finite inputs never reach AdamW, the KL reference
is built only when needed."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from nft.algorithms import GRPO, NFT
from nft.data.batching import make_mini_batches, set_group_stats
from nft.eval import EpochSummary
from nft.module import PolicyModule

from .test_algorithms_train import changed, parameters_of
from .test_batching import make_samples


# --- non-finite inputs on a real Lightning step ------------------------------------------------------------------
def fit_one_step(module: PolicyModule, step: list[dict[str, torch.Tensor]], precision="32-true") -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EpochSummary(module.report)],  # as nft.pipeline adds it: logs the epoch's report
    )
    trainer.fit(module, train_dataloaders=DataLoader([step], batch_size=None, collate_fn=lambda batch: batch))
    return trainer


def forbid_token(model, token: int) -> None:
    """Make the model assign probability 0 (a -inf logit) to ``token`` everywhere, as a vocabulary mask would."""

    def hook(_module, _inputs, logits):
        return logits.index_fill(-1, torch.tensor([token]), -torch.inf)

    model.lm_head.register_forward_hook(hook)


def toy_step(correct_by_group: dict[int, list[float]]) -> list[dict[str, torch.Tensor]]:
    samples = make_samples(correct_by_group, seed=3)
    set_group_stats(samples)
    return make_mini_batches(samples, groups_per_step=len(correct_by_group), micro_batch_tokens=60, pad_id=3, seed=0)[0]


@pytest.mark.parametrize("algorithm", [NFT(), GRPO()], ids=["nft", "grpo"])
def test_minus_inf_on_padding_and_uniform_groups_still_give_a_step(tokenizer, tiny_model, algorithm):
    """Padding targets get log-prob -inf, and all-right / all-wrong groups reach the loss: the step is taken."""
    forbid_token(tiny_model, 3)  # the pad id; sampled tokens are 4..259, so only padded positions are hit
    module = PolicyModule(tiny_model, tokenizer, algorithm, lr=1e-3)
    before = parameters_of(tiny_model)
    trainer = fit_one_step(module, toy_step({0: [1, 0, 0, 1], 1: [1, 1, 1], 2: [0, 0, 0]}))
    assert module.skipped_steps == 0 and changed(before, tiny_model)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_minus_inf_on_a_counted_token_skips_and_counts_the_step(tokenizer, tiny_model):
    """A correct answer whose token has probability 0 makes NFT's loss infinite: AdamW never sees it."""
    step = toy_step({0: [1, 0, 0, 1], 1: [0, 1, 1, 1]})
    first_correct = next(b for b in step if b["correct"].any())
    row = int(first_correct["correct"].argmax())
    token = int(first_correct["response_ids"][row, 0])  # its first response token
    forbid_token(tiny_model, token)
    module = PolicyModule(tiny_model, tokenizer, NFT(), lr=1e-3)
    before = parameters_of(tiny_model)
    trainer = fit_one_step(module, step)
    assert module.skipped_steps == 1 and not changed(before, tiny_model)
    assert trainer.callback_metrics["train/skipped_steps"] == 1


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_one_device_mixed_precision_keeps_float32_masters_that_move_at_lr_1e_6(tokenizer, tiny_model, precision):
    """trainer=gpu's precision, on the CPU: the model arrives in bf16 (model.dtype), AdamW at lr 1e-6 moves float32
    masters under bf16-mixed; bf16-true (the old trainer=gpu) keeps bf16 weights and most updates round away."""
    tiny_model.to(torch.bfloat16)
    module = PolicyModule(tiny_model, tokenizer, NFT(), lr=1e-6)
    before = [p.detach().float().clone() for p in tiny_model.parameters()]
    fit_one_step(module, toy_step({0: [1, 0, 0, 1], 1: [0, 1, 1, 1]}), precision=precision)
    after = list(tiny_model.parameters())
    moved = sum(int((a.detach().float() != b).sum()) for a, b in zip(after, before, strict=True))
    fraction = moved / sum(b.numel() for b in before)
    if precision == "bf16-mixed":
        assert all(p.dtype == torch.float32 for p in after) and fraction > 0.5
    else:
        assert all(p.dtype == torch.bfloat16 for p in after) and fraction < 0.1


class RecordRate(L.Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize(("unit", "expected"), [("iteration", [0, 0, 0.5, 0.5, 1, 1]), ("step", [0, 0.5, 1, 1, 1, 1])])
def test_the_warm_up_counts_iterations_or_steps_and_starts_at_zero(tokenizer, tiny_model, unit, expected):
    module = PolicyModule(tiny_model, tokenizer, NFT(), lr=1e-3, warmup_steps=2, warmup_unit=unit)
    step = toy_step({0: [1, 0, 0, 1], 1: [0, 1, 1, 1]})
    record = RecordRate()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, train_dataloaders=DataLoader([step, step], batch_size=None, collate_fn=lambda batch: batch))
    assert record.rates == pytest.approx([1e-3 * f for f in expected])  # 2 optimizer steps per epoch
