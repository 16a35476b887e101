"""Values against closed forms, written out by hand here (math module, not scorepde): the tests
that kill the mutants the rest of the suite let live (tools/mutation.py, docs/trust.md).

Each test computes its expectation without the code under test: the SDEs' coefficients and
kernels from their formulas, the DSM loss from the same draws, L[s] and ε[s] of a score linear
in x (s = −k(t) x, whose residual is not zero) in closed form, a mixture's log-density from
torch.distributions.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

import scorepde as sp
from scorepde.cauchy import (
    CauchyObjective,
    _log_relative_scale,
    cauchy_loss,
    residual_weight,
    sample_collocation_time,
)
from scorepde.derivatives import hutchpp_divergence, time_derivative
from scorepde.gmm import separated_mixture
from scorepde.losses import sample_time

F64 = torch.float64
TIMES = [0.0, 0.1, 0.5, 1.0]


def _vp_int(t, bmin=0.1, bmax=20.0):
    return bmin * t + 0.5 * t * t * (bmax - bmin)


#: name -> (the SDE with its default parameters, closed forms of t: a, σ², g², c, prior std, floor, T)
CLOSED = {
    "ve": (
        sp.VESDE,
        dict(
            a=lambda t: 1.0,
            var=lambda t: 0.01**2 * (math.exp(2 * t * math.log(5000.0)) - 1),
            g2=lambda t: (0.01 * 5000.0**t) ** 2 * 2 * math.log(5000.0),
            c=lambda t: 0.0,
            prior=50.0,
            floor=0.01,
            T=1.0,
        ),
    ),
    "vp": (
        sp.VPSDE,
        dict(
            a=lambda t: math.exp(-0.5 * _vp_int(t)),
            var=lambda t: 1 - math.exp(-_vp_int(t)),
            g2=lambda t: 0.1 + 19.9 * t,
            c=lambda t: -0.5 * (0.1 + 19.9 * t),
            prior=1.0,
            floor=1e-5,
            T=1.0,
        ),
    ),
    "subvp": (
        sp.SubVPSDE,
        dict(
            a=lambda t: math.exp(-0.5 * _vp_int(t)),
            var=lambda t: (1 - math.exp(-_vp_int(t))) ** 2,
            g2=lambda t: (0.1 + 19.9 * t) * (1 - math.exp(-2 * _vp_int(t))),
            c=lambda t: -0.5 * (0.1 + 19.9 * t),
            prior=1.0,
            floor=1e-5,
            T=1.0,
        ),
    ),
    "edm": (
        sp.EDMSDE,
        dict(
            a=lambda t: 1.0,
            var=lambda t: t * t,
            g2=lambda t: 2 * t,
            c=lambda t: 0.0,
            prior=80.0,
            floor=0.002,
            T=80.0,
        ),
    ),
}


def _close(actual, expected, rtol=1e-10, atol=1e-12):
    expected = torch.as_tensor(expected, dtype=F64).expand_as(torch.as_tensor(actual))
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_sde_coefficients_and_kernel_are_their_closed_forms(name):
    make, cf = CLOSED[name]
    sde = make()
    t = torch.tensor(TIMES, dtype=F64) * cf["T"]
    x = torch.linspace(-2, 3, 4 * 3, dtype=F64).reshape(4, 3)
    a = [cf["a"](s) for s in t.tolist()]
    var = [cf["var"](s) for s in t.tolist()]
    c = [cf["c"](s) for s in t.tolist()]
    got_a, got_std = sde.marginal(t)
    _close(got_a, a)
    _close(got_std, [v**0.5 for v in var])
    _close(sde.marginal_variance(t), var)
    _close(sde.diffusion(t) ** 2, [cf["g2"](s) for s in t.tolist()])
    _close(sde.drift(x, t), torch.tensor(c, dtype=F64)[:, None] * x)
    _close(sde.drift_divergence(x, t), [3 * ci for ci in c])
    z = torch.ones_like(x)
    _close(
        sde.perturb(x, t, z),
        torch.tensor(a, dtype=F64)[:, None] * x + torch.tensor(var, dtype=F64).sqrt()[:, None],
    )
    assert sde.prior_std == cf["prior"] and sde.sigma_floor == cf["floor"] and sde.T == cf["T"]
    s2 = cf["prior"] ** 2
    _close(sde.prior_log_prob(x), -1.5 * math.log(2 * math.pi * s2) - (x**2).sum(1) / (2 * s2))
    g = torch.Generator().manual_seed(3)
    draw = sde.prior_sample((5, 2), generator=g, dtype=F64)
    _close(draw, cf["prior"] * torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64))


def test_noise_levels_and_integrated_beta():
    t = torch.tensor(TIMES, dtype=F64)
    _close(sp.VESDE().sigma(t), [0.01 * 5000.0**s for s in TIMES])
    _close(sp.VESDE(sigma_min=0.1, sigma_max=2.0).sigma(t), [0.1 * 20.0**s for s in TIMES])
    _close(sp.VPSDE().integrated_beta(t), [_vp_int(s) for s in TIMES])
    _close(sp.VPSDE().beta(t), [0.1 + 19.9 * s for s in TIMES])
    _close(sp.VPSDE(beta_min=1.0, beta_max=3.0).beta(t), [1 + 2 * s for s in TIMES])
    _close(sp.EDMSDE().sigma(t * 80), [80 * s for s in TIMES])
    assert repr(sp.VESDE()) == "VESDE(sigma_min=0.01, sigma_max=50.0)"
    assert repr(sp.VPSDE()) == "VPSDE(beta_min=0.1, beta_max=20.0)"
    assert repr(sp.SubVPSDE()) == "SubVPSDE(beta_min=0.1, beta_max=20.0)"
    assert repr(sp.EDMSDE()) == "EDMSDE(sigma_min=0.002, sigma_max=80.0)"


def test_discrete_vp_is_its_schedule_at_the_nodes_and_hermite_between():
    N = 8
    betas = torch.linspace(0.01, 0.2, N, dtype=F64)
    ac = torch.cumprod(1 - betas, 0)
    sde = sp.DiscreteVPSDE(ac)
    assert sde.N == N and sde.fd_h == (0.05 / N, 0.05 / N) and repr(sde) == "DiscreteVPSDE(N=8)"
    nodes = torch.arange(N + 1, dtype=F64) / N
    y = torch.cat([torch.zeros(1, dtype=F64), ac.log()])
    d = [(y[i + 1] - y[i]).item() * N for i in range(N)]
    m = [d[0]] + [2 * d[i - 1] * d[i] / (d[i - 1] + d[i]) for i in range(1, N)] + [d[-1]]
    _close(sde.alpha_bar(nodes), y.exp())
    _close(sde.log_alpha_bar(nodes), y)
    _close(sde.marginal_variance(nodes), 1 - y.exp())
    _close(sde.marginal(nodes)[0], (0.5 * y).exp())
    _close(sde.beta(nodes), [-v for v in m])
    _close(sde.timestep(nodes[1:]), torch.arange(N, dtype=F64))
    _close(sde.time(torch.arange(N)), nodes[1:])
    # midpoints of each interval: the cubic Hermite interpolant's value and slope at s = 1/2
    mid = (torch.arange(N, dtype=F64) + 0.5) / N
    value = [0.5 * (y[i] + y[i + 1]).item() + (m[i] - m[i + 1]) / (8 * N) for i in range(N)]
    slope = [-1.5 * N * (y[i] - y[i + 1]).item() - 0.25 * (m[i] + m[i + 1]) for i in range(N)]
    _close(sde.log_alpha_bar(mid), value)
    _close(sde.beta(mid), [-s for s in slope])


# -- DSM ----------------------------------------------------------------------------------


def _lambda(name, cf, t):
    return {"g2": cf["g2"](t), "sigma2": cf["var"](t), "none": 1.0}[name]


@pytest.mark.parametrize("weighting", ["g2", "sigma2", "none"])
@pytest.mark.parametrize("name", ["ve", "vp", "edm"])
def test_dsm_loss_is_its_closed_form_on_the_same_draws(name, weighting):
    """J_DSM = mean ½ λ(t) ‖s(x_t, t) + z/σ_t‖² with t = eps + (T − eps) u, x_t = a x_0 + σ_t z,
    from the generator's draws in that order. λ = σ_t² (the default) must not be σ_t (the
    mutant that survived the whole suite before this test)."""
    make, cf = CLOSED[name]
    sde, eps = make(), 1e-3
    x0 = torch.linspace(-1, 1, 15, dtype=F64).reshape(5, 3)
    score = lambda x, t: -x * (1 + t)[:, None] + 0.3

    g = torch.Generator().manual_seed(7)
    u = torch.rand(5, generator=g, dtype=F64)
    z = torch.randn(5, 3, generator=g, dtype=F64)
    t = eps + (cf["T"] - eps) * u
    expected = 0.0
    for i, ti in enumerate(t.tolist()):
        std = cf["var"](ti) ** 0.5
        xt = cf["a"](ti) * x0[i] + std * z[i]
        s = -xt * (1 + ti) + 0.3
        expected += 0.5 * _lambda(weighting, cf, ti) * ((s + z[i] / std) ** 2).sum().item() / 5

    loss, xt, tt = sp.dsm_loss(
        score,
        sde,
        x0,
        weighting=weighting,
        eps=eps,
        generator=torch.Generator().manual_seed(7),
        return_samples=True,
    )
    _close(tt, t)
    _close(loss, expected)
    objective = sp.FPObjective(score, sde, dsm_weighting=weighting, eps=eps)
    total, parts = objective(x0, torch.Generator().manual_seed(7))
    _close(total, expected)
    _close(parts["dsm"], expected)
    _close(parts["fp"], 0.0)


def test_dsm_default_weighting_and_time_draws():
    """The defaults: λ = σ_t² and t ~ U(1e-5, T)."""
    sde = sp.VESDE()
    x0 = torch.zeros(4, 2, dtype=F64)
    score = lambda x, t: torch.zeros_like(x)
    loss = sp.dsm_loss(score, sde, x0, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    torch.rand(4, generator=g, dtype=F64)
    z = torch.randn(4, 2, generator=g, dtype=F64)
    _close(loss, 0.5 * (z**2).sum(1).mean())  # ½ σ² ‖z/σ‖² = ½ ‖z‖²
    u = torch.rand(6, generator=torch.Generator().manual_seed(2), dtype=F64)
    _close(sample_time(6, sde, generator=torch.Generator().manual_seed(2), dtype=F64), 1e-5 + (1 - 1e-5) * u)
    _close(sample_time(6, sde, 0.25, generator=torch.Generator().manual_seed(2), dtype=F64), 0.25 + 0.75 * u)


# -- L[s] and ε[s] of a score linear in x --------------------------------------------------


def _linear(x, t):
    """s = −k(t) x with k = 1 + t², quadratic in t, so every stencil in t is exact."""
    return -(1 + t * t).reshape(-1, *([1] * (x.dim() - 1))) * x


def _linear_closed_form(cf, x, t):
    """(ε, L) of s = −k x: L = −½g²kD + (½g²k² + ck)‖x‖² − cD, ε = −k'x − (g²k² + 2ck) x."""
    D = x[0].numel()
    eps, L = torch.empty_like(x), torch.empty(x.shape[0], dtype=F64)
    for i, ti in enumerate(t.tolist()):
        k, dk, g2, c = 1 + ti * ti, 2 * ti, cf["g2"](ti), cf["c"](ti)
        r2 = (x[i] ** 2).sum().item()
        L[i] = -0.5 * g2 * k * D + (0.5 * g2 * k * k + c * k) * r2 - c * D
        eps[i] = -(dk + g2 * k * k + 2 * c * k) * x[i]
    return eps, L


def _points(name):
    cf = CLOSED[name][1]
    x = torch.tensor([[0.3, -1.2, 0.7], [1.5, 0.2, -0.4], [-0.8, 0.9, 1.1]], dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64) * cf["T"]
    return CLOSED[name][0](), cf, x, t


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_residual_and_rhs_of_a_linear_score_are_their_closed_forms(name):
    sde, cf, x, t = _points(name)
    eps, L = _linear_closed_form(cf, x, t)
    _close(sp.fpe_rhs(_linear, sde, x, t), L)
    _close(sp.fpe_rhs(_linear, sde, x, t, div="hutchinson", generator=torch.Generator().manual_seed(0)), L)
    for estimator in ("exact", "hutchinson", "paper"):  # exact on this score: J = −kI, k quadratic in t
        got, rhs = sp.residual(
            _linear, sde, x, t, estimator, return_rhs=True, generator=torch.Generator().manual_seed(0)
        )
        _close(got, eps, rtol=1e-6, atol=1e-8)
        if estimator != "paper":  # the paper's Gaussian probe estimates div s, so L only in mean
            _close(rhs, L)
        sq, rhs = sp.residual_norm_sq(
            _linear, sde, x, t, estimator, generator=torch.Generator().manual_seed(0)
        )
        _close(sq, eps.pow(2).sum(1), rtol=1e-6, atol=1e-8)
    operator = sp.residual(_linear, sde, "exact")
    _close(operator(x, t), eps)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_projected_residuals_of_a_linear_score_are_exact(name):
    """⟨ε, v⟩ along a given v: forward mode exactly, plain forwards (central differences, exact on
    a quadratic L and a score quadratic in t) to round-off."""
    sde, cf, x, t = _points(name)
    eps, L = _linear_closed_form(cf, x, t)
    v = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, 1.0]], dtype=F64)
    proj, rhs = sp.projected_residual(_linear, sde, x, t, v)
    _close(proj, (eps * v).sum(1), rtol=1e-8, atol=1e-8)
    _close(rhs, L)
    proj, rhs = sp.projected_residual_fd(_linear, sde, x, t, v)
    _close(proj, (eps * v).sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("estimator", ["directional", "forward_fd"])
def test_directional_estimators_of_a_linear_score_are_projections_of_the_closed_form(estimator):
    """ε̂ = ⟨ε, v⟩ v for the estimator's own direction v: so ⟨ε̂, ε⟩ = ⟨ε, v⟩² ≥ 0 and
    ‖ε̂‖² = ⟨ε, v⟩² ‖v‖² = D ⟨ε̂, ε⟩ for a Rademacher v; the unbiased ‖ε‖² averages to the closed form."""
    sde, cf, x, t = _points("vp")
    eps, L = _linear_closed_form(cf, x, t)
    got, rhs = sp.residual(
        _linear, sde, x, t, estimator, return_rhs=True, generator=torch.Generator().manual_seed(0)
    )
    along = (got * eps).sum(1)
    _close(got.pow(2).sum(1), 3 * along, rtol=1e-4, atol=1e-6)
    _close(rhs, L, rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    xs, ts = x.repeat(400, 1), t.repeat(400)
    sq, _ = sp.residual_norm_sq(_linear, sde, xs, ts, estimator, generator=g, n_directions=1)
    mean, se = sq.reshape(400, 3).mean(0), sq.reshape(400, 3).std(0) / 20
    assert bool(((mean - eps.pow(2).sum(1)).abs() < 5 * se + 1e-6).all()), (mean, eps.pow(2).sum(1), se)


def test_time_derivative_stencils_on_a_score_quadratic_in_t():
    """∂t(−(1 + t²) x) = −2t x: fd3 and central exactly; forward is (k(t+h) − k(t))/h = 2t + h."""
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    t = torch.tensor([0.3, 0.6], dtype=F64)
    exact = -2 * t[:, None] * x
    for dt in ("jvp", "fd3", "central"):
        _close(time_derivative(_linear, x, t, dt, h=(1e-2, 5e-3)), exact, rtol=1e-8, atol=1e-9)
    _close(
        time_derivative(_linear, x, t, "forward", h=(1e-2, 1e-2)),
        -(2 * t + 1e-2)[:, None] * x,
        rtol=1e-8,
        atol=1e-9,
    )


# -- the Cauchy problem's loss and weights ----------------------------------------------------


def test_residual_weights_and_log_scale_are_their_closed_forms():
    sde, cf = sp.VPSDE(), CLOSED["vp"][1]
    t = torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    for d in (1.0, 2.5):
        hat = [(cf["a"](s) ** 2 * d * d + cf["var"](s)) ** 0.5 for s in t.tolist()]
        g2 = [cf["g2"](s) for s in t.tolist()]
        _close(residual_weight("none", sde, t, d), 1.0)
        _close(residual_weight("g2", sde, t, d), [1 / v for v in g2])
        _close(residual_weight("scaled", sde, t, d), [h**3 / v for h, v in zip(hat, g2)])
        _close(
            _log_relative_scale(sde, t, d),
            [0.5 * math.log(d * d + cf["var"](s) / cf["a"](s) ** 2) for s in t.tolist()],
        )
    _close(residual_weight("scaled", sde, t), residual_weight("scaled", sde, t, 1.0))


def test_collocation_times_are_the_uniform_draws_and_the_inverse_log_scale():
    """t = T u (uniform, the default), and for the second half of "log_scale" c(t) = c(0) + (c(T) − c(0)) u
    to the 2049-point grid's interpolation error (≈ 1e-6 in c; a node's shift is ≥ 1e-4 here)."""
    sde = sp.VPSDE()
    u = torch.rand(8, generator=torch.Generator().manual_seed(4), dtype=F64)
    got = sample_collocation_time(8, sde, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert got.dtype == F64
    _close(got, u)
    _close(
        sample_collocation_time(8, sp.EDMSDE(), generator=torch.Generator().manual_seed(4), dtype=F64), 80 * u
    )
    t = sample_collocation_time(
        8, sde, "log_scale", data_std=0.5, generator=torch.Generator().manual_seed(4), dtype=F64
    )
    _close(t[:4], u[:4])
    c = _log_relative_scale(sde, torch.tensor([0.0, 1.0], dtype=F64), 0.5)
    _close(_log_relative_scale(sde, t[4:], 0.5), c[0] + (c[1] - c[0]) * u[4:], rtol=0, atol=1e-5)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="data_std must be positive"):
            sample_collocation_time(4, sde, data_std=bad)


@pytest.mark.parametrize("weighting", ["none", "g2", "scaled"])
def test_cauchy_loss_is_its_closed_form(weighting):
    """J = mean w² ‖ε‖² + λ₀ mean ‖s(x, 0) − s₀(x)‖² (Eq. 21) for the linear score."""
    sde, cf, x, t = _points("vp")
    eps, _ = _linear_closed_form(cf, x, t)
    w = residual_weight(weighting, sde, t, 1.5)
    x_init = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], dtype=F64)
    init_score = lambda y: -2 * y  # s(y, 0) = −y, so the mismatch is y, ‖y‖² = 5 and 10
    total, parts = cauchy_loss(
        _linear, sde, x, t, init_score, x_init, weighting=weighting, data_std=1.5, init_weight=0.25
    )
    res = (w**2 * eps.pow(2).sum(1)).mean()
    _close(parts["residual"], res)
    _close(parts["init"], 7.5)
    _close(total, res + 0.25 * 7.5)


