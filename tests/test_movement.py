"""The policy-movement statistics (nft.algorithms.movement) on constructed shifts whose values are known."""

import math

import torch

from nft.algorithms.movement import FAR_LOG_RATIO, policy_movement


def test_exact_values_on_chosen_log_ratios():
    log_ratio = torch.tensor([[0.0, 0.1, -0.3, 0.5], [math.log(2.0), 0.0, 7.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])  # masked tokens (even an extreme one) do not count
    old_logp = torch.full_like(log_ratio, -2.0)
    got = policy_movement(old_logp + log_ratio, old_logp, mask)
    kept = torch.tensor([0.0, 0.1, -0.3, 0.5, math.log(2.0)], dtype=torch.float64)
    ratio = kept.exp()
    assert math.isclose(got["move_abs"].item(), (ratio - 1).abs().mean().item(), rel_tol=1e-5)
    assert math.isclose(got["move_kl"].item(), (ratio - 1 - kept).mean().item(), rel_tol=1e-5)
    assert math.isclose(got["move_far_frac"].item(), 3 / 5, rel_tol=1e-6)  # -0.3, 0.5 and log 2 lie beyond 0.2


def test_sampled_tokens_estimate_the_true_shift():
    """Tokens sampled from a known old policy p, scored under a known new one q: the statistics estimate
    sum |q - p|, KL(p || q) and p(|log q/p| > 0.2); the mean ratio stays at 1 however far q is from p."""
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(12, generator=generator), 0).double()
    q = torch.softmax(p.log() + 0.8 * torch.randn(12, generator=generator).double(), 0)
    tokens = torch.multinomial(p, 400_000, replacement=True, generator=generator).view(400, 1000)
    got = policy_movement(q.log()[tokens], p.log()[tokens], torch.ones_like(tokens))
    far = (q / p).log().abs() > FAR_LOG_RATIO
    assert 0.05 < (q - p).abs().sum() and 0.05 < far.double() @ p < 0.95  # the shift is neither nil nor total
    assert math.isclose(got["move_abs"].item(), (q - p).abs().sum().item(), rel_tol=0.02)
    assert math.isclose(got["move_kl"].item(), (p * (p / q).log()).sum().item(), rel_tol=0.03)
    assert math.isclose(got["move_far_frac"].item(), (far.double() @ p).item(), abs_tol=0.005)
    assert math.isclose((q / p)[tokens].mean().item(), 1.0, abs_tol=0.01)


def test_no_movement_on_policy():
    logp = torch.randn(3, 5)
    got = policy_movement(logp, logp, torch.ones(3, 5))
    assert all(value.item() == 0 for value in got.values())
