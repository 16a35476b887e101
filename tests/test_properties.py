"""Properties over the whole input space (hypothesis): SDEs, dimensions, image shapes, dtypes,
times at and between the ends, and every estimator.

Profiles: ``ci`` (the default: derandomized, a few examples per property, so the suite stays
fast and repeatable) and ``long`` (``SCOREPDE_HYPOTHESIS=long python -m pytest
tests/test_properties.py``: many more examples, random seeds).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import scorepde as sp  # noqa: E402
from scorepde.gmm import separated_mixture  # noqa: E402

settings.register_profile(
    "ci", max_examples=12, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("SCOREPDE_HYPOTHESIS", "ci"))


def _ou(T: float = 2.0) -> sp.GenericSDE:
    """An Ornstein-Uhlenbeck process as a user would write it: dx = −x dt + √2 dw on [0, T],
    x_t | x_0 ~ N(e^{−t} x_0, (1 − e^{−2t}) I)."""

    def marginal(t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))

    return sp.GenericSDE(
        lambda x, t: -x,
        lambda t: torch.full_like(t, math.sqrt(2.0)),
        marginal=marginal,
        marginal_variance=lambda t: -torch.expm1(-2 * t),
        prior_std=1.0,
        T=T,
    )


def _discrete_vp(seed: int) -> sp.DiscreteVPSDE:
    """A DDPM-family schedule with random endpoints: ᾱ_k = Π (1 − β_j), β linear."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = 1e-4 * (1 + 9 * torch.rand(2, generator=g, dtype=torch.float64))
    betas = torch.linspace(float(lo), 0.01 + float(hi) * 2, 200, dtype=torch.float64)
    return sp.DiscreteVPSDE(torch.cumprod(1 - betas, 0))


SDES = {
    "ve": lambda s: sp.VESDE(),
    "vp": lambda s: sp.VPSDE(),
    "subvp": lambda s: sp.SubVPSDE(),
    "discrete_vp": _discrete_vp,
    "edm": lambda s: sp.EDMSDE(sigma_max=5.0),
    "generic_ou": lambda s: _ou(),
}
ESTIMATORS = sorted(sp.ESTIMATORS)