# -- what the core tests never called before ---------------------------------------------------


def test_estimators_say_what_they_are():
    est = sp.get_estimator("exact", dt="fd3", n_probes=2)
    assert repr(est) == "Autograd('exact', dt='fd3', n_probes=2)"
    assert repr(sp.get_estimator("hutchinson")) == "Autograd('hutchinson', div='hutchinson')"
    needs = {
        name: (
            sp.get_estimator(name).needs_autograd,
            sp.get_estimator(name).needs_forward_mode,
            sp.get_estimator(name).plain_forwards_only,
            sp.get_estimator(name).stochastic,
        )
        for name in sp.ESTIMATORS
    }
    assert needs == {
        "exact": (True, True, False, False),
        "paper": (True, False, False, True),
        "hutchinson": (True, True, False, True),
        "directional": (False, True, False, True),
        "forward_fd": (False, False, True, True),
    }
    assert sp.get_estimator("exact", div_mode="reverse").needs_forward_mode  # a jvp in t
    assert sp.get_estimator("exact", dt="fd3").needs_forward_mode  # a jvp in x
    assert sp.get_estimator("paper").time_step(_linear) == (1e-3, 5e-4)
    assert sp.get_estimator("exact").time_step(_linear) is None

    class Timed:
        def time_rate(self):
            return 100.0

        def __call__(self, x, t):
            return _linear(x, t)

    assert sp.get_estimator("forward_fd").time_step(Timed(), F64) == (1e-6, 1e-6)  # φ = 1e-4 rad / rate
    assert sp.get_estimator("forward_fd").time_step(Timed()) == (3e-4, 3e-4)  # float32: φ = 0.03


def test_generic_sde_without_a_kernel_or_prior_says_so():
    sde = sp.GenericSDE(lambda x, t: -x, lambda t: torch.ones_like(t))
    with pytest.raises(NotImplementedError, match="GenericSDE has no closed-form"):
        sde.marginal(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="GenericSDE has no prior"):
        _ = sde.prior_std
    assert sp.GenericSDE(lambda x, t: -x, lambda t: t, prior_std=2.0).prior_std == 2.0
    with_kernel = sp.GenericSDE(lambda x, t: -x, lambda t: t, marginal=lambda t: (torch.exp(-t), 2 * t))
    _close(with_kernel.marginal_variance(torch.tensor([0.5, 1.5], dtype=F64)), [1.0, 9.0])  # σ² from σ


def test_probes_and_hutchpp_follow_their_generator_and_defaults():
    x = torch.zeros(3, 4, dtype=F64)
    for kind in ("rademacher", "gaussian", "sphere"):
        a = sp.sample_probes(x, 2, kind, torch.Generator().manual_seed(5))
        b = sp.sample_probes(x, 2, kind, torch.Generator().manual_seed(5))
        assert torch.equal(a, b), kind
    _close(sp.sample_probes(x, 1, "sphere", torch.Generator().manual_seed(0)).pow(2).sum(-1), 4.0)
    A = torch.tensor(
        [[2.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0], [0.0, 0.5, 3.0, 0.0], [0.0, 0.0, 0.0, 0.5]], dtype=F64
    )
    fn = lambda y: y @ A.T
    y = torch.ones(3, 4, dtype=F64)
    one = hutchpp_divergence(fn, y, generator=torch.Generator().manual_seed(1))  # n_matvecs = 3
    assert torch.equal(one, hutchpp_divergence(fn, y, 3, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(one, hutchpp_divergence(fn, y, 3, generator=torch.Generator().manual_seed(2)))
    _close(hutchpp_divergence(fn, y, 12, generator=torch.Generator().manual_seed(1)), 4.5)  # k = D: exact


def test_antisymmetry_of_a_linear_field_and_its_default_probe_count():
    """‖A − Aᵀ‖_F² exactly, and the one-probe Hutchinson value ‖(A − Aᵀ) v‖² for its v."""
    A = torch.tensor([[0.0, 2.0, 1.0], [-1.0, 0.5, 0.0], [3.0, 1.0, -2.0]], dtype=F64)
    field = lambda x, t: x @ A.T * (1 + t)[:, None]
    x, t = torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    K = A - A.T
    _close(sp.antisymmetry(field, x, t), [(K**2).sum().item(), 4 * (K**2).sum().item()])
    v = sp.sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(3))[0]
    got = sp.antisymmetry(field, x, t, "hutchinson", generator=torch.Generator().manual_seed(3))
    _close(got, ((v @ K.T) ** 2).sum(1) * (1 + t) ** 2)
    two = sp.sample_probes(x, 2, "gaussian", torch.Generator().manual_seed(4))
    got = sp.antisymmetry(
        field, x, t, "hutchinson", n_probes=2, probe="gaussian", generator=torch.Generator().manual_seed(4)
    )
    _close(got, sum(((w @ K.T) ** 2).sum(1) for w in two) / 2 * (1 + t) ** 2)
    with pytest.raises(ValueError, match="unknown method 'bogus'; choose 'exact' or 'hutchinson'"):
        sp.antisymmetry(field, x, t, "bogus")


def test_fp_objective_keeps_its_call_count_in_its_state():
    objective = sp.FPObjective(lambda x, t: -x, sp.VPSDE(), every=3)
    x0 = torch.zeros(2, 2, dtype=F64)
    for _ in range(5):
        objective(x0, torch.Generator().manual_seed(0))
    assert objective.get_extra_state() == {"calls": 5}
    other = sp.FPObjective(lambda x, t: -x, sp.VPSDE(), every=3)
    other.set_extra_state({"calls": 7})
    assert other.calls == 7


def test_the_dsm_forward_rides_along_with_grad_calls_only():
    """FPObjective's fused forward: a call under no_grad (a validation probe) passes straight
    through; the first call with grad carries the DSM batch, later calls are plain."""
    from scorepde.losses import _Piggyback

    sizes = []

    class Model:
        time_dtype = torch.float32

        def time_rate(self):
            return 7.0

        def __call__(self, x, t):
            sizes.append(x.shape[0])
            return -x

    x = torch.ones(2, 3)
    ride = _Piggyback(Model(), x, torch.zeros(2))
    assert ride.time_rate() == 7.0 and ride.time_dtype == torch.float32
    with torch.no_grad():
        ride(torch.zeros(4, 3), torch.zeros(4))
    assert ride.out is None and sizes == [4]
    out = ride(torch.full((4, 3), 2.0), torch.zeros(4))
    assert sizes == [4, 6] and torch.equal(ride.out, -x) and torch.equal(out, torch.full((4, 3), -2.0))
    ride(torch.zeros(4, 3), torch.zeros(4))
    assert sizes == [4, 6, 4]


class _Tiny(torch.nn.Module):
    """A small smooth score net on 2-D points, so estimators (and their draws) give different values."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        ).double()

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the defaults: weighting "scaled", data_std 1, init_weight 1, exact, data+colloc, log_scale
        dict(data_std=2.0),
        dict(estimator="hutchinson"),  # unbiased=False by default
        dict(weighting="g2", data_std=2.0, init_weight=0.3, init_points="data", time_sampling="uniform"),
        dict(estimator="hutchinson", unbiased=True, n_probes=3, probe="gaussian"),
    ],
)
def test_cauchy_objective_is_cauchy_loss_on_its_own_draws(kwargs):
    """forward(x0, g) = cauchy_loss at t from sample_collocation_time, x_t = a x0 + σ z (z the next
    draws of g), the initial condition at x0 (and the x_t for "data+colloc"), in x0's dtype."""
    sde, net = sp.VPSDE(), _Tiny()
    x0 = torch.tensor([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8], [1.0, 1.0]], dtype=F64)
    init_score = lambda y: -y
    o = {
        **dict(
            weighting="scaled",
            data_std=1.0,
            init_weight=1.0,
            estimator="exact",
            unbiased=False,
            init_points="data+colloc",
            time_sampling="log_scale",
        ),
        **kwargs,
    }
    g = torch.Generator().manual_seed(9)
    t = sample_collocation_time(4, sde, o["time_sampling"], data_std=o["data_std"], generator=g, dtype=F64)
    z = torch.randn(4, 2, generator=g, dtype=F64)
    a, var = sde.marginal(t)[0], sde.marginal_variance(t)
    xt = a[:, None] * x0 + var.sqrt()[:, None] * z
    x_init = x0 if o["init_points"] == "data" else torch.cat([x0, xt])
    extra = {k: v for k, v in kwargs.items() if k in ("n_probes", "probe")}
    expected, parts = cauchy_loss(
        net,
        sde,
        xt,
        t,
        init_score,
        x_init,
        weighting=o["weighting"],
        data_std=o["data_std"],
        init_weight=o["init_weight"],
        estimator=o["estimator"],
        unbiased=o["unbiased"],
        generator=g,
        **extra,
    )
    objective = CauchyObjective(net, sde, init_score, **kwargs)
    got, got_parts = objective(x0, torch.Generator().manual_seed(9))
    assert got.dtype == F64
    _close(got, expected)
    _close(got_parts["init"], parts["init"])


def test_cauchy_objective_checks_its_options_and_the_batch_once(monkeypatch):
    import scorepde.cauchy as cauchy

    sde, net = sp.VESDE(), _Tiny()
    for bad, words in [
        (dict(time_sampling="beta"), "unknown time sampling 'beta'"),
        (dict(init_points="all"), "unknown init_points 'all'"),
        (dict(weighting="bogus"), "unknown residual weighting 'bogus'"),
        (dict(bogus=1), "unknown residual option"),
    ]:
        with pytest.raises(ValueError, match=words):
            CauchyObjective(net, sde, lambda y: -y, **bad)
    objective = CauchyObjective(
        net, sde, lambda y: -y, validate=True
    )  # a residual option, not the estimator's
    checks = []
    monkeypatch.setattr(cauchy, "check_batch_independent", lambda *a: checks.append(1))
    x0 = torch.ones(3, 2, dtype=F64)
    objective(x0, torch.Generator().manual_seed(0))
    objective(x0, torch.Generator().manual_seed(1))
    assert checks == [1]


# -- FPObjective: when it regularizes, fuses and casts ------------------------------------------


def test_fp_objective_says_when_it_regularizes_and_fuses():
    sde, model = sp.VPSDE(), _Tiny()
    assert not sp.FPObjective(model, sde).regularized
    assert (
        sp.FPObjective(model, sde, gamma=0.5).regularized and sp.FPObjective(model, sde, beta=0.5).regularized
    )
    assert sp.FPObjective(model, sde, beta=1.0, estimator="forward_fd").fused
    assert not sp.FPObjective(model, sde, beta=1.0, estimator="forward_fd", autocast=torch.bfloat16).fused
    assert not sp.FPObjective(model, sde, estimator="forward_fd").fused  # nothing to fuse with
    assert not sp.FPObjective(model, sde, beta=1.0, estimator="exact").fused


def test_fp_objective_autocasts_the_dsm_forward_in_the_dtype_asked():
    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x, t):
            out = self.lin(x)
            seen.append(out.dtype)
            return out * (1 + t[:, None])

    sp.FPObjective(Model(), sp.VESDE(), autocast=torch.float16)(
        torch.ones(3, 2), torch.Generator().manual_seed(0)
    )
    assert seen == [torch.float16]


@pytest.mark.parametrize("estimator", ["exact", "forward_fd"])
def test_fp_objective_is_dsm_plus_the_regularizer_with_their_gradients(estimator):
    """J_FP = J_DSM + R_FP on the same draws, value and parameter gradient, whether or not the DSM
    forward rides along with R_FP's (forward_fd) or not (exact: a torch.func transform)."""
    sde, eps = sp.VPSDE(), 1e-3
    x0 = torch.tensor([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]], dtype=F64)
    net = _Tiny()
    total, parts = sp.FPObjective(net, sde, beta=0.3, gamma=0.1, estimator=estimator, eps=eps, m=2)(
        x0, torch.Generator().manual_seed(2)
    )
    got = torch.autograd.grad(total, list(net.parameters()))
    g = torch.Generator().manual_seed(2)
    dsm, xt, t = sp.dsm_loss(net, sde, x0, eps=eps, generator=g, return_samples=True)
    fp, _ = sp.fp_regularizer(net, sde, xt, t, beta=0.3, gamma=0.1, estimator=estimator, m=2, generator=g)
    want = torch.autograd.grad(dsm + fp, list(net.parameters()))
    _close(total, dsm + fp)
    _close(parts["dsm"], dsm)
    _close(parts["fp"], fp)
    for a, b in zip(got, want):
        _close(a, b, rtol=1e-8, atol=1e-10)


