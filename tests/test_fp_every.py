"""FPObjective(every=k): R_FP on every k-th call at k× weight, DSM alone in between."""

import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.losses import DEFAULT_FP, FPObjective

KW = dict(beta=0.3, gamma=0.1, m=2, estimator="exact", fp_weighting="g2")


def _losses(objective, calls, seed=0):
    x0 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return [objective(x0, torch.Generator().manual_seed(seed + i)) for i in range(calls)]


def test_every_k_weights_the_regularizer_by_k_on_every_kth_call():
    """Calls 0 and 3 carry 3 × the every-step R_FP (same draws), calls 1, 2, 4 are plain DSM."""
    model, sde = MLP(2), sp.VPSDE()
    every = _losses(FPObjective(model, sde, every=3, **KW), 5)
    plain = _losses(FPObjective(model, sde, **KW), 5)
    dsm = _losses(FPObjective(model, sde), 5)
    for i in range(5):
        (loss, parts), (_, parts1), (loss_dsm, _) = every[i], plain[i], dsm[i]
        if i % 3 == 0:
            assert parts1["fp"] > 0
            torch.testing.assert_close(parts["fp"], 3 * parts1["fp"], rtol=1e-12, atol=0)
            torch.testing.assert_close(loss, parts1["dsm"] + 3 * parts1["fp"], rtol=1e-12, atol=0)
        else:
            assert parts["fp"] == 0 and "fp_residual" not in parts
            torch.testing.assert_close(loss, loss_dsm, rtol=0, atol=0)


def test_every_k_is_unbiased_over_a_cycle():
    """Over a cycle of k = 2 calls on the same draws the mean gradient is the every-step one:
    ((∇DSM + 2∇R) + ∇DSM) / 2 = ∇DSM + ∇R."""
    model, sde = MLP(2), sp.VPSDE()
    grads = {}
    for k in (1, 2):
        objective = FPObjective(model, sde, every=k, **KW)
        total = [torch.zeros_like(p) for p in model.parameters()]
        x0 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for _ in range(2):
            loss, _ = objective(x0, torch.Generator().manual_seed(7))
            for acc, g in zip(total, torch.autograd.grad(loss, list(model.parameters()))):
                acc += g / 2
        grads[k] = total
    for a, b in zip(grads[1], grads[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_every_keeps_its_phase_through_state_dict():
    model, sde = MLP(2), sp.VPSDE()
    a = FPObjective(model, sde, every=4, **KW)
    _losses(a, 3)
    b = FPObjective(model, sde, every=4, **KW)
    b.load_state_dict(a.state_dict())
    assert b.calls == 3
    (_, pa), (_, pb) = _losses(a, 1, seed=9)[0], _losses(b, 1, seed=9)[0]
    assert pa["fp"] == 0 and pb["fp"] == 0  # call 3 of a 4-cycle: DSM only, in both
    assert _losses(b, 1)[0][1]["fp"] > 0  # call 4: the regularizer again


@pytest.mark.parametrize("every", [0, -2, 1.5, "2"])
def test_bad_every_refused(every):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        FPObjective(MLP(2), sp.VPSDE(), every=every, **KW)


def test_default_fp_is_accepted():
    FPObjective(MLP(2), sp.VPSDE(), beta=0.1, **DEFAULT_FP)
