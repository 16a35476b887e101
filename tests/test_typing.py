"""The shared vocabulary: Score, the TimeConditioned protocol, the SDE's σ floor, and old
keyword names that keep working for one release."""

import warnings

import pytest
import torch

import scorepde as sp
from scorepde.derivatives import FD_PHASE, PAPER_STEPS, time_steps
from scorepde.typing import TimeConditioned, renamed_keywords, time_conditioning


class _Rated:
    def __init__(self, rate, dtype=None):
        self.rate = rate
        if dtype is not None:
            self.time_dtype = dtype

    def time_rate(self):
        return self.rate

    def __call__(self, x, t):
        return x * torch.sin(self.rate * t)[:, None]


def test_time_conditioning_reads_the_protocol():
    plain = lambda x, t: x
    assert not isinstance(plain, TimeConditioned) and time_conditioning(plain) == (None, None)
    assert isinstance(_Rated(100.0), TimeConditioned)
    assert time_conditioning(_Rated(100.0)) == (100.0, None)
    assert time_conditioning(_Rated(100.0, torch.float32)) == (100.0, torch.float32)
    # the time dtype sets the phase of the step: float32 features under a float64 x
    h = time_steps(_Rated(100.0, torch.float32), "auto", torch.float64)
    assert h == pytest.approx((FD_PHASE[torch.float32] / 100.0,) * 2)
    assert time_steps(plain, "auto") == PAPER_STEPS


def test_fp_objective_keeps_the_wrapped_scores_time_conditioning():
    """FPObjective's fused wrapper forwards the protocol, so "auto" steps survive it."""
    from scorepde.losses import _Piggyback

    x, t = torch.zeros(2, 2), torch.zeros(2)
    wrapped = _Piggyback(_Rated(300.0, torch.float32), x, t)
    assert time_conditioning(wrapped) == (300.0, torch.float32)


def test_sde_states_its_sigma_floor():
    assert sp.VESDE(sigma_min=0.02).sigma_floor == 0.02
    assert sp.EDMSDE(sigma_min=0.002).sigma_floor == 0.002
    assert sp.VPSDE().sigma_floor == sp.SubVPSDE().sigma_floor == 1e-5
    # the preconditioning and the forward-only estimator's step in x read the same floor
    for sde in (sp.VESDE(), sp.VPSDE(), sp.EDMSDE()):
        net = lambda x, c: x
        assert sp.ScoreModel(net, sde).min_std == sde.sigma_floor


def test_renamed_keywords_warn_and_still_work():
    @renamed_keywords(model="score")
    def f(score, x=1):
        return score(x)

    with pytest.warns(DeprecationWarning, match="model= is deprecated.*use score="):
        assert f(model=lambda x: x + 1) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(score=lambda x: x + 1) == 2
    with pytest.raises(ValueError, match="pass score= only"):
        f(score=abs, model=abs)


@pytest.mark.parametrize(
    "call",
    [
        lambda s, sde, x, t: sp.residual(model=s, sde=sde, x=x, t=t),
        lambda s, sde, x, t: sp.residual_norm_sq(model=s, sde=sde, x=x, t=t),
        lambda s, sde, x, t: sp.fpe_rhs(model=s, sde=sde, x=x, t=t),
        lambda s, sde, x, t: sp.antisymmetry(model=s, x=x, t=t),
        lambda s, sde, x, t: sp.probability_flow_drift(model=s, sde=sde, x=x, t=t),
        lambda s, sde, x, t: sp.divergence(lambda y: s(y, t), x, method="exact"),
        lambda s, sde, x, t: sp.time_derivative(s, x, t, method="central"),
        lambda s, sde, x, t: sp.stencil_points(t, method="fd3"),
        lambda s, sde, x, t: sp.residual_curves(model=s, sde=sde, x0=x, ts=[0.5]),
        lambda s, sde, x, t: sp.log_likelihood(
            s, sde, x, trace="exact", method="euler", options={"step_size": 0.5}
        ),
        lambda s, sde, x, t: sp.FPObjective(model=torch.nn.Linear(2, 2), sde=sde),
        lambda s, sde, x, t: sp.evaluate_bpd(
            model=s,
            sde=sde,
            images_k=torch.tensor([[3, 200]]),
            levels=256,
            scale=2 / 255,
            shift=-1.0,
            repeats=1,
            div="exact",
        ),  # fmt: skip
    ],
)
def test_old_names_of_the_public_api_warn(call):
    """The score is ``score`` (not ``model``), the divergence choice ``div`` (not ``method``
    or ``trace``), the choice of ∂t s ``dt`` (not ``method``) everywhere; the old names still
    work, with a DeprecationWarning."""
    sde = sp.VPSDE()
    score = lambda x, t: -x
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        call(score, sde, x, t)