def test_covariances_are_refused_by_their_exact_tolerances():
    """Symmetric to 1e-10 relative and 1e-12 absolute, and positive definite (not only semi-definite)."""
    for C, words in [
        ([[1.0, 0.5], [0.4, 1.0]], r"covs must be symmetric; symmetrise them with \(C \+ Cᵀ\) / 2"),
        ([[1.0, 0.5], [0.5 + 1e-8, 1.0]], "symmetric"),  # 2e-8 relative: over 1e-10
        ([[1e-3, 1e-6], [1e-6 + 1e-10, 1e-3]], "symmetric"),  # 1e-10 absolute: over 1e-12 + 1e-10·1e-6
        ([[1.0, 0.0], [0.0, 0.0]], "positive definite; the smallest eigenvalue is 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([C], dtype=F64))
    sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([[[1.0, 0.5], [0.5 + 1e-11, 1.0]]], dtype=F64))


def test_random_rotations_follow_their_generator():
    from scorepde.gmm import random_rotation

    R = random_rotation(4, torch.Generator().manual_seed(3))
    assert torch.equal(R, random_rotation(4, torch.Generator().manual_seed(3)))
    _close(R @ R.T, torch.eye(4, dtype=F64))
    q, r = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=F64))
    _close(R, q * torch.sign(torch.diagonal(r)))


def test_curl_names_the_way_out_for_other_dimensions():
    with pytest.raises(ValueError, match="x has 3 features. Use scorepde.antisymmetry for any dimension"):
        sp.curl(_linear, torch.ones(2, 3, dtype=F64), torch.zeros(2, dtype=F64))


# -- the second round: what the first mutation run left alive ----------------------------------


def test_cauchy_loss_defaults_and_validation():
    """Defaults: w = "scaled" with data_std 1, λ₀ = 1, the plug-in ‖ε̂‖² (unbiased=False), no validation."""
    sde, cf, x, t = _points("vp")
    eps, _ = _linear_closed_form(cf, x, t)
    x_init = torch.tensor([[1.0, 2.0, 0.0]], dtype=F64)
    total, parts = cauchy_loss(_linear, sde, x, t, lambda y: -2 * y, x_init)
    res = (residual_weight("scaled", sde, t, 1.0) ** 2 * eps.pow(2).sum(1)).mean()
    _close(total, res + 5.0)
    net = _Tiny()
    xs, ts, init = torch.ones(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64), lambda y: -y
    kw = dict(estimator="hutchinson", probe="gaussian")
    plain, _ = cauchy_loss(net, sde, xs, ts, init, xs, generator=torch.Generator().manual_seed(0), **kw)
    single, _ = cauchy_loss(
        net, sde, xs, ts, init, xs, unbiased=False, generator=torch.Generator().manual_seed(0), **kw
    )
    two, _ = cauchy_loss(
        net, sde, xs, ts, init, xs, unbiased=True, generator=torch.Generator().manual_seed(0), **kw
    )
    assert plain == single and plain != two
    coupled = lambda y, tt: y - y.mean(0)  # a score that mixes the batch: refused only when validated
    cauchy_loss(coupled, sde, x, t, init, x_init)
    with pytest.raises(ValueError, match="couples samples across the batch"):
        cauchy_loss(coupled, sde, x, t, init, x_init, validate=True)


def test_log_scale_needs_a_kernel_and_takes_data_std_one_by_default():
    with pytest.raises(
        ValueError, match="^time sampling 'log_scale' needs the SDE's kernel, but GenericSDE has no"
    ):
        sample_collocation_time(4, sp.GenericSDE(lambda x, t: -x, lambda t: t), "log_scale")
    draws = [
        sample_collocation_time(6, sp.VPSDE(), "log_scale", generator=torch.Generator().manual_seed(0), **kw)
        for kw in ({}, dict(data_std=1.0))
    ]
    assert torch.equal(*draws)


class _Timed:
    """s = −(1 + t³) x, which says its time rate (10 rad per unit t): central differences in t are
    off by exactly h² (k'(t) = 3t², the stencil gives 3t² + h²)."""

    def time_rate(self):
        return 10.0

    def __call__(self, x, t):
        return -(1 + t**3)[:, None] * x


def test_projected_residual_takes_its_steps_from_the_score_and_its_options():
    sde, cf, x, t = _points("ve")
    v = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, 1.0]], dtype=F64)
    xv = (x * v).sum(1)
    g2 = torch.tensor([cf["g2"](s) for s in t.tolist()], dtype=F64)
    k = 1 + t**3
    grad_l = g2 * k * k * xv  # ⟨∇L, v⟩ for s = −k x under VE (c = 0)
    exact = -3 * t**2 * xv - grad_l
    # h="auto": φ/rate = 1e-4/10 in float64, so the stencil's h² = 1e-10 is below the tolerance
    _close(sp.projected_residual(_Timed(), sde, x, t, v, dt="central")[0], exact, rtol=0, atol=1e-8)
    _close(sp.projected_residual(_Timed(), sde, x, t, v, dt="central", h=(0.1, 0.1))[0], exact - 0.01 * xv)
    net, y = _Tiny(), torch.ones(2, 2, dtype=F64)
    tt, w = torch.full((2,), 0.5, dtype=F64), torch.ones(2, 2, dtype=F64)
    draw = lambda s: sp.projected_residual(
        net, sde, y, tt, w, div="hutchinson", generator=torch.Generator().manual_seed(s)
    )[0]
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_a_bare_estimator_needs_forward_mode_exactly_when_its_time_derivative_is_a_jvp():
    from scorepde.estimators import Estimator

    class Bare(Estimator):
        OPTIONS = dict(dt="jvp", h="auto")

    assert Bare("bare").needs_forward_mode and Bare("bare").time_stencil is None
    assert not Bare("bare", dt="fd3").needs_forward_mode and Bare("bare", dt="fd3").time_stencil == "fd3"
    assert not Bare("bare").plain_forwards_only and not Bare("bare").stochastic


def test_mixture_parameters_follow_the_dtype_of_each_call():
    gmm = sp.GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [[0.5, 1.0], [1.0, 2.0]])  # diagonal
    x, t, sde = torch.ones(3, 2, dtype=F64), torch.full((3,), 0.5, dtype=F64), sp.VPSDE()
    assert gmm.log_prob(x, t, sde).dtype == F64
    assert gmm.log_prob(x.float(), t.float(), sde).dtype == torch.float32
    assert gmm.score(x.float(), t.float(), sde).dtype == torch.float32
    with pytest.raises(ValueError, match=r"^covs must be symmetric; symmetrise them with \(C \+ Cᵀ\) / 2$"):
        sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([[[1.0, 0.5], [0.4, 1.0]]], dtype=F64))


def test_generic_sde_defaults_and_its_given_divergence():
    sde = sp.GenericSDE(lambda x, t: -x, lambda t: t, drift_divergence=lambda x, t: t * x.sum(1))
    assert sde.T == 1.0
    x, t = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    _close(sde.drift_divergence(x, t), [1.5, 4.0])
    _close(sp.GenericSDE(lambda x, t: -t[:, None] * x, lambda t: t).drift_divergence(x, t), [-1.0, -4.0])


def test_discrete_vp_times_are_float64():
    sde = sp.DiscreteVPSDE(torch.linspace(0.99, 0.5, 10, dtype=F64))
    assert sde.time(3).dtype == F64 and sde.time(3).item() == 0.4


# -- the third round -------------------------------------------------------------------------


def test_discrete_vp_refuses_bad_schedules_by_name_and_keeps_float64():
    for bad, words in [
        ([0.5], r"^alphas_cumprod must be a finite 1-D sequence of at least 2 values$"),
        ([0.9, float("nan")], r"^alphas_cumprod must be a finite 1-D sequence of at least 2 values$"),
        ([1.0, 0.5], r"^alphas_cumprod must lie in \(0, 1\), got values in \[0\.5, 1\]; a zero terminal SNR"),
        ([0.9, 0.0], r"rescale_betas_zero_snr=True\) has no VP SDE with finite β\(t\)$"),
        ([0.9, 0.9, 0.5], r"^alphas_cumprod must decrease strictly \(every beta > 0\)$"),
        ([0.5, 0.9], r"^alphas_cumprod must decrease strictly \(every beta > 0\)$"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.DiscreteVPSDE(bad)
    sde = sp.DiscreteVPSDE([0.9, 0.5])  # two values are enough; a list is read as float64
    nodes = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    _close(sde.alpha_bar(nodes), [1.0, 0.9, 0.5], rtol=1e-15, atol=0)
    assert (
        sde.alpha_bar(nodes.float()).dtype == torch.float32 and sde.beta(nodes.float()).dtype == torch.float32
    )


def test_losses_name_the_term_that_went_non_finite():
    sde, x0 = sp.VPSDE(), torch.ones(2, 2, dtype=F64)
    nan = lambda x, t: torch.full_like(x, float("nan"))
    with pytest.raises(ValueError, match="^the DSM loss has 1 non-finite value"):
        sp.dsm_loss(nan, sde, x0)
    x, t = torch.ones(2, 2, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="^the Cauchy-problem loss has 1 non-finite value"):
        cauchy_loss(lambda y, tt: -y, sde, x, t, lambda y: torch.full_like(y, float("nan")), x)


def test_cauchy_loss_passes_its_options_and_times_in_the_data_dtype():
    sde, net = sp.VPSDE(), _Tiny()
    x, t = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=F64), torch.tensor([0.3, 0.7], dtype=F64)
    init = lambda y: -y
    total, parts = cauchy_loss(
        net,
        sde,
        x,
        t,
        init,
        x,
        estimator="hutchinson",
        probe="gaussian",
        generator=torch.Generator().manual_seed(3),
    )
    sq, _ = sp.residual_norm_sq(
        net,
        sde,
        x,
        t,
        "hutchinson",
        unbiased=False,
        probe="gaussian",
        generator=torch.Generator().manual_seed(3),
        validate=False,
    )
    _close(parts["residual"], (residual_weight("scaled", sde, t) ** 2 * sq).mean())

    def strict(y, tt):
        assert tt.dtype == y.dtype, "t must come in the data's dtype"
        return -y

    cauchy_loss(strict, sde, x, t, init, x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # m = 1 by default
        dict(m=2, unbiased=True, estimator="hutchinson", probe="gaussian", n_probes=2),
        dict(m=2, unbiased=False, estimator="hutchinson", probe="gaussian", n_probes=2),
        dict(m=2, normalize="dim", rhs_reduction="batch_l2", gamma=0.2),
    ],
)
def test_fp_objective_hands_its_settings_to_the_regularizer(kwargs):
    sde, net, eps = sp.VPSDE(), _Tiny(), 1e-3
    x0 = torch.tensor([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]], dtype=F64)
    total, parts = sp.FPObjective(net, sde, beta=0.3, eps=eps, **kwargs)(x0, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    dsm, xt, t = sp.dsm_loss(net, sde, x0, eps=eps, generator=g, return_samples=True)
    fp, _ = sp.fp_regularizer(net, sde, xt, t, beta=0.3, generator=g, **kwargs)
    _close(parts["fp"], fp)
    _close(total, dsm + fp)


def test_fp_objective_checks_the_batch_once_and_sizes_its_subbatch(monkeypatch):
    import scorepde.losses as losses

    checks = []
    monkeypatch.setattr(losses, "check_batch_independent", lambda *a: checks.append(1))
    objective = sp.FPObjective(_Tiny(), sp.VPSDE(), beta=0.1)
    x0 = torch.ones(3, 2, dtype=F64)
    objective(x0, torch.Generator().manual_seed(0))
    objective(x0, torch.Generator().manual_seed(1))
    assert checks == [1]
    sizes = {
        sub: sp.FPObjective(_Tiny(), sp.VPSDE(), subbatch=sub).fp_batch_size(8)
        for sub in (0.05, 0.5, 1.0, 3, 20)
    }
    assert sizes == {0.05: 1, 0.5: 4, 1.0: 8, 3: 3, 20: 8}
    assert sp.FPObjective(_Tiny(), sp.VPSDE()).fp_batch_size(8) == 8


def test_fpe_rhs_with_a_float_time_its_probes_and_its_horizon():
    from scorepde.estimators import fpe_rhs_and_score

    sde, net = sp.VPSDE(), _Tiny()
    x, t = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=F64), torch.full((2,), 0.4, dtype=F64)
    exact = sp.fpe_rhs(net, sde, x, t)
    _close(sp.fpe_rhs(net, sde, x, 0.4, validate=False), exact)
    _close(sp.fpe_rhs(net, sde, x, t, validate=False), exact)
    probes = sp.sample_probes(x, 3, "gaussian", torch.Generator().manual_seed(5))
    want = fpe_rhs_and_score(net, sde, x, t, "hutchinson", probes)[0]
    got = sp.fpe_rhs(
        net,
        sde,
        x,
        t,
        div="hutchinson",
        probe="gaussian",
        n_probes=3,
        generator=torch.Generator().manual_seed(5),
    )
    _close(got, want)
    one = sp.sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(5))
    got = sp.fpe_rhs(net, sde, x, t, div="hutchinson", generator=torch.Generator().manual_seed(5))
    _close(got, fpe_rhs_and_score(net, sde, x, t, "hutchinson", one)[0])
    edm, cf = sp.EDMSDE(), CLOSED["edm"][1]
    y, s = torch.tensor([[1.0, 2.0, 0.5]], dtype=F64), torch.tensor([40.0], dtype=F64)
    _close(sp.fpe_rhs(_linear, edm, y, s), _linear_closed_form(cf, y, s)[1])  # t = 40 lies in EDM's [0, 80]


def test_forward_fd_differences_carry_their_closed_form_step_error():
    """s = x³ in 1-D under VE, v = 1: the corners x ± δ(u ± v) make every difference a known
    polynomial in δ = hx·sqrt(σ_t² + σ_min²): s̄ = x³ + 6xδ², div s ≈ D_v s ≈ 3x² + 4δ²,
    D_v div s ≈ 6x. So ⟨ε, v⟩ = −½g²(6x + 2 s̄ (3x² + 4δ²)) and L = ½g²(3x² + 4δ² + s̄²) exactly."""
    from scorepde.estimators.forward_fd import projected_residual_fd, x_step

    sde, cf = sp.VESDE(), CLOSED["ve"][1]
    x, t, v = (
        torch.tensor([[0.7], [-1.3]], dtype=F64),
        torch.tensor([0.3, 0.8], dtype=F64),
        torch.ones(2, 1, dtype=F64),
    )
    cube = lambda y, tt: y**3
    for hx in (0.05, 0.2):
        d = torch.tensor([hx * (cf["var"](s) + 0.01**2) ** 0.5 for s in t.tolist()], dtype=F64)
        _close(x_step(sde, t, hx), d)
        g2 = torch.tensor([cf["g2"](s) for s in t.tolist()], dtype=F64)
        y = x[:, 0]
        mean = y**3 + 6 * y * d**2
        first = 3 * y**2 + 4 * d**2
        kw = dict(hx=hx, generator=torch.Generator().manual_seed(0))
        proj, L = projected_residual_fd(cube, sde, x, t, v, **kw)
        _close(L, 0.5 * g2 * (first + mean**2), rtol=1e-9)
        _close(proj, -0.5 * g2 * (6 * y + 2 * mean * first), rtol=1e-9)
        if hx == 0.05:  # the default step
            _close(
                projected_residual_fd(cube, sde, x, t, v, generator=torch.Generator().manual_seed(0))[0], proj
            )
            est = sp.residual(
                cube, sde, x, t, "forward_fd", generator=torch.Generator().manual_seed(0), validate=False
            )
            assert (est.abs() > 0).all()
    assert torch.equal(x_step(sp.GenericSDE(lambda y, s: -y, lambda s: s), t, 0.3), torch.full_like(t, 0.3))
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match=r"^the step in x must be positive, got hx="):
            x_step(sde, t, bad)


