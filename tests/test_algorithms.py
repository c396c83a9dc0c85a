"""The losses, proven: each equals a naive per-token loop (values and gradients); on-policy NFT is GRPO / Dr.GRPO;
RFT ignores wrong answers; the edge cases give no NaN."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st

from nft.algorithms import DAPO, GRPO, NFT, RFT, DrGRPO
from nft.algorithms.aggregation import LOSS_AGGS
from nft.algorithms.correction import behaviour_weights
from nft.algorithms.grpo import group_advantage

from .conftest import compose_train

ALGOS = {"nft": NFT, "rft": RFT, "grpo": GRPO, "dr_grpo": DrGRPO, "dapo": DAPO}


# --- naive references: one Python loop over tokens, the formulas as written in the papers ------------------------
def naive_aggregate(terms: list[list[torch.Tensor]], loss_agg: str, loss_norm: float) -> torch.Tensor:
    """``terms[i]`` holds the loss of each counted token of answer i."""
    counted = [row for row in terms if row]
    if loss_agg == "token_mean":
        return sum(x for row in terms for x in row) / max(1, sum(len(row) for row in terms))
    if loss_agg == "token_sum_norm":
        return sum(x for row in terms for x in row) / loss_norm
    if loss_agg == "seq_mean_token_sum":
        return sum(sum(row) for row in counted) / max(1, len(counted))
    return sum(sum(row) / len(row) for row in counted) / max(1, len(counted))


def naive_behaviour_weight(old_logp, behaviour_logp, mask, i, t, correction, cap, level) -> float:
    """The behaviour correction's weight of token t of answer i, as nft.algorithms.correction defines it."""
    if correction == "none":
        return 1.0
    tokens = [u for u in range(mask.shape[1]) if mask[i, u]]
    pairs = tokens if level == "sequence" else [t]
    w = math.exp(min(sum(float(old_logp[i, u] - behaviour_logp[i, u]) for u in pairs), 10.0))
    if correction == "truncate":
        return min(w, cap)
    return w if w <= cap else 0.0


def straight_through_log(value: torch.Tensor, floor: float) -> torch.Tensor:
    """The reference code's ``log(clamp_preserve_grad(value, floor))``."""
    return torch.log(value + (torch.clamp(value, min=floor) - value).detach())


def naive_nft(
    logp,
    old_logp,
    mask,
    correct,
    rate,
    *,
    neg_weight=1.0,
    prompt_weight="dr_grpo",
    ratio="token",
    neg_ratio_floor=1.0,
    pos_ratio_floor=0.0,
    correct_rate_clip=(0.02, 0.98),
    loss_agg="token_mean",
    loss_norm=1000.0,
    behaviour_correction="none",
    behaviour_cap=2.0,
    behaviour_level="token",
    behaviour_logp=None,
):
    def weight(i, t):
        correction = (behaviour_correction, behaviour_cap, behaviour_level)
        return naive_behaviour_weight(old_logp, behaviour_logp, mask, i, t, *correction)

    terms = []
    for i in range(logp.shape[0]):
        r = min(max(float(rate[i]), correct_rate_clip[0]), correct_rate_clip[1])
        w = {"none": 1.0, "dr_grpo": 1 - r, "grpo": math.sqrt((1 - r) / r)}[prompt_weight]
        if correct[i] == 0:
            w *= neg_weight
        tokens = [t for t in range(logp.shape[1]) if mask[i, t]]

        def term(log_r, i=i, r=r, w=w):
            big_r = torch.exp(torch.clamp(log_r, max=10.0))
            if correct[i] == 1:
                return -w * straight_through_log(big_r, pos_ratio_floor)
            return -w * straight_through_log((1 - r * big_r) / (1 - r), neg_ratio_floor)

        if ratio == "token":
            terms.append([term(logp[i, t] - old_logp[i, t]) * weight(i, t) for t in tokens])
        else:  # one loss per answer, spread evenly over its tokens
            seq_loss = term(sum(logp[i, t] - old_logp[i, t] for t in tokens)) if tokens else None
            terms.append([seq_loss / len(tokens) * weight(i, t) for t in tokens])
    return naive_aggregate(terms, loss_agg, loss_norm)


