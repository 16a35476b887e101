"""The residual ε[s] = ∂t s − ∇x L[s]: exact against an independent computation, estimators
against exact, and refusals of bad input."""

import pytest
import torch
from conftest import MLP, ConvScore
from torch.func import grad, jacfwd, vmap

import scorepde as sp


def _independent_residual(model, sde, x, t):
    """ε by per-sample torch.func, written without scorepde's operators (Eq. 9)."""

    def s1(xi, ti):
        return model(xi[None], ti[None])[0]

    def L1(xi, ti):
        s = s1(xi, ti)
        g2 = sde.diffusion(ti[None])[0] ** 2
        c = sde.drift_coeff(ti[None])[0]
        div = torch.trace(jacfwd(s1)(xi, ti))
        return 0.5 * g2 * (div + s @ s) - c * (xi @ s) - c * xi.numel()

    dt = vmap(jacfwd(s1, argnums=1))(x, t)
    return dt - vmap(grad(L1))(x, t)


def test_exact_residual_matches_independent_computation(sde):
    model = MLP(3)
    x = torch.randn(9, 3, dtype=torch.float64)
    t = torch.rand(9, dtype=torch.float64)
    torch.testing.assert_close(sp.residual(model, sde, x, t), _independent_residual(model, sde, x, t))


def test_rhs_is_returned_with_the_residual(sde):
    model = MLP(2)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    eps, L = sp.residual(model, sde, x, t, return_rhs=True)
    torch.testing.assert_close(L, sp.fpe_rhs(model, sde, x, t))
    torch.testing.assert_close(eps, sp.residual(model, sde, x, t))


def _replicated(model, sde, x1, t1, n, estimator, seed=0, **options):
    """n independent draws of an estimator at one point: the batch carries the draws."""
    x = x1.repeat(n, *[1] * (x1.dim() - 1))
    t = t1.repeat(n)
    return sp.residual(
        model, sde, x, t, estimator, generator=torch.Generator().manual_seed(seed), validate=False, **options
    )


CASES = [
    ("paper", {}),
    ("hutchinson", {}),
    ("hutchinson", {"probe": "gaussian", "n_probes": 4}),
    ("directional", {}),
    ("directional", {"direction_probe": "gaussian", "n_directions": 2}),
    ("directional", {"div": "exact", "dt": "fd3"}),
    ("forward_fd", {}),
    ("forward_fd", {"dt": "jvp", "direction_probe": "sphere"}),
]


@pytest.mark.parametrize("estimator,options", CASES)
def test_stochastic_estimators_are_unbiased(estimator, options):
    """Mean of 4000 draws within 5 standard errors of the exact residual, per component.

    The finite-difference stencil adds an O(h²) bias, here ~1e-6 relative: well inside.
    """
    sde = sp.VPSDE()
    model = MLP(3)
    x1 = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t1 = torch.tensor([0.4], dtype=torch.float64)
    exact = sp.residual(model, sde, x1, t1)[0]
    draws = _replicated(model, sde, x1, t1, 4000, estimator, **options)
    se = draws.std(0) / len(draws) ** 0.5
    assert ((draws.mean(0) - exact).abs() <= 5 * se + 1e-5 * exact.abs()).all(), (draws.mean(0), exact, se)
    assert (draws.std(0) > 0).all()  # really stochastic, so the test above has teeth


def test_estimators_are_reproducible_with_a_generator():
    model, sde = MLP(2), sp.VESDE()
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    for est in ("paper", "hutchinson", "directional"):
        a = sp.residual(model, sde, x, t, est, generator=torch.Generator().manual_seed(7))
        b = sp.residual(model, sde, x, t, est, generator=torch.Generator().manual_seed(7))
        c = sp.residual(model, sde, x, t, est, generator=torch.Generator().manual_seed(8))
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)