@pytest.fixture
def sign_draws(monkeypatch):
    """torch.randint counted, and stopped after 200 draws: separated_mixture's rejection loop, which
    draws one sign vector per call, then fails at once where it could never find a new one
    (every test here needs a few dozen draws at most)."""
    draws = []
    randint = torch.randint

    def counted(*args, **kwargs):
        draws.append(1)
        if len(draws) > 200:
            raise RuntimeError("separated_mixture keeps drawing sign vectors it already has")
        return randint(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", counted)
    return draws


def test_separated_mixture_defaults_and_refusals(sign_draws):
    """K = 4 sign vectors times offset 3, weights 0.4 … 0.1, iso stds 0.5 … 1.2 by default; diag stds
    log-spaced over 0.3 … 3 per coordinate; full = the diagonal ones rotated."""
    from scorepde.gmm import separated_mixture

    gmm = separated_mixture(3)
    assert gmm.kind == "iso" and gmm.means.dtype == F64 and gmm.means.shape == (4, 3)
    assert (
        set(gmm.means.abs().flatten().tolist()) == {3.0} and len({tuple(m) for m in gmm.means.tolist()}) == 4
    )
    _close(gmm.weights, [0.4, 0.3, 0.2, 0.1])
    _close(gmm.stds, [0.5, 0.5 + 0.7 / 3, 0.5 + 1.4 / 3, 1.2])
    assert torch.equal(gmm.means, separated_mixture(3, seed=0).means)
    assert not torch.equal(gmm.means, separated_mixture(3, seed=1).means)
    _close(separated_mixture(2, 1, offset=1.5).means.abs(), 1.5)
    diag = separated_mixture(4, 2, cov="diag")
    _close(
        diag.stds.sort(dim=1).values,
        torch.logspace(math.log10(0.3), 1.0 + math.log10(0.3), 4, dtype=F64).expand(2, 4),
    )
    _close(diag.weights, [2 / 3, 1 / 3])
    assert torch.equal(diag.stds, separated_mixture(4, 2, cov="diag").stds)
    full = separated_mixture(4, 2, cov="full")
    _close(full.weights, [2 / 3, 1 / 3])
    _close(full.variances, (diag.stds**2).sort(dim=1).values)
    assert torch.equal(full.basis, separated_mixture(4, 2, cov="full").basis)
    separated_mixture(2, 4)  # all four sign vectors of 2-D
    for args, kw, words in [
        ((0,), {}, r"^need dim >= 1 and n_components >= 1, got 0, 4$"),
        ((2, 0), {}, r"^need dim >= 1 and n_components >= 1, got 2, 0$"),
        ((2,), dict(cov="bogus"), r"^cov must be 'iso', 'diag' or 'full', got 'bogus'$"),
        (
            (2, 5),
            {},
            r"^only 2\^2 = 4 distinct sign vectors exist in 2-D; ask for at most that many components, not 5$",
        ),
    ]:
        with pytest.raises(ValueError, match=words):
            separated_mixture(*args, **kw)


@pytest.mark.parametrize("n_directions", [1, 2])
def test_directional_residual_is_the_mean_projection_on_its_directions(n_directions):
    """ε̂ = (1/K) Σ_k ⟨ε, v_k⟩ v_k on the K directions drawn first from the generator (Gaussian
    here, so that v and 1/v differ), L[s] per sample; also for a batch of one."""
    sde, cf, x, t = _points("vp")
    for xs, ts in ((x, t), (x[:1], t[:1])):
        eps, L = _linear_closed_form(cf, xs, ts)
        V = sp.sample_probes(xs, n_directions, "gaussian", torch.Generator().manual_seed(6))
        got, rhs = sp.residual(
            _linear,
            sde,
            xs,
            ts,
            "directional",
            return_rhs=True,
            direction_probe="gaussian",
            n_directions=n_directions,
            generator=torch.Generator().manual_seed(6),
        )
        want = sum((eps * v).sum(1, keepdim=True) * v for v in V) / n_directions
        _close(got, want, rtol=1e-8, atol=1e-10)
        _close(rhs, L)


def test_stencil_points_default_to_the_papers_stencil_and_dequantize_draws_in_its_dtype():
    from scorepde.bpd import dequantize
    from scorepde.derivatives import stencil_points

    t = torch.tensor([0.3, 0.7], dtype=F64)
    for a, b in zip(stencil_points(t), stencil_points(t, "fd3")):
        for u, w in zip(a, b):
            assert torch.equal(u, w)
    k = torch.tensor([[0, 3], [1, 2]])
    u = torch.rand(2, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
    got = dequantize(k, 4, torch.Generator().manual_seed(8), dtype=F64)
    assert got.dtype == F64
    _close(got, (k + u) / 4)


def test_objectives_and_data_checks_refuse_by_name():
    from scorepde.bpd import check_discrete

    sde, net, x, t = sp.VPSDE(), _Tiny(), torch.ones(2, 2, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    for kw, words in [
        (dict(m=3), r"^m must be 1 or 2, got 3$"),
        (dict(beta=-1.0), r"^beta and gamma must be non-negative, got -1.0, 0.0$"),
        (dict(gamma=-1.0), r"^beta and gamma must be non-negative, got 0.1, -1.0$"),
        (dict(normalize="x"), r"^unknown normalize 'x'; choose one of \['dim', 'none'\]$"),
        (dict(rhs_reduction="x"), r"^unknown rhs_reduction 'x'; choose one of \['batch_l2', 'mean_abs'\]$"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.fp_regularizer(net, sde, x, t, **{"beta": 0.1, **kw})
    for kw, words in [
        (dict(m=3), r"^m must be 1 or 2, got 3$"),
        (dict(normalize="x"), r"^unknown normalize 'x'"),
        (dict(rhs_reduction="x"), r"^unknown rhs_reduction 'x'"),
        (
            dict(subbatch=0),
            r"^subbatch must be a positive batch size \(int\) or a fraction of the batch in \(0, 1\]",
        ),
        (dict(subbatch=1.5), r"^subbatch must be a positive batch size"),
        (dict(subbatch=0.0), r"^subbatch must be a positive batch size"),
        (dict(subbatch="2"), r"^subbatch must be a positive batch size"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.FPObjective(net, sde, **kw)
    sp.FPObjective(net, sde, subbatch=1), sp.FPObjective(net, sde, subbatch=1.0)
    for k, words in [
        (torch.tensor([True, False]), r"^data must hold integers in 0\.\.3, got dtype torch\.bool$"),
        (torch.tensor([0, 4]), r"^data must lie in 0\.\.3 for levels=4, but observed min 0 and max 4; pass"),
        (torch.tensor([-1, 2]), r"^data must lie in 0\.\.3 for levels=4, but observed min -1 and max 2"),
    ]:
        with pytest.raises(ValueError, match=words):
            check_discrete(k, 4)
    check_discrete(torch.tensor([0, 3]), 4)


def test_the_last_round_of_refusals_and_pass_throughs():
    from scorepde.estimators import get_estimator

    for make, words in [
        (lambda: sp.EDMSDE(sigma_min=0.0), r"^need 0 < sigma_min < sigma_max, got 0.0, 80.0$"),
        (lambda: sp.EDMSDE(sigma_min=2.0, sigma_max=2.0), r"^need 0 < sigma_min < sigma_max, got 2.0, 2.0$"),
        (lambda: sp.VESDE(sigma_min=0.0), r"^need 0 < sigma_min < sigma_max"),
        (lambda: sp.DiscreteVPSDE([0.9, 0.5, 0.6]), r"^alphas_cumprod must decrease strictly"),
        (lambda: get_estimator("forward_fd", hx=0.0), r"^the step in x must be positive, got hx=0.0$"),
        (
            lambda: get_estimator("forward_fd", n_probes=2),
            r"forms div s with one Hutchinson probe by differences: use div='hutchinson', n_probes=1$",
        ),
    ]:
        with pytest.raises(ValueError, match=words):
            make()
    sde, net = sp.VPSDE(), _Tiny()
    x, t = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=F64), torch.tensor([0.3, 0.7], dtype=F64)
    kw = dict(beta=1.0, m=2, estimator="hutchinson", probe="gaussian", n_probes=2)
    fp, parts = sp.fp_regularizer(net, sde, x, t, generator=torch.Generator().manual_seed(4), **kw)
    sq, _ = sp.residual_norm_sq(
        net,
        sde,
        x,
        t,
        "hutchinson",
        unbiased=True,
        probe="gaussian",
        n_probes=2,
        generator=torch.Generator().manual_seed(4),
        validate=False,
    )
    _close(parts["fp_residual"], sq.mean())
    coupled = lambda y, tt: y - y.mean(0)
    sp.fp_regularizer(coupled, sde, x, t, beta=1.0)  # not validated by default
    with pytest.raises(ValueError, match="couples samples across the batch"):
        sp.fp_regularizer(coupled, sde, x, t, beta=1.0, validate=True)


# -- forward_fd's stencils, probes and drift terms, against closed forms -------------------------


def _cubic(x, t):
    """s = −k(t) x with k = 1 + t³: a central difference in t is 3t² + h², not 3t²."""
    return -(1 + t**3).reshape(-1, *([1] * (x.dim() - 1))) * x


def _cubic_drift_sde(T):
    """f = −x³ (elementwise), g = 1: div f = −3‖x‖², D_v div f = −6⟨x, v⟩, not 0 as for a linear drift."""
    return sp.GenericSDE(
        lambda x, t: -(x**3),
        lambda t: torch.ones_like(t),
        drift_divergence=lambda x, t: -3 * x.pow(2).flatten(1).sum(1),
        T=T,
    )


def _cubic_projection(x, t, v, dk):
    """⟨ε̂, v⟩ of ``_cubic`` under ``_cubic_drift_sde`` given the stencil's k' per sample ``dk``:
    −k'⟨x, v⟩ − D_v L with L = ½(div s + k²‖x‖²) − k Σx⁴ + 3‖x‖², D_v L = (k² + 6)⟨x, v⟩ − 4k Σx³v."""
    k = torch.tensor([1 + s**3 for s in t.tolist()], dtype=F64)
    xv, x3v = (x * v).sum(1), (x**3 * v).sum(1)
    return -torch.tensor(dk, dtype=F64) * xv - ((k * k + 6) * xv - 4 * k * x3v)


def test_forward_fd_stencils_in_t_against_closed_forms():
    """Exact in x (the score is linear in x, the drift's derivatives are forward mode), so only the
    stencil in t is left: jvp k' = 3t²; central (k(t+h) − k(t−h))/2h = 3t² + h² (with T = 2, t = 1.5
    is inside); one-sided (k(t+h) − k(t))/h forward while t + h ≤ T (t = 0.75 reaches T exactly),
    backward (k(t) − k(t−h))/h past it."""
    k = lambda s: 1 + s**3
    x = torch.tensor([[0.3, -1.2, 0.7], [1.5, 0.2, -0.4], [-0.8, 0.9, 1.1]], dtype=F64)
    v = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, 1.0]], dtype=F64)
    t = torch.tensor([0.5, 1.5, 1.9], dtype=F64)
    sde = _cubic_drift_sde(2.0)
    for dt, dk in [
        ("jvp", [3 * s * s for s in t.tolist()]),
        ("central", [3 * s * s + 0.01 for s in t.tolist()]),
    ]:
        proj, _ = sp.projected_residual_fd(_cubic, sde, x, t, v, dt=dt, h=(0.1, 0.05))
        _close(proj, _cubic_projection(x, t, v, dk), rtol=1e-9, atol=1e-9)
    t = torch.tensor([0.75, 0.9, 0.3], dtype=F64)
    h0 = 0.25
    dk = [(k(0.75 + h0) - k(0.75)) / h0, (k(0.9) - k(0.9 - h0)) / h0, (k(0.3 + h0) - k(0.3)) / h0]
    proj, _ = sp.projected_residual_fd(_cubic, _cubic_drift_sde(1.0), x, t, v, dt="one_sided", h=(h0, 0.05))
    _close(proj, _cubic_projection(x, t, v, dk), rtol=1e-9, atol=1e-9)


class _TimedCubic:
    """``_cubic`` with a time conditioning that turns at 1 rad per unit t: h="auto" gives
    h = φ/1 with φ = 1e-4 for float64 x (0.03 for float32, PAPER_STEPS for a plain callable)."""

    def time_rate(self):
        return 1.0

    def __call__(self, x, t):
        return _cubic(x, t)


def test_forward_fd_takes_its_auto_step_from_the_score_and_the_dtype():
    """h="auto" on a float64 x: central k' = 3t² + h² with h = 1e-4, not 1e-3 (PAPER_STEPS, the score
    unread) nor 0.03 (the float32 phase)."""
    x = torch.tensor([[0.3, -1.2, 0.7], [1.5, 0.2, -0.4]], dtype=F64)
    v = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]], dtype=F64)
    t = torch.tensor([0.5, 0.8], dtype=F64)
    proj, _ = sp.projected_residual_fd(_TimedCubic(), _cubic_drift_sde(1.0), x, t, v, dt="central", h="auto")
    _close(proj, _cubic_projection(x, t, v, (3 * t * t + 1e-8).tolist()), rtol=1e-10, atol=1e-10)


def test_forward_fd_calls_the_score_in_the_dtype_of_x():
    """A float64 t with a float32 x: the steps in x are cast to x's dtype, so the network sees float32."""
    seen = []

    def score(y, s):
        seen.append(y.dtype)
        return -y

    x, v = torch.ones(2, 3), torch.ones(2, 3)
    sp.projected_residual_fd(score, sp.VPSDE(), x, torch.tensor([0.3, 0.6], dtype=F64), v, h=(1e-2, 1e-2))
    assert seen == [torch.float32]


