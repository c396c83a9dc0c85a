"""OnlineMathDataModule: each epoch, the current policy answers fresh prompts and the answers become the batch.

``train_dataloader`` (called every epoch: ``reload_dataloaders_every_n_epochs=1``) runs one epoch's data flow:

    sync the policy into the generator, and check that it holds the policy's weights (``nft.rollout.integrity``)
    -> rounds of: draw prompts (seeded by the run, the epoch and the round) -> answer and verify them
       (``nft.data.answers``) -> shape rewards -> keep the mixed groups (dynamic sampling), until the batch is full
       or ``max_gen_rounds`` is reached
    -> mini-batches of whole groups, one per optimizer step (``nft.data.batching``)
    -> ``old_logp`` when the epoch takes more than one optimizer step
    -> the epoch's ``RolloutReport`` (``nft.report``)

With several ranks (``trainer=fsdp``), every rank draws the same prompts and generates for its share of them
(``nft.distributed.RolloutShard``: whole groups, so a group's statistics are its own rank's); the ranks exchange only
the ids and token counts of their usable groups, so the groups kept, the steps they form and each step's totals are
exactly those of one process with the same prompts. Each prompt's answers are sampled from a seed of its own, so they
do not depend on how the prompts are split across ranks either.

The policy is bound late (``connect``): an object with the ``model`` and ``tokenizer`` (synced into the generator,
used to encode and decode) and ``response_logprobs(batch)`` (the trainer's forward, for ``old_logp``), as
``nft.module.PolicyModule`` has.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import DataLoader

from nft.data.answers import EncodedProblems, VerifiedAnswer, answer_problems, encode_problems
from nft.data.batching import (
    Sample,
    group_totals,
    make_mini_batches,
    mixed_groups,
    pad_micro_batches,
    set_group_stats,
)
from nft.data.problems import load_problems
from nft.data.prompts import PromptTemplate
from nft.data.rewards import RewardShaping
from nft.distributed import all_gather_objects
from nft.report import EpochReport, RolloutReport, ShownSample
from nft.rollout.base import Generator, SamplingParams
from nft.rollout.integrity import sync_and_check
from nft.seeds import derive_seed
from nft.verify import MathVerifier

log = logging.getLogger(__name__)

SHOWN_SAMPLES = 8  # decoded answers kept per epoch for the loggers (nft.eval.RolloutSamples)
OLD_LOGP = ("recompute", "behaviour")


@dataclass
class Rounds:
    """What the generation rounds of one epoch produced: this rank's samples; every rank's drawn and kept groups, in
    draw order."""

    kept: list[Sample] = field(default_factory=list)
    kept_groups: list[int] = field(default_factory=list)
    drawn: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    count: int = 0


@dataclass(frozen=True)
class BatchShape:
    """What one epoch and one optimizer step hold (``data.batch``).

    prompts_per_epoch: groups wanted per epoch. samples_per_prompt: answers per prompt (the group size).
    groups_per_step: groups per optimizer step (mini-batch). micro_batch_tokens: padded-token budget per forward.
    """

    prompts_per_epoch: int = 64
    samples_per_prompt: int = 8
    groups_per_step: int = 64
    micro_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if min(self.prompts_per_epoch, self.samples_per_prompt, self.groups_per_step, self.micro_batch_tokens) < 1:
            raise ValueError(f"data.batch: every setting must be >= 1, got {self}")


@dataclass(frozen=True)
class DynamicSampling:
    """Which groups an epoch keeps, and how it refills the batch (``data.dynamic_sampling``).

    filter_groups: drop all-right/all-wrong groups. max_gen_rounds: generation rounds to refill them; each round draws
    ``round_prompts`` new prompts (None: ``prompts_per_epoch``; the reference draws 3 x 512 for 512) and keeps the
    first mixed groups in draw order until ``prompts_per_epoch`` are kept.
    """

    filter_groups: bool = True
    max_gen_rounds: int = 1
    round_prompts: int | None = None

    def __post_init__(self) -> None:
        if min(self.max_gen_rounds, self.round_prompts or 1) < 1:
            raise ValueError(f"data.dynamic_sampling: max_gen_rounds and round_prompts must be >= 1, got {self}")


@dataclass(frozen=True)
class LossInputs:
    """What the loss receives besides the answers' tokens and verdicts (``data.loss_inputs``).

    mask_truncated: leave answers cut at the length limit out of the loss.
    reward_shaping: added to correctness to make the reward (``nft.data.rewards``; None: the reward is correctness).
    old_logp: with several optimizer steps per epoch, ``recompute`` the sampling policy's log-probs with the training
        model (as verl; exact) or take the generator's ``behaviour`` log-probs (no extra forward; equal to float
        precision with the transformers backend, close but not equal with vLLM's kernels and dtypes).
    """

    mask_truncated: bool = False
    reward_shaping: RewardShaping | None = None
    old_logp: str = "recompute"

    def __post_init__(self) -> None:
        if self.old_logp not in OLD_LOGP:
            raise ValueError(f"data.loss_inputs.old_logp must be one of {OLD_LOGP}, got {self.old_logp!r}")


class OnlineMathDataModule(L.LightningDataModule):
    """Args:
    train_path: JSONL/Parquet problem file (``id``, ``problem``, ``answer``) or a hub dataset name.
    prompt: how a problem becomes the prompt. generator: the rollout backend. verifier: scores answers.
    sampling: sampling settings for training rollouts.
    batch, dynamic_sampling, loss_inputs: the groups of settings above.
    max_prompt_tokens: longer prompts are an error, or skipped and counted with ``long_prompts=skip`` (the reference's
        ``filter_overlong_prompts``) or ``on_bad_row=skip``; malformed rows stay an error with ``long_prompts=skip``.
    on_bad_row: ``error`` (naming the file, line and field) or ``skip`` (counted in ``data/skipped_rows``).
    long_prompts: ``error`` or ``skip`` (counted in ``data/skipped_long_prompts`` too).
    columns: maps ``id``/``problem``/``answer`` to the file's column names.
    seed: the run's seed, from which every draw of prompts and answers derives (``nft.seeds``).
    report: where the epoch's ``RolloutReport`` goes (the pipeline shares it with the logging callbacks).
    """

    def __init__(
        self,
        train_path: str,
        prompt: PromptTemplate,
        generator: Generator,
        verifier: MathVerifier,
        sampling: SamplingParams,
        batch: BatchShape = BatchShape(),
        dynamic_sampling: DynamicSampling = DynamicSampling(),
        loss_inputs: LossInputs = LossInputs(),
        max_prompt_tokens: int = 512,
        on_bad_row: str = "error",
        columns: dict | None = None,
        seed: int = 0,
        report: EpochReport | None = None,
        long_prompts: str = "error",
    ) -> None:
        super().__init__()
        if batch.samples_per_prompt < 2 and dynamic_sampling.filter_groups:
            raise ValueError(
                "data.batch.samples_per_prompt must be >= 2 when data.dynamic_sampling.filter_groups is on "
                "(a group needs both kinds)"
            )
        if long_prompts not in ("error", "skip"):
            raise ValueError(f"data.long_prompts must be 'error' or 'skip', got {long_prompts!r}")
        self.train_path = train_path
        self.prompt = prompt
        self.generator = generator
        self.verifier = verifier
        self.sampling = sampling
        self.batch = batch
        self.dynamic_sampling = dynamic_sampling
        self.loss_inputs = loss_inputs
        self.round_prompts = dynamic_sampling.round_prompts or batch.prompts_per_epoch
        self.max_prompt_tokens = max_prompt_tokens
        self.on_bad_row = on_bad_row
        self.columns = columns
        self.seed = seed
        self.report = report if report is not None else EpochReport()
        self.long_prompts = long_prompts
        self.policy = None
        self.encoded: EncodedProblems | None = None
        self.skipped_rows: dict[str, int] = {}  # rows skipped, by field ("prompt_tokens": long prompts)

    def connect(self, policy) -> None:
        """Late binding of the policy (see the module docstring)."""
        self.policy = policy

    @property
    def problems(self):
        return self.encoded.problems

    @property
    def prompt_ids(self) -> list[list[int]]:
        return self.encoded.prompt_ids

    @property
    def epoch_stats(self) -> dict[str, float]:
        """The last epoch's rollout statistics ({} before the first)."""
        return self.report.rollout.stats if self.report.rollout is not None else {}

    def setup(self, stage: str | None = None) -> None:
        if self.encoded is not None:
            return
        if self.policy is None:
            raise RuntimeError("OnlineMathDataModule.connect(policy) must be called before setup")
        problem_set = load_problems(self.train_path, columns=self.columns, on_bad_row=self.on_bad_row)
        self.encoded = encode_problems(
            problem_set,
            self.prompt,
            self.policy.tokenizer,
            self.max_prompt_tokens,
            "skip" if "skip" in (self.on_bad_row, self.long_prompts) else "error",
            field_name=(self.columns or {}).get("problem", "problem"),
        )
        self.skipped_rows = dict(problem_set.skipped)
        if self.encoded.skipped:
            self.skipped_rows["prompt_tokens"] = len(self.encoded.skipped)
        if len(self.problems) < self.batch.prompts_per_epoch:
            raise ValueError(
                f"{problem_set.source}: {len(self.problems)} usable problems, fewer than "
                f"data.batch.prompts_per_epoch={self.batch.prompts_per_epoch}"
            )

    # --- checkpoint state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a resumed run needs beyond the seeds: the verifier's counters, and a fingerprint of the problems that
        the draws index into."""
        return {"seed": self.seed, "problems": self._fingerprint(), "verifier_counters": dict(self.verifier.counters)}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["problems"] != self._fingerprint():
            log.warning(
                "resuming with another seed or problem set than the checkpoint's: the prompts drawn from now on "
                "differ from those of the original run"
            )
        self.verifier.counters.update(state["verifier_counters"])

    def _fingerprint(self) -> str:
        return hashlib.sha256("\n".join(p.id for p in self.problems).encode()).hexdigest()

    # --- one epoch of rollouts ---------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        steps = [[]] if self._resuming_after(epoch) else self.rollout(epoch)
        return DataLoader(steps, batch_size=None, shuffle=False, collate_fn=_identity)

    def _resuming_after(self, epoch: int) -> bool:
        """Resumed from a checkpoint written at the end of ``epoch``, Lightning first asks for that finished epoch's
        data, then reloads at once for the next: a placeholder step spares a whole epoch of generation."""
        progress = self.trainer.fit_loop.epoch_progress.current if self.trainer is not None else None
        return progress is not None and progress.processed > progress.completed == epoch

    def rollout(self, epoch: int) -> list[list[dict[str, torch.Tensor]]]:
        """Generate, verify, filter and batch one epoch. Returns one list of micro-batches per optimizer step."""
        timings = {"time/generate": 0.0, "time/verify": 0.0, "time/old_logp": 0.0}
        compared = sync_and_check(self.generator, self.policy, f" before the rollout of epoch {epoch}")
        rounds = self._generation_rounds(epoch, timings)
        self.generator.release()
        steps = self._mini_batches(rounds.kept, epoch)
        if len(steps) > 1:
            start = time.perf_counter()
            self._add_old_logp(steps)
            timings["time/old_logp"] = time.perf_counter() - start
        stats = {**self._stats(rounds, len(steps)), **timings}
        stats["rollout/sync_tensors_compared"] = float(compared.tensors)  # the weight-sync proof's reach
        stats["rollout/sync_elements_compared"] = float(compared.elements)
        samples = self._shown_samples(rounds.samples)
        self.report.rollout = RolloutReport(epoch, stats, samples)
        # Lightning ends `fit` on an empty epoch; an empty step keeps the run going and is counted instead.
        return steps or [[]]

    def _generation_rounds(self, epoch: int, timings: dict[str, float]) -> Rounds:
        """Draw, answer and filter until ``prompts_per_epoch`` groups are kept or the rounds run out."""
        rounds = Rounds()
        wanted, most_rounds = self.batch.prompts_per_epoch, self.dynamic_sampling.max_gen_rounds
        while rounds.count < most_rounds and len(rounds.kept_groups) < wanted:
            indices = self._draw(epoch, rounds.count, self.round_prompts, set(rounds.drawn))
            if not indices:
                break
            rounds.drawn += indices
            samples = self._answer(indices, epoch, rounds.count, timings)
            rounds.samples += samples
            usable = mixed_groups(samples) if self.dynamic_sampling.filter_groups else {s.group for s in samples}
            usable = set().union(*all_gather_objects(usable))
            # The first usable groups in draw order (a shuffle), as the reference's dynamic sampling keeps them.
            keep = [i for i in indices if i in usable][: wanted - len(rounds.kept_groups)]
            rounds.kept += [s for s in samples if s.group in set(keep)]
            rounds.kept_groups += keep
            rounds.count += 1
        return rounds

    def _draw(self, epoch: int, round_: int, count: int, exclude: set[int]) -> list[int]:
        candidates = [i for i in range(len(self.problems)) if i not in exclude]
        rng = random.Random(derive_seed(self.seed, "draw", epoch, round_))
        return rng.sample(candidates, min(count, len(candidates)))

    def _answer(self, indices: list[int], epoch: int, round_: int, timings: dict[str, float]) -> list[Sample]:
        """This rank's share of the answers to ``indices``, verified, as samples with their rewards and group stats."""
        seeds = [derive_seed(self.seed, "rollout", epoch, round_, i) for i in indices]
        answers, seconds = answer_problems(
            self.encoded,
            indices,
            seeds,
            self.batch.samples_per_prompt,
            self.sampling,
            self.generator,
            self.policy.tokenizer,
            self.verifier,
        )
        timings["time/generate"] += seconds["generate"]
        timings["time/verify"] += seconds["verify"]
        samples = [self._sample(answer) for answer in answers]
        set_group_stats(samples)
        return samples

    def _sample(self, answer: VerifiedAnswer) -> Sample:
        completion = answer.completion
        reward = answer.correct
        if self.loss_inputs.reward_shaping is not None:
            reward += self.loss_inputs.reward_shaping(len(completion.token_ids), self.sampling.max_new_tokens)
        return Sample(
            group=answer.index,
            prompt_ids=torch.as_tensor(self.prompt_ids[answer.index], dtype=torch.long),
            response_ids=completion.token_ids,
            behaviour_logp=completion.logprobs,
            correct=answer.correct,
            finish_reason=completion.finish_reason,
            loss_mask=not (self.loss_inputs.mask_truncated and completion.finish_reason == "length"),
            reward=reward,
            text=answer.text,
        )

    def _mini_batches(self, kept: list[Sample], epoch: int) -> list[list[dict[str, torch.Tensor]]]:
        """The steps of every rank's kept groups; this rank's micro-batches, padded to the most any rank has."""
        totals: dict[int, tuple[int, int]] = {}
        for rank_totals in all_gather_objects(group_totals(kept)):
            totals.update(rank_totals)
        seed = derive_seed(self.seed, "steps", epoch)
        steps = make_mini_batches(
            kept, self.batch.groups_per_step, self.batch.micro_batch_tokens, self._pad_id(), seed, totals
        )
        counts = [max(column) for column in zip(*all_gather_objects([len(step) for step in steps]), strict=True)]
        pad_micro_batches(steps, counts, self._pad_id())
        return steps

    def _pad_id(self) -> int:
        tokenizer = self.policy.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def _add_old_logp(self, steps: list[list[dict[str, torch.Tensor]]]) -> None:
        """With several optimizer steps per epoch, the ratio needs the log-probs of the policy that sampled: a forward
        pass of the training model, or (``data.loss_inputs.old_logp=behaviour``) the generator's own, which costs
        nothing."""
        batches = [b for micro_batches in steps for b in micro_batches]
        if self.loss_inputs.old_logp == "behaviour":
            for batch in batches:
                batch["old_logp"] = batch["behaviour_logp"]
            return
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            for batch in batches:
                on_device = {k: v.to(device) for k, v in batch.items()}
                batch["old_logp"] = self.policy.response_logprobs(on_device).float().cpu()
        finally:
            model.train(was_training)

    def _shown_samples(self, samples: list[Sample]) -> list[ShownSample]:
        """The first answer to each of the epoch's first prompts (this rank's), for the loggers."""
        first: dict[int, Sample] = {}
        for s in samples:
            first.setdefault(s.group, s)
        return [
            ShownSample(self.problems[g].problem, s.text, self.problems[g].answer, bool(s.correct))
            for g, s in list(first.items())[:SHOWN_SAMPLES]
        ]

    def _stats(self, rounds: Rounds, steps: int) -> dict[str, float]:
        """Rollout statistics over every rank's samples."""
        samples = rounds.samples
        local = [
            len(samples),
            len({s.group for s in samples}),
            sum(s.correct for s in samples),
            sum(len(s.response_ids) for s in samples),
            sum(s.finish_reason == "length" for s in samples),
            sum(s.reward for s in samples),
        ]
        gathered = (sum(c) for c in zip(*all_gather_objects(local), strict=True))
        answers, groups, correct, length, truncated, reward = gathered
        return {
            "rollout/accuracy": correct / max(1, answers),
            "rollout/reward": reward / max(1, answers),
            "rollout/filtered_frac": 1.0 - len(rounds.kept_groups) / max(1, groups),
            "rollout/response_length": length / max(1, answers),
            "rollout/truncated_frac": truncated / max(1, answers),
            "rollout/groups": float(len(rounds.kept_groups)),
            "rollout/gen_rounds": float(rounds.count),
            "rollout/steps": float(steps),
            "verify/timeouts": float(self.verifier.counters["timeouts"]),  # totals since the run started
            "verify/errors": float(self.verifier.counters["errors"]),
            "data/skipped_rows": float(sum(self.skipped_rows.values())),  # bad rows and long prompts
            "data/skipped_long_prompts": float(self.skipped_rows.get("prompt_tokens", 0)),
        }


def _identity(batch):
    return batch