def test_image_shaped_inputs_with_a_conv_net():
    """[B, C, H, W] with GroupNorm: exact works and estimators agree with it in expectation."""
    sde, model = sp.VESDE(), ConvScore()
    x1 = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t1 = torch.tensor([0.3], dtype=torch.float64)
    exact = sp.residual(model, sde, x1, t1)
    assert exact.shape == x1.shape
    for est in ("hutchinson", "directional"):
        draws = _replicated(model, sde, x1, t1, 3000, est)
        se = draws.std(0) / len(draws) ** 0.5
        z = ((draws.mean(0) - exact[0]) / se).abs()
        assert z.max() < 5.5, (est, z.max())  # 16 components: max |z| of 16 normals


def test_generic_sde_gets_the_same_residual():
    vp = sp.VPSDE()
    generic = sp.GenericSDE(drift=lambda x, t: -0.5 * vp.beta(t)[:, None] * x, diffusion=vp.diffusion)
    model = MLP(2)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(sp.residual(model, generic, x, t), sp.residual(model, vp, x, t))


def test_parameter_gradients_flow_through_the_residual():
    """∂/∂θ of Σ‖ε‖² equals the gradient through an independent computation of ε (exact),
    through the same projections ⟨ε, v⟩v (directional with exact div), and, up to the
    stencil's O(h²), through the paper's ∂t."""
    model, sde = MLP(2), sp.VESDE()
    params = list(model.parameters())
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    flat = lambda loss: torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    want = flat(_independent_residual(model, sde, x, t).pow(2).sum())
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(flat(sp.residual(model, sde, x, t, "exact").pow(2).sum()), want)
    paper = flat(sp.residual(model, sde, x, t, "paper", div="exact").pow(2).sum())
    assert ((paper - want).norm() / want.norm()) < 1e-4
    v = sp.sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(4))[0]
    proj = (_independent_residual(model, sde, x, t) * v).sum(1, keepdim=True) * v
    got = sp.residual(
        model, sde, x, t, "directional", div="exact", generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(flat(got.pow(2).sum()), flat(proj.pow(2).sum()))


class _Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x, t):
        self.batches.append(x.shape[0])
        return self.inner(x, t)


def test_paper_estimator_does_no_extra_work():
    """One forward for s (reused as the stencil centre), one for the probe, one batched
    forward for the two outer stencil nodes: no jvp in t, no third node."""
    model = _Counting(MLP(2))
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    sp.residual(model, sp.VPSDE(), x, t, "paper", validate=False)
    assert sorted(model.batches) == [5, 5, 10]


@pytest.mark.parametrize("estimator", sorted(sp.ESTIMATORS))
def test_bad_input_is_refused(estimator):
    sde, model = sp.VESDE(), MLP(2)
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape \\[B\\]"):
        sp.residual(model, sde, x, t[:3], estimator)
    with pytest.raises(ValueError, match="must lie in"):
        sp.residual(model, sde, x, t + 1.5, estimator)
    with pytest.raises(ValueError, match="non-finite"):
        sp.residual(model, sde, x.index_fill(0, torch.tensor([1]), float("nan")), t, estimator)
    with pytest.raises(ValueError, match="non-finite"):
        sp.residual(model, sde, x, t.index_fill(0, torch.tensor([2]), float("inf")), estimator)
    with pytest.raises(ValueError, match="returned shape"):
        sp.residual(lambda x, t: model(x, t)[:, :1], sde, x, t, estimator)
    with pytest.raises(ValueError, match="unknown"):
        sp.residual(model, sde, x, t, estimator, not_an_option=1)