def test_forward_fd_gaussian_probes_against_closed_forms():
    """With Gaussian probes u (divergence) and v (direction) the steps δu, δv are not ±δ, so a step
    that divides by a probe instead of multiplying shows: ε̂ = ⟨ε, v⟩ v exactly (the score is linear
    in x), and L = ½(−k‖u‖² + k²‖x‖²) − kΣx⁴ + 3‖x‖², Hutchinson's −k‖u‖² with the u the estimator
    drew (directions first, then u, from one generator)."""
    x = torch.tensor([[0.3, -1.2, 0.7, 0.1], [1.5, 0.2, -0.4, -0.6], [-0.8, 0.9, 1.1, 0.4]], dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    k = 1 + t**3
    options = dict(probe="gaussian", direction_probe="gaussian", dt="jvp")
    g = torch.Generator().manual_seed(3)
    eps, L = sp.residual(
        _cubic, _cubic_drift_sde(1.0), x, t, "forward_fd", return_rhs=True, generator=g, **options
    )
    g = torch.Generator().manual_seed(3)
    v = torch.randn((1, *x.shape), generator=g, dtype=F64)[0]
    u = torch.randn((1, *x.shape), generator=g, dtype=F64)[0]
    along = _cubic_projection(x, t, v, (3 * t * t).tolist())
    _close(eps, along[:, None] * v, rtol=1e-8, atol=1e-9)
    r2, r4 = x.pow(2).sum(1), x.pow(4).sum(1)
    _close(L, 0.5 * (-k * u.pow(2).sum(1) + k * k * r2) - k * r4 + 3 * r2, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("estimator", ["directional", "forward_fd"])
def test_several_directions_draw_every_probe_from_the_generator(estimator):
    """With n_directions = 2 each direction's probes come from the caller's generator, not from
    torch's global one: the same seed gives the same ε̂ and L (whose Gaussian Hutchinson term
    −k‖u‖² shows the probe u) whatever the global state."""
    sde, cf, x, t = _points("vp")
    opts = dict(n_directions=2, probe="gaussian", return_rhs=True)
    if estimator == "directional":
        opts["div"] = "hutchinson"
    out = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        g = torch.Generator().manual_seed(5)
        out.append(sp.residual(_linear, sde, x, t, estimator, generator=g, **opts))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_fpe_rhs_without_validation_reads_a_float_time_as_one_time_per_sample():
    """validate=False with t a float: t is repeated over the batch (B = 3 here, D = 2, so a t
    made over the wrong axis has the wrong length), and L equals the closed form."""
    sde, cf, x, t = _points("vp")
    x = x[:, :2]
    _, L = _linear_closed_form(cf, x, torch.full((3,), 0.5, dtype=F64))
    _close(sp.fpe_rhs(_linear, sde, x, 0.5, validate=False), L)


def test_separated_mixture_uses_every_sign_vector_at_the_offset(sign_draws):
    """K = 2ᴰ components may be asked for (all sign vectors, each once), means exactly ±offset in
    float64 (0.1 is not a float32 number), weights ∝ K, …, 1; K = 2ᴰ + 1 is refused by its count."""
    assert separated_mixture(3, 1).means.shape == (1, 3) and separated_mixture(3, 4).means.shape == (4, 3)
    assert sorted(separated_mixture(1, 2, offset=2.0).means[:, 0].tolist()) == [-2.0, 2.0]  # D = 1 too
    gmm = separated_mixture(3, 8, offset=0.1)
    signs = sorted(tuple(round(v / 0.1) for v in row) for row in gmm.means.tolist())
    assert signs == sorted({(a, b, c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)})
    assert bool((gmm.means.abs() == 0.1).all())
    _close(gmm.weights, [k / 36 for k in range(8, 0, -1)])
    with pytest.raises(ValueError, match=r"only 2\^3 = 8 distinct sign vectors"):
        separated_mixture(3, 9)


class _Counted(_Tiny):
    """``_Tiny`` that records the batch size of each call made with grad enabled."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x, t):
        if torch.is_grad_enabled():
            self.sizes.append(x.shape[0])
        return super().forward(x, t)


def test_fp_objective_fuses_the_dsm_forward_only_for_plain_forward_estimators():
    """forward_fd (plain forwards): one network call with grad per step, the 3 DSM samples riding
    along with the 6 points per sample of the central stencil (3 + 18). exact (a torch.func
    transform): the DSM forward is its own call, never concatenated to R_FP's."""
    x0 = torch.tensor([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]], dtype=F64)
    net = _Counted()
    sp.FPObjective(net, sp.VPSDE(), beta=0.3, estimator="forward_fd")(x0, torch.Generator().manual_seed(2))
    assert net.sizes == [21]
    net = _Counted()
    sp.FPObjective(net, sp.VPSDE(), beta=0.3, estimator="exact")(x0, torch.Generator().manual_seed(2))
    assert max(net.sizes) == 3 and net.sizes[-1] == 3


def test_fp_objective_builds_its_estimator_from_its_options():
    """The options reach the estimator at construction: a bad one is refused there, and forward_fd
    with dt="jvp" (a forward-mode transform in t) is not fused."""
    with pytest.raises(ValueError, match="hx"):
        sp.FPObjective(_Tiny(), sp.VPSDE(), beta=1.0, estimator="exact", hx=0.1)
    assert not sp.FPObjective(_Tiny(), sp.VPSDE(), beta=1.0, estimator="forward_fd", dt="jvp").fused


def test_fp_regularizer_of_one_sample_in_the_official_units():
    """A batch of one (D = 3 read from that sample) with normalize="dim": R = β‖ε‖²/D² + γ|L| with the
    linear score's closed forms; an infinite β is refused by the regularizer's name."""
    sde, cf, x, t = _points("vp")
    x, t = x[:1], t[:1]
    eps, L = _linear_closed_form(cf, x, t)
    got, parts = sp.fp_regularizer(_linear, sde, x, t, beta=0.3, gamma=0.2, m=2, normalize="dim")
    _close(got, 0.3 * eps.pow(2).sum() / 9 + 0.2 * L.abs().sum(), rtol=1e-9)
    _close(parts["fp_residual"], eps.pow(2).sum() / 9, rtol=1e-9)
    with pytest.raises(ValueError, match="the FP regularizer has 1 non-finite value"):
        sp.fp_regularizer(_linear, sde, x, t, beta=math.inf)


# -- the probability flow and its torchdiffeq path; the rk tableaus --------------------------------


def test_probability_flow_drift_is_its_closed_form():
    """f − ½g²s for s = −k x under VP: (c + ½g²k) x."""
    sde, cf, x, t = _points("vp")
    want = torch.stack(
        [(cf["c"](s) + 0.5 * cf["g2"](s) * (1 + s * s)) * x[i] for i, s in enumerate(t.tolist())]
    )
    _close(sp.probability_flow_drift(_linear, sde, x, t), want)


def test_forward_mode_torchdiffeq_likelihood_of_a_gaussian_is_its_closed_form():
    """log_likelihood through torchdiffeq in forward mode (probability_flow_drift and the flow's
    divergence): log N(x; a_ε μ, a_ε²s² + σ_ε²) up to the prior mismatch, both closed forms."""
    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    x = torch.tensor([[0.0, 0.0], [1.5, -2.0], [-1.0, 0.5]], dtype=F64)
    ll, stats = sp.log_likelihood(
        lambda y, s: gmm.score(y, s, sde), sde, x, 1e-3, solver="torchdiffeq", mode="forward",
        rtol=1e-5, atol=1e-5, return_stats=True,
    )  # fmt: skip
    ones = torch.ones(3, dtype=F64)
    closed = gmm.log_prob(x, 1e-3 * ones, sde)
    mismatch = sde.prior_log_prob(stats["x_T"]) - gmm.log_prob(stats["x_T"], ones, sde)
    _close(ll, closed + mismatch, rtol=0, atol=2e-4)  # solver error 3e-5; the mismatch is 1e-2


@pytest.mark.filterwarnings(
    "error::UserWarning"
)  # torchdiffeq's warning of an option its solver does not take
@pytest.mark.parametrize("mode", ["forward", "reverse", "stacked"])
def test_fixed_step_likelihood_in_every_mode(mode):
    """torchdiffeq's rk4 with step 0.05 (its options reach it: one step over [ε, T] is 0.6 nats off):
    the exact trace matches the Gaussian's closed form to 1e-4 (2e-5 measured) with the state in
    float64. Hutchinson with Gaussian probes (fixed steps: a probe redrawn per evaluation cannot
    stall a controller): forward and reverse form the same estimate from the drawn probes."""
    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    x = torch.tensor([[0.0, 0.0], [1.5, -2.0], [-1.0, 0.5]], dtype=F64)
    run = lambda m, div, seed=0: sp.log_likelihood(
        lambda y, s: gmm.score(y, s, sde), sde, x, 1e-3, div, probe="gaussian", mode=m, return_stats=True,
        generator=torch.Generator().manual_seed(seed), method="rk4", options=dict(step_size=0.05),
    )  # fmt: skip
    ll, stats = run(mode, "exact")
    ones = torch.ones(3, dtype=F64)
    mismatch = sde.prior_log_prob(stats["x_T"]) - gmm.log_prob(stats["x_T"], ones, sde)
    _close(ll, gmm.log_prob(x, 1e-3 * ones, sde) + mismatch, rtol=0, atol=1e-4)
    assert stats["delta_logp"].dtype == F64
    if mode != "stacked":
        other = "reverse" if mode == "forward" else "forward"
        _close(run(mode, "hutchinson", 1)[0], run(other, "hutchinson", 1)[0], rtol=1e-9, atol=1e-9)


def test_rk_tableaus_satisfy_their_order_conditions():
    """Each pair (built when called, as at import): rows of a sum to c; b meets the conditions of
    order ≤ 4 (Σb = 1, Σbc = ½, Σbc² = ⅓, Σb·ac = ⅙, Σbc³ = ¼, Σbc·ac = ⅛, Σb·ac² = 1/12,
    Σb·a·ac = 1/24); the embedded b − e those of order ≤ 2 (Σe = 0, Σec = 0); first same as last
    (the last row of a is b); the orders 5, 5, 3, 8."""
    from scorepde.rk import _tableaus

    tabs = _tableaus()
    assert {k: v.order for k, v in tabs.items()} == {"dopri5": 5, "tsit5": 5, "bosh3": 3, "dopri8": 8}
    for name, tab in tabs.items():
        n = len(tab.c)
        assert len(tab.a) == len(tab.b) == len(tab.e) == n, name
        A = torch.zeros(n, n, dtype=F64)
        for i, row in enumerate(tab.a):
            A[i, : len(row)] = torch.tensor(row, dtype=F64)
        b, c, e = (torch.tensor(v, dtype=F64) for v in (tab.b, tab.c, tab.e))
        _close(A.sum(1), c, atol=1e-12)
        conditions = [
            (b.sum(), 1), (b @ c, 1 / 2), (b @ c**2, 1 / 3), (b @ A @ c, 1 / 6), (b @ c**3, 1 / 4),
            (b @ (c * (A @ c)), 1 / 8), (b @ A @ c**2, 1 / 12), (b @ A @ A @ c, 1 / 24),
            (e.sum(), 0), (e @ c, 0),
        ]  # fmt: skip
        for got, want in conditions if tab.order > 3 else conditions[:4] + conditions[-2:]:
            _close(got, want, atol=1e-12)
        _close(A[-1], b, atol=0)


def test_unbiased_square_from_its_dimension_on():
    """The rule of cauchy.unbiased_square_for: the plug-in square below D = 32, the product from 32."""
    from scorepde.cauchy import unbiased_square_for

    assert [unbiased_square_for(d) for d in (1, 2, 31, 32, 33)] == [False, False, False, True, True]
    with pytest.raises(ValueError, match="dim must be positive, got 0"):
        unbiased_square_for(0)


@pytest.mark.filterwarnings(
    "error::UserWarning"
)  # torchdiffeq's warning of an option its solver does not take
def test_solve_ode_against_closed_forms():
    """solve_ode (torchdiffeq) on dy/dt = λy: rk4 with step h is (1 + z + z²/2 + z³/6 + z⁴/24)ⁿ,
    z = λh, exactly, for a tensor and a tuple state (its last time, not its first); the tolerances
    reach the solver (dopri5 needs 20 evaluations at 1e-3 in either, 56 at torchdiffeq's defaults);
    times are y0's float64; a huge first trial step (|y| = 1e6, |f| = 1) never takes the function
    outside [t0, t1], forwards or backwards; a NaN field is a ValueError naming the solve; no
    solver is handed an option it does not take (step_t is for the adaptive ones only)."""
    from scorepde.likelihood import solve_ode

    lam, h = -1.3, 0.1
    rk4 = (1 + lam * h + (lam * h) ** 2 / 2 + (lam * h) ** 3 / 6 + (lam * h) ** 4 / 24) ** 5
    kw = dict(rtol=1e-3, atol=1e-3, method="rk4", options=dict(step_size=h))
    _close(solve_ode(lambda t, y: lam * y, torch.ones(2, dtype=F64), 0.0, 0.5, **kw), rk4, rtol=1e-14)
    y, w = solve_ode(
        lambda t, s: (lam * s[0], -s[1]), (torch.ones(2, dtype=F64), torch.ones(1, dtype=F64)), 0.0, 0.5, **kw
    )
    _close(y, rk4, rtol=1e-14)
    _close(w, (1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24) ** 5, rtol=1e-14)
    for rtol, atol in [(1e-3, 1e-12), (1e-12, 1e-3)]:
        calls = []
        solve_ode(
            lambda t, y: calls.append(t) or lam * y,
            torch.ones(2, dtype=F64),
            0.0,
            1.0,
            rtol=rtol,
            atol=atol,
            method="dopri5",
        )
        assert len(calls) == 20 and all(t.dtype == F64 for t in calls), (rtol, atol, len(calls))
    for t0, t1 in [(0.1, 0.7), (0.7, 0.1)]:
        seen = []
        solve_ode(
            lambda t, y: seen.append(t.item()) or -1e-6 * y,
            torch.full((3,), 1e6, dtype=F64),
            t0,
            t1,
            rtol=1e-6,
            atol=1e-6,
            method="dopri5",
        )
        assert 0.1 <= min(seen) and max(seen) <= 0.7 and seen[0] == t0, (t0, min(seen), max(seen))
    with pytest.raises(ValueError, match=r"the ODE solve from t=0.0 to t=1.0 failed \(underflow in dt"):
        solve_ode(
            lambda t, y: y * math.nan,
            torch.ones(2, dtype=F64),
            0.0,
            1.0,
            rtol=1e-5,
            atol=1e-5,
            method="dopri5",
        )


@pytest.mark.filterwarnings(
    "error::UserWarning"
)  # torchdiffeq's warning of an option its solver does not take
def test_torchdiffeq_likelihood_counts_its_evaluations():
    """nfe of the torchdiffeq path = the calls of the ODE function: each is one call of the score
    (drift and divergence from one forward), after log_likelihood's one check. Its default error
    norm is the joint RMS of (x, log p): the same solve as passing joint_rms_norm, and not the
    one torchdiffeq would pick for a tuple state (the largest per-part RMS: 32 calls, not 26)."""
    from scorepde.likelihood import joint_rms_norm

    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    calls = []
    score = lambda y, s: calls.append(1) or gmm.score(y, s, sde)
    x = torch.tensor([[0.0, 0.0], [1.5, -2.0]], dtype=F64)
    run = lambda **kw: sp.log_likelihood(
        score, sde, x, 1e-3, solver="torchdiffeq", rtol=1e-4, atol=1e-4, return_stats=True, **kw
    )[1]["nfe"]
    nfe = run()
    assert nfe == len(calls) - 1 > 10
    largest = lambda parts: max(p.pow(2).mean().sqrt() for p in parts)
    assert run(options=dict(norm=joint_rms_norm)) == nfe != run(options=dict(norm=largest))


@pytest.mark.parametrize("estimator", ["hutchinson", "directional", "forward_fd"])
def test_projected_norm_sq_is_unbiased_by_default(estimator):
    """An estimator's norm_sq without ``unbiased`` is the two-draw product (a nonlinear net, so the
    two inner draws differ), not the single-draw square: Estimator's and Projected's alike."""
    sde, net = sp.VPSDE(), _Tiny()
    x = torch.tensor([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]], dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    est = (
        sp.get_estimator(estimator, div="hutchinson")
        if estimator == "directional"
        else sp.get_estimator(estimator)
    )
    run = lambda **kw: est.norm_sq(net, sde, x, t, generator=torch.Generator().manual_seed(4), **kw)[0]
    default, unbiased, plug_in = run(), run(unbiased=True), run(unbiased=False)
    assert torch.equal(default, unbiased) and not torch.allclose(default, plug_in)


def test_rk_error_ratio_and_initial_step_are_their_closed_forms():
    """r = RMS(err / (atol + rtol·max(|y|, |y_new|))) per sample, or weighted, or one for the batch;
    the first step for y' = λy (Hairer, Nørsett & Wanner §II.4): d0 = r(y), d1 = |λ|d0,
    h0 = 0.01 d0/d1, d2 = λ²d0 (from f(y + h0 λy) − λy = h0 λ²y), h1 = (0.01/max(d1, d2))^(1/q),
    h = min(100 h0, h1, t1 − t)."""
    from scorepde.rk import TABLEAUS, _error_ratio, _initial_step

    y = torch.tensor([[1.0, -2.0], [0.5, 4.0]], dtype=F64)
    y_new = torch.tensor([[1.5, -1.0], [0.25, 3.0]], dtype=F64)
    err = torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=F64)
    q = [
        [(e / (0.01 + 0.1 * max(abs(a), abs(b)))) ** 2 for e, a, b in zip(*rows)]
        for rows in zip(err.tolist(), y.tolist(), y_new.tolist())
    ]
    _close(_error_ratio(err, y, y_new, 0.1, 0.01, None, False), [math.sqrt(sum(r) / 2) for r in q])
    w = torch.tensor([0.25, 0.75], dtype=F64)
    _close(
        _error_ratio(err, y, y_new, 0.1, 0.01, w, False), [math.sqrt(0.25 * r[0] + 0.75 * r[1]) for r in q]
    )
    _close(_error_ratio(err, y, y_new, 0.1, 0.01, None, True), math.sqrt(sum(map(sum, q)) / 4))
    dopri5 = TABLEAUS["dopri5"]
    for lam, t1 in [(-3.0, 1.2), (-3.0, 0.201), (-0.5, 1.2), (-100.0, 1.2)]:  # h1, t1 − t, h1, 100 h0
        seen = []
        f = lambda t, v, idx: seen.append(t.max().item()) or lam * v
        h = _initial_step(
            f, torch.full((2,), 0.2, dtype=F64), y, lam * y, None, t1, dopri5, 1e-3, 1e-6, None, False
        )
        d0 = torch.tensor(
            [math.sqrt(sum((a / (1e-6 + 1e-3 * abs(a))) ** 2 for a in row) / 2) for row in y.tolist()],
            dtype=F64,
        )
        h0 = 0.01 * d0 / (abs(lam) * d0)
        h1 = (0.01 / torch.maximum(abs(lam) * d0, lam * lam * d0)) ** (1 / 5)
        _close(h, torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, t1 - 0.2)), rtol=1e-12)
        assert max(seen) <= t1  # the trial point stays inside the interval
    zero = torch.zeros(1, 2, dtype=F64)  # d0 = d1 = 0: h0 = 1e-6; d2 = 0: h1 = max(1e-6, 1e-3 h0)
    _close(
        _initial_step(
            lambda t, v, idx: v,
            torch.zeros(1, dtype=F64),
            zero,
            zero,
            None,
            1.0,
            dopri5,
            1e-3,
            1e-6,
            None,
            False,
        ),
        1e-6,
    )


