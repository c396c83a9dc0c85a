"""``train(cfg)``: check the config, build everything from it and run Lightning, resuming a run when asked;
``evaluate(cfg)``: score a model on benchmarks (``nft.eval.offline``).

``build`` wires the run's collaborators explicitly: one rollout backend (``cfg.rollout.backend``) serves the data
module and the benchmark evaluation; one ``EpochReport`` is filled by the data module and the training module and
written by ``EpochSummary`` (and shown by ``RolloutSamples``). A callback that needs them has
``connect(*, generator, report)``.

Resuming: ``resume=auto`` continues from the newest complete checkpoint under the run directory (start a run again in
its old directory with ``hydra.run.dir=runs/<date>/<time> resume=auto``; with none there yet, it starts afresh), and
``ckpt_path=FILE`` from a given checkpoint. Earlier CSV logs of the directory are kept, renamed ``metrics.<n>.csv``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nft.checkpoint import resume_path
from nft.distributed import launch_rank, launch_world, run_scope
from nft.eval import EpochSummary
from nft.eval.offline import evaluate as evaluate_model
from nft.module import PolicyModule
from nft.plan import check_fits, is_fsdp, plan
from nft.preemption import Preemption
from nft.report import EpochReport
from nft.rollout.base import Generator
from nft.threads import decide_threads
from nft.validate import validate

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything ``train`` builds, for callers (tests, benchmarks) that drive it themselves."""

    trainer: L.Trainer
    module: PolicyModule
    datamodule: L.LightningDataModule
    generator: Generator
    report: EpochReport


def build(cfg: DictConfig) -> Run:
    """Instantiate the policy, algorithm, data module, callbacks, loggers and trainer from ``cfg``."""
    validate(cfg)
    log.info(decide_threads(cfg.threads))
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # every rank of a multi-process run builds; one writes
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    _refuse_what_cannot_fit(cfg)
    from_rank0 = is_fsdp(cfg) and launch_world(cfg) > 1  # one full copy in host memory: rank 0's
    policy = instantiate(cfg.model, on_meta_device=from_rank0 and launch_rank(cfg) > 0)
    algorithm = instantiate(cfg.algo)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)  # plain types: checkpoints load with weights_only
    fsdp = OmegaConf.to_container(cfg.fsdp, resolve=True)
    report = EpochReport()
    module = PolicyModule(
        policy.model,
        policy.tokenizer,
        algorithm,
        temperature=cfg.rollout.sampling.temperature,
        fsdp=fsdp,
        activation_checkpointing=cfg.activation_checkpointing,
        weights_from_rank0=from_rank0,
        mismatch_warn_kl=cfg.integrity.warn_kl,
        mismatch_stop_kl=cfg.integrity.stop_kl,
        report=report,
        **optim,
    )
    generator = instantiate(cfg.rollout.backend)
    # Built as a partial, then called: Hydra would copy a dataclass (the report) passed through `instantiate`.
    datamodule = instantiate(cfg.data, _partial_=True)(generator=generator, report=report)
    datamodule.connect(module)
    callbacks = [
        EpochSummary(report, cfg.integrity.warn_kl),
        *(instantiate(c) for c in cfg.callbacks.values() if c is not None),
        Preemption(),  # after the others' epoch ends (Lightning runs checkpoint callbacks last)
    ]
    for callback in callbacks:  # late binding: a callback that needs the run's collaborators asks for them
        if hasattr(callback, "connect"):
            callback.connect(generator=generator, report=report)
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None] if cfg.logger else False
    _keep_earlier_logs(loggers or [])
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=str(run_dir))
    log.info(
        "policy: %s (%.1fM parameters, %.2fM trained); algorithm: %r",
        type(policy.model).__name__,
        sum(p.numel() for p in policy.model.parameters()) / 1e6,
        sum(p.numel() for p in policy.model.parameters() if p.requires_grad) / 1e6,
        algorithm,
    )
    return Run(trainer, module, datamodule, generator, report)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the policy as configured. Returns the final metrics (training and benchmark) as floats."""
    with run_scope():  # the next run in this process (a -m sweep's next job) starts its own ranks
        run = build(cfg)
        ckpt_path = cfg.ckpt_path
        if cfg.resume == "auto":
            ckpt_path = resume_path(cfg.run_dir)
            log.info("resume=auto: %s", f"resuming from {ckpt_path}" if ckpt_path else "no checkpoint yet, afresh")
        try:
            run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
        finally:
            run.generator.close()
    return {k: float(v) for k, v in run.trainer.callback_metrics.items()}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.model`` on ``cfg.benchmarks`` and add its row to the results table (``nft.eval.offline``)."""
    return evaluate_model(cfg)


def _refuse_what_cannot_fit(cfg: DictConfig) -> None:
    """On a GPU, the memory plan (``nft.plan``) before any weight loads: a run that cannot fit stops here."""
    import torch

    if cfg.trainer.accelerator != "gpu" or not torch.cuda.is_available():
        return
    try:
        memory = plan(cfg)
    except ValueError as unknown:  # an architecture the planner does not know: nothing to check against
        log.warning("memory plan skipped: %s", unknown)
        return
    check_fits(memory, torch.cuda.get_device_properties(0).total_memory)


@rank_zero_only
def _keep_earlier_logs(loggers: list) -> None:
    """Lightning's CSVLogger deletes the ``metrics.csv`` it finds; a resumed run keeps it under another name."""
    for logger in loggers:
        metrics = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if metrics is not None and metrics.is_file():
            part = next(n for n in itertools.count(1) if not metrics.with_suffix(f".{n}.csv").exists())
            metrics.rename(metrics.with_suffix(f".{part}.csv"))
            log.info("kept the earlier %s as %s", metrics, metrics.with_suffix(f".{part}.csv").name)