def test_batch_coupling_is_refused():
    class BatchNormScore(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = torch.nn.Linear(3, 2).double(), torch.nn.BatchNorm1d(2).double()

        def forward(self, x, t):
            return self.bn(self.lin(torch.cat([x, t[:, None]], 1)))

    model = BatchNormScore()
    x, t = torch.randn(8, 2, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    with pytest.raises(ValueError, match="couples samples"):
        sp.residual(model, sp.VPSDE(), x, t)
    with pytest.raises(ValueError, match="couples samples"):
        sp.fpe_rhs(model, sp.VPSDE(), x, t)
    model.eval()  # running statistics: samples are independent again
    assert sp.residual(model, sp.VPSDE(), x, t).shape == x.shape


def test_forward_fd_matches_forward_mode_draw_for_draw():
    """Same generator, same probes u and v: the differences agree with forward mode to O(hx², h²)."""
    # x from its own generator: drawn from the global RNG, it depended on the tests run before,
    # and an element-wise rtol failed now and then on an element near 0 (O(hx²) is relative
    # to the whole vector, not to each element)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model, t = MLP(3), torch.full((6,), 0.5, dtype=torch.float64)
    for sde in (sp.VPSDE(), sp.VESDE(), sp.SubVPSDE()):
        a, La = sp.residual(
            model,
            sde,
            x,
            t,
            "directional",
            dt="central",
            return_rhs=True,
            generator=torch.Generator().manual_seed(1),
        )
        b, Lb = sp.residual(
            model,
            sde,
            x,
            t,
            "forward_fd",
            hx=1e-3,
            return_rhs=True,
            generator=torch.Generator().manual_seed(1),
        )
        assert ((b - a).norm(dim=1) / a.norm(dim=1)).max() < 1e-5
        assert ((Lb - La).abs() / La.abs()).max() < 1e-5


def test_forward_fd_is_one_batched_forward_of_six_points():
    model = _Counting(MLP(2))
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    sp.residual(model, sp.VPSDE(), x, t, "forward_fd", validate=False)
    assert model.batches == [30]
    model.batches.clear()
    sp.residual_norm_sq(model, sp.VPSDE(), x, t, "forward_fd", validate=False)
    assert model.batches == [60]  # unbiased: two inner probes along one direction, batched


def test_forward_fd_one_sided_in_t_is_first_order_against_the_exact_projection(gmm2):
    """dt="one_sided" (5 rows: ∂t s ≈ ±(s(x, t ± h) − s̄)/h with s̄ the corners' mean) against
    forward mode with the exact ∂t, same probes u and v, on a closed-form score with a nonzero
    residual (a mixture's VE score under VP, ∂t s a fifth of ε at T). O(h) + O(δ²/h): the
    error falls with h; t near T takes the backward side."""
    vp, ve = sp.VPSDE(), sp.VESDE(sigma_max=5.0)
    latest = []
    score = lambda x, t: latest.append(t.max().item()) or gmm2.score(x, t, ve)
    x = gmm2.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.9, 0.99995], dtype=torch.float64)  # 0.99995 + h > T
    exact = sp.residual(score, vp, x, t, "directional", generator=torch.Generator().manual_seed(1))

    def error(h):
        got = sp.residual(
            score,
            vp,
            x,
            t,
            "forward_fd",
            dt="one_sided",
            hx=1e-3,
            h=(h, h),
            generator=torch.Generator().manual_seed(1),
        )
        return ((got - exact).norm(dim=1) / exact.norm(dim=1)).max()

    assert error(1e-4) < 1e-2 and error(1e-4) < 0.2 * error(1e-3), (error(1e-3), error(1e-4))
    assert max(latest) <= 1.0  # the score is never asked beyond T
    with pytest.raises(ValueError, match="forward_fd"):
        sp.residual(score, vp, x, t, "directional", dt="one_sided")


def test_forward_fd_one_sided_is_one_batched_forward_of_five_points():
    model = _Counting(MLP(2))
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    sp.residual(model, sp.VPSDE(), x, t, "forward_fd", dt="one_sided", validate=False)
    assert model.batches == [25]


def test_forward_fd_refuses_what_it_cannot_do():
    model, x, t = MLP(2), torch.randn(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="one Hutchinson probe"):
        sp.residual(model, sp.VPSDE(), x, t, "forward_fd", n_probes=2)
    with pytest.raises(ValueError, match="positive"):
        sp.residual(model, sp.VPSDE(), x, t, "forward_fd", hx=0.0)