@pytest.mark.parametrize("control", ["per_sample", "joint"])
def test_rk_stats_count_every_evaluation(control):
    """nfe counts the calls of f and sample_evals the rows they saw; with one step size for the
    batch (joint), nfe = 2 + (S − 1)(accepted + rejected steps) for S = 7 stages first-same-as-last
    (one call to start, one for the first step's trial) and every call sees all B rows."""
    from scorepde.rk import TABLEAUS, solve_batched

    calls, rows = [], []
    lam = torch.tensor([[-1.0], [-6.0], [-0.2]], dtype=F64)
    f = lambda t, y, idx: (
        calls.append(1) or rows.append(idx.numel()) or lam[idx] * y + torch.cos(3 * t)[:, None]
    )
    y0 = torch.ones(3, 1, dtype=F64)
    y, stats = solve_batched(f, y0, 0.0, 1.0, rtol=1e-6, atol=1e-9, method="dopri5", control=control)
    a = lam[:, 0]  # y = (1 + λ/(λ² + 9)) e^{λt} + (3 sin 3t − λ cos 3t)/(λ² + 9)
    _close(
        y[:, 0],
        (1 + a / (a * a + 9)) * torch.exp(a) + (3 * math.sin(3) - a * math.cos(3)) / (a * a + 9),
        rtol=1e-5,
    )
    assert stats["rejected"] >= 1  # so that counting them is checked
    assert stats["nfe"] == len(calls) and stats["sample_evals"] == sum(rows)
    assert len(TABLEAUS["dopri5"].c) == 7
    if control == "joint":
        assert stats["nfe"] == 2 + 6 * (stats["steps"] + stats["rejected"])
        assert stats["sample_evals"] == 3 * stats["nfe"]
    else:  # the fast sample (λ = −6) takes more steps; the others leave the batch before it
        assert stats["sample_evals"] < 3 * stats["nfe"] and stats["steps"] > 0


# -- the stencils in t: where their nodes go, and when they are refused ----------------------------


@pytest.mark.parametrize(
    "t, dt, h, nodes",
    [
        (0.3, "central", (1e-3, 1e-3), [0.299, 0.301]),  # as given
        (1e-4, "central", (1e-3, 1e-3), [0.875e-4, 1.125e-4]),  # t < h: steps shrink to t/8
        (1e-3, "central", (1e-3, 1e-3), [0.0, 2e-3]),  # t = h: as given, the lower node at 0
        (1e-12, "central", (1e-3, 1e-3), [0.0, 1e-3, 2e-3]),  # t/8 below √ε·h: shifted inwards
        (
            0.85,
            "fd3",
            (0.9, 0.05),
            [0.85 - 0.9 * 0.85 / 7.2, 0.85, 0.85 + 0.05 * 0.85 / 7.2],
        ),  # r = t/(8·0.9)
        (0.5, "fd3", (0.5, 0.5), [0.0, 1.0]),  # spans [0, T] exactly
        (1.0, "forward", (1e-2, 1e-2), [0.99, 1.0]),  # at T: shifted inwards
    ],
)
def test_stencil_nodes_and_weights(t, dt, h, nodes):
    """The nodes of each case in closed form (float64), and weights that differentiate 1, t and t²
    (three nodes) exactly at t: Σw = 0, Σw·n = 1, Σw·n² = 2t."""
    from scorepde.derivatives import stencil_points

    times, weights = stencil_points(torch.tensor([t], dtype=F64), dt, h=h)
    _close(torch.cat(times), nodes, rtol=1e-12, atol=1e-18)
    n, w = torch.cat(times), torch.cat(weights)
    _close(w.sum(), 0.0, atol=1e-9 * w.abs().max().item())
    _close((w * n).sum(), 1.0, rtol=1e-9)
    if len(nodes) == 3:
        _close((w * n * n).sum(), 2 * t, rtol=1e-8, atol=1e-12)


def test_stencils_refuse_bad_steps_and_names_and_reuse_the_centre_only_where_it_is_a_node():
    """Steps must be positive and span at most T; an unknown dt is named. A given s(x, t) is used for
    the node at t only where the stencil is not shifted: "forward" at an inner t costs one
    evaluation, (k(t+h) − k(t))/h; at t = T its nodes are T − h and T, (k(T) − k(T−h))/h."""
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    for h in [(0.0, 1e-3), (0.6, 0.6)]:
        words = rf"finite-difference steps must be positive and fit in \[0, 1.0\], got h=\({h[0]}, {h[1]}\)"
        with pytest.raises(ValueError, match=words):
            time_derivative(_linear, x, torch.full((2,), 0.7, dtype=F64), "fd3", h=h)
    with pytest.raises(
        ValueError,
        match=r"unknown time-derivative method dt='back'; choose 'jvp' or one of \['central', 'fd3', 'forward'\]",
    ):
        time_derivative(_linear, x, torch.full((2,), 0.5, dtype=F64), "back")
    k = lambda s: 1 + s * s
    rows = []
    score = lambda y, s: rows.append(y.shape[0]) or _linear(y, s)
    for t, want in [(0.5, (k(0.51) - k(0.5)) / 0.01), (1.0, (k(1.0) - k(0.99)) / 0.01)]:
        tt = torch.full((2,), t, dtype=F64)
        rows.clear()
        got = time_derivative(score, x, tt, "forward", h=(0.01, 0.01), center=_linear(x, tt))
        _close(got, -want * x, rtol=1e-9)
        assert rows == ([2] if t < 1 else [4])  # the centre saves the node at t, unless shifted


# -- bits/dim's summary, the estimators' L and directions, the likelihood's routes ------------------


def test_bpd_summary_of_a_given_table():
    """Two repeats × three points: bpd = 3, the std over repeats of the dataset mean √2, the SE of
    the sample means 1/√3·1 (sample means 2, 3, 4); one repeat has std 0; nfe is the mean per solve."""
    from scorepde.bpd import _bpd_summary

    table = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], dtype=F64)
    out = _bpd_summary(table, [10, 20, 60], 1.5)
    assert (out["bpd"], out["points"], out["repeats"], out["solves"], out["nfe"]) == (3.0, 3, 2, 3, 30.0)
    _close(out["bpd_std"], math.sqrt(2))
    _close(out["bpd_stderr"], 1 / math.sqrt(3))
    assert out["per_repeat"] == [2.0, 4.0] and out["per_sample"] == [2.0, 3.0, 4.0]
    one = _bpd_summary(table[:1], [7], 0.1)
    assert one["bpd_std"] == 0.0 and one["nfe"] == 7.0


@pytest.mark.parametrize("estimator", ["exact", "hutchinson", "directional", "forward_fd"])
def test_norm_sq_returns_the_rhs_of_each_sample(estimator):
    """residual_norm_sq's L is L[s] per sample ([B], B = 3), its closed form for the linear score
    (Rademacher Hutchinson is exact on s = −kx), in either form of the square."""
    sde, cf, x, t = _points("vp")
    _, L = _linear_closed_form(cf, x, t)
    for unbiased in (True, False):
        g = torch.Generator().manual_seed(0)
        _, rhs = sp.residual_norm_sq(_linear, sde, x, t, estimator, unbiased=unbiased, generator=g)
        _close(rhs, L, rtol=1e-6, atol=1e-6)


def test_directional_projection_with_gaussian_directions_and_stencils_near_T():
    """directional with Gaussian v and ∂t s by the forward stencil, −(k(t+h) − k(t))/h x = −(2t + h) x:
    ε̂ = ⟨ε − h x, v⟩ v exactly for the linear score, under EDM (T = 80) up to t = 79.99, where
    the node t + h = 80 is still inside [0, T]."""
    sde, cf, x, t = _points("edm")
    t = torch.tensor([16.0, 40.0, 79.99], dtype=F64)
    eps, L = _linear_closed_form(cf, x, t)
    g = torch.Generator().manual_seed(1)
    got, rhs = sp.residual(
        _linear, sde, x, t, "directional", dt="forward", h=(1e-2, 1e-2), direction_probe="gaussian",
        div_mode="reverse", return_rhs=True, generator=g,
    )  # fmt: skip
    v = torch.randn((1, *x.shape), generator=torch.Generator().manual_seed(1), dtype=F64)[0]
    _close(got, ((eps - 1e-2 * x) * v).sum(1, keepdim=True) * v, rtol=1e-6, atol=1e-6)
    _close(rhs, L, rtol=1e-9)


def test_score_and_divergence_in_every_mode():
    """The likelihood's (s, div s) for a Gaussian N(μ, s0²I) under VP: s = −(x − aμ)/v and div s = −D/v,
    v = a²s0² + σ²; with given Hutchinson probes u, div s = −mean‖u‖²/v (J = −I/v), in each mode."""
    from scorepde.likelihood import _score_and_divergence

    sde, gmm, cf = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5, 1.0]], [0.7]), CLOSED["vp"][1]
    x = torch.tensor([[0.0, 0.0, 0.2], [1.5, -2.0, 0.1]], dtype=F64)
    t = torch.tensor([0.3, 0.7], dtype=F64)
    a = torch.tensor([cf["a"](s) for s in t.tolist()], dtype=F64)
    v = a * a * 0.49 + torch.tensor([cf["var"](s) for s in t.tolist()], dtype=F64)
    s_want = -(x - a[:, None] * torch.tensor([0.5, -0.5, 1.0], dtype=F64)) / v[:, None]
    score = lambda y, s: gmm.score(y, s, sde)
    u = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for mode in ("reverse", "forward", "stacked"):
        s, div = _score_and_divergence(score, x, t, "exact", None, mode)
        _close(s, s_want, rtol=1e-12)
        _close(div, -3 / v, rtol=1e-12)
        if mode != "stacked":
            s, div = _score_and_divergence(score, x, t, "hutchinson", u, mode)
            _close(div, -u.pow(2).sum(2).mean(0) / v, rtol=1e-12)


