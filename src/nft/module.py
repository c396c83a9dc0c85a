"""PolicyModule: the policy, its response-token log-probs, the algorithm's loss, and the optimizer.

Manual optimisation: one ``training_step`` is one optimizer step over a mini-batch of whole groups, whose
micro-batches (a variable number, packed by a token budget) are accumulated here. Lightning's automatic optimisation
needs a fixed accumulation count, which a token budget cannot give. A micro-batch's log-probs take one forward per
distinct prompt, whose keys and values its answers read (``nft.shared_prompt``).

Under Lightning's ``ModelParallelStrategy`` (``trainer=fsdp``), ``configure_model`` shards the policy with FSDP2
(``nft.distributed.shard_model``). Each rank then holds its own groups of the step; every micro-batch carries the
step's totals over all ranks and gradients are summed across ranks, so the update equals the one-process update.
Ranks run the same number of micro-batches per step (the data module pads with empty ones, which count for nothing),
because every forward and backward of a sharded model is a collective.

LoRA (``model.lora``, ``nft.lora``): the policy is a ``peft`` model whose adapters alone require gradients; the
optimizer holds only them, the KL reference is the same model with its adapters disabled (no second copy), and a
single-process checkpoint holds only the trained parameters with a fingerprint of the frozen base, which resume
checks before putting the adapters back on it. Departure: under FSDP a (sharded) checkpoint keeps the frozen base too,
because Lightning's sharded loader reads the whole module state dict; the optimizer state is the adapters' only.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from functools import partial

import lightning as L
import torch

from nft.algorithms import OPTIONAL_INPUTS
from nft.algorithms.movement import policy_movement
from nft.checkpoint import rng_states, set_rng_states
from nft.data.batching import is_padding
from nft.distributed import all_reduce_sum, is_sharded, load_from_rank0, shard_model
from nft.lora import is_lora, trainable_names
from nft.report import EpochReport
from nft.rollout.integrity import (
    MISMATCH_FIELDS,
    RolloutMismatchError,
    fingerprint,
    mismatch_metrics,
    mismatch_sums,
    reduce_mismatch,
)
from nft.shared_prompt import response_logits

log = logging.getLogger(__name__)


WARMUP_UNITS = ("step", "iteration")


def warmup_factor(k: int, warmup: int) -> float:
    """The learning rate's factor at step (or iteration) ``k``: ``k / warmup`` during the warm-up, then 1."""
    return k / warmup if k < warmup else 1.0


