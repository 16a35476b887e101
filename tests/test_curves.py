"""Residual curves: zero r_FP for the true score, and the DSM-like gap it still has."""

import torch
from conftest import MLP

import scorepde as sp


def test_true_score_curves(gmm2):
    sde = sp.VESDE(sigma_max=10.0)
    x0 = gmm2.sample(256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = lambda x, t: gmm2.score(x, t, sde)
    curves = sp.residual_curves(
        model, sde, x0, [0.1, 0.5, 1.0], batch_size=100, generator=torch.Generator().manual_seed(1)
    )
    assert curves["t"] == [0.1, 0.5, 1.0]
    assert max(curves["r_fp"]) < 1e-10
    # The true marginal score is not the conditional score: r_DSM-like stays positive.
    assert min(curves["r_dsm"]) > 1e-3


def test_untrained_network_has_large_residual(gmm2):
    sde = sp.VPSDE()
    x0 = gmm2.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    curves = sp.residual_curves(MLP(2), sde, x0, [0.2, 0.8], estimator="hutchinson")
    assert min(curves["r_fp"]) > 1e-2
