"""Conservativity: a true score is a gradient, a rotation is not."""

import pytest
import torch
from conftest import MLP

import scorepde as sp


def _rotation(x, t):
    """s = ∇(−‖x‖²/2) + (−x₂, x₁)·(1 + t): curl 2(1 + t)."""
    return -x + (1 + t)[:, None] * torch.stack([-x[:, 1], x[:, 0]], 1)


def test_curl_of_known_fields(gmm2, sde):
    x = 3 * torch.randn(20, 2, dtype=torch.float64)
    t = torch.rand(20, dtype=torch.float64)
    torch.testing.assert_close(sp.curl(_rotation, x, t), 2 * (1 + t))
    true_curl = sp.curl(lambda x, t: gmm2.score(x, t, sde), x, t)
    assert true_curl.abs().max() < 1e-12


def test_antisymmetry_exact_and_hutchinson():
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.rand(3, dtype=torch.float64)
    exact = sp.antisymmetry(_rotation, x, t)
    torch.testing.assert_close(exact, 2 * sp.curl(_rotation, x, t) ** 2)  # ‖J − Jᵀ‖² = 2 curl²
    model = MLP(4)
    x1 = torch.randn(1, 4, dtype=torch.float64).repeat(4000, 1)
    t1 = torch.full((4000,), 0.5, dtype=torch.float64)
    exact = sp.antisymmetry(model, x1[:1], t1[:1])
    est = sp.antisymmetry(model, x1, t1, "hutchinson", generator=torch.Generator().manual_seed(0))
    assert exact.item() > 0 and abs(est.mean() - exact) < 5 * est.std() / len(est) ** 0.5


def test_curl_refuses_other_dimensions():
    with pytest.raises(ValueError, match="2-D"):
        sp.curl(MLP(3), torch.randn(4, 3, dtype=torch.float64), torch.rand(4, dtype=torch.float64))


def test_curl_takes_any_nonnegative_time_since_it_sees_no_sde():
    """EDM's clock runs to T = 80: the curl at t = 5 is the rotation's 2(1 + t), not a refusal
    of t > 1 (curl has no SDE, so no horizon); a negative t is still refused."""
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(sp.curl(_rotation, x, 5.0), torch.full((3,), 12.0, dtype=torch.float64))
    torch.testing.assert_close(
        sp.antisymmetry(_rotation, x, 5.0), torch.full((3,), 288.0, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="t must lie in"):
        sp.antisymmetry(_rotation, x, -0.5)
