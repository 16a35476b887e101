"""Closed-form Gaussian mixtures: the true score has zero score-FPE residual at every t."""
import pytest
import torch
from torch.func import jvp

import scorepde as sp


def _points(n=64, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, 2, generator=g, dtype=dtype)
    t = 0.01 + 0.99 * torch.rand(n, generator=g, dtype=dtype)
    return x, t


def test_score_is_gradient_of_log_prob(gmm2, sde):
    x, t = _points()
    x.requires_grad_(True)
    auto = torch.autograd.grad(gmm2.log_prob(x, t, sde).sum(), x)[0]
    torch.testing.assert_close(gmm2.score(x, t, sde), auto, rtol=1e-10, atol=1e-12)


def test_true_score_has_zero_residual(gmm2, sde):
    """ε[∇ log q_t] = 0 to float64 round-off, relative to ‖∂t s‖ (Eq. 9)."""
    x, t = _points()
    model = lambda x, t: gmm2.score(x, t, sde)
    eps = sp.residual(model, sde, x, t, "exact")
    dt_s = sp.time_derivative(model, x, t)
    rel = eps.norm(dim=1) / dt_s.norm(dim=1).clamp_min(1e-300)
    assert rel.max() < 1e-9, rel.max()
    # The check can fail: the score of the right density at the wrong time solves no FPE.
    bad = sp.residual(lambda x, t: gmm2.score(x, 0.9 * t, sde), sde, x, t)
    assert (bad.norm(dim=1) / dt_s.norm(dim=1)).max() > 1e-3


def test_log_density_satisfies_fpe(gmm2, sde):
    """∂t log q_t = L[∇ log q_t] (Eq. 7)."""
    x, t = _points(seed=1)
    dt_log_q = jvp(lambda tt: gmm2.log_prob(x, tt, sde), (t,), (torch.ones_like(t),))[1]
    rhs = sp.fpe_rhs(lambda x, t: gmm2.score(x, t, sde), sde, x, t)
    torch.testing.assert_close(rhs, dt_log_q, rtol=1e-9, atol=1e-9)


def test_float32_and_higher_dims():
    sde = sp.VPSDE()
    g = sp.GaussianMixture(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 3,
                           [0.5, 1.0, 0.7, 1.3], [0.1, 0.2, 0.3, 0.4])
    x = torch.randn(32, 5)
    t = torch.rand(32) * 0.9 + 0.05
    model = lambda x, t: g.score(x, t, sde)
    eps = sp.residual(model, sde, x, t)
    assert eps.dtype == torch.float32
    assert (eps.norm(dim=1) / sp.time_derivative(model, x, t).norm(dim=1)).max() < 1e-3


def test_sampling_matches_moments(gmm2):
    """Sample mean and second moment agree with Σ w μ and Σ w (s² I + μ μᵀ) to 5 standard errors."""
    n = 40000
    x = gmm2.sample(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w, mu, s2 = gmm2.weights, gmm2.means, gmm2.stds ** 2
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (s2[:, None, None] * torch.eye(2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    outer = x[:, :, None] * x[:, None, :]
    assert ((x.mean(0) - mean).abs() <= 5 * x.std(0) / n ** 0.5).all()
    assert ((outer.mean(0) - second).abs() <= 5 * outer.std(0) / n ** 0.5).all()


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sum to 1"):
        sp.GaussianMixture([[0.0], [1.0]], [1.0, 1.0], [0.3, 0.3])
    with pytest.raises(ValueError, match="features"):
        sp.GaussianMixture([[0.0, 0.0]], [1.0]).score(torch.zeros(3, 3), torch.ones(3), sp.VESDE())
