"""The paper's recipes, number for number against the reference code (NVlabs/NFT, commit ed8e5b0: train_7B.sh,
train_32B.sh, dp_actor.py, ray_nft_trainer.py, fsdp_workers.py). Each row: the key here, the reference's value, and
where the reference sets it (file and line). Derived checks: the warm-up schedule in optimizer steps, the effective
loss over the paper's data-parallel ranks at any world size here, the budget in the reference's units, the graders
(verifier.py's dispatch), the long-prompt filter on the shipped DAPO file, and the two offline protocols."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nft.data import ProblemFileError, PromptTemplate
from nft.data.datamodule import Rounds
from nft.eval import Evaluator
from nft.module import warmup_factor
from nft.plan import budget
from nft.verify import MathVerifier

from .conftest import CONF, ROOT, PolicyHandle, compose_train

# (key here, value, reference file:line, what the reference writes there)
SHARED = [
    ("optim.lr", 1e-6, 107, 114, "actor_rollout_ref.actor.optim.lr=1e-6"),
    ("optim.warmup_steps", 10, 108, 115, "actor_rollout_ref.actor.optim.lr_warmup_steps=10"),
    ("optim.weight_decay", 0.1, 109, 116, "actor_rollout_ref.actor.optim.weight_decay=0.1"),
    ("optim.grad_clip", 1.0, 114, 121, "actor_rollout_ref.actor.grad_clip=1.0"),
    ("data.batch.prompts_per_epoch", 512, 26, 22, "train_prompt_bsz=512"),
    ("data.dynamic_sampling.round_prompts", 1536, 27, 23, "gen_prompt_bsz=$((train_prompt_bsz * 3))"),
    ("data.batch.groups_per_step", 32, 28, 24, "train_prompt_mini_bsz=32"),
    ("data.batch.samples_per_prompt", 16, 29, 25, "n_resp_per_prompt=16"),
    ("data.dynamic_sampling.filter_groups", True, 23, 19, "enable_filter_groups=True"),
    ("data.dynamic_sampling.max_gen_rounds", 10, 25, 21, "max_num_gen_batches=10"),
    ("activation_checkpointing", True, 106, 113, "actor_rollout_ref.model.enable_gradient_checkpointing=True"),
    ("rollout.backend.tensor_parallel_size", 4, 65, 72, "gen_tp=4"),
    ("trainer.devices", 8, 135, 142, "trainer.n_gpus_per_node=8"),
    ("callbacks.benchmark_eval.eval_every", 2, 138, 145, "trainer.test_freq=2"),
    ("callbacks.benchmark_eval.at_start", False, 137, 144, "+trainer.val_before_train=False"),
    ("callbacks.checkpoint.every_n_epochs", 2, 139, 146, "trainer.save_freq=2"),
    ("benchmarks.aime24.temperature", 0.6, 123, 130, "actor_rollout_ref.rollout.val_kwargs.temperature=0.6"),
    ("benchmarks.aime24.top_p", 0.7, 122, 129, "actor_rollout_ref.rollout.val_kwargs.top_p=0.7"),
]
# (key, 7B value, 7B line, 32B value, 32B line, the reference's text)
DIFFERING = [
    ("model.max_prompt_tokens", 512, 46, 2048, 60, "max_prompt_length=$((512)) / $((1024 * 2))"),
    ("model.max_response_tokens", 3584, 47, 14336, 61, "max_response_length=$((4096-512)) / $((1024 * 14))"),
    (
        "data.batch.micro_batch_tokens",
        4096,
        63,
        16384,
        70,
        "actor_ppo_max_token_len=$((max_prompt_length + max_response_length))",
    ),
    ("rollout.backend.gpu_memory_utilization", 0.7, 117, 0.6, 124, "rollout.gpu_memory_utilization=0.70 / 0.60"),
]
# NFT's loss settings (train_7B.sh lines, train_32B.sh lines; the semantics are dp_actor.py's)
NFT_ROWS = [
    ("algo.neg_weight", 1.0, 52, 46, "neg_weight=1.0"),
    ("algo.ratio", "token", 53, 47, 'ratio_type="token"'),
    ("algo.neg_ratio_floor", 1.0, 56, 50, "clamp_negative=1.0"),
    ("algo.pos_ratio_floor", 0.0, 57, 51, "clamp_positive=0.0"),
    ("algo.prompt_weight", "dr_grpo", 58, 52, "normalize=1 (dp_actor.py: pg_losses * negative_rate)"),
    ("algo.correct_rate_clip", [0.02, 0.98], None, None, "dp_actor.py: torch.clamp(correct_rate, 0.02, 0.98)"),
]
DAPO_ROWS = [  # neg_weight=-1.0 in either script: verl's PPO-clip loss
    ("algo.clip_low", 0.2, 16, 16, "clip_ratio_low=0.2"),
    ("algo.clip_high", 0.28, 17, 17, "clip_ratio_high=0.28"),
    ("algo.kl_coef", 0.0, 13, 13, "kl_coef=0.0"),
]


def composed(experiment: str, *overrides: str):
    return compose_train([f"experiment={experiment}", *overrides])


def value(cfg, key: str):
    found = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(found) if OmegaConf.is_config(found) else found


@pytest.mark.parametrize("size", ["7b", "32b"])
def test_every_number_of_the_reference_scripts_that_has_a_counterpart(size):
    for recipe in (f"paper_{size}", f"paper_{size}_rft", f"paper_{size}_dapo"):
        cfg = composed(recipe)
        for key, expected, line_7b, line_32b, text in SHARED:
            assert value(cfg, key) == expected, (recipe, key, f"train_{size.upper()}.sh", line_7b, line_32b, text)
        for key, v7, l7, v32, l32, text in DIFFERING:
            assert value(cfg, key) == (v7 if size == "7b" else v32), (recipe, key, l7 if size == "7b" else l32, text)
        assert value(cfg, "trainer.max_epochs") == 320  # the paper's 320 rollout steps (section 5.1), not the cap of
        # total_training_steps = 11 x total_epochs=100 = 1,100 (the budget test)
    nft = composed(f"paper_{size}")
    for key, expected, *where, text in NFT_ROWS:
        assert value(nft, key) == expected, (key, where, text)
    rft = instantiate(composed(f"paper_{size}_rft").algo)
    assert (rft.neg_weight, rft.prompt_weight) == (0.0, "dr_grpo")  # neg_weight=0.0 keeps normalize=1's (1 - r)
    rft_text = instantiate(composed(f"paper_{size}_rft_text").algo)  # the paper's text: w(q) = 1
    assert (rft_text.neg_weight, rft_text.prompt_weight) == (0.0, "none")
    assert rft_text.settings | {"prompt_weight": "dr_grpo"} == rft.settings  # nothing else differs
    dapo = composed(f"paper_{size}_dapo")
    for key, expected, *where, text in DAPO_ROWS:
        assert value(dapo, key) == expected, (key, where, text)
    assert dapo.algo.std == "sample"  # verl's GRPO advantage: torch.std, n - 1
    shaping = dapo.data.loss_inputs.reward_shaping
    if size == "7b":
        assert shaping is None  # train_7B.sh:19 enable_overlong_buffer=False
    else:  # train_32B.sh:56-58, for neg_weight=-1.0: buffer 1024 * 4 of 1024 * 14 tokens, factor 1.0 on +-1 rewards
        assert shaping.buffer_frac * 14336 == pytest.approx(4096) and shaping.factor == 0.5


def reference_lr(step: int, lr: float = 1e-6, warmup: int = 10, steps_per_update: int = 16) -> float:
    """verl's get_constant_schedule_with_warmup (fsdp_workers.py), stepped once per actor update of 16 mini-batches:
    ``lr * u / warmup`` in update ``u < warmup`` (the first at 0), then ``lr``."""
    update = step // steps_per_update
    return lr * update / warmup if update < warmup else lr


@pytest.mark.parametrize("size", ["7b", "32b"])
def test_the_warm_up_counts_policy_iterations_and_starts_at_zero(size):
    cfg = composed(f"paper_{size}")
    per_iteration = cfg.data.batch.prompts_per_epoch // cfg.data.batch.groups_per_step
    assert per_iteration == 16 and cfg.optim.warmup_unit == "iteration"
    for step in (0, 80, 159, 160, 1000):
        ours = cfg.optim.lr * warmup_factor(step // per_iteration, cfg.optim.warmup_steps)
        assert ours == pytest.approx(reference_lr(step), rel=1e-12, abs=0), step
    assert [reference_lr(s) for s in (0, 80, 159, 160)] == pytest.approx([0.0, 0.5e-6, 0.9e-6, 1e-6])


def reference_rank_loss(logp, old_logp, mask, correct, rate):
    """dp_actor.py's NFT loss on one rank (ratio_type=token, normalize=1, clamp_negative=1.0, clamp_positive=0.0):
    per token, correct: -log(clamp_sg(R, 0)); wrong: -log(clamp_sg((1 - r R) / (1 - r), 1)); times (1 - r) for
    both; summed over the rank's tokens and divided by 1000 (use_dynamic_bsz, no other scaling)."""
    r = rate.clamp(0.02, 0.98)[:, None]
    ratio = (logp - old_logp).clamp(max=10.0).exp()
    proxy = (1.0 - r * ratio) / (1.0 - r)

    def clamp_sg(x, low):
        return x + (x.clamp(min=low) - x).detach()

    negative = -torch.log(clamp_sg(proxy, 1.0))
    positive = -torch.log(clamp_sg(ratio, 0.0))
    losses = (negative * (1.0 - correct[:, None]) + correct[:, None] * positive) * (1.0 - r)
    return (losses * mask).sum() / 1000.0