def naive_grpo(
    logp,
    old_logp,
    mask,
    groups,
    rewards,
    *,
    clip_low=0.2,
    clip_high=0.2,
    std="population",
    loss_agg="seq_mean_token_mean",
    loss_norm=1.0,
    kl_coef=0.0,
    ref_logp=None,
    behaviour_correction="none",
    behaviour_cap=2.0,
    behaviour_level="token",
    behaviour_logp=None,
):
    terms = []
    for i in range(logp.shape[0]):
        members = [rewards[j] for j in range(len(groups)) if groups[j] == groups[i]]
        spread = {"population": statistics.pstdev(members), "sample": statistics.stdev(members), "none": 1.0}[std]
        advantage = (rewards[i] - statistics.fmean(members)) / max(spread, 1e-6)
        row = []
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            big_r = torch.exp(torch.clamp(logp[i, t] - old_logp[i, t], max=10.0))
            surrogate = torch.minimum(big_r * advantage, torch.clamp(big_r, 1 - clip_low, 1 + clip_high) * advantage)
            correction = (behaviour_correction, behaviour_cap, behaviour_level)
            loss = -surrogate * naive_behaviour_weight(old_logp, behaviour_logp, mask, i, t, *correction)
            if kl_coef:
                d = ref_logp[i, t] - logp[i, t]
                loss = loss + kl_coef * (torch.exp(d) - d - 1)
            row.append(loss)
        terms.append(row)
    return naive_aggregate(terms, loss_agg, loss_norm)


# --- random inputs -----------------------------------------------------------------------------------------------
def make_batch(group_sizes, correct_counts, width, seed, off_policy=1.0, dtype=torch.float64):
    """Groups of answers (the first ``c`` of each group correct), random lengths (some empty), random log-probs."""
    g = torch.Generator().manual_seed(seed)
    groups = [k for k, n in enumerate(group_sizes) for _ in range(n)]
    pairs = list(zip(group_sizes, correct_counts, strict=True))
    correct = torch.tensor([float(j < c) for n, c in pairs for j in range(n)], dtype=dtype)
    rate = torch.tensor([c / n for n, c in pairs for _ in range(n)], dtype=dtype)
    rows = len(groups)
    lengths = torch.randint(0, width + 1, (rows,), generator=g)
    lengths[0] = width  # at least one full row
    mask = (torch.arange(width)[None, :] < lengths[:, None]).to(dtype)
    old_logp = -3 * torch.rand(rows, width, generator=g, dtype=dtype)
    logp = old_logp + off_policy * torch.randn(rows, width, generator=g, dtype=dtype)
    return dict(logp=logp, old_logp=old_logp, mask=mask, correct=correct, rate=rate, groups=groups)


def grad_of(loss_fn, batch, **kwargs):
    logp = batch["logp"].clone().requires_grad_(True)
    loss = loss_fn(logp, **kwargs)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


NFT_SETTINGS = [
    {},
    {"prompt_weight": "grpo", "neg_ratio_floor": 0.3, "pos_ratio_floor": 0.8},
    {"prompt_weight": "none", "neg_weight": 0.5, "correct_rate_clip": (0.2, 0.7)},
    {"ratio": "sequence"},
    {"ratio": "sequence", "prompt_weight": "grpo", "neg_ratio_floor": 0.5},
]


@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
@pytest.mark.parametrize("setting", NFT_SETTINGS, ids=str)
def test_nft_equals_the_naive_loop(setting, loss_agg):
    batch = make_batch([4, 3, 5], [1, 2, 3], width=7, seed=len(str(setting)))
    batch["logp"][1, 2] = batch["old_logp"][1, 2] + 11  # beyond the log-ratio cap
    kwargs = dict(setting, loss_agg=loss_agg, loss_norm=13.0)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])

    def ours(logp):
        return NFT(**kwargs).loss(logp, *args)[0]

    def naive(logp):
        return naive_nft(logp, *args, **kwargs)

    value, grad = grad_of(ours, batch)
    naive_value, naive_grad = grad_of(naive, batch)
    torch.testing.assert_close(value, naive_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
@pytest.mark.parametrize(
    ("algo", "setting"),
    [
        (GRPO, {}),
        (GRPO, {"std": "sample", "clip_low": 0.1, "clip_high": 0.3}),
        (GRPO, {"kl_coef": 0.04}),
        (DrGRPO, {}),
        (DAPO, {}),
    ],
    ids=str,
)
def test_grpo_family_equals_the_naive_loop(algo, setting, loss_agg):
    batch = make_batch([4, 3, 5], [1, 2, 3], width=7, seed=3, off_policy=0.3)
    batch["logp"][1, 2] = batch["old_logp"][1, 2] + 11
    ref_logp = batch["old_logp"] + 0.2 * torch.randn_like(batch["old_logp"])
    algorithm = algo(**setting, loss_agg=loss_agg, loss_norm=13.0)
    naive_settings = dict(algorithm.settings)
    naive_settings.pop("std_eps")
    group_size = torch.tensor([float(batch["groups"].count(k)) for k in batch["groups"]], dtype=torch.float64)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])

    def ours(logp):
        return algorithm.loss(logp, *args, group_size=group_size, ref_logp=ref_logp)[0]

    def naive(logp):
        rewards = batch["correct"].tolist()
        return naive_grpo(logp, *args[:2], batch["groups"], rewards, **naive_settings, ref_logp=ref_logp)

    value, grad = grad_of(ours, batch)
    naive_value, naive_grad = grad_of(naive, batch)
    torch.testing.assert_close(value, naive_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)
    assert grad.abs().sum() > 0