def test_evaluate_bpd_defaults_counts_and_refusals():
    """Five repeats and Hutchinson by default (the same numbers as asking for them), one solve per
    batch per repeat (3 points in batches of 2: 2 solves a repeat), a single image in batches of
    one, and bad repeats or batch sizes refused by name."""
    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    score = lambda y, s: gmm.score(y, s, sde)
    k = torch.tensor([[1, 2], [3, 0], [2, 2]])
    run = lambda images, **kw: sp.evaluate_bpd(
        score,
        sde,
        images,
        4,
        0.5,
        -0.75,
        generator=torch.Generator().manual_seed(0),
        rtol=1e-3,
        atol=1e-3,
        **kw,
    )
    start = time.perf_counter()
    out = run(k, batch_size=2)
    assert 0 < out["seconds"] <= time.perf_counter() - start
    assert (out["repeats"], out["points"], out["solves"]) == (5, 3, 10)
    assert run(k, batch_size=2, repeats=5, div="hutchinson")["per_sample"] == out["per_sample"]
    assert run(k, batch_size=2, div="exact")["per_sample"] != out["per_sample"]  # the probes matter
    one = run(k[:1], repeats=1, batch_size=1, device="cpu")
    assert (one["points"], one["solves"]) == (1, 1) and math.isfinite(one["bpd"])
    for kw, words in [
        (dict(repeats=0), "repeats must be at least 1, got 0"),
        (dict(batch_size=0), "batch_size must be at least 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            run(k, **kw)


def test_bpd_inputs_are_checked_at_their_boundaries():
    """levels = 2 is the smallest (1 and 2.5 refused); integral floats are discrete data, a fraction
    is refused naming 0..L − 1; scale must be > 0 and dim a positive integer, each by name."""
    from scorepde.bpd import check_discrete

    check_discrete(torch.tensor([[0.0, 1.0]]), 2)
    check_discrete(torch.tensor([[3.0, 0.0]]), 4)
    for levels in (1, 2.5):
        with pytest.raises(ValueError, match=f"levels must be an integer of at least 2 .*got {levels}"):
            check_discrete(torch.tensor([[0, 1]]), levels)
    with pytest.raises(
        ValueError, match=r"data must be integers in 0\.\.3 for levels=4, but some values have a fractional"
    ):
        check_discrete(torch.tensor([[0.5, 1.0]]), 4)
    ll = torch.tensor([-1.0, 2.0], dtype=F64)
    with pytest.raises(ValueError, match="scale must be positive"):
        sp.bits_per_dim(ll, 2, 2, 0.0)
    for dim in (0, 1.5):
        with pytest.raises(
            ValueError, match=f"dim must be a positive integer \\(features per sample\\), got {dim}"
        ):
            sp.bits_per_dim(ll, dim, 2, 2.0)


def test_likelihood_takes_given_probes_and_checks_their_shape():
    """probes= [M, *x.shape] are the ones used: the same numbers as drawing them from the generator
    (Gaussian, M = 2); a wrong shape is refused naming both; the exact trace needs none."""
    from scorepde.derivatives import sample_probes

    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    score = lambda y, s: gmm.score(y, s, sde)
    x = torch.tensor([[0.0, 0.0], [1.5, -2.0], [-1.0, 0.5]], dtype=F64)
    kw = dict(div="hutchinson", n_probes=2, probe="gaussian", rtol=1e-4, atol=1e-4)
    drawn = sp.log_likelihood(score, sde, x, 1e-3, generator=torch.Generator().manual_seed(3), **kw)
    u = sample_probes(x, 2, "gaussian", torch.Generator().manual_seed(3))
    _close(sp.log_likelihood(score, sde, x, 1e-3, probes=u, **kw), drawn, rtol=0, atol=0)
    with pytest.raises(
        ValueError, match=r"probes must be \[M, \*x.shape\] = \[M, \[3, 2\]\], got \[2, 3, 3\]"
    ):
        sp.log_likelihood(score, sde, x, 1e-3, probes=torch.zeros(2, 3, 3, dtype=F64), **kw)
    exact = sp.log_likelihood(score, sde, x, 1e-3, rtol=1e-4, atol=1e-4)
    _close(
        sp.log_likelihood(score, sde, x, 1e-3, probes=torch.zeros(9), rtol=1e-4, atol=1e-4),
        exact,
        rtol=0,
        atol=0,
    )


def test_rk_refusals_and_weights_by_their_share():
    """solve_batched refuses an unknown method or control and t1 = t0 by name, stops after max_steps
    attempted steps, and reads weights by their share: [2, 0] is [1, 0] (only the first component
    sets the steps), unlike all components alike."""
    from scorepde.rk import solve_batched

    f = lambda t, y, idx: torch.stack([-y[:, 0], -30 * y[:, 1]], 1)
    y0 = torch.ones(2, 2, dtype=F64)
    run = lambda **kw: solve_batched(f, y0, 0.0, 1.0, **{"rtol": 1e-6, "atol": 1e-9, **kw})[1]
    for kw, words in [
        (dict(method="rk5"), r"unknown method 'rk5'; choose one of \['dopri5', 'tsit5', 'bosh3', 'dopri8'\]"),
        (dict(control="each"), r"unknown control 'each'; choose one of \['per_sample', 'joint'\]"),
        (dict(max_steps=3), "the ODE solve took more than max_steps = 3 steps; loosen rtol/atol"),
    ]:
        with pytest.raises(ValueError, match=words):
            run(**kw)
    with pytest.raises(ValueError, match="solve_batched integrates forward: t1 = 0.5 must exceed t0 = 0.5"):
        solve_batched(f, y0, 0.5, 0.5, rtol=1e-6, atol=1e-9)
    one, two = (
        run(weights=torch.tensor([1.0, 0.0], dtype=F64)),
        run(weights=torch.tensor([2.0, 0.0], dtype=F64)),
    )
    assert one == two and one["steps"] < run()["steps"]


def test_gaussian_mixture_parameters_and_refusals():
    """Equal weights 1/K by default and float64 everywhere (0.1 is not a float32 number); variances
    s² per coordinate for iso and diag stds; each bad parameter refused by its whole message; a
    weight of 0, a std of 0, and weights off 1 by 2e-6 are refused, off by 5e-7 accepted."""
    gmm = sp.GaussianMixture([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [0.1, 0.2, 0.3])
    assert gmm.means.dtype == gmm.weights.dtype == gmm.variances.dtype == F64
    _close(gmm.weights, [1 / 3] * 3)
    assert gmm.means[0, 0].item() == 0.1 and gmm.kind == "iso"
    _close(gmm.variances, [[0.01, 0.01], [0.04, 0.04], [0.09, 0.09]])
    diag = sp.GaussianMixture([[0.0, 0.0]], [[0.1, 0.3]], weights=[1.0])
    assert diag.kind == "diag"
    _close(diag.variances, [[0.01, 0.09]])
    full = sp.GaussianMixture([[0.0, 0.0]], covs=torch.tensor([[[2.0, 0.0], [0.0, 0.5]]], dtype=F64))
    assert full.kind == "full" and full.stds is None and full.basis.dtype == F64
    sp.GaussianMixture([[0.0], [1.0]], [1.0, 1.0], weights=[0.5 + 5e-7, 0.5])
    for kw, words in [
        (dict(means=[0.0, 1.0], stds=[1.0]), r"^means must be \[K, D\], got shape \(2,\)$"),
        (
            dict(means=[[0.0], [1.0]], stds=[1.0, 1.0], weights=[1.0]),
            r"^weights must be \[K\] and positive, one per mean$",
        ),
        (
            dict(means=[[0.0], [1.0]], stds=[1.0, 1.0], weights=[1.0, 0.0]),
            r"^weights must be \[K\] and positive, one per mean$",
        ),
        (
            dict(means=[[0.0], [1.0]], stds=[1.0, 1.0], weights=[0.5 + 2e-6, 0.5]),
            r"^weights must sum to 1, got 1; normalise them$",
        ),
        (
            dict(means=[[0.0]]),
            r"^give the covariances one way: stds \[K\] \(isotropic\), stds \[K, D\] \(diagonal\) or covs \[K, D, D\] \(full\)$",
        ),
        (
            dict(means=[[0.0, 0.0]], stds=[1.0, 2.0, 3.0]),
            r"^stds must be a scalar, \[K\] = \[1\] or \[K, D\] = \[1, 2\], got shape \(3,\)$",
        ),
        (dict(means=[[0.0, 0.0]], stds=[0.0]), r"^stds must be positive$"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.GaussianMixture(**kw)


def test_gaussian_mixture_samples_follow_the_mixture_and_the_generator():
    """20 000 draws: the mean is Σ w_k μ_k and the covariance Σ w_k (C_k + μ_kμ_kᵀ) − mean meanᵀ within
    a few standard errors, for iso, diag and full components; the same generator gives the same draws
    whatever torch's global state; the dtype asked for is the one returned."""
    means, w = torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=F64), torch.tensor([0.3, 0.7], dtype=F64)
    C = torch.tensor([[[2.0, 0.8], [0.8, 1.0]], [[0.5, -0.2], [-0.2, 0.3]]], dtype=F64)
    for gmm, covs in [
        (
            sp.GaussianMixture(means, [0.7, 1.2], w),
            torch.stack([0.49 * torch.eye(2), 1.44 * torch.eye(2)]).double(),
        ),
        (
            sp.GaussianMixture(means, [[0.5, 1.0], [2.0, 0.3]], w),
            torch.stack(
                [torch.diag(torch.tensor([0.25, 1.0])), torch.diag(torch.tensor([4.0, 0.09]))]
            ).double(),
        ),
        (sp.GaussianMixture(means, weights=w, covs=C), C),
    ]:
        x = gmm.sample(20000, generator=torch.Generator().manual_seed(0), dtype=F64)
        mean = (w[:, None] * means).sum(0)
        cov = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0) - torch.outer(
            mean, mean
        )
        se = (torch.diagonal(cov) / 20000).sqrt()
        assert bool(((x.mean(0) - mean).abs() < 5 * se).all()), (x.mean(0), mean)
        _close(torch.cov(x.T), cov, rtol=0.05, atol=0.05)
        torch.manual_seed(1)
        again = gmm.sample(20000, generator=torch.Generator().manual_seed(0), dtype=F64)
        assert torch.equal(x, again)
        assert (
            gmm.sample(3, generator=torch.Generator().manual_seed(0), dtype=torch.float32).dtype
            == torch.float32
        )


# -- log_likelihood's choices, its rk state and right-hand side, and the terms it names ------------


def _iso(D, mean=0.3, std=0.7):
    """An isotropic Gaussian N(mean·1, std² I) in D dimensions under VP, and its score."""
    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[mean] * D], [std])
    return sde, gmm, lambda y, s: gmm.score(y, s, sde)


def test_likelihood_refuses_each_bad_choice_by_name():
    """eps must lie strictly inside (0, T): 0 and T are refused; each unknown choice is refused
    naming its keyword and the choices."""
    sde, _, score = _iso(2)
    x = torch.zeros(2, 2, dtype=F64)
    for eps in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"^eps must lie in \(0, T\) = \(0, 1.0\), got {eps}; "):
            sp.log_likelihood(score, sde, x, eps)
    for kw, words in [
        (dict(mode="fast"), r"^unknown mode='fast'; choose one of \['reverse', 'forward', 'stacked'\]$"),
        (dict(solver="scipy"), r"^unknown solver='scipy'; choose one of \['rk', 'torchdiffeq'\]$"),
        (dict(control="each"), r"^unknown control='each'; choose one of \['per_sample', 'joint'\]$"),
        (dict(error_on="x"), r"^unknown error_on='x'; choose one of \['state', 'logp', 'balanced'\]$"),
    ]:
        with pytest.raises(ValueError, match=words):
            sp.log_likelihood(score, sde, x, 1e-3, **kw)


def test_hutchinson_likelihood_with_given_probes_is_its_closed_form():
    """For N(μ, s0²I) under VP, J = −I/v(t), so Hutchinson with probes u gives div s = −m/v with
    m = mean_m ‖u_m‖² (not −D/v): the integral is A + (m/D)(Δ − A), A = ∫ div f = −½D(G(T) − G(ε))
    and Δ = log p_ε(x) − log p_T(x(T)) the exact one (both closed forms), for the rk and the
    torchdiffeq solver, with the probes given or drawn from the generator."""
    from scorepde.derivatives import sample_probes

    D, eps = 3, 1e-3
    sde, gmm, score = _iso(D)
    x = torch.tensor([[0.0, 0.0, 0.2], [1.5, -2.0, 0.1], [-1.0, 0.5, 0.3]], dtype=F64)
    ones = torch.ones(3, dtype=F64)
    A = -0.5 * D * (_vp_int(1.0) - _vp_int(eps))
    u = sample_probes(x, 2, "gaussian", torch.Generator().manual_seed(5))
    m = u.pow(2).sum(2).mean(0)
    for solver in ("rk", "torchdiffeq"):
        for given in (dict(probes=u), dict(generator=torch.Generator().manual_seed(5))):
            _, st = sp.log_likelihood(
                score, sde, x, eps, "hutchinson", n_probes=2, probe="gaussian", solver=solver,
                rtol=1e-6, atol=1e-6, return_stats=True, **given,
            )  # fmt: skip
            exact = gmm.log_prob(x, eps * ones, sde) - gmm.log_prob(st["x_T"], ones, sde)
            _close(st["delta_logp"], A + m / D * (exact - A), rtol=0, atol=1e-4)


def test_likelihood_picks_mode_and_control_by_dimension():
    """Exact trace, D ≤ SMALL_DIM = 16: one forward on D stacked copies (the model sees 16·B rows)
    and one step size for the batch (every call sees all B rows), by either solver; D = 17, flat
    or as [B, 1, 17]: plain forwards of B rows and per-sample steps (the easy rows leave early)."""
    for D, shape in [(16, (3, 16)), (17, (3, 17)), (17, (3, 1, 17))]:
        sde, gmm, s = _iso(D)
        x = torch.zeros(3, D, dtype=F64)
        x[1, 0], x[2] = 2.0, 40.0
        for solver in ("rk", "torchdiffeq") if D == 16 else ("rk",):
            rows = []
            score = lambda y, t: rows.append(y.shape[0]) or s(y.reshape(y.shape[0], D), t).reshape(y.shape)
            _, st = sp.log_likelihood(
                score, sde, x.reshape(shape), 1e-3, rtol=1e-3, atol=1e-3, return_stats=True, solver=solver
            )
            if D == 16:
                assert set(rows) == {3, 48}, (solver, set(rows))  # 3: the host check at eps
                assert solver == "torchdiffeq" or st["sample_evals"] == 3 * st["nfe"]
            else:
                assert set(rows) == {1, 3} and st["sample_evals"] < 3 * st["nfe"], (shape, set(rows))


def test_likelihood_solver_follows_the_method_and_its_options():
    """The rk solver for its own tableaux without options; torchdiffeq for a method only it has
    (rk4, one step over [ε, T] without options) or when options are given (the same numbers as
    asking for it)."""
    sde, _, score = _iso(2)
    x = torch.tensor([[0.0, 0.5], [1.5, -2.0]], dtype=F64)
    run = lambda **kw: sp.log_likelihood(score, sde, x, 1e-3, rtol=1e-4, atol=1e-4, return_stats=True, **kw)
    assert "steps" in run()[1] and "steps" not in run(method="rk4")[1]
    with_options = run(options=dict(step_t=torch.tensor([1.0], dtype=F64)))
    explicit = run(options=dict(step_t=torch.tensor([1.0], dtype=F64)), solver="torchdiffeq")
    assert "steps" not in with_options[1] and torch.equal(with_options[0], explicit[0])


def _flow_closed_form(x, t, u=None, D=3):
    """(f − ½g²s, div f − ½g² div s) for N(0.3·1, 0.49 I) under VP at x [B, D] and times t: s =
    −(x − aμ)/v, div s = −D/v, or −m/v with m = mean_m ‖u_m‖² for Hutchinson probes u."""
    cf = CLOSED["vp"][1]
    t = t.tolist()
    a = torch.tensor([cf["a"](r) for r in t], dtype=F64)
    v = a * a * 0.49 + torch.tensor([cf["var"](r) for r in t], dtype=F64)
    g2 = torch.tensor([cf["g2"](r) for r in t], dtype=F64)
    c = torch.tensor([cf["c"](r) for r in t], dtype=F64)
    x = x.double()
    m = D if u is None else u.double().pow(2).sum(2).mean(0)
    return c[:, None] * x + 0.5 * g2[:, None] * (x - a[:, None] * 0.3) / v[:, None], c * D + 0.5 * g2 * m / v


_X3 = torch.tensor([[0.0, 0.0, 0.2], [1.5, -2.0, 0.1], [-1.0, 0.5, 0.3]], dtype=F64)
_U3 = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)


def test_rk_likelihood_hands_the_solver_its_state_weights_and_field(monkeypatch):
    """What log_likelihood hands scorepde.rk.solve_batched (a stand-in that returns y0 unsolved):
    the state (x, 0) in state_dtype (float64 by default, x's dtype for None), the error weights
    of error_on in that dtype ([1/(2D)]·D + [1/2] for "balanced", [0]·D + [1] for "logp", None
    for "state"), and dy/du, here for N(μ, s0²I) under VP (_flow_closed_form) with given probes u:
    at t clamped into [ε, T], for the rows idx asked with their own probes, in the state's dtype.
    The model sees x and t in x's dtype, and for the exact trace with D = 3 one stacked batch."""
    import scorepde.likelihood as lik

    D, eps = 3, 1e-3
    sde, _, s = _iso(D)
    handed, seen = [], []
    stats = dict(nfe=0, sample_evals=0, steps=0, rejected=0)
    monkeypatch.setattr(
        lik, "solve_batched", lambda f, y0, t0, t1, **kw: handed.append((f, y0, kw)) or (y0, stats)
    )
    score = lambda y, t: seen.append((y.dtype, t.dtype, y.shape[0])) or s(y, t)
    balanced = [1 / 6, 1 / 6, 1 / 6, 1 / 2]
    for x, kw, state, weights in [
        (_X3.float(), dict(), F64, balanced),
        (_X3, dict(state_dtype=None), F64, balanced),
        (_X3, dict(state_dtype=torch.float32, error_on="logp"), torch.float32, [0.0, 0.0, 0.0, 1.0]),
        (_X3, dict(error_on="state"), F64, None),
        (_X3, dict(div="exact"), F64, balanced),
    ]:
        handed.clear(), seen.clear()
        kw = {"div": "hutchinson", "probes": _U3.to(x.dtype), **kw}
        _, st = sp.log_likelihood(score, sde, x, eps, return_stats=True, **kw)
        f, y0, opts = handed[0]
        assert y0.dtype == st["delta_logp"].dtype == state
        assert torch.equal(y0, torch.cat([x, torch.zeros(3, 1, dtype=x.dtype)], 1).to(state))
        if weights is None:
            assert opts["weights"] is None
        else:
            assert opts["weights"].dtype == state
            assert torch.equal(opts["weights"], torch.tensor(weights, dtype=F64).to(state))
        idx = torch.tensor([2, 0])
        out = f(torch.tensor([0.0, 5.0], dtype=state), y0[idx], idx)  # t = ε and T
        assert out.dtype == state
        u = _U3[:, idx].to(x.dtype) if kw["div"] == "hutchinson" else None
        v, dlogp = _flow_closed_form(x[idx], torch.tensor([eps, 1.0], dtype=F64), u)
        tol = 1e-12 if x.dtype == state == F64 else 1e-5
        _close(out.double(), torch.cat([v, dlogp[:, None]], 1), rtol=tol, atol=tol)
        rows = 2 * D if kw["div"] == "exact" else 2  # the host check's 3 rows, then f's
        assert seen == [(x.dtype, x.dtype, 3), (x.dtype, x.dtype, rows)], seen