PAPER_RANKS = {"7b": 32, "32b": 128}  # the reference README: 7B runs on 4 x 8 H100s, 32B runs on 16 x 8


@pytest.mark.parametrize("size", ["7b", "32b"])
@pytest.mark.parametrize("world", [1, 4])
def test_one_step_over_w_ranks_gives_the_papers_effective_gradient(size, world):
    """The reference: sum / 1000 on each of the paper's ranks, then FSDP averages the ranks' gradients. Here: the ranks
    sum their gradients (nft.distributed) and the recipe's loss_norm is 1000 x the paper's ranks: the paper's update at
    any world size."""
    paper_ranks = PAPER_RANKS[size]
    for recipe in (f"paper_{size}", f"paper_{size}_rft", f"paper_{size}_rft_text"):
        loss_norm = instantiate(composed(recipe, f"trainer.devices={world}").algo).loss_norm
        assert loss_norm == 1000.0 * paper_ranks, recipe
    algorithm = instantiate(composed(f"paper_{size}", f"trainer.devices={world}").algo)
    assert algorithm.loss_agg == "token_sum_norm"
    g = torch.Generator().manual_seed(world)
    answers, width = paper_ranks * 2, 12
    lengths = torch.randint(3, width + 1, (answers,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).double()
    old_logp = -3 * torch.rand(answers, width, generator=g, dtype=torch.float64)
    logp = (old_logp + 0.3 * torch.randn(answers, width, generator=g, dtype=torch.float64)).requires_grad_()
    correct = (torch.rand(answers, generator=g) < 0.5).double()
    rate = torch.rand(answers, generator=g, dtype=torch.float64).clamp(0.1, 0.9)

    def shards(count):
        per_rank = answers // count
        return [slice(r * per_rank, (r + 1) * per_rank) for r in range(count)]

    ours = sum(algorithm.loss(logp[s], old_logp[s], mask[s], correct[s], rate[s])[0] for s in shards(world))
    (our_grad,) = torch.autograd.grad(ours, logp)
    paper = shards(paper_ranks)
    reference = sum(reference_rank_loss(logp[s], old_logp[s], mask[s], correct[s], rate[s]) for s in paper)
    (reference_grad,) = torch.autograd.grad(reference / paper_ranks, logp)
    torch.testing.assert_close(our_grad, reference_grad, rtol=1e-6, atol=0)
    assert our_grad.abs().sum() > 0


def test_the_planner_prints_the_budget_in_the_references_units():
    text = budget(composed("paper_7b"))
    # the paper's horizon: 320 rollout steps; the script's cap, 17,917 problems // 1,536 = 11 rounds a pass x
    # total_epochs=100 = 1,100 iterations (total_training_steps), is longer
    assert math.floor(17_917 / 1536) * 100 == 1100
    assert "policy iterations (epochs)                 320" in text
    assert "5,120  (16 per iteration" in text and "491,520 to 4,915,200" in text
    assert "10 iterations = 160 optimizer steps, the first at 0" in text
    assert "loss normaliser                         32,000" in text and "1,000 x 32 ranks" in text
    assert "loss normaliser                        128,000" in budget(composed("paper_32b"))
    assert "loss normaliser" not in budget(composed("paper_7b_dapo"))  # DAPO's token mean has no constant


def test_the_two_offline_evaluation_protocols_of_the_reference():
    """eval_local_7B.sh evaluates the 32B checkpoint (save_path=./NFT_32B: 8,192-token context, 1,024 of prompt,
    T=1.0), eval_local_32B.sh the 7B one (./NFT_7B: 4,096 and 512, T=0.6); both top-p 0.7, n_samples=1."""
    during = composed("paper_7b").benchmarks  # train_7B.sh:121-124: val_kwargs top_k=-1, top_p=0.7, T=0.6, n=1
    offline_32b = compose_train(["experiment=paper_32b", "benchmarks=paper_offline_32b"]).benchmarks
    offline_7b = compose_train(["experiment=paper_32b", "benchmarks=paper_offline_7b"]).benchmarks
    names = {"aime24", "aime25", "amc23", "math500", "minerva", "olympiad"}
    assert set(during) == set(offline_32b) == set(offline_7b) == names
    for name in names:
        assert (during[name].temperature, during[name].top_p, during[name].max_new_tokens) == (0.6, 0.7, 3584)
        assert (offline_32b[name].temperature, offline_32b[name].top_p, offline_32b[name].max_new_tokens) == (
            1.0,
            0.7,
            8192 - 1024,
        )
        assert (offline_7b[name].temperature, offline_7b[name].top_p, offline_7b[name].max_new_tokens) == (
            0.6,
            0.7,
            4096 - 512,
        )
        # the 32-times replicated AIME25 and AMC23 files, n=1: avg@32 here; one answer on the others
        expected_samples = 32 if name in ("aime24", "aime25", "amc23") else 1
        assert during[name].samples == offline_32b[name].samples == offline_7b[name].samples == expected_samples
        assert during[name].grader == offline_32b[name].grader == offline_7b[name].grader


REFERENCE_GRADERS = {  # verifier.py's dispatch on each validation file's data_source
    "aime24": "dapo_exact",  # aime-2024-boxed_w_answer: named as the *_dapo_boxed files (an inference)
    "aime25": "dapo_exact",  # aime_2025_dapo_boxed -> math_dapo.compute_score(strict_box_verify=True)
    "amc23": "dapo_exact",  # amc2023_dapo_boxed
    "math500": "math_verify_boxed_gold",  # math500 -> math_verify.compute_score (replaced by verifier.py's)
    "minerva": "math_verify_boxed_gold",  # minerva_math
    "olympiad": "math_verify_boxed_gold",  # olympiadbench
}
RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("paper_*b*.yaml") if "common" not in p.stem)


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_paper_recipes_train_and_evaluate_with_the_references_graders(recipe):
    cfg = composed(recipe)
    assert cfg.verifier.grader == "dapo_exact"  # dapo-math-17k_10boxed -> strict_box_verify=True
    assert {name: spec.grader for name, spec in cfg.benchmarks.items()} == REFERENCE_GRADERS
    assert (cfg.data.long_prompts, cfg.data.on_bad_row) == ("skip", "error")  # filter_overlong_prompts=True


