"""Time variables: u(t) and t(u) are inverses, dt/du is their derivative, and an integral
in u equals the same integral in t."""

import math

import pytest
import torch

import scorepde as sp
from scorepde.rk import solve_batched
from scorepde.time_change import TIME_VARIABLES, time_change

SDES = {"vp": sp.VPSDE(), "ve": sp.VESDE(0.01, 20.0)}


@pytest.mark.parametrize("name", TIME_VARIABLES)
@pytest.mark.parametrize("sde", sorted(SDES))
def test_round_trip_and_rate(sde, name):
    tc = time_change(SDES[sde], name, 1e-3, 1.0)
    assert tc.u0 < tc.u1
    ends = tc.t_of_u(torch.tensor([tc.u0, tc.u1], dtype=torch.float64))
    assert ends.tolist() == pytest.approx([1e-3, 1.0], rel=1e-12)
    u = torch.linspace(tc.u0, tc.u1, 9, dtype=torch.float64)[1:-1]
    h = 1e-6 * (tc.u1 - tc.u0)
    fd = (tc.t_of_u(u + h) - tc.t_of_u(u - h)) / (2 * h)
    assert torch.allclose(tc.dt_du(u), fd, rtol=1e-5)


def test_log_snr_is_minus_log_signal_to_noise():
    sde = SDES["vp"]
    tc = time_change(sde, "log_snr", 0.1, 1.0)
    alpha, sigma = sde.marginal(torch.tensor([0.1], dtype=torch.float64))
    assert tc.u0 == pytest.approx(math.log(sigma.item() ** 2 / alpha.item() ** 2), rel=1e-12)


@pytest.mark.parametrize("name", TIME_VARIABLES)
def test_integral_is_the_same_in_every_clock(name):
    """∫ β(t) dt over [eps, 1] solved in u with dt/du equals the closed form."""
    sde = SDES["vp"]
    tc = time_change(sde, name, 1e-3, 1.0)
    f = lambda u, y, idx: (sde.beta(tc.t_of_u(u)) * tc.dt_du(u))[:, None]
    y, _ = solve_batched(f, torch.zeros(1, 1, dtype=torch.float64), tc.u0, tc.u1, rtol=1e-10, atol=1e-10)
    exact = sde.integrated_beta(torch.tensor(1.0, dtype=torch.float64)) - sde.integrated_beta(
        torch.tensor(1e-3, dtype=torch.float64)
    )
    assert y.item() == pytest.approx(exact.item(), rel=1e-8)


def test_unknown_or_unsupported_refused():
    with pytest.raises(ValueError, match="unknown time variable"):
        time_change(SDES["vp"], "snr", 1e-3, 1.0)
    with pytest.raises(ValueError, match="VPSDE or VESDE"):
        time_change(sp.SubVPSDE(), "log_snr", 1e-3, 1.0)
    assert time_change(sp.SubVPSDE(), "t", 1e-3, 1.0).u0 == 1e-3
