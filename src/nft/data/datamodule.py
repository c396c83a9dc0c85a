"""OnlineMathDataModule: each epoch, the current policy answers fresh prompts and the answers become the batch.

``train_dataloader`` (called every epoch: ``reload_dataloaders_every_n_epochs=1``) draws the epoch's prompts from a
generator seeded by ``(seed, epoch, round)``, so a resumed run draws the same ones; syncs the policy into the rollout
backend; samples ``samples_per_prompt`` answers per prompt; verifies them; keeps the groups with both right and wrong
answers (drawing more prompts, up to ``max_gen_rounds`` rounds, until ``prompts_per_epoch`` groups are kept); computes
``old_logp`` when the epoch takes more than one optimizer step; and returns one mini-batch per optimizer step.

With several ranks (``trainer=fsdp``), every rank draws the same prompts and generates for its share of them
(``nft.distributed.RolloutShard``: whole groups, so a group's statistics are its own rank's); the ranks exchange only
the ids and token counts of their usable groups, so the groups kept, the steps they form and each step's totals are
exactly those of one process with the same prompts. Each prompt's answers are sampled from a seed of its own
(``_prompt_seed``), so they do not depend on how the prompts are split across ranks either.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from nft.data.batching import (
    Sample,
    group_totals,
    make_mini_batches,
    mixed_groups,
    pad_micro_batches,
    set_group_stats,
)
from nft.data.problems import Problem, ProblemFileError, ProblemSet, load_problems
from nft.data.prompts import PromptTemplate
from nft.data.rewards import overlong_penalty
from nft.distributed import all_gather_objects, rollout_shard
from nft.rollout.base import Generator, SamplingParams
from nft.verify import MathVerifier

log = logging.getLogger(__name__)

SHOWN_SAMPLES = 8  # decoded answers kept per epoch for the loggers (nft.eval.RolloutSamples)


class OnlineMathDataModule(L.LightningDataModule):
    """Args:
    train_path: JSONL/Parquet problem file (``id``, ``problem``, ``answer``) or a hub dataset name.
    prompt: how a problem becomes the prompt. generator: the rollout backend. verifier: scores answers.
    sampling: sampling settings for training rollouts.
    prompts_per_epoch: groups wanted per epoch. samples_per_prompt: answers per prompt (the group size).
    groups_per_step: groups per optimizer step (mini-batch). micro_batch_tokens: padded-token budget per forward.
    max_prompt_tokens: longer prompts are an error (or skipped with ``on_bad_row=skip``).
    filter_groups: drop all-right/all-wrong groups. max_gen_rounds: generation rounds to refill filtered groups.
    mask_truncated: leave answers cut at the length limit out of the loss.
    overlong_buffer_frac, overlong_penalty_factor: DAPO's overlong reward shaping (``nft.data.rewards``): the buffer
        before the length limit, as a fraction of ``sampling.max_new_tokens``, and the penalty at the limit.
    columns: maps ``id``/``problem``/``answer`` to the file's column names.
    old_logp: with several optimizer steps per epoch, ``recompute`` the sampling policy's log-probs with the training
        model (as verl; exact) or take the generator's ``behaviour`` log-probs (no extra forward; equal to float
        precision with the transformers backend, close but not equal with vLLM's kernels and dtypes).
    """

    def __init__(
        self,
        train_path: str,
        prompt: PromptTemplate,
        generator: Generator,
        verifier: MathVerifier,
        sampling: SamplingParams,
        prompts_per_epoch: int = 64,
        samples_per_prompt: int = 8,
        groups_per_step: int = 64,
        micro_batch_tokens: int = 16384,
        max_prompt_tokens: int = 512,
        filter_groups: bool = True,
        max_gen_rounds: int = 1,
        mask_truncated: bool = False,
        overlong_buffer_frac: float = 0.0,
        overlong_penalty_factor: float = 0.0,
        on_bad_row: str = "error",
        columns: dict | None = None,
        seed: int = 0,
        old_logp: str = "recompute",
    ) -> None:
        super().__init__()
        if samples_per_prompt < 2 and filter_groups:
            raise ValueError("data.samples_per_prompt must be >= 2 when filter_groups is on (a group needs both kinds)")
        if groups_per_step < 1 or prompts_per_epoch < 1 or max_gen_rounds < 1:
            raise ValueError("data.prompts_per_epoch, data.groups_per_step and data.max_gen_rounds must be >= 1")
        if not (0 <= overlong_buffer_frac < 1 and overlong_penalty_factor >= 0):
            raise ValueError(
                "data.overlong_buffer_frac must be in [0, 1) and data.overlong_penalty_factor >= 0, got "
                f"{overlong_buffer_frac} and {overlong_penalty_factor}"
            )
        if old_logp not in ("recompute", "behaviour"):
            raise ValueError(f"data.old_logp must be 'recompute' or 'behaviour', got {old_logp!r}")
        self.old_logp = old_logp
        self.train_path = train_path
        self.prompt = prompt
        self.generator = generator
        self.verifier = verifier
        self.sampling = sampling
        self.prompts_per_epoch = prompts_per_epoch
        self.samples_per_prompt = samples_per_prompt
        self.groups_per_step = groups_per_step
        self.micro_batch_tokens = micro_batch_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.filter_groups = filter_groups
        self.max_gen_rounds = max_gen_rounds
        self.mask_truncated = mask_truncated
        self.overlong_buffer = round(overlong_buffer_frac * sampling.max_new_tokens)
        self.overlong_penalty_factor = overlong_penalty_factor
        self.on_bad_row = on_bad_row
        self.columns = columns
        self.seed = seed
        self.module = None
        self.problems: list[Problem] = []
        self.prompt_ids: list[list[int]] = []
        self.epoch_stats: dict[str, float] = {}
        self.shown_samples: list[dict] = []  # the first answer to each of the epoch's first prompts, decoded
        self.skipped_rows: dict[str, int] = {}  # bad rows skipped (on_bad_row=skip), by field

    def connect(self, module) -> None:
        """Late binding of the policy: its tokenizer encodes prompts, its weights are synced into the generator."""
        self.module = module

    def setup(self, stage: str | None = None) -> None:
        if self.problems:
            return
        if self.module is None:
            raise RuntimeError("OnlineMathDataModule.connect(module) must be called before setup")
        problem_set = load_problems(self.train_path, columns=self.columns, on_bad_row=self.on_bad_row)
        self.problems, self.prompt_ids = self._encode_prompts(problem_set)
        if len(self.problems) < self.prompts_per_epoch:
            raise ValueError(
                f"{problem_set.source}: {len(self.problems)} usable problems, fewer than "
                f"data.prompts_per_epoch={self.prompts_per_epoch}"
            )

    def _encode_prompts(self, problem_set: ProblemSet) -> tuple[list[Problem], list[list[int]]]:
        """The problems whose prompt fits ``max_prompt_tokens``, and their prompt token ids."""
        encoded = self.prompt.encode([p.problem for p in problem_set.problems], self.module.tokenizer)
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_prompt_tokens]
        field = (self.columns or {}).get("problem", "problem")
        if too_long and self.on_bad_row == "error":
            p = problem_set.problems[too_long[0]]
            raise ProblemFileError(
                f"{problem_set.source}, line {p.line}, field '{field}': the prompt of problem {p.id!r} is "
                f"{len(encoded[too_long[0]])} tokens, over data.max_prompt_tokens={self.max_prompt_tokens} "
                f"({len(too_long)} such rows; raise model.max_prompt_tokens or set data.on_bad_row=skip)"
            )
        self.skipped_rows = dict(problem_set.skipped)
        if too_long:
            lines = ", ".join(str(problem_set.problems[i].line) for i in too_long[:10])
            more = ", ..." if len(too_long) > 10 else ""
            log.warning(
                "%s: skipped %d rows whose prompt is over data.max_prompt_tokens=%d (field '%s', lines %s%s)",
                problem_set.source,
                len(too_long),
                self.max_prompt_tokens,
                field,
                lines,
                more,
            )
            self.skipped_rows["prompt_tokens"] = len(too_long)
        skip = set(too_long)
        keep = [i for i in range(len(encoded)) if i not in skip]
        return [problem_set.problems[i] for i in keep], [encoded[i] for i in keep]

    # --- checkpoint state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a resumed run needs beyond the (seed, epoch, round) seeds: the verifier's counters, and a fingerprint
        of the problems that the draws index into."""
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
        self.generator.sync(self.module)
        self.shown_samples = []
        kept: list[Sample] = []  # this rank's samples of the kept groups
        kept_groups: set[int] = set()  # every rank's kept groups
        all_samples: list[Sample] = []
        drawn: set[int] = set()
        rounds = 0
        while rounds < self.max_gen_rounds and len(kept_groups) < self.prompts_per_epoch:
            wanted = self.prompts_per_epoch - len(kept_groups)
            indices = self._draw(epoch, rounds, wanted if rounds == 0 else self.prompts_per_epoch, exclude=drawn)
            if not indices:
                break
            drawn.update(indices)
            samples = self._generate_and_verify(indices, epoch, rounds, timings)
            all_samples += samples
            usable = mixed_groups(samples) if self.filter_groups else {s.group for s in samples}
            usable = set().union(*all_gather_objects(usable))
            keep_groups = set(sorted(usable)[: self.prompts_per_epoch - len(kept_groups)])
            kept += [s for s in samples if s.group in keep_groups]
            kept_groups |= keep_groups
            rounds += 1
        self.generator.release()
        steps = self._mini_batches(kept, epoch)
        if len(steps) > 1:
            start = time.perf_counter()
            self._add_old_logp(steps)
            timings["time/old_logp"] = time.perf_counter() - start
        self.epoch_stats = self._stats(all_samples, kept_groups, rounds, len(steps), timings)
        # Lightning ends `fit` on an empty epoch; an empty step keeps the run going and is counted instead.
        return steps or [[]]

    def _mini_batches(self, kept: list[Sample], epoch: int) -> list[list[dict[str, torch.Tensor]]]:
        """The steps of every rank's kept groups; this rank's micro-batches, padded to the most any rank has."""
        totals: dict[int, tuple[int, int]] = {}
        for rank_totals in all_gather_objects(group_totals(kept)):
            totals.update(rank_totals)
        steps = make_mini_batches(
            kept, self.groups_per_step, self.micro_batch_tokens, self._pad_id(), self._seed(epoch, 0), totals
        )
        counts = [max(column) for column in zip(*all_gather_objects([len(step) for step in steps]), strict=True)]
        pad_micro_batches(steps, counts, self._pad_id())
        return steps

    def _draw(self, epoch: int, round_: int, count: int, exclude: set[int]) -> list[int]:
        candidates = [i for i in range(len(self.problems)) if i not in exclude]
        rng = random.Random(self._seed(epoch, round_))
        return rng.sample(candidates, min(count, len(candidates)))

    def _seed(self, epoch: int, round_: int) -> int:
        return (self.seed * 1_000_003 + epoch) * 1009 + round_

    def _prompt_seed(self, epoch: int, round_: int, index: int) -> int:
        """The sampling seed of problem ``index``'s answers: the same whichever rank or batch generates them."""
        return self._seed(epoch, round_) * 1_000_033 + index

    def _pad_id(self) -> int:
        tokenizer = self.module.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _generate_and_verify(
        self, indices: list[int], epoch: int, round_: int, timings: dict[str, float]
    ) -> list[Sample]:
        """Answer this rank's share of ``indices`` and verify the answers to the prompts it owns."""
        shard = rollout_shard(self.generator.tensor_parallel_size)
        share = shard.take(indices)
        start = time.perf_counter()
        completions = self.generator.generate(
            [self.prompt_ids[i] for i in share],
            self.samples_per_prompt,
            self.sampling,
            [self._prompt_seed(epoch, round_, i) for i in share],
        )
        timings["time/generate"] += time.perf_counter() - start
        start = time.perf_counter()
        owned = [(i, group) for j, (i, group) in enumerate(zip(share, completions, strict=True)) if shard.owns(j)]
        flat = [(i, c) for i, group in owned for c in group]
        texts = self.module.tokenizer.batch_decode([c.token_ids for _, c in flat], skip_special_tokens=True)
        scores = self.verifier.score(texts, [self.problems[i].answer for i, _ in flat])
        timings["time/verify"] += time.perf_counter() - start
        self._keep_shown_samples([i for i, _ in flat], texts, scores)
        max_length, penalty_factor = self.sampling.max_new_tokens, self.overlong_penalty_factor
        samples = [
            Sample(
                group=i,
                prompt_ids=torch.as_tensor(self.prompt_ids[i], dtype=torch.long),
                response_ids=c.token_ids,
                behaviour_logp=c.logprobs,
                correct=score,
                finish_reason=c.finish_reason,
                loss_mask=not (self.mask_truncated and c.finish_reason == "length"),
                reward=score + overlong_penalty(len(c.token_ids), max_length, self.overlong_buffer, penalty_factor),
            )
            for (i, c), score in zip(flat, scores, strict=True)
        ]
        set_group_stats(samples)
        return samples

    def _keep_shown_samples(self, indices: list[int], texts: list[str], scores: list[float]) -> None:
        """Keep the first answer to each prompt, up to SHOWN_SAMPLES an epoch, for the loggers."""
        room = SHOWN_SAMPLES - len(self.shown_samples)
        for i, text, score in list(zip(indices, texts, scores, strict=True))[:: self.samples_per_prompt][:room]:
            problem = self.problems[i]
            self.shown_samples.append(
                {"problem": problem.problem, "response": text, "answer": problem.answer, "correct": bool(score)}
            )

    @torch.no_grad()
    def _add_old_logp(self, steps: list[list[dict[str, torch.Tensor]]]) -> None:
        """With several optimizer steps per epoch, the ratio needs the log-probs of the policy that sampled: a forward
        pass of the training model, or (``data.old_logp=behaviour``) the generator's own, which costs nothing."""
        if self.old_logp == "behaviour":
            for batch in (b for micro_batches in steps for b in micro_batches):
                batch["old_logp"] = batch["behaviour_logp"]
            return
        module = self.module
        was_training = module.model.training
        module.model.eval()
        try:
            for micro_batches in steps:
                for batch in micro_batches:
                    on_device = {k: v.to(module.device) for k, v in batch.items()}
                    batch["old_logp"] = module.response_logprobs(on_device).float().cpu()
        finally:
            module.model.train(was_training)

    def _stats(self, all_samples, kept_groups, rounds, steps, timings) -> dict[str, float]:
        """Rollout statistics over every rank's samples; timings are this rank's."""
        local = [
            len(all_samples),
            len({s.group for s in all_samples}),
            sum(s.correct for s in all_samples),
            sum(len(s.response_ids) for s in all_samples),
            sum(s.finish_reason == "length" for s in all_samples),
            sum(s.reward for s in all_samples),
        ]
        gathered = (sum(c) for c in zip(*all_gather_objects(local), strict=True))
        answers, groups, correct, length, truncated, reward = gathered
        return {
            "rollout/accuracy": correct / max(1, answers),
            "rollout/reward": reward / max(1, answers),
            "rollout/filtered_frac": 1.0 - len(kept_groups) / max(1, groups),
            "rollout/response_length": length / max(1, answers),
            "rollout/truncated_frac": truncated / max(1, answers),
            "rollout/groups": float(len(kept_groups)),
            "rollout/gen_rounds": float(rounds),
            "rollout/steps": float(steps),
            "verify/timeouts": float(self.verifier.counters["timeouts"]),  # totals since the run started
            "verify/errors": float(self.verifier.counters["errors"]),
            "data/skipped_rows": float(sum(self.skipped_rows.values())),
            **timings,
        }


def _identity(batch):
    return batch