class PolicyModule(L.LightningModule):
    """Args:
    model: a transformers causal LM (the policy being trained).
    tokenizer: its tokenizer.
    algorithm: an object with ``loss(logp, old_logp, mask, correct, correct_rate, **inputs) -> (loss, metrics)``;
        the batch's ``nft.algorithms.OPTIONAL_INPUTS`` are passed as keywords. If it ``needs_reference``, a frozen
        copy of the initial policy is kept and its log-probs passed as ``ref_logp``; otherwise none is built. A LoRA
        policy's reference is itself with the adapters disabled: its base, which is the initial policy.
    lr, weight_decay, betas: AdamW settings.
    warmup_steps, warmup_unit: a linear warm-up over ``warmup_steps`` optimizer steps (``step``) or policy
        iterations (``iteration``: the scheduler steps once per epoch, as the reference's steps once per actor
        update), then constant: the rate of step (or iteration) ``k`` is ``lr * k / warmup_steps`` while
        ``k < warmup_steps`` (the first one at 0), verl's ``get_constant_schedule_with_warmup``.
    grad_clip: max global gradient norm (None: no clipping).
    max_skipped_in_a_row: stop training after this many optimizer steps in a row were skipped for a non-finite loss
        or gradient (the weights then are those of the last good step; a checkpoint with non-finite ones is refused).
    temperature: the sampling temperature; log-probs are taken of ``softmax(logits / temperature)``.
    fsdp: ``nft.distributed.shard_model`` settings (the ``fsdp`` config node), used under ``ModelParallelStrategy``.
    activation_checkpointing: recompute each decoder layer in backward (non-reentrant, as FSDP2 needs) instead of
        keeping its activations, with any trainer.
    weights_from_rank0: under FSDP, only rank 0 holds the loaded weights (the others built the model on the meta
        device: one full copy in host memory instead of one per rank); sharding broadcasts them
        (``nft.distributed.load_from_rank0``).
    mismatch_warn_kl, mismatch_stop_kl: the engine-trainer log-prob KL over which an epoch warns, and stops before
        its first update (``integrity`` in train.yaml).
    report: where each optimizer step's loss, gradient norm and time are added up (``nft.report``; the pipeline
        shares it with ``nft.eval.EpochSummary``, which logs the epoch).
    """

    def __init__(
        self,
        model,
        tokenizer,
        algorithm,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        warmup_unit: str = "step",
        grad_clip: float | None = 1.0,
        max_skipped_in_a_row: int = 5,
        temperature: float = 1.0,
        fsdp: dict | None = None,
        activation_checkpointing: bool = False,
        weights_from_rank0: bool = False,
        mismatch_warn_kl: float = 1e-3,
        mismatch_stop_kl: float = math.inf,
        report: EpochReport | None = None,
    ) -> None:
        super().__init__()
        if warmup_unit not in WARMUP_UNITS or warmup_steps < 0:
            raise ValueError(f"optim.warmup_unit must be one of {WARMUP_UNITS} and optim.warmup_steps >= 0")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["model", "tokenizer", "algorithm", "report"])
        self.model = model
        self.tokenizer = tokenizer
        self.algorithm = algorithm
        self.reference_model = None
        if getattr(algorithm, "needs_reference", False) and not is_lora(model):  # a submodule: checkpoints keep it
            self.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        self.report = report if report is not None else EpochReport()

    # --- forward -----------------------------------------------------------------------------------------------
    def response_logprobs(self, batch: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        """Log-probs [b, T] of the response tokens under ``model`` (default: the policy).

        Each distinct prompt of the micro-batch goes through the model once and its answers read its keys and values
        (``nft.shared_prompt``); the log-softmax is a gather minus a logsumexp, so no [b, T, V] log-prob tensor is
        materialised.
        """
        with self.compute_precision():  # as in training_step: old_logp recomputed outside it matches the update's
            logits = response_logits(self.model if model is None else model, batch)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32
        if self.hparams.temperature != 1.0:
            logits = logits / self.hparams.temperature
        return logits.gather(-1, batch["response_ids"][..., None]).squeeze(-1) - logits.logsumexp(-1)

    def compute_precision(self):
        """The trainer's compute precision (autocast under bf16-mixed); nothing outside a trainer. The transformers
        rollout samples under it too (``nft.rollout.hf``)."""
        trainer = self._trainer
        return trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()

    # --- sharding ----------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Activation checkpointing if asked; FSDP2 under ``ModelParallelStrategy`` (which provides the device mesh,
        and keeps the shards in float32); in one process under a mixed precision (``trainer=gpu``: bf16-mixed), the
        policy in float32, so that AdamW updates float32 master weights while autocast computes in bf16 (a LoRA policy:
        its adapters in float32, its frozen base in the dtype it was loaded in)."""
        if self.hparams.activation_checkpointing and not self.model.is_gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is None:
            if "mixed" in str(self.trainer.precision) and is_lora(self.model):
                for param in self.model.parameters():  # the frozen base keeps its dtype (bf16): no master copy
                    if param.requires_grad:
                        param.data = param.data.float()
            elif "mixed" in str(self.trainer.precision):
                self.model.to(torch.float32)
            return
        if is_sharded(self.model):
            return
        models = [m for m in (self.model, self.reference_model) if m is not None]  # the KL reference alike
        if self.hparams.weights_from_rank0:
            with load_from_rank0(models, self.global_rank):
                for model in models:
                    shard_model(model, self.device_mesh["data_parallel"], **(self.hparams.fsdp or {}))
            return
        for model in models:
            shard_model(model, self.device_mesh["data_parallel"], **(self.hparams.fsdp or {}))

    # --- training ----------------------------------------------------------------------------------------------
    def training_step(self, micro_batches: list[dict[str, torch.Tensor]], batch_idx: int) -> None:
        if not micro_batches:  # every group was filtered this epoch: nothing to learn from
            return
        start = time.perf_counter()
        optimizer = self.optimizers()
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        counted = torch.zeros((), device=self.device)  # real (not padding) micro-batches, for the metric means
        # Before the epoch's first update the trainer's log-probs are those of the policy that sampled: the gap to
        # the engine's own is measured there (nft.rollout.integrity), whatever data.loss_inputs.old_logp is.
        mismatch = torch.zeros(len(MISMATCH_FIELDS) + 1, dtype=torch.float64, device=self.device)
        measure = batch_idx == 0
        for batch in micro_batches:
            loss, metrics = self.micro_batch_loss(batch, mismatch if measure else None)
            self.manual_backward(loss)  # a padding micro-batch has no counted token: zero loss, zero gradient
            weight = 0.0 if is_padding(batch) else 1.0
            loss_sum += loss.detach()
            counted += weight
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value.detach() * weight
        loss_sum, metric_sums = self._reduce_over_ranks(loss_sum, metric_sums, counted)
        if measure:
            self._check_mismatch(reduce_mismatch(mismatch))
        grad_norm = self._clip_gradients()
        if torch.isfinite(grad_norm) and torch.isfinite(loss_sum):
            optimizer.step()
            if self.hparams.warmup_unit == "step":
                self.lr_schedulers().step()
            self.skipped_in_a_row = 0
        else:  # one bad batch must not poison the weights
            self._skip_step()
        optimizer.zero_grad(set_to_none=True)
        logged = {
            "train/loss": loss_sum,
            "train/grad_norm": grad_norm,
            "train/lr": self.lr_schedulers().get_last_lr()[0],
        }
        logged.update({f"train/{name}": value for name, value in metric_sums.items()})
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=1)
        self.report.update.add(float(loss_sum), float(grad_norm), time.perf_counter() - start)

    def micro_batch_loss(
        self, batch: dict[str, torch.Tensor], mismatch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The algorithm's loss on one micro-batch (on-policy when the batch carries no ``old_logp``); adds the gap
        between these log-probs and the engine's to ``mismatch`` (``nft.rollout.integrity.mismatch_sums``) if given."""
        logp = self.response_logprobs(batch)
        if mismatch is not None:
            sums = mismatch_sums(logp, batch["behaviour_logp"], batch["response_mask"])
            mismatch[:-1] += sums[:-1]
            mismatch[-1:] = torch.maximum(mismatch[-1:], sums[-1:])
        old_logp = batch["old_logp"] if "old_logp" in batch else logp.detach()
        inputs = {name: batch[name] for name in OPTIONAL_INPUTS if name in batch}
        if getattr(self.algorithm, "needs_reference", False):
            inputs["ref_logp"] = self.reference_logprobs(batch)
        loss, metrics = self.algorithm.loss(
            logp, old_logp, batch["response_mask"], batch["correct"], batch["correct_rate"], **inputs
        )
        return loss, {**metrics, **policy_movement(logp, old_logp, batch["response_mask"])}

    @torch.no_grad()
    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-probs under the KL reference: the frozen initial copy, or a LoRA policy without its adapters."""
        if self.reference_model is not None:
            return self.response_logprobs(batch, self.reference_model)
        with self.model.disable_adapter():  # peft: the base layers alone, the very initial policy
            return self.response_logprobs(batch)

    def _check_mismatch(self, sums: torch.Tensor) -> None:
        """Report the epoch's engine-trainer gap; warn above ``mismatch_warn_kl``, stop above ``mismatch_stop_kl``
        before the update (the answers were sampled by another policy than the trainer's)."""
        self.report.mismatch = mismatch_metrics(sums)
        kl = self.report.mismatch.get("rollout/mismatch/kl", 0.0)
        if kl > self.hparams.mismatch_stop_kl:
            raise RolloutMismatchError(
                f"epoch {self.current_epoch}: the rollout engine's log-probs differ from the trainer's by a KL of "
                f"{kl:.3g} (over integrity.stop_kl={self.hparams.mismatch_stop_kl}; mean |diff| "
                f"{self.report.mismatch['rollout/mismatch/mean_abs_diff']:.3g}): training stopped before the update. "
                "Check the backend's dtype and sync, or raise integrity.stop_kl"
            )
        if kl > self.hparams.mismatch_warn_kl:
            log.warning(
                "epoch %d: rollout/trainer log-prob KL %.3g is over integrity.warn_kl=%g (algo.behaviour_correction "
                "corrects for it)",
                self.current_epoch,
                kl,
                self.hparams.mismatch_warn_kl,
            )

    def _skip_step(self) -> None:
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        log.warning("non-finite loss or gradient at step %d: optimizer step skipped", self.global_step)
        if self.skipped_in_a_row >= self.hparams.max_skipped_in_a_row:
            last = self.trainer.checkpoint_callback.last_model_path if self.trainer.checkpoint_callback else ""
            raise FloatingPointError(
                f"{self.skipped_in_a_row} optimizer steps in a row had a non-finite loss or gradient (epoch "
                f"{self.current_epoch}): training stopped. The last good checkpoint is {last or 'not written yet'}; "
                "resume from it with a lower optim.lr, or raise optim.max_skipped_in_a_row"
            )

    @staticmethod
    def _reduce_over_ranks(
        loss_sum: torch.Tensor, metric_sums: dict[str, torch.Tensor], counted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step's loss (summed: each rank holds its share) and metric means over all ranks' micro-batches.

        One collective per step; every rank decides on the same values whether to skip the step."""
        packed = all_reduce_sum(torch.stack([loss_sum, counted, *metric_sums.values()]))
        means = packed[2:] / packed[1].clamp(min=1)
        return packed[0], dict(zip(metric_sums, means, strict=True))

    def _clip_gradients(self) -> torch.Tensor:
        parameters = [p for p in self.parameters() if p.grad is not None]
        max_norm = self.hparams.grad_clip if self.hparams.grad_clip is not None else math.inf
        if not parameters:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm=max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            [p for p in self.trainer.model.parameters() if p.requires_grad],  # a LoRA policy's adapters only
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(warmup_factor, warmup=self.hparams.warmup_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}  # stepped here: manual optimisation

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        local = [p.to_local() if hasattr(p, "to_local") else p for p in self.parameters()]
        finite = torch.stack([torch.isfinite(p).all() for p in local]).all()
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise FloatingPointError(
                f"refusing to write a checkpoint at step {self.global_step}: the weights are not finite; the previous "
                "checkpoint is kept. Resume from it with a lower optim.lr"
            )
        checkpoint["nft"] = {
            "skipped_steps": self.skipped_steps,
            "skipped_in_a_row": self.skipped_in_a_row,
            "rng": rng_states(),  # nothing here draws from them today; a resumed run must not depend on that
        }
        if is_lora(self.model) and not is_sharded(self.model):  # what is trained, and which base it was trained on
            trained = trainable_names(self)
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
            checkpoint["nft"]["lora_base"] = self._frozen_fingerprint()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "nft" not in checkpoint:
            raise ValueError(
                "not a checkpoint written by nft (no 'nft' state): load a save_pretrained model with model.path instead"
            )
        state = checkpoint["nft"]
        self.skipped_steps, self.skipped_in_a_row = state["skipped_steps"], state["skipped_in_a_row"]
        set_rng_states(state["rng"])
        if "lora_base" in state:
            self._restore_frozen(checkpoint, state["lora_base"])

    def _frozen_fingerprint(self) -> dict[str, float]:
        """The fingerprint (``nft.rollout.integrity.fingerprint``) of each frozen parameter, by name."""
        return {name: fingerprint(p) for name, p in self.named_parameters() if not p.requires_grad}

    def _restore_frozen(self, checkpoint: dict, base: dict[str, float]) -> None:
        """An adapters-only checkpoint gets the frozen base this module holds, once it is shown to be the one the
        adapters were trained on; the strict load that follows still refuses a missing or unexpected adapter.

        Fingerprints are compared to 1e-9, relative: their float64 sums may be added up in another order on other
        hardware, while another base (even one a fine-tuning step of lr 1e-6 away) moves them far more."""
        if not is_lora(self.model):
            raise ValueError("this checkpoint holds LoRA adapters only: resume it with model.lora.enabled=true")
        here = self._frozen_fingerprint()
        differ = [n for n in base if n not in here or not math.isclose(here[n], base[n], rel_tol=1e-9, abs_tol=1e-9)]
        if differ or here.keys() != base.keys():
            first = differ[0] if differ else sorted(here.keys() ^ base.keys())[0]
            raise ValueError(
                "this LoRA checkpoint's adapters were trained on another base model than the one loaded (its frozen "
                f"weights differ, first at {first}): resume with the run's model.path and seed"
            )
        trained = trainable_names(self)
        frozen = {k: v for k, v in self.state_dict().items() if k not in trained}
        checkpoint["state_dict"] = {**frozen, **checkpoint["state_dict"]}

    # --- epochs -------------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.model.train()
        if self.reference_model is not None:  # Lightning put the whole module in train mode
            self.reference_model.eval()

    def on_train_epoch_start(self) -> None:
        self.report.start_epoch()
        schedule = self.lr_schedulers()
        while self.hparams.warmup_unit == "iteration" and schedule.last_epoch < self.current_epoch:
            schedule.step()  # the iteration's rate, from the epoch itself: a resumed run gets the same
