"""The batched Runge–Kutta solver against closed forms: y' = λ_i y + cos t per sample."""

import math

import pytest
import torch

from scorepde.rk import CONTROLS, TABLEAUS, Tableau, solve_batched

LAM = torch.tensor([-0.1, -1.0, -2.0, -8.0], dtype=torch.float64)


def _rhs(calls=None):
    def f(t, y, idx):
        if calls is not None:
            calls.append(idx.clone())
        return LAM[idx, None] * y + torch.cos(t)[:, None]

    return f


def _exact(t):
    """y(t) for y' = λ y + cos t, y(0) = 1."""
    steady = lambda s: (-LAM * math.cos(s) + math.sin(s)) / (LAM**2 + 1)
    return (torch.exp(LAM * t) * (1 - steady(0.0)) + steady(t))[:, None]


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_tableaus_are_consistent(name):
    """Σ b = 1, Σ e = 0 (both weights are consistent), each row of a sums to its node, and
    the last stage is the new point (first same as last)."""
    tab = TABLEAUS[name]
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-14)
    assert sum(tab.e) == pytest.approx(0.0, abs=1e-14)
    for row, c in zip(tab.a[1:], tab.c[1:]):
        assert sum(row) == pytest.approx(c, abs=1e-13)
    assert tab.c[-1] == 1.0 and tuple(tab.a[-1]) == pytest.approx(tab.b[:-1], abs=1e-15)


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_solution_within_tolerance(name, control):
    y0 = torch.ones(4, 1, dtype=torch.float64)
    for tol, bound in ((1e-4, 2e-3), (1e-8, 2e-7)):
        y, stats = solve_batched(_rhs(), y0, 0.0, 3.0, rtol=tol, atol=tol, method=name, control=control)
        assert (y - _exact(3.0)).abs().max().item() < bound
        assert stats["nfe"] > 0 and stats["rejected"] >= 0


def test_inner_stages_are_those_without_solution_or_error_weight():
    assert TABLEAUS["dopri5"].inner == (1,) and TABLEAUS["dopri8"].inner == (1, 2, 3, 4)
    assert TABLEAUS["tsit5"].inner == () == TABLEAUS["bosh3"].inner
    # a stage with no solution weight still counts when the error estimate reads it
    tab = Tableau(
        c=(0.0, 0.5, 1.0), a=((), (0.5,), (0.5, 0.5)), b=(0.5, 0.0, 0.5), e=(0.1, -0.1, 0.0), order=2
    )
    assert tab.inner == ()
    # the first stage (the previous step's last) is never inner; the one before the last can be
    tab = Tableau(
        c=(0.0, 0.5, 1.0), a=((), (0.5,), (0.5, 0.5)), b=(0.0, 0.0, 1.0), e=(0.0, 0.0, 0.0), order=1
    )
    assert tab.inner == (1,)


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("name", ["dopri5", "dopri8"])
def test_f_inner_values_of_unread_components_never_reach_the_answer(name, control):
    """y = (y₁, q) with q' = y₁² (a quadrature: f never reads q). f_inner gives y₁' and
    garbage for q' at the inner stages: y(t1), q(t1) and the steps are f's alone, bit for bit."""

    def f(t, y, idx):
        return torch.stack([LAM[idx] * y[:, 0] + torch.cos(t), y[:, 0] ** 2], 1)

    calls = []

    def f_inner(t, y, idx):
        calls.append(len(idx))
        return torch.stack([LAM[idx] * y[:, 0] + torch.cos(t), torch.full_like(t, 1e6)], 1)

    y0 = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
    kw = dict(rtol=1e-7, atol=1e-7, method=name, control=control)
    plain, s_plain = solve_batched(f, y0, 0.0, 3.0, **kw)
    inner, s_inner = solve_batched(f, y0, 0.0, 3.0, f_inner=f_inner, **kw)
    assert torch.equal(plain, inner) and s_plain["nfe"] == s_inner["nfe"]
    assert s_plain["nfe_inner"] == 0
    iterations = (s_inner["nfe"] - 2) // (len(TABLEAUS[name].c) - 1)  # one call of f_inner per inner stage
    assert len(calls) == s_inner["nfe_inner"] == len(TABLEAUS[name].inner) * iterations > 0
    assert (plain[:, :1] - _exact(3.0)).abs().max() < 1e-5


def test_higher_order_takes_fewer_steps_at_tight_tolerance():
    y0 = torch.ones(4, 1, dtype=torch.float64)
    nfe = {m: solve_batched(_rhs(), y0, 0.0, 3.0, rtol=1e-9, atol=1e-9, method=m)[1]["nfe"] for m in TABLEAUS}
    assert nfe["dopri8"] < nfe["dopri5"] < nfe["bosh3"]


def test_per_sample_steps_drop_finished_samples():
    """Each sample has its own steps: the slow one (λ = −0.1) finishes early and leaves the
    batch, so fewer rows are evaluated than by one shared step size."""
    y0 = torch.ones(4, 1, dtype=torch.float64)
    calls = []
    y, per = solve_batched(_rhs(calls), y0, 0.0, 3.0, rtol=1e-7, atol=1e-7)
    _, joint = solve_batched(_rhs(), y0, 0.0, 3.0, rtol=1e-7, atol=1e-7, control="joint")
    assert per["sample_evals"] < joint["sample_evals"]
    assert calls[-1].numel() < 4 and 3 in calls[-1].tolist()  # the stiffest sample is last
    assert (y - _exact(3.0)).abs().max().item() < 1e-6


def test_weights_pick_the_components_the_controller_measures():
    """A fast-decaying second component is ignored when its weight is 0: fewer steps."""
    lam = torch.tensor([-0.1, -50.0], dtype=torch.float64)
    f = lambda t, y, idx: lam * y
    y0 = torch.ones(2, 2, dtype=torch.float64)
    _, both = solve_batched(f, y0, 0.0, 1.0, rtol=1e-8, atol=1e-8)
    y, first = solve_batched(f, y0, 0.0, 1.0, rtol=1e-8, atol=1e-8, weights=torch.tensor([1.0, 0.0]))
    assert first["nfe"] < both["nfe"]
    assert y[:, 0] == pytest.approx(math.exp(-0.1), abs=1e-7)


def test_non_finite_rhs_is_a_value_error():
    f = lambda t, y, idx: torch.where(t[:, None] > 0.5, torch.nan, -y)
    with pytest.raises(ValueError, match="ODE solve .* failed: its step size underflowed"):
        solve_batched(f, torch.ones(2, 1, dtype=torch.float64), 0.0, 1.0, rtol=1e-6, atol=1e-6)


def test_rhs_non_finite_from_the_start_fails_at_once():
    """NaN at t0 makes the first step size NaN: refused within a few steps, not after max_steps."""
    calls = []
    f = lambda t, y, idx: calls.append(1) or torch.full_like(y, torch.nan)
    with pytest.raises(ValueError, match="non-finite"):
        solve_batched(f, torch.ones(2, 1, dtype=torch.float64), 0.0, 1.0, rtol=1e-6, atol=1e-6, max_steps=50)
    assert len(calls) < 20


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="rk4"), "unknown method"),
        (dict(control="mine"), "unknown control"),
        (dict(t1=-1.0), "forward"),
    ],
)
def test_bad_arguments_refused(kw, match):
    args = dict(t1=1.0) | kw
    t1 = args.pop("t1")
    with pytest.raises(ValueError, match=match):
        solve_batched(_rhs(), torch.ones(4, 1, dtype=torch.float64), 0.0, t1, rtol=1e-5, atol=1e-5, **args)
