"""scorepde.metrics: the error measures in Score-PINN's convention."""

import pytest
import torch

import scorepde as sp
from scorepde.gmm import separated_mixture
from scorepde.metrics import score_pinn_errors


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_score_pinn_errors_of_the_true_score_are_zero_and_of_a_shifted_one_are_the_shift():
    sde, gmm = sp.VESDE(0.01, 50.0), separated_mixture(4, 3)
    true = lambda x, t: gmm.score(x, t, sde)
    x0 = gmm.sample(200, generator=gen(1), dtype=torch.float64)
    ts = [0.2, 0.6]
    exact = score_pinn_errors(true, true, sde, x0, ts, generator=gen(2))
    assert exact["score_mae"] == 0.0 and exact["score_rmse"] == 0.0 and "logp_per_dim_rel_l2" not in exact
    # A constant shift c in one coordinate of D: MAE = |c|/D, RMSE = |c|/sqrt(D) over pairs and coordinates.
    shift = torch.tensor([0.4, 0.0, 0.0, 0.0], dtype=torch.float64)
    off = score_pinn_errors(lambda x, t: true(x, t) + shift, true, sde, x0, ts, generator=gen(2))
    assert off["score_mae"] == pytest.approx(0.1) and off["score_rmse"] == pytest.approx(0.2)


def test_the_per_dimension_log_density_error_is_small_for_the_true_score():
    """The PF-ODE log-density of the true score, per dimension, matches log q_t/D; a wrong score's does not."""
    sde, gmm = sp.VESDE(0.01, 50.0), separated_mixture(2, 2)
    true = lambda x, t: gmm.score(x, t, sde)
    x0 = gmm.sample(64, generator=gen(3), dtype=torch.float64)
    kw = dict(reference_log_prob=lambda x, t: gmm.log_prob(x, t, sde), n_log_prob=16, rtol=1e-5, atol=1e-5)
    good = score_pinn_errors(true, true, sde, x0, [0.3, 1.0], generator=gen(4), **kw)
    bad = score_pinn_errors(lambda x, t: 0.5 * true(x, t), true, sde, x0, [0.3, 1.0], generator=gen(4), **kw)
    assert good["n_log_prob"] == 16  # t = T has no ODE to solve: skipped
    # The prior N(0, σ_max² I) stands in for q_T: about 1% per dimension here, for the exact score too.
    assert (
        good["logp_per_dim_rel_l2"] < 0.02 and bad["logp_per_dim_rel_l2"] > 3 * good["logp_per_dim_rel_l2"]
    ), (good, bad)
