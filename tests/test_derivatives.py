"""Derivative operators: exact forms against closed forms, estimators against exact forms."""

import pytest
import torch
from torch.func import jacfwd, vmap

import scorepde as sp
from scorepde.derivatives import PAPER_STEPS


def _field(x, t):
    """A smooth field with known ∂t and Jacobian."""
    return torch.stack([torch.sin(x[:, 0] * t) + x[:, 1] ** 2, x[:, 0] * x[:, 1] * torch.exp(t)], 1)


def test_time_derivative_exact_matches_closed_form():
    x = torch.randn(10, 2, dtype=torch.float64)
    t = torch.rand(10, dtype=torch.float64)
    expected = torch.stack([torch.cos(x[:, 0] * t) * x[:, 0], x[:, 0] * x[:, 1] * torch.exp(t)], 1)
    torch.testing.assert_close(sp.time_derivative(_field, x, t), expected)


@pytest.mark.parametrize("method", ["fd3", "central"])
def test_finite_differences_are_second_order_down_to_round_off(method, gmm2):
    """Error(h)/Error(h/2) ≈ 4 while truncation dominates; below that, round-off ~ eps/h."""
    sde = sp.VPSDE()
    model = lambda x, t: gmm2.score(x, t, sde)
    x = 2 * torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((16,), 0.3, dtype=torch.float64)
    exact = sp.time_derivative(model, x, t)

    def err(c):
        h = (c * PAPER_STEPS[0] / PAPER_STEPS[0] * 2, c) if method == "fd3" else (c, c)
        return (sp.time_derivative(model, x, t, method, h=h) - exact).abs().max().item()

    errs = [err(c) for c in (0.02, 0.01, 0.005)]
    for coarse, fine in zip(errs, errs[1:]):
        assert 3.3 < coarse / fine < 4.7, errs
    assert err(1e-11) > 10 * err(1e-5)  # the round-off floor: a far tinier step is worse


def test_forward_difference_is_first_order_and_reuses_the_centre(gmm2):
    """The "forward" stencil: Error(h)/Error(h/2) ≈ 2, and with s(x, t) passed as ``center``
    it is one network evaluation and the same number."""
    sde = sp.VPSDE()
    calls = []
    model = lambda x, t: calls.append(x.shape[0]) or gmm2.score(x, t, sde)
    x = 2 * torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((16,), 0.3, dtype=torch.float64)
    exact = sp.time_derivative(model, x, t)
    err = lambda c: (sp.time_derivative(model, x, t, "forward", h=(c, c)) - exact).abs().max().item()
    errs = [err(c) for c in (0.02, 0.01, 0.005)]
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.7 < coarse / fine < 2.3, errs
    calls.clear()
    with_centre = sp.time_derivative(model, x, t, "forward", h=(0.01, 0.01), center=model(x, t))
    assert calls == [16, 16]  # the centre, then one node
    torch.testing.assert_close(with_centre, sp.time_derivative(model, x, t, "forward", h=(0.01, 0.01)))


@pytest.mark.parametrize("t0", [0.0, 1e-4, 1.0])
def test_stencil_stays_inside_horizon_and_keeps_its_order(t0, gmm2):
    sde = sp.VESDE()
    seen = []

    def model(x, t):
        seen.append(t.detach().clone())
        return gmm2.score(x, t, sde)

    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), t0, dtype=torch.float64)
    exact = sp.time_derivative(lambda x, t: gmm2.score(x, t, sde), x, t)
    errs = []
    for c in (0.02, 0.01):
        seen.clear()
        approx = sp.time_derivative(model, x, t, "fd3", h=(2 * c, c))
        assert all(((s >= 0) & (s <= 1)).all() for s in seen)
        errs.append((approx - exact).abs().max().item())
    if 0 < t0 < 0.02:  # below h_s the steps are t/8 (STEP_FRACTION) whatever h: accurate, and equal
        assert errs[0] == errs[1] and errs[0] < 1e-8, errs
    else:
        assert errs[0] / errs[1] > 3.0, errs


@pytest.mark.parametrize("dt", ["fd3", "central"])
def test_stencil_at_unresolvable_t_is_the_t0_stencil(dt):
    """0 < t ≪ √ε·h: shrinking the steps to t/8 would lose the score's resolution (and at
    t ≈ 1e-284 the weights overflow, ∞·0 = NaN: found by tests/test_properties.py), so the
    stencil keeps its steps and shifts inwards as at t = 0, giving t = 0's value."""
    score = lambda x, t: x * torch.exp(3 * t)[:, None] + torch.sin(t)[:, None]
    x = torch.ones(3, 2, dtype=torch.float64)
    at0 = sp.time_derivative(score, x, torch.zeros(3, dtype=torch.float64), dt)
    tiny = sp.time_derivative(score, x, torch.tensor([2.3e-284, 1e-30, 1e-12], dtype=torch.float64), dt)
    assert torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny, at0, rtol=1e-6, atol=0)