def test_shaped_rewards_use_their_own_group_statistics():
    batch = make_batch([4, 4], [1, 3], width=5, seed=5, off_policy=0.3)
    rewards = (batch["correct"] - torch.tensor([0.0, 0.3, 0.1, 0.0, 0.5, 0.0, 0.2, 0.0], dtype=torch.float64)).tolist()
    groups = batch["groups"]
    stats = [[rewards[j] for j in range(8) if groups[j] == groups[i]] for i in range(8)]
    mean = torch.tensor([statistics.fmean(s) for s in stats], dtype=torch.float64)
    std = torch.tensor([statistics.pstdev(s) for s in stats], dtype=torch.float64)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    shaped = dict(reward=torch.tensor(rewards, dtype=torch.float64), reward_mean=mean, reward_std=std)
    for algorithm in (DAPO(), DrGRPO()):
        value, grad = grad_of(lambda logp, a=algorithm: a.loss(logp, *args, **shaped)[0], batch)
        settings_ = {k: v for k, v in algorithm.settings.items() if k != "std_eps"}
        naive = lambda logp, s=settings_: naive_grpo(logp, *args[:2], groups, rewards, **s)  # noqa: E731
        naive_value, naive_grad = grad_of(naive, batch)
        torch.testing.assert_close(value, naive_value, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)


def test_group_advantage_std_forms():
    correct = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    rate = torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0, 1.0])  # rows 0-3 are a group of 4 (one more right one not shown)
    population = group_advantage(correct, rate)
    assert population[0] == pytest.approx(0.75 / math.sqrt(0.25 * 0.75))
    assert population[4] == 0 and population[5] == 0  # an all-right group: std 0, advantage 0, no NaN
    size = torch.full((6,), 4.0)
    sample = group_advantage(correct, rate, std="sample", group_size=size)
    torch.testing.assert_close(sample, population * math.sqrt(3 / 4))
    torch.testing.assert_close(group_advantage(correct, rate, std="none"), correct - rate)
    with pytest.raises(ValueError, match="group_size"):
        group_advantage(correct, rate, std="sample")


# --- the paper's identities --------------------------------------------------------------------------------------
@st.composite
def groups_strategy(draw):
    sizes = draw(st.lists(st.integers(2, 8), min_size=1, max_size=4))
    counts = [draw(st.integers(1, n - 1)) for n in sizes]
    return sizes, counts, draw(st.integers(1, 12)), draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(groups_strategy(), st.sampled_from(LOSS_AGGS))
def test_on_policy_nft_gradient_equals_grpo_and_dr_grpo(case, loss_agg):
    sizes, counts, width, seed = case
    batch = make_batch(sizes, counts, width, seed)
    batch["old_logp"] = batch["logp"].clone()  # strictly on-policy: R = 1
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    agg = dict(loss_agg=loss_agg, loss_norm=7.0)
    pairs = [
        (NFT(prompt_weight="grpo", **agg), GRPO(**agg)),
        (NFT(prompt_weight="grpo", **agg), DAPO(**agg)),
        (NFT(prompt_weight="dr_grpo", **agg), DrGRPO(**agg)),
        (NFT(prompt_weight="grpo", ratio="sequence", **agg), GRPO(**agg)),
    ]
    for nft, grpo in pairs:
        _, nft_grad = grad_of(lambda logp, a=nft: a.loss(logp, *args)[0], batch)
        _, grpo_grad = grad_of(lambda logp, a=grpo: a.loss(logp, *args)[0], batch)
        scale = grpo_grad.abs().max()
        assert scale > 0
        torch.testing.assert_close(nft_grad, grpo_grad, rtol=1e-6, atol=1e-6 * float(scale))


