"""Samplers driven by a Gaussian mixture's exact score reproduce the mixture.

Samples are assigned to the nearest mean; per mode, the mass, the mean and the std per
coordinate must match q_eps's component (mean a μ_k, std sqrt(a² s_k² + σ²)) within 5
standard errors: sqrt(w(1 − w)/n) for the mass, s/sqrt(n_k) for a mean, s/sqrt(2 n_k) for a
std. The modes are ≥ 4 component stds from the midplane, so nearest-mean assignment
misplaces a negligible fraction. Fixed seeds; 39 checks per sampler and SDE.
"""

import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.sampling import euler_maruyama, predictor_corrector, probability_flow

N = 4000
EPS = 1e-3
SDES = {"vp": sp.VPSDE, "ve": sp.VESDE}
SAMPLERS = {
    "em": lambda model, sde, x, g: euler_maruyama(model, sde, x, steps=500, eps=EPS, generator=g),
    "pc": lambda model, sde, x, g: predictor_corrector(model, sde, x, steps=500, eps=EPS, generator=g),
    "pf": lambda model, sde, x, g: probability_flow(model, sde, x, eps=EPS),
}


@pytest.fixture(scope="module")
def gmm():
    return sp.GaussianMixture(means=[[-4.0, -4.0], [4.0, 3.0]], stds=[0.8, 1.3], weights=[0.3, 0.7])


def _check_mixture(x, gmm, sde):
    x = x.double()
    t = torch.full((1,), EPS, dtype=torch.float64)
    a, sigma = (v.item() for v in sde.marginal(t))
    means, stds = a * gmm.means, (a**2 * gmm.stds**2 + sigma**2).sqrt()
    k = torch.cdist(x, means).argmin(1)
    n = x.shape[0]
    for j, (w, mu, s) in enumerate(zip(gmm.weights, means, stds)):
        xs = x[k == j]
        nk = xs.shape[0]
        mass = nk / n
        assert abs(mass - w) < 5 * (w * (1 - w) / n) ** 0.5, (j, mass, w.item())
        assert ((xs.mean(0) - mu).abs() < 5 * s / nk**0.5).all(), (j, xs.mean(0), mu)
        assert ((xs.std(0) - s).abs() < 5 * s / (2 * nk) ** 0.5).all(), (j, xs.std(0), s)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("name", sorted(SDES))
def test_samples_reproduce_mixture(gmm, name, sampler):
    sde = SDES[name]()
    model = lambda x, t: gmm.score(x, t, sde)
    g = torch.Generator().manual_seed(0)
    x = SAMPLERS[sampler](model, sde, (N, 2), g)
    assert x.shape == (N, 2) and x.dtype == torch.float32
    _check_mixture(x, gmm, sde)


def test_wrong_score_fails_the_check(gmm):
    """The check has teeth: the probability-flow drift with g² s (the reverse SDE's) instead of
    ½g² s, i.e. the score doubled, collapses the modes."""
    sde = sp.VPSDE()
    x = probability_flow(
        lambda x, t: 2 * gmm.score(x, t, sde),
        sde,
        (N, 2),
        generator=torch.Generator().manual_seed(0),
        eps=EPS,
    )
    with pytest.raises(AssertionError):
        _check_mixture(x, gmm, sde)


def test_initial_noise_and_shape_agree(gmm):
    """A shape draws x_T from the prior with the generator; passing that x_T gives the same result."""
    sde = sp.VESDE()
    model = lambda x, t: gmm.score(x, t, sde)
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, nfe = probability_flow(model, sde, x_T, return_nfe=True)
    b = probability_flow(model, sde, (64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert a.dtype == torch.float64 and nfe > 10
    torch.testing.assert_close(a, b)
    c = euler_maruyama(
        model, sde, x_T.reshape(64, 1, 1, 2), steps=20, generator=torch.Generator().manual_seed(2)
    )
    d = euler_maruyama(model, sde, x_T, steps=20, generator=torch.Generator().manual_seed(2))
    assert c.shape == (64, 1, 1, 2)
    torch.testing.assert_close(c.reshape(64, 2), d)


def test_denoise_returns_the_last_mean(gmm):
    """With one step, denoise=True is x_T − [f − g² s](x_T, T)·(T − eps) and adds no noise."""
    sde = sp.VPSDE()
    model = lambda x, t: gmm.score(x, t, sde)
    x_T = torch.randn(16, 2, dtype=torch.float64)
    T = torch.ones(16, dtype=torch.float64)
    mean = x_T - (sde.drift(x_T, T) - sde.diffusion(T)[:, None] ** 2 * model(x_T, T)) * (1 - EPS)
    out = euler_maruyama(model, sde, x_T, steps=1, eps=EPS, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, mean)
    noisy = euler_maruyama(model, sde, x_T, steps=1, eps=EPS, denoise=False)
    assert (noisy - mean).abs().max() > 1e-2


def test_no_graph_and_refusals():
    model, sde = MLP(2), sp.VPSDE()
    for sampler in (euler_maruyama, predictor_corrector):
        x = sampler(model, sde, (8, 2), steps=5, dtype=torch.float64)
        assert not x.requires_grad
    assert not probability_flow(model, sde, (8, 2), dtype=torch.float64).requires_grad
    for eps in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"eps must lie in \(0, T\)"):
            euler_maruyama(model, sde, (8, 2), eps=eps, dtype=torch.float64)
        with pytest.raises(ValueError, match=r"eps must lie in \(0, T\)"):
            probability_flow(model, sde, (8, 2), eps=eps, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape must be"):
        euler_maruyama(model, sde, (8,))
    with pytest.raises(ValueError, match="non-finite"):
        euler_maruyama(lambda x, t: x * float("nan"), sde, (8, 2), steps=3)