sdes = st.builds(
    lambda name, seed: (name, SDES[name](seed)), st.sampled_from(sorted(SDES)), st.integers(0, 2**16)
)
shapes = st.one_of(
    st.tuples(st.integers(1, 8), st.integers(1, 16)),  # [B, D]
    st.tuples(st.integers(1, 8), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3)),  # [B, C, H, W]
)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _times(sde, B: int, data: st.DataObject, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """B times in [lo·T, hi·T], the ends themselves drawn often."""
    frac = st.one_of(st.just(lo), st.just(hi), st.floats(lo, hi))
    return torch.tensor(data.draw(st.lists(frac, min_size=B, max_size=B)), dtype=torch.float64) * sde.T


def _points(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


def _mixture_score(gmm, sde, shape):
    return lambda x, t: gmm.score(x.flatten(1), t, sde).reshape(x.shape)


class _Net(torch.nn.Module):
    """A smooth network with a residual nowhere near zero, for any [B, ...] shape. Like a
    real score network it sees x on the scale of the noise, x / √(1 + σ_t²)."""

    def __init__(self, D: int, dtype, sde, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.sde = sde
        self.net = torch.nn.Sequential(
            torch.nn.Linear(D + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)
        ).to(dtype)

    def forward(self, x, t):
        c_in = torch.rsqrt(1 + self.sde.marginal_variance(t)).to(x.dtype)
        h = torch.cat([x.flatten(1) * c_in[:, None], torch.log1p(t)[:, None].to(x.dtype)], 1)
        return self.net(h).reshape(x.shape)


@given(sde=sdes, shape=shapes, seed=st.integers(0, 1000), data=st.data())
def test_closed_form_mixture_has_zero_exact_residual(sde, shape, seed, data):
    """ε[∇ log q_t] = 0 at every t ∈ [0, T], every linear SDE, flat and image shapes (float64).

    The tolerance is relative to the size of ε's own terms, |∂t s| + |∇x L| ≈ 2|∂t s|:
    round-off grows with them, and they span decades across t and SDEs."""
    name, sde = sde
    D = int(torch.tensor(shape[1:]).prod())
    gmm = separated_mixture(D, min(3, 2**D), seed=seed, offset=1.5)
    score = _mixture_score(gmm, sde, shape)
    x, t = _points(shape, torch.float64, seed), _times(sde, shape[0], data)
    eps = sp.residual(score, sde, x, t, "exact")
    dt_s = sp.time_derivative(score, x, t)
    scale = dt_s.flatten(1).norm(dim=1) + score(x, t).flatten(1).norm(dim=1) + 1.0
    assert (eps.flatten(1).norm(dim=1) / scale).max() < 1e-8, (name, t)


@given(sde=sdes, shape=shapes, dtype=dtypes, estimator=st.sampled_from(ESTIMATORS), data=st.data())
@settings(max_examples=25)
def test_every_estimator_keeps_shape_and_dtype(sde, shape, dtype, estimator, data):
    """ε is shaped like x and in x's dtype, for every estimator, SDE, shape and time."""
    _, sde = sde
    D = int(torch.tensor(shape[1:]).prod())
    x, t = _points(shape, dtype, 0), _times(sde, shape[0], data).to(dtype)
    eps, L = sp.residual(
        _Net(D, dtype, sde), sde, x, t, estimator, return_rhs=True, generator=torch.Generator().manual_seed(0)
    )
    assert eps.shape == x.shape and eps.dtype == dtype
    assert L.shape == (shape[0],) and L.dtype == dtype
    assert torch.isfinite(eps).all() and torch.isfinite(L).all()


@given(
    sde=sdes, shape=shapes, estimator=st.sampled_from(ESTIMATORS), seed=st.integers(0, 2**16), data=st.data()
)
def test_operator_and_call_agree(sde, shape, estimator, seed, data):
    """residual(score, sde, estimator=...)(x, t) is residual(score, sde, x, t, ...), to the bit."""
    _, sde = sde
    D = int(torch.tensor(shape[1:]).prod())
    net, x, t = _Net(D, torch.float64, sde), _points(shape, torch.float64, 1), _times(sde, shape[0], data)
    op = sp.residual(net, sde, estimator=estimator)
    a = op(x, t, generator=torch.Generator().manual_seed(seed))
    b = sp.residual(net, sde, x, t, estimator, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


#: The bias each stencil may carry, relative to the size of ε's terms: O(h²) with the
#: published h = 1e-3 in t (``paper``) and steps 0.05·σ_t in x (``forward_fd``), on a net
#: that varies on the scale σ_t in x and of t itself in t, where the stencil is centred
#: (t ∈ [0.05 T, 0.95 T]).
#: The stencils' O(h²) bias in t, relative to |∂t s| + |ε|. ``forward_fd`` has an O(hx²) bias
#: in x as well, on the scale of the score's third derivatives, which no term here bounds: it
#: is measured by halving hx (Richardson: bias(hx) ≈ 4/3·[ε̂(hx) − ε̂(hx/2)]).
STENCIL_BIAS = {"paper": 1e-3, "forward_fd": 1e-2}


@given(
    sde=sdes,
    D=st.integers(1, 6),
    estimator=st.sampled_from(ESTIMATORS),
    seed=st.integers(0, 100),
    data=st.data(),
)
@settings(max_examples=20)
def test_estimator_means_are_within_standard_errors_of_exact(sde, D, estimator, seed, data):
    """E[ε̂] = ε: the mean of 400 independent draws is within 5 SE of the exact residual,
    plus the stated O(h²) bias for the stencils (float64)."""
    _, sde = sde
    n, B = 400, 2
    net = _Net(D, torch.float64, sde, seed)
    x, t = _points((B, D), torch.float64, seed), _times(sde, B, data, 0.05, 0.95)
    exact = sp.residual(net, sde, x, t, "exact")
    draws = sp.residual(
        net, sde, x.repeat(n, 1), t.repeat(n), estimator, generator=torch.Generator().manual_seed(seed)
    ).view(n, B, D)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    terms = sp.time_derivative(net, x, t).abs() + exact.abs() + 1e-6
    allowed = 5 * se + STENCIL_BIAS.get(estimator, 0.0) * terms + 1e-9
    if estimator == "forward_fd":  # E[ε̂] = ε + c·hx² + o(hx²): the measured c·hx², with 50% slack
        half = sp.residual(
            net,
            sde,
            x.repeat(n, 1),
            t.repeat(n),
            estimator,
            hx=0.025,
            generator=torch.Generator().manual_seed(seed),
        ).view(n, B, D)
        allowed = allowed + 1.5 * (4 / 3) * (mean - half.mean(0)).abs() + 5 * half.std(0) / math.sqrt(n)
    assert ((mean - exact).abs() <= allowed).all(), (estimator, (mean - exact).abs().max())


BAD = {
    "t_below_zero": (lambda x, t, T: (x, t - 0.5 * T - 1.0), "t must lie in"),
    "t_above_T": (lambda x, t, T: (x, t + 2 * T), "t must lie in"),
    "nan_in_x": (lambda x, t, T: (x.index_fill(0, torch.tensor([0]), float("nan")), t), "finite"),
    "batch_mismatch": (lambda x, t, T: (x, torch.cat([t, t[:1]])), "t must have shape"),
    "integer_x": (lambda x, t, T: (x.long(), t), "floating point"),
}


@given(sde=sdes, shape=shapes, estimator=st.sampled_from(ESTIMATORS), bad=st.sampled_from(sorted(BAD)))
def test_bad_input_is_a_value_error_that_names_it(sde, shape, estimator, bad):
    """Every kind of bad input is a ValueError naming the problem, never a raw PyTorch error."""
    _, sde = sde
    D = int(torch.tensor(shape[1:]).prod())
    make, words = BAD[bad]
    x, t = make(
        _points(shape, torch.float64, 2), torch.full((shape[0],), 0.5 * sde.T, dtype=torch.float64), sde.T
    )
    with pytest.raises(ValueError, match=words):
        sp.residual(_Net(D, torch.float64, sde), sde, x, t, estimator)


@given(sde=st.sampled_from(["vp", "subvp", "generic_ou"]), D=st.integers(1, 3), seed=st.integers(0, 100))
@settings(max_examples=4)
def test_log_likelihood_of_the_mixture_matches_its_closed_form(sde, D, seed):
    """log p_eps(x) by the PF-ODE with the true score is log q_eps(x): with the prior swapped
    for the true q_T at the ODE's end point x_T (so that only the solver's error remains),
    log p_eps(x) − log p_T(x_T) + log q_T(x_T) = log q_eps(x)."""
    sde = SDES[sde](seed)
    gmm = separated_mixture(D, min(3, 2**D), seed=seed, offset=1.0, std_range=(0.4, 0.8))
    x = gmm.sample(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    eps = 1e-3
    logp, stats = sp.log_likelihood(
        _mixture_score(gmm, sde, x.shape), sde, x, eps, rtol=1e-8, atol=1e-8, return_stats=True
    )
    T = torch.full((x.shape[0],), sde.T, dtype=torch.float64)
    swapped = logp - stats["prior_logp"] + gmm.log_prob(stats["x_T"], T, sde)
    torch.testing.assert_close(swapped, gmm.log_prob(x, torch.full_like(T, eps), sde), rtol=1e-6, atol=1e-5)


@given(
    D=st.integers(1, 64),
    levels=st.integers(2, 256),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-10.0, 10.0),
    seed=st.integers(0, 1000),
)
def test_bits_per_dim_is_invariant_to_the_affine_scaling(D, levels, scale, shift, seed):
    """A density on u ∈ [0,1)^D moved to x = a u + b, p_x(x) = p_u((x − b)/a) / a^D, has the
    same bits/dim whatever (a, b): bpd(log p_x(a u + b), a) = bpd(log p_u(u), 1)."""
    u = torch.rand(5, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    base = torch.distributions.Normal(0.5, 0.3)
    log_pu = base.log_prob(u).sum(1)
    x = scale * u + shift
    log_px = base.log_prob((x - shift) / scale).sum(1) - D * math.log(scale)
    torch.testing.assert_close(
        sp.bits_per_dim(log_px, D, levels, scale),
        sp.bits_per_dim(log_pu, D, levels, 1.0),
        rtol=1e-9,
        atol=1e-9,
    )