def test_rft_gradient_on_wrong_answers_is_exactly_zero():
    batch = make_batch([4, 6], [1, 4], width=9, seed=7)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    for algorithm in (RFT(), RFT(prompt_weight="dr_grpo", ratio="sequence", loss_agg="seq_mean_token_mean")):
        _, grad = grad_of(lambda logp, a=algorithm: a.loss(logp, *args)[0], batch)
        wrong = batch["correct"] == 0
        assert torch.equal(grad[wrong], torch.zeros_like(grad[wrong]))
        assert (grad[~wrong] != 0).any()
    _, nft_grad = grad_of(lambda logp: NFT().loss(logp, *args)[0], batch)
    assert (nft_grad[batch["correct"] == 0] != 0).any()


def test_sequence_ratio_matches_token_ratio_on_correct_answers():
    """Without clamps, -log of a product of token ratios is the sum of the token losses: same value and gradient."""
    batch = make_batch([5], [5], width=6, seed=11, off_policy=0.3)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    for loss_agg in LOSS_AGGS:
        token = grad_of(lambda logp, a=loss_agg: RFT(loss_agg=a).loss(logp, *args)[0], batch)
        sequence = grad_of(lambda logp, a=loss_agg: RFT(loss_agg=a, ratio="sequence").loss(logp, *args)[0], batch)
        torch.testing.assert_close(token, sequence, rtol=1e-10, atol=1e-12)


