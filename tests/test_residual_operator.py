"""``scorepde.residual(model, sde, **options)``: the residual as an operator (x, t) -> ε with
its estimator, probes and options bound, agreeing with the direct call."""

import pytest
import torch

import scorepde as sp


def _net_score():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2)).double()
    return lambda x, t: net(torch.cat([x, t[:, None]], 1))


def _points(n=6):
    g = torch.Generator().manual_seed(1)
    return 2 * torch.randn(n, 2, generator=g, dtype=torch.float64), torch.rand(
        n, generator=g, dtype=torch.float64
    )


def test_operator_equals_the_direct_call_exact(sde):
    model, (x, t) = _net_score(), _points()
    op = sp.residual(model, sde)
    assert callable(op)
    assert torch.equal(op(x, t), sp.residual(model, sde, x, t))


@pytest.mark.parametrize("estimator", ["paper", "hutchinson", "directional", "forward_fd"])
def test_operator_binds_estimator_probes_and_options(estimator):
    sde, model, (x, t) = sp.VPSDE(), _net_score(), _points()
    op = sp.residual(
        model, sde, estimator=estimator, generator=torch.Generator().manual_seed(3), return_rhs=True
    )
    eps, L = op(x, t)
    eps_d, L_d = sp.residual(
        model, sde, x, t, estimator, generator=torch.Generator().manual_seed(3), return_rhs=True
    )
    assert torch.equal(eps, eps_d) and torch.equal(L, L_d)
    positional = sp.residual(model, sde, estimator)  # the estimator as the third argument
    assert torch.equal(positional(x, t, generator=torch.Generator().manual_seed(3)), eps_d)


def test_operator_of_the_true_score_is_zero():
    sde = sp.VESDE()
    gmm = sp.GaussianMixture(means=[[-2.0, 0.0], [3.0, 1.0]], stds=[0.5, 1.0], weights=[0.3, 0.7])
    op = sp.residual(lambda x, t: gmm.score(x, t, sde), sde)
    x, t = _points(8)
    assert op(3 * x, t).abs().max() < 1e-9


def test_operator_refuses_bad_options_at_once():
    model = _net_score()
    with pytest.raises(ValueError, match="unknown estimator"):
        sp.residual(model, sp.VPSDE(), estimator="nope")
    with pytest.raises(ValueError, match="unknown residual option"):
        sp.residual(model, sp.VPSDE(), n_prbes=2)
    x, _ = _points()
    with pytest.raises(ValueError, match="both x and t"):
        sp.residual(model, sp.VPSDE(), x)