def test_torchdiffeq_likelihood_hands_the_solver_its_state_and_field(monkeypatch):
    """What log_likelihood hands solve_ode on the torchdiffeq path (a stand-in returning y0): the
    state (x, 0) in x's dtype, and a field that at t gives (f − ½g²s, div f − ½g² div s) of
    _flow_closed_form with the given probes; the exact trace for D = 3 in one stacked batch."""
    import scorepde.likelihood as lik

    sde, _, s = _iso(3)
    handed, seen = [], []
    monkeypatch.setattr(lik, "solve_ode", lambda func, y0, t0, t1, **kw: handed.append((func, y0)) or y0)
    score = lambda y, t: seen.append(y.shape[0]) or s(y, t)
    for kw in (dict(div="hutchinson", probes=_U3), dict(div="exact")):
        handed.clear(), seen.clear()
        sp.log_likelihood(score, sde, _X3, 1e-3, solver="torchdiffeq", **kw)
        func, y0 = handed[0]
        assert torch.equal(y0[0], _X3) and torch.equal(y0[1], torch.zeros(3, dtype=F64))
        assert y0[1].dtype == F64
        v, dlogp = func(torch.tensor(0.4, dtype=F64), y0)
        want = _flow_closed_form(_X3, torch.full((3,), 0.4, dtype=F64), kw.get("probes"))
        _close(v, want[0], rtol=1e-12)
        _close(dlogp, want[1], rtol=1e-12)
        assert seen == [3, 3 if kw["div"] == "hutchinson" else 9]


def test_drift_and_divergence_defaults_to_one_forward_and_vjps():
    """_drift_and_divergence without a mode: one call of the model (reverse mode: vjps on its graph),
    and the closed form of _flow_closed_form."""
    from scorepde.likelihood import _drift_and_divergence

    sde, _, s = _iso(3)
    calls = []
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    v, dlogp = _drift_and_divergence(lambda y, r: calls.append(1) or s(y, r), sde, _X3, t, "exact", None)
    want = _flow_closed_form(_X3, t)
    _close(v, want[0], rtol=1e-12)
    _close(dlogp, want[1], rtol=1e-12)
    assert len(calls) == 1


def test_likelihood_names_the_term_that_went_non_finite(monkeypatch):
    """A model broken at t = ε fails by name before the solve (a call budget stops a solve that
    would start there); an end point, divergence integral or prior term that is not finite is
    named (a solver that hands one back is injected)."""
    import scorepde.likelihood as lik

    sde, _, s = _iso(2)
    x = torch.tensor([[0.0, 0.5], [1.5, -2.0]], dtype=F64)
    calls = []

    def broken(y, t):
        calls.append(1)
        if len(calls) > 30:
            raise RuntimeError("the solve went on past the broken start")
        return s(y, t) * torch.where(t < 2e-3, math.nan, 1.0)[:, None]

    with pytest.raises(ValueError, match=r"^the model's score at t=eps=0.001 has 4 non-finite value"):
        sp.log_likelihood(broken, sde, x, 1e-3)
    inf = torch.tensor([[math.inf, 0.0], [0.0, 0.0]], dtype=F64)
    for x_T, delta, words in [
        (inf, torch.zeros(2, dtype=F64), r"^the ODE's end point x\(T\) has 1 non-finite"),
        (
            x,
            torch.tensor([0.0, math.nan], dtype=F64),
            r"^the divergence integral ∫ div\(f − ½g²s\) dt has 1 ",
        ),
        (x * 1e200, torch.zeros(2, dtype=F64), r"^the prior term log p_T\(x\(T\)\) has 2 non-finite"),
    ]:
        monkeypatch.setattr(lik, "_solve_rk", lambda *a, _r=(x_T, delta, {}), **k: _r)
        with pytest.raises(ValueError, match=words):
            sp.log_likelihood(s, sde, x, 1e-3)


def test_likelihood_checks_eps_against_the_sdes_own_horizon():
    """EDM's T is 80: eps = 2 lies in (0, T) and is accepted (a finite log-density); 80 is not."""
    sde, gmm = sp.EDMSDE(), sp.GaussianMixture([[0.5, -0.5]], [0.7])
    x = torch.tensor([[0.0, 0.5], [1.5, -2.0]], dtype=F64)
    score = lambda y, t: gmm.score(y, t, sde)
    ll = sp.log_likelihood(score, sde, x, 2.0, rtol=1e-4, atol=1e-4)
    assert bool(torch.isfinite(ll).all())
    with pytest.raises(ValueError, match=r"^eps must lie in \(0, T\) = \(0, 80.0\), got 80.0"):
        sp.log_likelihood(score, sde, x, 80.0)


def test_bpd_solves_in_sigma_for_vp_and_in_t_otherwise():
    """evaluate_bpd's default clock (bpd_clock): σ for VP; t for VE (already affine in log σ),
    sub-VP and EDM."""
    from scorepde.bpd import bpd_solver_defaults

    sdes = (sp.VPSDE(), sp.VESDE(), sp.SubVPSDE(), sp.EDMSDE())
    got = [bpd_solver_defaults(s)["time"] for s in sdes]
    assert got == ["sigma", "t", "t", "t"]
    # the error norm: "state" under VE (fewer rows on three VE U-Nets), log_likelihood's otherwise
    assert [bpd_solver_defaults(s).get("error_on") for s in sdes] == [None, "state", None, None]


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_time_changes_are_their_closed_forms(name):
    """u = log r and u = √r, r = σ²/α², at t0 and t1, t(u), and dt/du = 1/(du/dt) with du/dt = r'/r
    and r'/(2√r), from the marginals written out (CLOSED): VE r = σmin²((σmax/σmin)^{2t} − 1),
    r' = 2 log(σmax/σmin)(r + σmin²); VP r = e^G − 1, r' = β e^G. The t clock is the identity
    (and says so, so callers skip it); the others are not."""
    from scorepde.time_change import time_change

    sde = sp.VESDE() if name == "ve" else sp.VPSDE()
    cf = CLOSED[name][1]
    r = lambda t: cf["var"](t) / cf["a"](t) ** 2  # σ²/α²
    if name == "ve":  # dr/dt = 2 L (r + σmin²), L = log(σmax/σmin)
        dr = lambda t: 2 * math.log(5000.0) * (r(t) + 0.01**2)
    else:  # r = e^G − 1: dr/dt = β e^G
        dr = lambda t: (0.1 + 19.9 * t) * math.exp(_vp_int(t))
    t0, t1 = 0.01, 0.9
    assert time_change(sde, "t", t0, t1).identity
    for clock, to_u, du_dt in [
        ("log_snr", lambda t: math.log(r(t)), lambda t: dr(t) / r(t)),
        ("sigma", lambda t: math.sqrt(r(t)), lambda t: dr(t) / (2 * math.sqrt(r(t)))),
    ]:
        tc = time_change(sde, clock, t0, t1)
        assert not tc.identity
        _close(torch.tensor([tc.u0, tc.u1], dtype=F64), [to_u(t0), to_u(t1)], rtol=1e-12)
        ts = [0.05, 0.3, 0.7]
        u = torch.tensor([to_u(t) for t in ts], dtype=F64)
        _close(tc.t_of_u(u), ts, rtol=1e-10)
        _close(tc.dt_du(u), [1 / du_dt(t) for t in ts], rtol=1e-10)


# -- scorepde.rk: the first step, the sum of the stages, the clock and the counts ------------------


def _hnw_first_step(f, t, y, t1, q, rtol, atol):
    """Hairer, Nørsett & Wanner's starting step (§II.4) for one sample, in Python floats, as SciPy's
    select_initial_step forms it (error order q − 1): the reference for rk._initial_step."""
    scale = [atol + rtol * abs(v) for v in y]
    norm = lambda v: math.sqrt(sum((a / s) ** 2 for a, s in zip(v, scale)) / len(v))
    f0 = f(t, y)
    d0, d1 = norm(y), norm(f0)
    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, t1 - t)
    f1 = f(t + h0, [a + h0 * b for a, b in zip(y, f0)])
    d2 = norm([a - b for a, b in zip(f1, f0)]) / h0
    big = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1 / q)
    return min(100 * h0, h1, t1 - t)


@pytest.mark.parametrize(
    "case",
    [
        "nonlinear",  # f = t² + y², at t = 0.2: the trial point's t and y both matter
        "loose",  # rtol = atol = 1: d0, d1 and max(d1, d2) below 1
        "d0 = 1e-5",  # the thresholds, exactly at their values: h0 = 0.01 d0/d1 at d0 = 1e-5
        "d1 = 1e-5",  # ... and at d1 = 1e-5
        "d1 = 1e-15",  # h0 = 1e-6, and max(d1, d2) = 1e-15 gives h1 = max(1e-6, 1e-3 h0)
    ],
)
def test_rk_first_step_is_hairer_norsett_wanners(case):
    """rk._initial_step per sample against _hnw_first_step (the same numbers as SciPy 1.17's
    select_initial_step with order q − 1), for dopri5 (q = 5) and bosh3 (q = 3)."""
    from scorepde.rk import TABLEAUS, _initial_step

    t, t1, rtol, atol = 0.2, 1.2, 1e-3, 1e-6
    if case == "nonlinear":
        fp = lambda t, y: [t * t + v * v for v in y]
        rows = [[1.0, -2.0], [0.5, 4.0]]
    elif case == "loose":
        fp, rows, rtol, atol = (lambda t, y: [-0.5 * v for v in y]), [[1.0, -2.0], [0.5, 4.0]], 1.0, 1.0
    else:
        y0, c = {"d0 = 1e-5": (1e-5, 1.0), "d1 = 1e-5": (1.0, 1e-5), "d1 = 1e-15": (1.0, 1e-15)}[case]
        fp, rows, rtol, atol = (lambda t, y, c=c: [c]), [[y0]], 0.0, 1.0
    f = lambda t, y, idx: torch.tensor([fp(a, b) for a, b in zip(t.tolist(), y.tolist())], dtype=F64)
    y = torch.tensor(rows, dtype=F64)
    tt = torch.full((len(rows),), t, dtype=F64)
    for method in ("dopri5", "bosh3"):
        tab = TABLEAUS[method]
        h = _initial_step(f, tt, y, f(tt, y, None), None, t1, tab, rtol, atol, None, False)
        _close(h, [_hnw_first_step(fp, t, row, t1, tab.order, rtol, atol) for row in rows], rtol=1e-13)


def test_rk_combine_sums_only_the_stages_it_weighs():
    """Σ_j w_j k_j over the non-zero weights: a stage of weight 0 is left out even when it is not
    finite (0·inf would be NaN), a weight of 1 counts like any other."""
    from scorepde.rk import _combine

    a, b, c = (torch.tensor([[1.0, -2.0]], dtype=F64) * s for s in (1.0, math.inf, 3.0))
    _close(_combine((1.0, 0.0, -0.5), [a, b, c]), a - 0.5 * c, rtol=0, atol=0)
    _close(_combine((0.0, 2.0), [b, c]), 2 * c, rtol=0, atol=0)


def test_rk_clock_starts_at_t0_in_the_states_dtype():
    """dy/dt = 1 is integrated exactly by any of the pairs (Σb = 1): y(t1) − y(t0) = t1 − t0 to
    round-off, from t0 = 0.1, which a float32 clock would start at 0.1 + 1.5e-9; f sees t in
    y's dtype."""
    from scorepde.rk import solve_batched

    seen = []
    f = lambda t, y, idx: seen.append(t.dtype) or torch.ones_like(y)
    y0 = torch.tensor([[0.25], [-1.0]], dtype=F64)
    for method in ("dopri5", "tsit5", "bosh3", "dopri8"):
        y, _ = solve_batched(f, y0, 0.1, 0.7, rtol=1e-8, atol=1e-8, method=method)
        _close(y, y0 + 0.6, rtol=0, atol=1e-14)
    assert set(seen) == {F64}


def test_rk_weights_that_ignore_a_component_step_as_without_it():
    """weights [2, 0] (or [1, 0]) make a two-component solve take the very steps of the first
    component alone: f is called at the same times (the first step, every error ratio and every
    step size read the first component only)."""
    from scorepde.rk import solve_batched

    def run(y0, **kw):
        times = []
        f = lambda t, y, idx: (
            times.append(t.tolist()) or torch.cat([-y[:, :1], -30 * y[:, 1:]], 1)[:, : y.shape[1]]
        )
        solve_batched(f, y0, 0.0, 1.0, rtol=1e-6, atol=1e-9, **kw)
        return times

    alone = run(torch.ones(2, 1, dtype=F64))
    for w in ([2.0, 0.0], [1.0, 0.0]):
        assert run(torch.ones(2, 2, dtype=F64), weights=torch.tensor(w, dtype=F64)) == alone
    assert run(torch.ones(2, 2, dtype=F64)) != alone


def test_rk_ends_a_smooth_solve_in_few_steps():
    """y' = λy, λ = −1 and −4 per sample, to 1e-6: e^λ within 1e-5 in under 40 attempted steps
    (max_steps = 40 would stop a controller that never grows or shrinks its step)."""
    from scorepde.rk import solve_batched

    lam = torch.tensor([[-1.0], [-4.0]], dtype=F64)
    for control in ("per_sample", "joint"):
        y, st = solve_batched(
            lambda t, y, idx: lam[idx] * y, torch.ones(2, 1, dtype=F64), 0.0, 1.0,
            rtol=1e-6, atol=1e-9, control=control, max_steps=40,
        )  # fmt: skip
        _close(y[:, 0], torch.exp(lam[:, 0]), rtol=1e-5)
        assert st["steps"] + st["rejected"] < 40


def test_rk_stops_by_name_where_the_field_turns_non_finite():
    """f = NaN from t = 0.5 on: every step across 0.5 is rejected and the step shrinks (×0.2 at
    each, not ×1) until it underflows, a ValueError naming where, long before max_steps."""
    from scorepde.rk import solve_batched

    f = lambda t, y, idx: -y * torch.where(t < 0.5, 1.0, math.nan)[:, None]
    with pytest.raises(
        ValueError, match=r"^the ODE solve from t=0.0 to t=1.0 failed: its step size underflowed at t = 0.5;"
    ):
        solve_batched(f, torch.ones(2, 1, dtype=F64), 0.0, 1.0, rtol=1e-6, atol=1e-9, max_steps=2000)


def test_rk_counts_steps_and_rejections_over_the_batch():
    """Per-sample steps: each sample steps as it would alone, so the batch's rejections are the
    hard sample's (the easy one, y' = 0, never rejects) and its accepted steps at least the hard
    sample's; both solve to their closed forms."""
    from scorepde.rk import solve_batched

    lam = torch.tensor([[0.0], [-60.0]], dtype=F64)
    f = lambda t, y, idx: lam[idx] * y + (idx == 1).to(y.dtype)[:, None] * torch.cos(40 * t)[:, None]
    kw = dict(rtol=1e-6, atol=1e-9, method="dopri5")
    y, st = solve_batched(f, torch.ones(2, 1, dtype=F64), 0.0, 1.0, **kw)
    _, hard = solve_batched(lambda t, v, idx: f(t, v, idx + 1), torch.ones(1, 1, dtype=F64), 0.0, 1.0, **kw)
    a = -60.0  # y' = a y + cos 40t, y(0) = 1
    closed = (1 + a / (a * a + 1600)) * math.exp(a) + (40 * math.sin(40) - a * math.cos(40)) / (a * a + 1600)
    _close(y[:, 0], [1.0, closed], rtol=1e-5)
    assert hard["rejected"] >= 2 and st["rejected"] == hard["rejected"]
    assert st["steps"] >= hard["steps"]


def test_separated_mixture_draws_its_sign_vectors_in_few_draws(sign_draws):
    """More components than the 2ᴰ sign vectors (3 in 1-D, 5 in 2-D) are refused before any draw;
    all 2ᴰ of them (D = 1, 2, 3) are found within 200 fair ±1 draws (sign_draws)."""
    draws = sign_draws
    for dim, k in [(1, 3), (2, 5)]:
        with pytest.raises(ValueError, match=rf"^only 2\^{dim} = {2**dim} distinct sign vectors exist"):
            separated_mixture(dim, k)
    assert draws == []
    for dim in (1, 2, 3):
        draws.clear()
        means = separated_mixture(dim, 2**dim, offset=1.0).means
        assert sorted(map(tuple, means.tolist())) == sorted(
            tuple(float(2 * ((i >> j) & 1) - 1) for j in range(dim)) for i in range(2**dim)
        )