@pytest.mark.parametrize("sde", [sp.VESDE(), sp.VPSDE()])
def test_forward_fd_is_finite_at_t_zero(sde):
    """σ_0 = 0: the step in x must not collapse to zero there."""
    model = MLP(2)
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    eps = sp.residual(model, sde, x, t, "forward_fd", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(eps).all()


@pytest.mark.parametrize("estimator", sorted(sp.ESTIMATORS))
@pytest.mark.parametrize("as_", ["float", "0-d"])
def test_a_scalar_time_is_one_time_for_the_whole_batch(estimator, as_):
    """Defect 2: a Python-float or 0-d t used to be an expanded (aliased) view, which jvp refuses."""
    model, sde = MLP(2), sp.VPSDE()
    x = torch.randn(4, 2, dtype=torch.float64)
    scalar = 0.4 if as_ == "float" else torch.tensor(0.4, dtype=torch.float64)
    got = sp.residual(model, sde, x, scalar, estimator, generator=torch.Generator().manual_seed(3))
    want = sp.residual(
        model,
        sde,
        x,
        torch.full((4,), 0.4, dtype=torch.float64),
        estimator,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(got, want)
    sq, _ = sp.residual_norm_sq(model, sde, x, scalar, estimator, generator=torch.Generator().manual_seed(3))
    assert sq.shape == (4,)
    assert sp.fpe_rhs(model, sde, x, scalar).shape == (4,)


def test_norm_sq_uses_every_direction():
    """Defect 3: residual_norm_sq ignored n_directions. With a deterministic inner estimate
    (div="exact") it is (1/K) Σ_k ⟨ε, v_k⟩² over the K directions drawn from the generator."""
    model, sde = MLP(3), sp.VESDE()
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 0.8 + 0.1
    eps = sp.residual(model, sde, x, t)
    for K in (1, 4):
        sq, _ = sp.residual_norm_sq(
            model,
            sde,
            x,
            t,
            "directional",
            div="exact",
            n_directions=K,
            generator=torch.Generator().manual_seed(5),
        )
        V = sp.sample_probes(x, K, "rademacher", torch.Generator().manual_seed(5))
        want = ((V * eps).sum(-1) ** 2).mean(0)
        torch.testing.assert_close(sq, want)


@pytest.mark.parametrize("estimator", ["directional", "forward_fd"])
def test_more_directions_shrink_the_norm_sq_spread(estimator):
    """Defect 3, end to end: the spread over seeds falls with n_directions (unbiased product)."""
    model, sde = MLP(4), sp.VESDE()
    x, t = torch.randn(3, 4, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)

    def spread(K):
        draws = torch.stack(
            [
                sp.residual_norm_sq(
                    model, sde, x, t, estimator, n_directions=K, generator=torch.Generator().manual_seed(s)
                )[0]
                for s in range(40)
            ]
        )
        return draws.std(0).mean()

    assert spread(8) < 0.6 * spread(1)


def test_a_random_model_is_refused_with_the_reason():
    """Defect 5: dropout in train mode was reported as 'couples samples across the batch'."""

    class Dropped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.drop = MLP(2), torch.nn.Dropout(0.3)

        def forward(self, x, t):
            return self.drop(self.inner(x, t))

    model, sde = Dropped(), sp.VPSDE()
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    for estimator in sorted(sp.ESTIMATORS):
        with pytest.raises(ValueError, match="model is random.*[Dd]ropout"):
            sp.residual(model, sde, x, t, estimator)
    with pytest.raises(ValueError, match="model is random"):
        sp.FPObjective(model, sde, beta=1.0)(x)
    model.eval()
    assert sp.residual(model, sde, x, t).shape == x.shape
    # the coupling probe itself runs its two calls under one RNG state: no false "couples"
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            sp.check_batch_independent(model, x, t)
        except ValueError as err:
            assert "couples" not in str(err)


def test_a_wrong_shape_is_reported_in_the_users_shapes():
    """Issue 13, item 9: the checker's 2-sample probe leaked into the message."""
    model = MLP(2)
    x, t = torch.randn(7, 2, dtype=torch.float64), torch.rand(7, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"returned shape \(7, 1\) for x of shape \(7, 2\)"):
        sp.residual(lambda y, tt: model(y, tt)[:, :1], sp.VESDE(), x, t)
    with pytest.raises(ValueError, match=r"returned shape \(7, 1\) for x of shape \(7, 2\)"):
        sp.check_batch_independent(lambda y, tt: model(y, tt)[:, :1], x, t)
