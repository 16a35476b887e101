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
    g = sp.GaussianMixture(
        torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 3,
        [0.5, 1.0, 0.7, 1.3],
        [0.1, 0.2, 0.3, 0.4],
    )
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
    w, mu, s2 = gmm2.weights, gmm2.means, gmm2.stds**2
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (s2[:, None, None] * torch.eye(2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    outer = x[:, :, None] * x[:, None, :]
    assert ((x.mean(0) - mean).abs() <= 5 * x.std(0) / n**0.5).all()
    assert ((outer.mean(0) - second).abs() <= 5 * outer.std(0) / n**0.5).all()


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sum to 1"):
        sp.GaussianMixture([[0.0], [1.0]], [1.0, 1.0], [0.3, 0.3])
    with pytest.raises(ValueError, match="features"):
        sp.GaussianMixture([[0.0, 0.0]], [1.0]).score(torch.zeros(3, 3), torch.ones(3), sp.VESDE())


# -- diagonal and full covariances ----------------------------------------------------------
from scorepde.gmm import random_rotation, separated_mixture  # noqa: E402


def _anisotropic(kind, dim=3, seed=0):
    """A 3-component mixture with per-coordinate stds over 0.3-3, rotated for ``full``."""
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    stds = 0.3 * 10 ** torch.rand(3, dim, generator=g, dtype=torch.float64)
    w = [0.2, 0.5, 0.3]
    if kind == "diag":
        return sp.GaussianMixture(means, stds, w)
    R = torch.stack([random_rotation(dim, g) for _ in range(3)])
    covs = R @ torch.diag_embed(stds**2) @ R.transpose(1, 2)
    return sp.GaussianMixture(means, weights=w, covs=0.5 * (covs + covs.transpose(1, 2)))


def _xt(dim=3, n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        3 * torch.randn(n, dim, generator=g, dtype=torch.float64),
        0.01 + 0.99 * torch.rand(n, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_anisotropic_log_prob_is_the_gaussian_closed_form(kind, sde):
    """log q_t = logsumexp_k log w_k N(x; a μ_k, a² Σ_k + σ_t² I), against torch.distributions."""
    gmm, (x, t) = _anisotropic(kind), _xt()
    a, std = sde.marginal(t)
    covs = torch.stack(
        [
            (gmm.basis[k] * gmm.variances[k]) @ gmm.basis[k].T
            if gmm.basis is not None
            else torch.diag(gmm.variances[k])
            for k in range(3)
        ]
    )
    C = a[:, None, None, None] ** 2 * covs + (std**2)[:, None, None, None] * torch.eye(3, dtype=x.dtype)
    mvn = torch.distributions.MultivariateNormal(a[:, None, None] * gmm.means, covariance_matrix=C)
    ref = torch.logsumexp(torch.log(gmm.weights) + mvn.log_prob(x[:, None, :]), dim=1)
    torch.testing.assert_close(gmm.log_prob(x, t, sde), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_anisotropic_score_is_gradient_of_log_prob(kind, sde):
    gmm, (x, t) = _anisotropic(kind), _xt()
    x.requires_grad_(True)
    auto = torch.autograd.grad(gmm.log_prob(x, t, sde).sum(), x)[0]
    torch.testing.assert_close(gmm.score(x, t, sde), auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_anisotropic_true_score_has_zero_residual(kind, sde):
    """ε[∇ log q_t] = 0 and ∂t log q_t = L[s] for every covariance kind (Eqs. 7, 9)."""
    gmm, (x, t) = _anisotropic(kind), _xt()
    model = lambda x, t: gmm.score(x, t, sde)
    eps = sp.residual(model, sde, x, t, "exact")
    dt_s = sp.time_derivative(model, x, t)
    assert (eps.norm(dim=1) / dt_s.norm(dim=1)).max() < 1e-9
    dt_log_q = jvp(lambda tt: gmm.log_prob(x, tt, sde), (t,), (torch.ones_like(t),))[1]
    torch.testing.assert_close(sp.fpe_rhs(model, sde, x, t), dt_log_q, rtol=1e-9, atol=1e-9)


def test_diagonal_with_equal_stds_is_the_isotropic_mixture():
    """The diagonal path with s_kj = s_k and the rotated path agree with the isotropic one."""
    means, stds, w = [[-2.0, -1.0], [3.0, 2.0]], torch.tensor([0.6, 1.1], dtype=torch.float64), [0.3, 0.7]
    iso = sp.GaussianMixture(means, stds, w)
    diag = sp.GaussianMixture(means, stds[:, None].expand(2, 2), w)
    R = random_rotation(2, torch.Generator().manual_seed(0))
    full = sp.GaussianMixture(means, weights=w, covs=(stds**2)[:, None, None] * (R @ R.T))
    x, t = _xt(dim=2)
    for sde in (sp.VESDE(), sp.VPSDE()):
        for other in (diag, full):
            torch.testing.assert_close(other.score(x, t, sde), iso.score(x, t, sde), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(other.log_prob(x, t, sde), iso.log_prob(x, t, sde))


def test_full_covariance_samples_have_the_mixture_moments():
    gmm = _anisotropic("full")
    n = 40000
    x = gmm.sample(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = gmm.weights
    covs = torch.stack([(gmm.basis[k] * gmm.variances[k]) @ gmm.basis[k].T for k in range(3)])
    mean = (w[:, None] * gmm.means).sum(0)
    second = (w[:, None, None] * (covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    outer = x[:, :, None] * x[:, None, :]
    assert ((x.mean(0) - mean).abs() <= 5 * x.std(0) / n**0.5).all()
    assert ((outer.mean(0) - second).abs() <= 5 * outer.std(0) / n**0.5).all()
    torch.testing.assert_close(
        torch.tensor(gmm.coordinate_std() ** 2, dtype=torch.float64), (second.diagonal() - mean**2).mean()
    )


def test_separated_mixture_kinds():
    """iso is unchanged; diag spreads stds over 0.3-3 in a per-component order; full rotates them."""
    iso = separated_mixture(8, 4)
    torch.testing.assert_close(iso.stds, torch.linspace(0.5, 1.2, 4, dtype=torch.float64))
    diag, full = separated_mixture(8, 4, cov="diag"), separated_mixture(8, 4, cov="full")
    torch.testing.assert_close(diag.means, iso.means)
    s = diag.stds.sort(dim=1).values
    torch.testing.assert_close(s[:, 0], torch.full((4,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(s[:, -1], torch.full((4,), 3.0, dtype=torch.float64))
    assert not torch.equal(diag.stds[0], diag.stds[1])
    torch.testing.assert_close(full.variances, (diag.stds**2).sort(dim=1).values)
    off_diag = full.coordinate_variances() - diag.stds**2
    assert off_diag.abs().max() > 0.1  # rotated: the coordinate variances are not the diagonal ones


def test_full_covariances_need_no_per_sample_matrix():
    """At D = 256 with full covariances, a score evaluation allocates O(B K D) per sample, not D²."""
    gmm = separated_mixture(256, 4, cov="full")
    x = torch.randn(2, 256, dtype=torch.float64)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    s = gmm.score(x, t, sp.VPSDE())
    assert s.shape == x.shape and torch.isfinite(s).all()


def test_rejects_bad_covariances():
    with pytest.raises(ValueError, match="one way"):
        sp.GaussianMixture([[0.0, 0.0]], [1.0], covs=torch.eye(2)[None])
    with pytest.raises(ValueError, match="positive definite"):
        sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]))
    with pytest.raises(ValueError, match="symmetric"):
        sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"\[K, D, D\]"):
        sp.GaussianMixture([[0.0, 0.0]], covs=torch.eye(3)[None])
    with pytest.raises(ValueError, match="stds must be"):
        sp.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], torch.ones(3, 2))
