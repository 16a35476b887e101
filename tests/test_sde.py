"""SDEs: the closed-form transition kernel agrees with the SDE it claims to solve."""

import pytest
import torch
from torch.func import jvp

import scorepde as sp


def test_kernel_moments_solve_the_sde(sde):
    """For f = c(t) x: da/dt = c a and dσ²/dt = 2 c σ² + g²."""
    t = torch.linspace(0.02, 1.0, 50, dtype=torch.float64)
    one = torch.ones_like(t)
    (a, std), (da, dstd) = jvp(sde.marginal, (t,), (one,))
    c, g = sde.drift_coeff(t), sde.diffusion(t)
    torch.testing.assert_close(da, c * a)
    torch.testing.assert_close(2 * std * dstd, 2 * c * std**2 + g**2)


def test_kernel_starts_at_the_data(sde):
    a, std = sde.marginal(torch.zeros(1, dtype=torch.float64))
    assert a.item() == 1.0 and std.item() == 0.0


def test_prior_matches_kernel_at_T():
    t = torch.ones(1, dtype=torch.float64)
    for sde in (sp.VPSDE(), sp.SubVPSDE()):
        a, std = sde.marginal(t)
        assert a.item() < 0.01 and abs(std.item() - 1) < 1e-3
    a, std = sp.VESDE().marginal(t)
    assert abs(std.item() - 50.0) < 1e-3


def test_prior_log_prob_is_gaussian():
    sde = sp.VESDE(sigma_max=3.0)
    x = torch.randn(7, 2, 2, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 3.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(x), expected)


def test_generic_sde_divergence_by_autograd():
    vp = sp.VPSDE()
    generic = sp.GenericSDE(drift=lambda x, t: -0.5 * vp.beta(t)[:, None] * x, diffusion=vp.diffusion)
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(generic.drift_divergence(x, t), vp.drift_divergence(x, t))
    with pytest.raises(NotImplementedError):
        generic.marginal(t)


def test_bad_parameters():
    with pytest.raises(ValueError):
        sp.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        sp.VPSDE(beta_min=5.0, beta_max=1.0)


def test_generic_sde_takes_a_variance_with_a_derivative_at_zero():
    """σ_t = √(1 − e^{−2t}) squared has no t-derivative at t = 0; a given σ_t² has one."""
    from torch.func import jvp

    marginal = lambda t: (torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t)))
    f, g = (lambda x, t: -x), (lambda t: torch.full_like(t, 2**0.5))
    t0 = torch.zeros(1, dtype=torch.float64)
    bare = sp.GenericSDE(f, g, marginal=marginal)
    given = sp.GenericSDE(f, g, marginal=marginal, marginal_variance=lambda t: -torch.expm1(-2 * t))
    d = lambda sde: jvp(sde.marginal_variance, (t0,), (torch.ones_like(t0),))[1]
    assert torch.isnan(d(bare)).all()
    torch.testing.assert_close(d(given), torch.full_like(t0, 2.0))