# --- metrics and edge cases --------------------------------------------------------------------------------------
def test_nft_metrics_parts_sum_to_the_loss_and_count_clamped_negatives():
    batch = make_batch([4, 4], [1, 3], width=6, seed=2)
    batch["logp"][1] = batch["old_logp"][1] + 3.0  # a wrong answer made far more likely: (1 - r R) < 0 -> floor
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    loss, metrics = NFT().loss(batch["logp"], *args)
    torch.testing.assert_close(metrics["pos_loss"] + metrics["neg_loss"], loss)
    assert 0 < metrics["neg_clamped_frac"] < 1
    negative_tokens = batch["mask"][batch["correct"] == 0].sum()
    assert metrics["neg_clamped_frac"] * negative_tokens >= batch["mask"][1].sum()
    assert metrics["entropy"] > 0 and metrics["ratio"] > 0
    _, grpo_metrics = GRPO().loss(batch["logp"], *args)
    assert set(grpo_metrics) >= {"ratio", "clip_frac", "pos_loss", "neg_loss", "entropy"}
    assert 0 < grpo_metrics["clip_frac"] < 1


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_edge_cases_give_finite_losses_and_gradients(name):
    """All-right and all-wrong groups, an empty row, -inf log-probs on padding: finite loss, finite gradient."""
    batch = make_batch([3, 3, 4], [0, 3, 2], width=6, seed=1, dtype=torch.float32)
    batch["mask"][7] = 0  # an empty row
    batch["logp"][batch["mask"] == 0] = -torch.inf
    batch["old_logp"][batch["mask"] == 0] = -torch.inf
    algorithm = ALGOS[name]()
    logp = batch["logp"].clone().requires_grad_(True)
    loss, metrics = algorithm.loss(logp, batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert torch.equal(logp.grad[7], torch.zeros_like(logp.grad[7]))


def test_minus_inf_on_a_counted_token_of_a_correct_answer_is_not_finite_for_nft():
    """The module skips (and counts) such a step; the loss must not hide it as a finite number."""
    batch = make_batch([4], [2], width=5, seed=4, dtype=torch.float32)
    batch["logp"][0, 0] = -torch.inf
    loss, _ = NFT().loss(batch["logp"], batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    assert not torch.isfinite(loss)


# --- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALGOS))
def test_every_algo_config_instantiates_its_class(name):
    algorithm = instantiate(compose_train([f"algo={name}"]).algo)
    assert type(algorithm) is ALGOS[name]
    assert not algorithm.needs_reference
    batch = make_batch([4], [1], width=3, seed=0, dtype=torch.float32)
    loss, _ = algorithm.loss(batch["logp"], batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_dapo_config_turns_on_dynamic_sampling_and_overlong_shaping():
    cfg = compose_train(["algo=dapo"])
    assert cfg.data.dynamic_sampling.filter_groups and cfg.data.dynamic_sampling.max_gen_rounds > 1
    shaping = instantiate(cfg.data.loss_inputs.reward_shaping)
    assert shaping(100, 100) == -0.5 and shaping(80, 100) == 0.0  # DAPO's ramp over the last 20%, 0.5 at the limit
    assert compose_train(["algo=grpo"]).data.loss_inputs.reward_shaping is None
    assert instantiate(compose_train(["algo=grpo", "algo.kl_coef=0.04"]).algo).needs_reference


@pytest.mark.parametrize(
    ("algo", "kwargs", "key"),
    [
        (NFT, {"prompt_weight": "sqrt"}, "algo.prompt_weight"),
        (NFT, {"ratio": "answer"}, "algo.ratio"),
        (NFT, {"neg_ratio_floor": 0.0}, "algo.neg_ratio_floor"),
        (NFT, {"correct_rate_clip": (0.0, 1.0)}, "algo.correct_rate_clip"),
        (NFT, {"loss_agg": "mean"}, "algo.loss_agg"),
        (GRPO, {"std": "unbiased"}, "algo.std"),
        (GRPO, {"clip_low": 1.5}, "algo.clip_low"),
        (DrGRPO, {"loss_norm": 0}, "algo.loss_norm"),
    ],
)
def test_bad_settings_name_their_key(algo, kwargs, key):
    with pytest.raises(ValueError, match=key):
        algo(**kwargs)


def test_loss_refuses_an_unknown_input():
    batch = make_batch([2], [1], width=3, seed=0)
    args = (batch["logp"], batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    NFT().loss(*args, reward=batch["correct"], ref_logp=batch["logp"])  # known ones, unused by NFT: ignored
    with pytest.raises(TypeError, match="num_token"):
        GRPO().loss(*args, num_token=3)


# --- behaviour correction (truncated / masked importance sampling) ------------------------------------------------
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("correction", ["truncate", "mask"])
@pytest.mark.parametrize(
    ("algo", "setting"),
    [
        (NFT, {}),
        (NFT, {"ratio": "sequence", "prompt_weight": "grpo"}),
        (RFT, {}),
        (GRPO, {"kl_coef": 0.04}),
        (DAPO, {}),
    ],
    ids=str,
)
def test_behaviour_correction_equals_the_naive_loop(algo, setting, correction, level):
    batch = make_batch([4, 3, 5], [1, 2, 3], width=7, seed=11, off_policy=0.3)
    g = torch.Generator().manual_seed(5)
    behaviour = batch["old_logp"] + 0.6 * torch.randn(batch["old_logp"].shape, generator=g, dtype=torch.float64)
    ref_logp = batch["old_logp"] + 0.2 * torch.randn(batch["old_logp"].shape, generator=g, dtype=torch.float64)
    cap = 1.5 if level == "token" else 3.0
    algorithm = algo(**setting, behaviour_correction=correction, behaviour_cap=cap, behaviour_level=level)
    args = (batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    extra = {"behaviour_logp": behaviour, "ref_logp": ref_logp}

    def ours(logp):
        return algorithm.loss(logp, *args, **extra)[0]

    def naive(logp):
        settings_ = {k: v for k, v in algorithm.settings.items() if k != "std_eps"}
        if isinstance(algorithm, NFT):
            return naive_nft(logp, *args, **settings_, behaviour_logp=behaviour)
        rewards = batch["correct"].tolist()
        return naive_grpo(logp, *args[:2], batch["groups"], rewards, **settings_, **extra)

    value, grad = grad_of(ours, batch)
    naive_value, naive_grad = grad_of(naive, batch)
    torch.testing.assert_close(value, naive_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-10, atol=1e-12)
    _, metrics = algorithm.loss(batch["logp"], *args, **extra)
    assert 0 < metrics["behaviour_capped_frac"] < 1  # the cap acts on some tokens, not all
    weights = behaviour_weights(batch["old_logp"], behaviour, batch["mask"], correction, cap, level)
    assert weights.max() <= cap and (weights[batch["mask"] == 0] == 0).all()  # bounded, and nothing on padding


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_behaviour_correction_off_changes_nothing_bit_for_bit(name):
    batch = make_batch([4, 3], [1, 2], width=6, seed=2, off_policy=0.3)
    args = (batch["logp"], batch["old_logp"], batch["mask"], batch["correct"], batch["rate"])
    algorithm = ALGOS[name]()
    assert algorithm.behaviour_correction == "none"
    plain, _ = algorithm.loss(*args)
    given, _ = algorithm.loss(*args, behaviour_logp=batch["old_logp"] - 1.0)  # far off: ignored when off
    assert torch.equal(plain, given)
    with pytest.raises(ValueError, match="algo.behaviour_correction"):
        ALGOS[name](behaviour_correction="clip")
    with pytest.raises(ValueError, match="needs `behaviour_logp`"):
        ALGOS[name](behaviour_correction="truncate").loss(*args)