def test_our_grader_stays_the_default_everywhere_else():
    default = compose_train([])
    assert default.verifier.grader == "default" and default.data.long_prompts == "error"
    single = compose_train(["experiment=paper_7b", "benchmarks=[math500,aime24]"]).benchmarks
    assert single.math500.grader is None and single.aime24.grader is None
    benchmarks = composed("paper_7b").benchmarks
    evaluator = Evaluator(benchmarks, PromptTemplate(), MathVerifier(num_workers=1))
    try:
        graders = {b.name: evaluator.verifier_for(b).grader for b in evaluator.benchmarks}
        assert graders == REFERENCE_GRADERS
        assert evaluator.verifier_for(evaluator.benchmarks[0]) is evaluator.verifier_for(evaluator.benchmarks[2])
        assert all(b.protocol()["grader"] == REFERENCE_GRADERS[b.name] for b in evaluator.benchmarks)
    finally:
        evaluator.close()
    plain = Evaluator(single, PromptTemplate(), MathVerifier(num_workers=1))
    assert all(plain.verifier_for(b) is plain.verifier and "grader" not in b.protocol() for b in plain.benchmarks)


def test_the_paper_recipes_data_setup_skips_and_counts_long_prompts_on_the_dapo_file(tokenizer, caplog):
    """paper_7b's data settings on the shipped DAPO file with the toy tokenizer (a byte each, so far more prompts
    are over 512 tokens than with Qwen's): long prompts are skipped and counted, apart from malformed rows."""
    cfg = composed("paper_7b")
    datamodule = instantiate(cfg.data, _partial_=True)(generator=None)
    datamodule.connect(PolicyHandle(None, tokenizer))
    with caplog.at_level(logging.WARNING, logger="nft.data.answers"):
        datamodule.setup()
    skipped = datamodule.encoded.skipped
    assert 0 < len(skipped) and len(skipped) + len(datamodule.problems) == 17_917
    assert datamodule.skipped_rows == {"prompt_tokens": len(skipped)}
    assert max(map(len, datamodule.prompt_ids)) <= 512
    assert min(map(len, datamodule.prompt.encode([p.problem for p in skipped], tokenizer))) > 512
    assert f"skipped {len(skipped)} rows whose prompt is over data.max_prompt_tokens=512" in caplog.text
    stats = datamodule._stats(Rounds(), 0)
    assert stats["data/skipped_long_prompts"] == stats["data/skipped_rows"] == len(skipped)


def test_the_paper_recipes_still_refuse_a_malformed_row(tmp_path, tokenizer):
    lines = (ROOT / "data/train/dapo_math_17k.jsonl").read_text().splitlines()[:600]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([*lines, json.dumps({"id": "bad", "problem": "What is 1+1?"})]) + "\n")
    datamodule = instantiate(composed("paper_7b", f"data.train_path={path}").data, _partial_=True)(generator=None)
    datamodule.connect(PolicyHandle(None, tokenizer))
    with pytest.raises(ProblemFileError, match=r"line 601, field 'answer': missing field 'answer'"):
        datamodule.setup()
