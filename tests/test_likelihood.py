"""log_likelihood against the closed-form log q_eps of a Gaussian mixture.

With the true score the probability-flow ODE is exact, so log_likelihood differs from
log q_eps(x) only by the prior mismatch log p_T(x_T) − log q_T(x_T) and the solver error.
"""

import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.derivatives import sample_probes
from scorepde.likelihood import log_likelihood

EPS = 1e-5
SDES = {"vp": sp.VPSDE, "ve": sp.VESDE}


@pytest.fixture(scope="module")
def gmm():
    return sp.GaussianMixture(means=[[-4.0, -4.0], [4.0, 3.0]], stds=[0.8, 1.3], weights=[0.3, 0.7])


def _points(gmm, n=32, dtype=torch.float64, seed=0):
    """Draws from the data and a few points between and beyond the modes."""
    extra = torch.tensor([[0.0, 0.0], [-8.0, 6.0], [7.0, -5.0], [-1.0, 1.5]], dtype=dtype)
    if n <= 4:
        return extra[:n]
    x = gmm.sample(n - 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return torch.cat([x, extra])


def _closed_form(gmm, sde, x, x_T):
    """log q_eps(x), and the prior mismatch log p_T(x_T) − log q_T(x_T)."""
    ones = torch.ones(x.shape[0], dtype=x.dtype)
    closed = gmm.log_prob(x, EPS * ones, sde)
    mismatch = sde.prior_log_prob(x_T) - gmm.log_prob(x_T, sde.T * ones, sde)
    return closed, mismatch


@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_trace_matches_closed_form(gmm, name):
    """|ll − log q_eps − mismatch| ≤ 1e-4 at tol 1e-7; ≤ 5e-3 at the default 1e-5 (float64).

    Also the brief's form |ll − log q_eps| ≤ |mismatch| + 1e-3. The mismatch (up to ~0.04
    nats for VP, ~0.08 for VE with σ_max = 50) is far above the asserted residual, so a
    wrong sign or factor anywhere in the ODE or the divergence fails the test.
    """
    sde = SDES[name]()
    model = lambda x, t: gmm.score(x, t, sde)
    x = _points(gmm)
    ll, stats = log_likelihood(model, sde, x, EPS, rtol=1e-7, atol=1e-7, return_stats=True)
    closed, mismatch = _closed_form(gmm, sde, x, stats["x_T"])
    assert ll.shape == (x.shape[0],) and ll.dtype == torch.float64
    assert (ll - closed - mismatch).abs().max() < 1e-4
    assert ((ll - closed).abs() <= mismatch.abs() + 1e-3).all()
    assert mismatch.abs().max() > 1e-2  # the test can tell mismatch from solver error
    torch.testing.assert_close(stats["prior_logp"] + stats["delta_logp"], ll)
    assert stats["nfe"] > 10

    ll_default = log_likelihood(model, sde, x, EPS)
    assert (ll_default - closed - mismatch).abs().max() < 5e-3


def test_float32_and_image_shapes(gmm):
    """float32 agrees to 1e-2 nats; [B, 1, 1, 2] gives the same as [B, 2]."""
    sde = sp.VESDE()
    model = lambda x, t: gmm.score(x, t, sde)
    x = _points(gmm, n=16)
    ll64, stats = log_likelihood(model, sde, x, EPS, return_stats=True)
    ll32 = log_likelihood(model, sde, x.float(), EPS)
    assert ll32.dtype == torch.float32
    assert (ll32.double() - ll64).abs().max() < 1e-2
    ll_img = log_likelihood(model, sde, x.reshape(-1, 1, 1, 2), EPS)
    torch.testing.assert_close(ll_img, ll64, rtol=0, atol=1e-9)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(gmm, probe):
    """Mean over R = 200 probe draws within 5 standard errors of the exact trace, per point.

    Each of 4 points is repeated R times in one batch, so each copy gets its own probe (held
    fixed along its solve). Solver error (tol 1e-6, ~1e-5 nats) is far below one standard
    error (0.02 to 0.7 nats here). Fixed seeds; observed |z| ≤ 2.9.
    """
    sde = sp.VPSDE()
    model = lambda x, t: gmm.score(x, t, sde)
    x = torch.tensor([[-4.0, -3.0], [3.0, 4.0], [0.5, -0.5], [5.5, 1.0]], dtype=torch.float64)
    R = 200
    exact = log_likelihood(model, sde, x, EPS, rtol=1e-7, atol=1e-7)
    est = log_likelihood(
        model,
        sde,
        x.repeat(R, 1),
        EPS,
        "hutchinson",
        probe=probe,
        generator=torch.Generator().manual_seed(1),
        rtol=1e-6,
        atol=1e-6,
    )
    est = est.view(R, -1)
    se = est.std(0) / R**0.5
    assert (se > 1e-2).all()  # the estimator really is random, so the check has teeth
    assert ((est.mean(0) - exact).abs() < 5 * se).all(), (est.mean(0) - exact) / se


def test_probes_drawn_once_per_solve(gmm):
    """The generator advances by exactly one sample_probes call, whatever the solver's NFE."""
    sde = sp.VPSDE()
    x = _points(gmm, n=8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ll, stats = log_likelihood(
        lambda x, t: gmm.score(x, t, sde),
        sde,
        x,
        div="hutchinson",
        n_probes=2,
        generator=g1,
        return_stats=True,
    )
    sample_probes(x, 2, "rademacher", g2)
    assert stats["nfe"] > 10
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_no_graph_is_kept():
    model, sde = MLP(2), sp.VPSDE()
    x = torch.randn(4, 2, dtype=torch.float64)
    ll = log_likelihood(model, sde, x)
    assert not ll.requires_grad and ll.grad_fn is None and torch.isfinite(ll).all()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 1.5])