def test_paper_stencil_weights_match_lemma_c1():
    """At interior t the stencil is [h_s² φ(t+h_d) + (h_d² − h_s²) φ(t) − h_d² φ(t−h_s)] / (h_s h_d (h_s+h_d))."""
    hs, hd = PAPER_STEPS
    phi = lambda x, t: x * torch.exp(3 * t)[:, None]
    x = torch.ones(1, 1, dtype=torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    f = lambda s: torch.exp(torch.tensor(3 * s, dtype=torch.float64))
    expected = (hs**2 * f(0.5 + hd) + (hd**2 - hs**2) * f(0.5) - hd**2 * f(0.5 - hs)) / (hs * hd * (hs + hd))
    torch.testing.assert_close(sp.time_derivative(phi, x, t, "fd3")[0, 0], expected)


def test_exact_divergence_and_jacobian():
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    J = vmap(jacfwd(lambda xi, ti: _field(xi[None], ti[None])[0]))(x, t)
    torch.testing.assert_close(sp.jacobian(lambda y: _field(y, t), x), J)
    torch.testing.assert_close(sp.divergence(lambda y: _field(y, t), x), J.diagonal(dim1=1, dim2=2).sum(1))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian", "sphere"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_hutchinson_divergence_is_unbiased(probe, mode):
    """Mean of N independent estimates within 5 standard errors of the exact divergence."""
    A = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fn = lambda y: torch.tanh(y @ A.T) + y**3
    x = torch.randn(1, 5, dtype=torch.float64).expand(4000, 5)  # one point, 4000 probes
    est = sp.divergence(
        fn, x, "hutchinson", probe=probe, mode=mode, generator=torch.Generator().manual_seed(0)
    )
    exact = sp.divergence(fn, x[:1])
    assert abs(est.mean() - exact) < 5 * est.std() / len(est) ** 0.5


def test_hutchpp_is_exact_on_the_sketched_span_and_unbiased_elsewhere():
    """Hutch++ with k = m/3: exact for a Jacobian of rank ≤ k (the sketch spans its range, the
    deflated probes see nothing), unbiased on a full-rank one, and of lower variance than m
    Hutchinson probes when the spectrum decays."""
    from scorepde.derivatives import hutchpp_divergence

    g = torch.Generator().manual_seed(1)
    U, V = torch.randn(2, 6, 2, dtype=torch.float64, generator=g)
    low = lambda y: y @ (U @ V.T).T  # J = U Vᵀ, rank 2
    x = torch.randn(3, 6, dtype=torch.float64, generator=g)
    est = hutchpp_divergence(low, x, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, torch.full((3,), torch.trace(U @ V.T).item(), dtype=torch.float64))

    A = 3 * U @ V.T + 0.3 * torch.randn(6, 6, dtype=torch.float64, generator=g)  # rank 2 + a little
    fn = lambda y: y @ A.T + torch.tanh(y) ** 3
    x = torch.randn(1, 6, dtype=torch.float64, generator=g).expand(3000, 6)
    pp = hutchpp_divergence(fn, x, 6, generator=torch.Generator().manual_seed(0))
    plain = sp.divergence(fn, x, "hutchinson", n_probes=6, generator=torch.Generator().manual_seed(0))
    exact = sp.divergence(fn, x[:1])
    assert abs(pp.mean() - exact) < 5 * pp.std() / len(pp) ** 0.5
    assert pp.std() < 0.5 * plain.std(), (pp.std(), plain.std())
    with pytest.raises(ValueError, match="multiple of 3"):
        hutchpp_divergence(fn, x, 4)


def test_probes_have_identity_second_moment():
    x = torch.zeros(20000, 3, dtype=torch.float64)
    for kind in ("rademacher", "gaussian", "sphere"):
        v = sp.sample_probes(x, 1, kind, torch.Generator().manual_seed(0))[0]
        torch.testing.assert_close(v.T @ v / len(v), torch.eye(3, dtype=torch.float64), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="unknown probe"):
        sp.sample_probes(x, 1, "uniform")


def test_stencil_points_reproduce_time_derivative():
    from scorepde.derivatives import stencil_points

    score = lambda x, t: torch.sin(3 * t)[:, None] * x
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1e-4, 0.5, 1.0], dtype=torch.float64)  # both ends shift the nodes
    for method in ("fd3", "central"):
        times, weights = stencil_points(t, method)
        by_hand = sum(w[:, None] * score(x, ti) for ti, w in zip(times, weights))
        torch.testing.assert_close(by_hand, sp.time_derivative(score, x, t, method))
        assert all(((ti >= 0) & (ti <= 1)).all() for ti in times)


def test_time_steps_come_from_the_score_when_it_says_how_it_sees_time():
    from scorepde.derivatives import FD_PHASE, PAPER_STEPS, time_steps

    class Fast:
        def time_rate(self):
            return 2000.0

        def __call__(self, x, t):
            return x * torch.sin(2000.0 * t)[:, None]

    assert time_steps(lambda x, t: x, "auto") == PAPER_STEPS  # a plain callable: the paper's
    h = time_steps(Fast(), "auto", torch.float32)
    assert h == pytest.approx((FD_PHASE[torch.float32] / 2000.0,) * 2)
    assert time_steps(Fast(), (1e-3, 5e-4)) == (1e-3, 5e-4)  # explicit steps are kept
    with pytest.raises(ValueError, match="auto"):
        time_steps(Fast(), "automatic")
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    exact = sp.time_derivative(Fast(), x, t, "jvp")
    auto = sp.time_derivative(Fast(), x, t, "central", h="auto")
    assert ((auto - exact).norm() / exact.norm()) < 1e-6
    paper = sp.time_derivative(Fast(), x, t, "fd3")  # (1e-3, 5e-4): 2 radians
    assert ((paper - exact).norm() / exact.norm()) > 0.1
