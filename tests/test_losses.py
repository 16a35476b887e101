"""DSM and the FP regularizer: vanilla at β = γ = 0, unbiased ‖ε‖², refusals."""

import math

import numpy as np
import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.losses import DEFAULT_FP, PAPER_SETTINGS, FPObjective, dsm_loss, fp_regularizer, held_out_dsm


class Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x, t):
        self.calls += 1
        return self.inner(x, t)


def test_zero_beta_gamma_is_exactly_dsm_at_no_extra_cost():
    x0 = torch.randn(32, 2, dtype=torch.float64)
    model = Counting(MLP(2))
    plain = dsm_loss(model, sp.VPSDE(), x0, generator=torch.Generator().manual_seed(0))
    calls = model.calls
    total, parts = FPObjective(model, sp.VPSDE(), beta=0.0, gamma=0.0)(x0, torch.Generator().manual_seed(0))
    assert total.item() == plain.item() and parts["fp"].item() == 0.0
    assert model.calls - calls == calls == 1


def test_dsm_prefers_the_true_score(gmm2):
    sde = sp.VESDE(sigma_max=10.0)
    x0 = gmm2.sample(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    true = lambda x, t: gmm2.score(x, t, sde)
    off = lambda x, t: 1.2 * gmm2.score(x, t, sde)
    for w in ("sigma2", "g2"):  # unweighted DSM is too noisy at small t for this batch
        a = dsm_loss(true, sde, x0, weighting=w, eps=0.05, generator=torch.Generator().manual_seed(1))
        b = dsm_loss(off, sde, x0, weighting=w, eps=0.05, generator=torch.Generator().manual_seed(1))
        assert a < b, w


def test_held_out_dsm_is_the_mean_of_its_draws_and_redraws_the_data_first():
    """The toy and image benchmarks' held-out DSM: ``repeats`` draws from one generator, the
    data (when a function) drawn before each draw of (t, z); mean as np.mean, SE as sd/√n."""
    sde, model = sp.VPSDE(), MLP(2).double()
    x0 = torch.randn(16, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    draws = [dsm_loss(model, sde, x0, eps=0.01, generator=gen).item() for _ in range(5)]
    mean, se = held_out_dsm(model, sde, x0, 5, eps=0.01, generator=torch.Generator().manual_seed(3))
    assert mean == float(np.mean(draws)) and se == pytest.approx(np.std(draws, ddof=1) / 5**0.5, rel=1e-12)

    fresh = lambda g: x0 + 0.1 * torch.rand(x0.shape, generator=g, dtype=x0.dtype)  # a dequantization
    gen = torch.Generator().manual_seed(3)
    draws = [dsm_loss(model, sde, fresh(gen), eps=0.01, generator=gen).item() for _ in range(3)]
    assert held_out_dsm(model, sde, fresh, 3, eps=0.01, generator=torch.Generator().manual_seed(3))[
        0
    ] == float(np.mean(draws))
    one = held_out_dsm(model, sde, x0, 1, eps=0.01, generator=torch.Generator().manual_seed(3))
    assert math.isnan(one[1])  # one draw: no SE
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        held_out_dsm(model, sde, x0, 0)


@pytest.mark.parametrize("estimator", ["exact", "paper", "hutchinson", "directional"])
@pytest.mark.parametrize("m", [1, 2])
def test_fp_training_step_runs(estimator, m):
    """Each step's J_FP is J_DSM plus R_FP on the first `subbatch` perturbed samples, R_FP is
    β·fp_residual + γ·fp_rhs as fp_regularizer computes it from the same draws, and its
    gradient reaches the weights."""
    from scorepde.losses import _dsm_from_score, _perturbed_batch

    torch.manual_seed(0)
    model, sde = MLP(2, dtype=torch.float32), sp.VESDE()
    kw = dict(beta=0.01, gamma=0.01, m=m, estimator=estimator, fp_weighting="g2" if m == 2 else "none")
    objective = FPObjective(model, sde, subbatch=8, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x0 = torch.randn(16, 2)
    for _ in range(3):
        total, parts = objective(x0, torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)  # the same draws, in the same order
        xt, t, z = _perturbed_batch(sde, x0, objective.eps, g)
        fp, fp_parts = fp_regularizer(model, sde, xt[:8], t[:8], generator=g, **kw)
        dsm = _dsm_from_score(model(xt, t), sde, t, z, "sigma2")
        torch.testing.assert_close(parts["fp"], fp.detach())
        torch.testing.assert_close(parts["dsm"], dsm.detach())
        torch.testing.assert_close(total.detach(), (dsm + fp).detach())
        torch.testing.assert_close(parts["fp"], 0.01 * (fp_parts["fp_residual"] + fp_parts["fp_rhs"]))
        fp_grad = torch.autograd.grad(fp, list(model.parameters()))
        assert any(bool(gr.abs().max() > 0) for gr in fp_grad)  # R_FP moves the weights
        opt.zero_grad()
        total.backward()
        opt.step()
        assert set(parts) == {"dsm", "fp", "fp_residual", "fp_rhs"} and parts["fp_rhs"] > 0


@pytest.mark.parametrize(
    "estimator,options",
    [("hutchinson", {}), ("paper", {}), ("directional", {}), ("directional", {"div": "exact"})],
)
def test_unbiased_squared_norm(estimator, options):
    """Mean of the product estimator matches ‖ε‖² to 5 SE; the plug-in ‖ε̂‖² is biased up."""
    sde, model = sp.VPSDE(), MLP(3)
    x1 = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t1 = torch.tensor([0.5], dtype=torch.float64)
    exact = sp.residual(model, sde, x1, t1).pow(2).sum()
    n = 6000
    x, t = x1.repeat(n, 1), t1.repeat(n)
    g = torch.Generator().manual_seed(0)
    est, _ = sp.residual_norm_sq(model, sde, x, t, estimator, generator=g, validate=False, **options)
    se = est.std() / n**0.5
    assert abs(est.mean() - exact) < 5 * se + 1e-5 * exact, (est.mean(), exact, se)
    plug, _ = sp.residual_norm_sq(
        model, sde, x, t, estimator, unbiased=False, generator=g, validate=False, **options
    )
    if estimator == "directional" and options.get("div") == "exact":
        assert abs(plug.mean() - exact) < 5 * plug.std() / n**0.5  # exact projections: no bias
    else:
        assert plug.mean() - exact > 5 * plug.std() / n**0.5  # E‖ε̂‖² = ‖ε‖² + tr Cov(ε̂)


def test_deterministic_estimator_gives_the_exact_norm():
    sde, model = sp.VESDE(), MLP(2)
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    sq, L = sp.residual_norm_sq(model, sde, x, t)
    torch.testing.assert_close(sq, sp.residual(model, sde, x, t).pow(2).sum(1))
    torch.testing.assert_close(L, sp.fpe_rhs(model, sde, x, t))


def test_refusals():
    model, sde = MLP(2), sp.VPSDE()
    x0 = torch.randn(4, 2, dtype=torch.float64)
    for eps in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="eps must lie"):
            dsm_loss(model, sde, x0, eps=eps)
    with pytest.raises(ValueError, match="unknown weighting"):
        FPObjective(model, sde, fp_weighting="g^2")
    with pytest.raises(ValueError, match="DSM loss.*non-finite"):
        dsm_loss(lambda x, t: model(x, t) * float("nan"), sde, x0)
    with pytest.raises(ValueError, match="FP regularizer.*non-finite"):
        fp_regularizer(
            lambda x, t: model(x, t) * float("inf"), sde, x0, torch.rand(4, dtype=torch.float64), beta=1.0
        )


def test_default_fp_runs_on_a_fraction_of_the_batch():
    from scorepde.losses import DEFAULT_FP

    model = Counting(MLP(2, dtype=torch.float32))
    objective = FPObjective(model, sp.VPSDE(), beta=0.1, **DEFAULT_FP)
    assert objective.fp_batch_size(64) == 8 and objective.fp_batch_size(3) == 1
    total, parts = objective(torch.randn(64, 2), torch.Generator().manual_seed(0))
    total.backward()
    assert torch.isfinite(total) and parts["fp_residual"] >= 0
    assert FPObjective(model, sp.VPSDE(), beta=0.1, subbatch=100).fp_batch_size(64) == 64
    for bad in (0, 0.0, 1.5, -2):
        with pytest.raises(ValueError, match="subbatch"):
            FPObjective(model, sp.VPSDE(), beta=0.1, subbatch=bad)


def test_forward_fd_objective_shares_one_forward_with_dsm():
    """DEFAULT_FP's estimator makes plain forwards only: DSM rides in the same network call,
    and the loss equals DSM plus the separately computed regularizer."""
    from scorepde.losses import DEFAULT_FP

    model = Counting(MLP(2))
    sde = sp.VPSDE()
    x0 = torch.randn(16, 2, dtype=torch.float64)
    objective = FPObjective(model, sde, beta=0.1, gamma=0.01, **DEFAULT_FP)
    assert objective.fused
    objective(x0, torch.Generator().manual_seed(0))  # the first call also probes independence
    model.calls = 0
    total, parts = objective(x0, torch.Generator().manual_seed(0))
    assert model.calls == 1

    g = torch.Generator().manual_seed(0)
    dsm, xt, t = dsm_loss(model, sde, x0, generator=g, return_samples=True)
    k = objective.fp_batch_size(16)
    opts = {key: val for key, val in DEFAULT_FP.items() if key != "subbatch"}
    fp, _ = fp_regularizer(model, sde, xt[:k], t[:k], beta=0.1, gamma=0.01, generator=g, **opts)
    torch.testing.assert_close(total, dsm + fp)
    torch.testing.assert_close(parts["dsm"], dsm)


def test_autocast_applies_to_the_dsm_forward_only():
    """bf16 autocast (CPU here) changes the DSM term a little and R_FP not at all."""
    model, sde = MLP(2, dtype=torch.float32), sp.VESDE()
    x0 = torch.randn(16, 2)
    kw = dict(beta=0.1, gamma=0.01, estimator="hutchinson", subbatch=8)
    full, p_full = FPObjective(model, sde, **kw)(x0, torch.Generator().manual_seed(0))
    amp, p_amp = FPObjective(model, sde, autocast=torch.bfloat16, **kw)(x0, torch.Generator().manual_seed(0))
    assert p_amp["fp"] == p_full["fp"] and p_amp["dsm"].dtype == torch.float32
    assert p_amp["dsm"] != p_full["dsm"] and abs(p_amp["dsm"] / p_full["dsm"] - 1) < 0.05


@pytest.mark.parametrize("estimator", ["directional", "forward_fd"])
def test_m1_directional_is_not_inflated_by_the_dimension(estimator):
    """m = 1 uses |⟨ε, v⟩|, of the size of ‖ε‖, not ‖⟨ε, v⟩ v‖ ≈ √D |⟨ε, v⟩|."""
    sde, model = sp.VPSDE(), MLP(16)
    x1 = torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x, t = x1.repeat(2000, 1), torch.full((2000,), 0.5, dtype=torch.float64)
    exact = sp.residual(model, sde, x1, t[:1]).norm()
    _, parts = fp_regularizer(
        model,
        sde,
        x,
        t,
        beta=1.0,
        m=1,
        estimator=estimator,
        div="exact" if estimator == "directional" else "hutchinson",
        generator=torch.Generator().manual_seed(1),
    )
    assert 0.5 < parts["fp_residual"] / exact < 1.2, parts["fp_residual"] / exact


def test_m1_exact_regularizer_is_the_norm_and_differentiable_at_zero():
    sde, model = sp.VESDE(), MLP(2)
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64) * 0.9 + 0.05
    _, parts = fp_regularizer(model, sde, x, t, beta=1.0, m=1)
    torch.testing.assert_close(parts["fp_residual"], sp.residual(model, sde, x, t).norm(dim=1).mean())
    # ε ≡ 0 exactly (not 5e-29): s = 0·net under VE (f = 0) has ∂t s = 0 and L = 0. The
    # unfloored sqrt would give d‖ε‖/dθ = (0/0) = NaN here.
    zero = lambda x, t: 0.0 * model(x, t)
    sq, _ = sp.residual_norm_sq(zero, sde, x, t)
    assert bool((sq == 0).all())
    model.zero_grad()
    total, _ = fp_regularizer(zero, sde, x, t, beta=1.0, m=1)
    total.backward()
    assert all(bool((p.grad == 0).all()) for p in model.parameters())


@pytest.mark.parametrize("m", [1, 2])
def test_normalize_dim_is_the_plain_value_over_d_to_the_m(m):
    """The official code's units: β_paper E[λ‖ε‖^m] / D^m. Exactly plain / D^m, image-shaped."""
    model, sde, D = MLP(12), sp.VPSDE(), 12
    x, t = torch.randn(5, D, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 0.8 + 0.1
    kw = dict(beta=1.0, gamma=0.0, m=m, fp_weighting="g2")
    plain, pp = fp_regularizer(model, sde, x, t, normalize="none", **kw)
    dim, pd = fp_regularizer(model, sde, x, t, normalize="dim", **kw)
    assert plain.item() > 0
    assert dim.item() == pytest.approx(plain.item() / D**m, rel=1e-14)
    assert pd["fp_residual"].item() == pytest.approx(pp["fp_residual"].item() / D**m, rel=1e-14)
    with pytest.raises(ValueError, match="normalize"):
        fp_regularizer(model, sde, x, t, normalize="D", **kw)


def test_batch_l2_rhs_is_the_l2_norm_over_the_batch():
    model, sde = MLP(2), sp.VESDE()
    x, t = torch.randn(9, 2, dtype=torch.float64), torch.rand(9, dtype=torch.float64) * 0.8 + 0.1
    L = sp.fpe_rhs(model, sde, x, t)
    _, a = fp_regularizer(model, sde, x, t, beta=0.0, gamma=1.0, rhs_reduction="mean_abs")
    _, b = fp_regularizer(model, sde, x, t, beta=0.0, gamma=1.0, rhs_reduction="batch_l2")
    torch.testing.assert_close(a["fp_rhs"], L.abs().mean())
    torch.testing.assert_close(b["fp_rhs"], (L**2).sum().sqrt())
    assert b["fp_rhs"] >= a["fp_rhs"] * 3 - 1e-12  # ‖L‖₂ ≥ √B mean|L| (Cauchy–Schwarz), B = 9
    with pytest.raises(ValueError, match="rhs_reduction"):
        FPObjective(model, sde, beta=1.0, rhs_reduction="l2")


@pytest.mark.parametrize("name", sorted(sp.PAPER_SETTINGS))
def test_paper_settings_are_objective_arguments(name):
    preset = sp.PAPER_SETTINGS[name]
    assert preset["normalize"] == "dim" and preset["beta"] > 0
    objective = FPObjective(MLP(2), sp.VESDE(), **preset)
    total, parts = objective(torch.randn(4, 2, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert torch.isfinite(total) and parts["fp"] > 0


def test_validation_does_not_swallow_the_fused_dsm_forward():
    """Defect 4: with validate=True the no-grad independence probe became the DSM forward
    of the fused forward_fd objective, and the DSM gradient silently fell ~20×."""

    def grads(**kw):
        model = MLP(2)
        objective = FPObjective(model, sp.VESDE(), beta=0.01, estimator="forward_fd", **kw)
        assert objective.fused
        total, parts = objective(
            torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
            torch.Generator().manual_seed(0),
        )
        total.backward()
        return total.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    plain, g_plain = grads()
    checked, g_checked = grads(validate=True)
    torch.testing.assert_close(checked, plain)
    torch.testing.assert_close(g_checked, g_plain)


def test_the_library_does_not_warn_about_its_own_defaults():
    """Issue 32 item 4: DEFAULT_FP and the cifar10 preset (eps = 1e-5 below the steps in t)
    warned that the stencil was shifted inwards near t = 0. The fix is in the stencil: its
    steps shrink to STEP_FRACTION·t where they would reach below 0, so ∂t s stays accurate
    down to t = eps and there is nothing to warn about. Fails on the old code (the warning, and 2-690x errors)."""
    import warnings

    model, sde = MLP(2), sp.VPSDE()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FPObjective(model, sde, beta=1.0, **DEFAULT_FP)
        FPObjective(model, sp.VESDE(), **PAPER_SETTINGS["cifar10"])
        FPObjective(model, sde, beta=1.0, estimator="paper", eps=1e-5)
    # the substance: ∂t s of a preconditioned score s = -x/σ̃(t), which changes on the scale
    # of t near t = 0, by the stencils of "paper" and "forward_fd" at the training start
    score = lambda x, t: -x / torch.sqrt(sde.marginal_variance(t) + sde.sigma_floor**2)[:, None]
    x = torch.randn(3, 2, dtype=torch.float64)
    for t0 in (1e-5, 1e-4, 5e-4, 9e-4):  # below the paper's h_s = 1e-3, where it shifted
        t = torch.full((3,), t0, dtype=torch.float64)
        exact = sp.time_derivative(score, x, t, "jvp")
        for method in ("fd3", "central"):
            err = (sp.time_derivative(score, x, t, method) - exact).norm() / exact.norm()
            assert err < 0.02, (t0, method, err.item())


def test_an_unknown_preset_names_the_known_ones():
    """Issue 32's trial: PAPER_SETTINGS["cifar"] was a bare KeyError('cifar')."""
    from scorepde.losses import PAPER_SETTINGS

    with pytest.raises(ValueError, match=r"no paper preset 'cifar'; choose one of \['cifar10'"):
        _ = PAPER_SETTINGS["cifar"]
    with pytest.raises(KeyError):  # still a KeyError for code that catches one
        _ = PAPER_SETTINGS["cifar"]
    assert PAPER_SETTINGS.get("cifar") is None and "cifar10" in PAPER_SETTINGS