def test_eps_outside_horizon_refused(gmm, eps):
    sde = sp.VPSDE()
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T\)"):
        log_likelihood(lambda x, t: gmm.score(x, t, sde), sde, _points(gmm, n=4), eps)


def test_bad_options_refused(gmm):
    sde = sp.VPSDE()
    with pytest.raises(ValueError, match="unknown trace"):
        log_likelihood(lambda x, t: gmm.score(x, t, sde), sde, _points(gmm, n=4), div="exact!")


def test_nan_model_named(gmm):
    sde = sp.VPSDE()
    x = _points(gmm, n=4)
    with pytest.raises(ValueError, match="score at t=eps.*non-finite"):
        log_likelihood(lambda x, t: torch.full_like(x, float("nan")), sde, x)

    def late_nan(x, t):  # fine at eps, NaN later: the solve itself fails, by name
        s = gmm.score(x, t, sde)
        return torch.where((t > 0.5)[:, None], torch.full_like(s, float("nan")), s)

    with pytest.raises(ValueError, match="ODE solve .* failed"):
        log_likelihood(late_nan, sde, x)


def test_value_and_divergence_matches_the_jvp_divergence():
    """The one-forward vjp path (the likelihood's default) against the forward-mode
    divergence it replaces, exact and Hutchinson with the same probes, float64."""
    from scorepde.derivatives import divergence, value_and_divergence

    torch.manual_seed(0)
    net, x = MLP(3).double(), torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    fn = lambda y: net(y, t)
    probes = sample_probes(x, 3, "gaussian", torch.Generator().manual_seed(1))
    for method, kw in (("exact", {}), ("hutchinson", dict(probes=probes))):
        value, div = value_and_divergence(fn, x, method, **kw)
        torch.testing.assert_close(value, fn(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(div, divergence(fn, x, method, **kw), rtol=1e-10, atol=1e-10)
        assert not value.requires_grad and not div.requires_grad


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_reverse_mode_likelihood_matches_forward_mode(trace):
    """The default (one forward + vjps) against the older jvp path, same probe, within the
    solver tolerance (float64, tol 1e-6; the two differ only by round-off per evaluation)."""
    torch.manual_seed(0)
    model, sde = MLP(2).double(), sp.VPSDE()
    x = torch.randn(6, 2, dtype=torch.float64)
    kw = dict(div=trace, rtol=1e-6, atol=1e-6)
    rev = log_likelihood(model, sde, x, generator=torch.Generator().manual_seed(2), **kw)
    fwd = log_likelihood(model, sde, x, generator=torch.Generator().manual_seed(2), mode="forward", **kw)
    assert (rev - fwd).abs().max() < 1e-6
    other = log_likelihood(model, sde, x, generator=torch.Generator().manual_seed(3), **kw)
    if trace == "hutchinson":  # a different probe gives a different estimate: the check has teeth
        assert (other - rev).abs().max() > 1e-3


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_drift_only_inner_stages_change_nothing(trace, state_dtype, monkeypatch):
    """The "rk" solve evaluates x's drift alone (one plain forward, no vjp) at the stages the
    log-density never reads: the same answer, bit for bit, as the full evaluation everywhere
    (also with a state in a lower precision than the network's)."""
    import scorepde.likelihood as lik

    torch.manual_seed(0)
    model, sde = MLP(20).double(), sp.VPSDE()
    x = torch.randn(5, 20, dtype=torch.float64)
    kw = dict(div=trace, rtol=1e-6, atol=1e-6, return_stats=True, state_dtype=state_dtype)
    solve, fields = lik.solve_batched, []

    def spy(f, y0, *a, f_inner, **k):
        fields.append((f, f_inner, y0))
        return solve(f, y0, *a, f_inner=f_inner, **k)

    monkeypatch.setattr(lik, "solve_batched", spy)
    new, s_new = log_likelihood(model, sde, x, generator=torch.Generator().manual_seed(2), **kw)
    monkeypatch.setattr(lik, "solve_batched", lambda *a, f_inner, **k: solve(*a, **k))
    old, s_old = log_likelihood(model, sde, x, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(new, old) and s_new["nfe"] == s_old["nfe"]
    assert s_new["nfe_inner"] == (s_new["nfe"] - 2) // 6 > 0 == s_old["nfe_inner"]  # dopri5: 1 of 6
    f, f_inner, y0 = fields[0]  # the inner field: x's drift as f's, d log p/dt left at zero
    u, idx = torch.full((5,), 0.3, dtype=state_dtype), torch.arange(5)
    with torch.no_grad():
        full, inner = f(u, y0, idx), f_inner(u, y0, idx)
    assert (
        torch.equal(inner[:, :-1], full[:, :-1]) and full[:, -1].abs().min() > 0 == inner[:, -1].abs().max()
    )


def test_joint_norm_is_the_rms_of_the_whole_state():
    from scorepde.likelihood import joint_rms_norm

    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.0])
    assert joint_rms_norm((a, b)).item() == pytest.approx((25 / 3) ** 0.5)


def test_unknown_mode_refused(gmm):
    sde = sp.VPSDE()
    with pytest.raises(ValueError, match="unknown mode"):
        log_likelihood(lambda x, t: gmm.score(x, t, sde), sde, _points(gmm, n=4), mode="sideways")


#: Every path of the "rk" solver, one lever at a time from its plain form.
RK_PATHS = {
    "rk_dopri5": dict(solver="rk"),
    "rk_per_sample": dict(solver="rk", control="per_sample"),
    "rk_reverse": dict(solver="rk", mode="reverse"),
    "rk_stacked_per_sample": dict(solver="rk", mode="stacked", control="per_sample"),
    "rk_tsit5": dict(solver="rk", method="tsit5"),
    "rk_bosh3": dict(solver="rk", method="bosh3"),
    "rk_dopri8": dict(solver="rk", method="dopri8"),
    "rk_joint": dict(solver="rk", control="joint"),
    "rk_logp": dict(solver="rk", error_on="logp"),
    "rk_balanced": dict(solver="rk", error_on="balanced"),
    "rk_sigma_balanced_per_sample": dict(
        solver="rk", time="sigma", error_on="balanced", control="per_sample"
    ),
    "rk_log_snr": dict(solver="rk", time="log_snr"),
    "rk_sigma": dict(solver="rk", time="sigma"),
    "rk_forward": dict(solver="rk", mode="forward"),
    "torchdiffeq": dict(solver="torchdiffeq"),
    "torchdiffeq_stacked": dict(solver="torchdiffeq", mode="stacked"),
}


@pytest.mark.parametrize("path", sorted(RK_PATHS))
@pytest.mark.parametrize("name", sorted(SDES))
def test_every_solver_path_matches_closed_form(gmm, name, path):
    """The closed-form check of ``test_exact_trace_matches_closed_form`` under every path:
    |ll − log q_eps − mismatch| ≤ 1e-4 at tol 1e-7 (float64). The controller that measures
    log p only lets x wander more (2.4e-4 nats at 1e-7 on VE): it is held at tol 1e-8."""
    sde = SDES[name]()
    x = _points(gmm)
    tol = 1e-8 if "logp" in path else 1e-7
    ll, stats = log_likelihood(
        lambda x, t: gmm.score(x, t, sde), sde, x, EPS, rtol=tol, atol=tol, return_stats=True,
        **RK_PATHS[path],
    )  # fmt: skip
    closed, mismatch = _closed_form(gmm, sde, x, stats["x_T"])
    assert ll.dtype == torch.float64
    assert (ll - closed - mismatch).abs().max() < 1e-4
    assert mismatch.abs().max() > 1e-2


@pytest.mark.parametrize("kw", [dict(), dict(error_on="logp", method="tsit5"), dict(time="log_snr")])
def test_rk_solver_matches_torchdiffeq(kw):
    """The "rk" path against the torchdiffeq path it replaces: same model, points and
    Hutchinson probe, both at tol 1e-8, float64 (they differ by solver error only)."""
    torch.manual_seed(0)
    model, sde = MLP(2).double(), sp.VPSDE()
    x = torch.randn(6, 2, dtype=torch.float64)
    run = lambda **k: log_likelihood(
        model,
        sde,
        x,
        1e-3,
        "hutchinson",
        generator=torch.Generator().manual_seed(2),
        rtol=1e-8,
        atol=1e-8,
        **k,
    )
    old, new = run(solver="torchdiffeq"), run(solver="rk", **kw)
    assert (old - new).abs().max() < 1e-5
    other = log_likelihood(model, sde, x, 1e-3, "hutchinson", generator=torch.Generator().manual_seed(3))
    assert (other - old).abs().max() > 1e-3  # another probe moves the answer: the check has teeth


def test_per_sample_steps_keep_each_sample_with_its_probe(gmm):
    """Per-sample steps drop finished samples from the batch; the probes must follow their
    samples: the answer equals the joint solve's (one step size, no reordering)."""
    sde = sp.VPSDE()
    x = _points(gmm, n=12)
    run = lambda control: log_likelihood(
        lambda y, t: gmm.score(y, t, sde), sde, x, EPS, "hutchinson", generator=torch.Generator().manual_seed(4),
        rtol=1e-8, atol=1e-8, solver="rk", control=control, return_stats=True,
    )  # fmt: skip
    (per, s_per), (joint, s_joint) = run("per_sample"), run("joint")
    assert s_per["sample_evals"] < s_joint["sample_evals"]  # samples did leave the batch early
    assert (per - joint).abs().max() < 1e-5


@pytest.mark.parametrize("control", ["per_sample", "joint"])
def test_float64_state_is_more_accurate_than_float32(gmm, control):
    """float32 points, the network in float32: a float64 state (the "rk" default) lands
    closer to the closed form than a float32 one at the same tolerance (by 3× with per-sample
    steps, 1.5× with joint ones, the default at D = 2, whose error norm averages the batch),
    with the error measured on the whole state alike (under the "balanced" default the gap is
    2× and 1.2×: its tighter hold on log p leaves less to round-off)."""
    sde = sp.VPSDE()
    x = _points(gmm, n=16).float()
    model = lambda y, t: gmm.score(y, t, sde)
    err = {}
    for dtype in (torch.float32, torch.float64):
        ll, stats = log_likelihood(model, sde, x, EPS, rtol=1e-7, atol=1e-7, solver="rk", state_dtype=dtype,
                                   control=control, error_on="state", return_stats=True)  # fmt: skip
        closed, mismatch = _closed_form(gmm, sde, x.double(), stats["x_T"].double())
        assert ll.dtype == torch.float32
        err[dtype] = (
            (stats["prior_logp"].double() + stats["delta_logp"].double() - closed - mismatch).abs().max()
        )
    assert err[torch.float64] < err[torch.float32] / (3 if control == "per_sample" else 1.5), err


def test_rk_options_refused(gmm):
    sde = sp.VPSDE()
    model, x = (lambda y, t: gmm.score(y, t, sde)), _points(gmm, n=4)
    for kw, match in (
        (dict(solver="scipy"), "unknown solver"),
        (dict(solver="rk", control="mine"), "unknown control"),
        (dict(solver="rk", error_on="x"), "unknown error_on"),
        (dict(solver="rk", method="rk4"), "unknown method"),
        (dict(solver="rk", time="snr"), "unknown time variable"),
    ):
        with pytest.raises(ValueError, match=match):
            log_likelihood(model, sde, x, **kw)


def test_stacked_divergence_matches_the_vjp_divergence():
    """One forward on D stacked copies + one vjp (the small-D default) against the D vjps
    it replaces, float64, on a network that mixes its inputs (off-diagonal Jacobian)."""
    from scorepde.derivatives import value_and_divergence, value_and_stacked_divergence

    torch.manual_seed(0)
    net, x = MLP(3).double(), torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    value, div = value_and_stacked_divergence(lambda y: net(y, t.repeat(3)), x)
    ref_value, ref_div = value_and_divergence(lambda y: net(y, t), x, "exact")
    torch.testing.assert_close(value, ref_value, rtol=0, atol=1e-12)
    torch.testing.assert_close(div, ref_div, rtol=1e-10, atol=1e-10)
    assert not value.requires_grad and not div.requires_grad
    # a per-sample t that is not repeated with the copies gives another answer: the check has teeth
    _, wrong = value_and_stacked_divergence(lambda y: net(y, t.repeat_interleave(3)), x)
    assert (wrong - ref_div).abs().max() > 1e-3


def test_stacked_likelihood_matches_reverse_mode(gmm):
    """The small-D default (stacked trace, joint steps) against the per-sample, D-vjp path it
    replaces: same points, float64, tol 1e-8."""
    sde = sp.VPSDE()
    model, x = (lambda y, t: gmm.score(y, t, sde)), _points(gmm, n=12)
    run = lambda **kw: log_likelihood(model, sde, x, EPS, rtol=1e-8, atol=1e-8, return_stats=True, **kw)
    (new, s_new), (old, s_old) = run(), run(mode="reverse", control="per_sample")
    assert s_new["sample_evals"] == s_new["nfe"] * x.shape[0]  # the default is joint at D = 2
    assert s_old["sample_evals"] < s_old["nfe"] * x.shape[0]
    assert (new - old).abs().max() < 1e-6


def test_given_probes_cut_a_batch_into_solves():
    """Probes passed in: two half-batch solves with the halves of one draw give the whole
    solve's answer (per-sample steps: each sample's solve is its own), float64, tol 1e-8."""
    torch.manual_seed(0)
    model, sde = MLP(4).double(), sp.VPSDE()
    x = torch.randn(8, 4, dtype=torch.float64)
    probes = sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(5))
    kw = dict(div="hutchinson", rtol=1e-8, atol=1e-8)
    whole = log_likelihood(model, sde, x, 1e-3, probes=probes, **kw)
    halves = torch.cat([log_likelihood(model, sde, x[i : i + 4], 1e-3, probes=probes[:, i : i + 4], **kw)
                        for i in (0, 4)])  # fmt: skip
    assert (whole - halves).abs().max() < 1e-6
    drawn = log_likelihood(model, sde, x, 1e-3, generator=torch.Generator().manual_seed(5), **kw)
    assert (drawn - whole).abs().max() < 1e-6  # the same draw as the generator's
    flipped = log_likelihood(model, sde, x, 1e-3, probes=-probes.roll(1, 1), **kw)
    assert (flipped - whole).abs().max() > 1e-3


def test_stacked_and_probes_refused(gmm):
    sde = sp.VPSDE()
    model, x = (lambda y, t: gmm.score(y, t, sde)), _points(gmm, n=4)
    with pytest.raises(ValueError, match="stacked"):
        log_likelihood(model, sde, x, div="hutchinson", mode="stacked")
    with pytest.raises(ValueError, match="probes must be"):
        log_likelihood(model, sde, x, div="hutchinson", probes=torch.ones(1, 3, 2))


def test_error_weights_split_the_norm_between_x_and_log_p():
    from scorepde.likelihood import error_weights

    assert error_weights("state", 4) is None
    torch.testing.assert_close(
        error_weights("logp", 4), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    )
    bal = error_weights("balanced", 4)
    torch.testing.assert_close(bal, torch.tensor([0.125, 0.125, 0.125, 0.125, 0.5], dtype=torch.float64))
    assert bal.sum().item() == pytest.approx(1.0)
