"""MixtureScore (scorepde.nn.mixture): a Gaussian mixture's score structure, every piece learned."""

import pytest
import scipy.linalg
import torch

import scorepde as sp
from scorepde.gmm import GaussianMixture, random_rotation, separated_mixture
from scorepde.nn.mixture import MixtureScore


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _set_to(model: MixtureScore, gmm):
    """Write a true mixture's parameters into the model: κ = its variances, m = its means,
    β = log w, U = its eigenvectors (a rotation: one column's sign flipped where det = −1)."""
    D = gmm.dim
    with torch.no_grad():
        model.base[:, :D] = torch.log(gmm.variances)
        model.base[:, D : 2 * D] = gmm.means
        model.base[:, -1] = torch.log(gmm.weights)
        if model.skew is not None:
            U = gmm.basis.clone() if gmm.basis is not None else torch.eye(D).repeat(gmm.weights.numel(), 1, 1)
            U[torch.linalg.det(U) < 0, :, 0] *= -1
            logs = [torch.from_numpy(scipy.linalg.logm(u.numpy()).real) for u in U]
            model.skew.copy_(0.5 * torch.stack(logs))


def _mixture(cov: str, seed: int = 0) -> GaussianMixture:
    """Three components in 4-D whose variance sets differ (so log det differs between them)."""
    g = gen(seed)
    means = 3.0 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    stds = torch.exp(torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.6)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    if cov == "diag":
        return GaussianMixture(means, stds, weights)
    R = torch.stack([random_rotation(4, g) for _ in range(3)])
    return GaussianMixture(means, weights=weights, covs=torch.einsum("kij,kj,klj->kil", R, stds**2, R))


@pytest.mark.parametrize(
    "cov, basis, head",
    [("diag", "none", "coordinate"), ("diag", "full", "component"), ("full", "full", "coordinate")],
)
@pytest.mark.parametrize("sde", [sp.VESDE(0.01, 50.0), sp.VPSDE(0.1, 20.0)], ids=["ve", "vp"])
def test_a_true_mixture_is_in_the_family_with_zero_residual(cov, basis, head, sde):
    """The structure claim of the module docstring: with a mixture's own parameters the model is
    its closed-form score at every t, and the score-FPE residual vanishes (float64)."""
    gmm = _mixture(cov)
    model = MixtureScore(4, sde, components=3, basis=basis, time_head=head).double()
    _set_to(model, gmm)
    x0 = gmm.sample(64, generator=gen(1), dtype=torch.float64)
    t = torch.rand(64, generator=gen(2), dtype=torch.float64) * 0.9 + 0.05
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=gen(3), dtype=torch.float64))
    torch.testing.assert_close(model(xt, t), gmm.score(xt, t, sde), atol=1e-9, rtol=1e-9)
    assert float(sp.residual(model, sde, xt, t).detach().abs().max()) < 1e-8


def test_the_diagonal_family_misses_a_rotated_mixture():
    """basis="none" cannot hold rotated covariances: the same parameters leave an error."""
    sde, gmm = sp.VESDE(0.01, 50.0), _mixture("full")
    model = MixtureScore(4, sde, components=3, basis="none").double()
    _set_to(model, gmm)
    x = gmm.sample(256, generator=gen(4), dtype=torch.float64)
    t = torch.zeros(256, dtype=torch.float64)
    err = (model(x, t) - gmm.score(x)).pow(2).sum(1).mean() / gmm.score(x).pow(2).sum(1).mean()
    assert float(err) > 0.05


def test_init_means_seeds_every_separated_cluster():
    """k-means++ seeding: with J = K well-separated clusters each gets one start."""
    gmm = separated_mixture(16, 4)
    model = MixtureScore(16, sp.VESDE(0.01, 50.0), components=4, basis="none")
    model.init_means(gmm.sample(512, generator=gen(5)), gen(6))
    starts = model.base[:, 16:32].detach().double()
    nearest = torch.cdist(starts, gmm.means).argmin(1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]


def test_the_start_is_the_far_field_and_batch_independent():
    """At the start (κ = 1, U = I) the model is a mixture of N(m_j, (a² + σ²) I): at t = T, where
    σ_T ≫ the spread of the means, it is close to −x/σ_T²; and each output depends on its own input."""
    sde = sp.VESDE(0.01, 50.0)
    model = MixtureScore(8, sde, components=4, basis="full")
    x = 50.0 * torch.randn(32, 8, generator=gen(7))
    t = torch.ones(32)
    torch.testing.assert_close(model(x, t), -x / (1 + 50.0**2), atol=0.02, rtol=0.05)
    jac = torch.autograd.functional.jacobian(lambda z: model(z, t).sum(0), x)  # [D, B, D]
    assert float(jac.abs().sum()) > 0
    x2 = x.clone()
    x2[1:] += 1.0
    torch.testing.assert_close(model(x2, t)[0], model(x, t)[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(components=0), "components"),
        (dict(basis="lowrank"), "unknown basis"),
        (dict(data_std=0.0), "data_std"),
        (dict(time_head="pixel"), "unknown time_head"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixtureScore(4, sp.VESDE(0.01, 50.0), **kwargs)


def test_bad_inputs_are_value_errors():
    model = MixtureScore(4, sp.VESDE(0.01, 50.0), components=3)
    with pytest.raises(ValueError, match=r"x of shape \[B, 4\]"):
        model(torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.zeros(2, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="N >= J"):
        model.init_means(torch.zeros(2, 4))
