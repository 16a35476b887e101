"""Values of the operators, estimators, SDE checks and mixtures against closed forms written
out by hand: the tests that kill the mutants of derivatives.py, fpe.py, estimators/, gmm.py
and sde.py that the rest of the suite let live (tools/mutation.py, docs/trust.md).

The score used for the residual is linear in x, s(x, t) = −p(t) x with p a polynomial, under
EDM (f = 0, g² = 2t), so that in closed form

    L[s] = ½g² (div s + ‖s‖²) = t (−D p + p² ‖x‖²),   ∇x L = 2t p² x,
    ε[s] = ∂t s − ∇x L = −p̂′ x − 2t p² x,

where p̂′ is p′ for ``dt="jvp"`` and for a stencil the slope of the polynomial through its
nodes, also in closed form (central: 3t² + h² for p = t³; the paper's fd3: 3t² + h_s·h_d).
div s is the constant −D p, so a Hutchinson estimate of it has no gradient in x and ε does not
depend on the probes.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import scorepde as sp
from scorepde.derivatives import (
    PAPER_STEPS,
    divergence,
    sample_probes,
    time_derivative,
    time_steps,
    value_and_divergence,
)

F64 = torch.float64
T_HALF = 0.5


def _cubic(x, t):
    """s(x, t) = −t³ x."""
    return -x * t[:, None] ** 3


def _square(x, t):
    """s(x, t) = −t² x."""
    return -x * t[:, None] ** 2


class Timed:
    """s(x, t) = −t³ x that says its time features turn at ``rate`` radians per unit t."""

    def __init__(self, rate, time_dtype=None):
        self.rate = rate
        if time_dtype is not None:
            self.time_dtype = time_dtype

    def time_rate(self):
        return self.rate

    def __call__(self, x, t):
        return _cubic(x, t)


def _x(B=4, D=3):
    return torch.linspace(-1.5, 2.0, B * D, dtype=F64).reshape(B, D)


def _eps_closed(x, t, p, dp_hat):
    """ε of s = −p(t) x under EDM: −p̂′ x − 2t p² x (module docstring)."""
    return -(dp_hat + 2 * t * p**2) * x


def _exact(message):
    """A pattern that matches ``message`` and nothing longer (pytest.raises searches)."""
    return "^" + re.escape(message) + "$"


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _warm_torch_func():
    """torch.func's first transforms cost seconds of lazy imports: pay them in this module's
    setup, not in the call of whichever test comes first (mutmut ranks the tests it runs on
    a mutant by their call's duration, tools/mutation.py)."""
    sde, t = sp.EDMSDE(sigma_max=2.0), torch.full((1,), T_HALF, dtype=F64)
    for D in (1, 2):  # one vᵀJv by a plain jvp, and several under vmap
        sp.residual(_cubic, sde, torch.ones(1, D, dtype=F64), t)


# -- time steps and ∂t s ------------------------------------------------------------------


def test_time_steps_follow_the_score_rate_and_dtype():
    """h = φ/rate with φ = FD_PHASE[dtype] (0.03 float32, 1e-4 float64); a dtype without a
    phase of its own takes float32's; a plain callable gets the paper's steps."""
    assert time_steps(_cubic) == PAPER_STEPS
    assert time_steps(Timed(10.0)) == pytest.approx((0.003, 0.003), rel=1e-12)
    assert time_steps(Timed(10.0), "auto", F64) == pytest.approx((1e-5, 1e-5), rel=1e-12)
    assert time_steps(Timed(10.0), "auto", torch.complex128) == pytest.approx((0.003, 0.003), rel=1e-12)
    assert time_steps(Timed(10.0, time_dtype=torch.float32), "auto", F64) == pytest.approx(
        (0.003, 0.003), rel=1e-12
    )
    assert time_steps(_cubic, (0.2, 0.1)) == (0.2, 0.1)
    with pytest.raises(ValueError, match=_exact("h must be (h_s, h_d) or 'auto', got 'bogus'")):
        time_steps(_cubic, "bogus")


def test_central_difference_with_auto_steps_is_its_closed_form():
    """Central difference of t³: 3t² + h², with h = 1e-4/rate in float64 (rate 0.01: h = 0.01)."""
    x, t = _x(), torch.full((4,), 0.5, dtype=F64)
    got = time_derivative(Timed(0.01), x, t, "central", h="auto")
    torch.testing.assert_close(got, -(3 * 0.25 + 1e-4) * x, rtol=1e-9, atol=1e-12)


def test_forward_stencil_with_a_unit_weight_keeps_that_node():
    """dt="forward" with h = 1 at t = 0 on [0, 1]: nodes 0 and 1, weights −1 and exactly 1;
    the slope is p(1) − p(0) = 1 for p = t³."""
    x, t = _x(), torch.zeros(4, dtype=F64)
    got = time_derivative(_cubic, x, t, "forward", h=(1.0, 1.0), T=1.0)
    torch.testing.assert_close(got, -x, rtol=1e-12, atol=1e-12)


def test_stencil_shrinks_near_zero_without_leaving_zero_t():
    """At t = 1e-6 (float64) the fd3 steps shrink to STEP_FRACTION·t and the nodes stay around
    t: ∂t of −e^t x is −e^t x to 1e-6, not an extrapolation from far away."""
    x, t = _x(), torch.full((4,), 1e-6, dtype=F64)
    got = time_derivative(lambda y, s: -y * s[:, None].exp(), x, t, "fd3", h=PAPER_STEPS, T=1.0)
    torch.testing.assert_close(got, -x * math.exp(1e-6), rtol=1e-6, atol=1e-9)


# -- divergence and probes ----------------------------------------------------------------

A = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.3, -2.0, 4.0, 1.0], [2.0, 0.1, 3.0, -1.5], [0.7, 1.1, -0.4, 5.0]])
A = A.to(F64)


def _linear(y):
    return y @ A.T


def test_sample_probes_defaults_are_one_rademacher_probe():
    x = _x(8, 4)
    v = sample_probes(x, generator=_gen(3))
    assert v.shape == (1, 8, 4) and v.dtype == F64
    assert bool((v.abs() == 1).all())
    torch.testing.assert_close(v, sample_probes(x, 1, "rademacher", _gen(3)), rtol=0, atol=0)
    with pytest.raises(ValueError, match=_exact("the number of probes must be at least 1, got 0")):
        sample_probes(x, 0)


def test_hutchinson_divergence_is_vAv_of_the_seeded_probe():
    """div of y ↦ Ay by one Rademacher probe v drawn from the generator is vᵀAv per sample
    (divergence and value_and_divergence, defaults n_probes = 1, probe = "rademacher")."""
    x = _x(8, 4)
    v = sample_probes(x, 1, "rademacher", _gen(11))[0]
    vAv = torch.einsum("bi,ij,bj->b", v, A, v)
    torch.testing.assert_close(divergence(_linear, x, "hutchinson", generator=_gen(11)), vAv)
    out, div = value_and_divergence(_linear, x, "hutchinson", generator=_gen(11))
    torch.testing.assert_close(out, x @ A.T)
    torch.testing.assert_close(div, vAv)
    out, div = value_and_divergence(_linear, x)
    torch.testing.assert_close(div, torch.full((8,), torch.trace(A).item(), dtype=F64))


def test_divergence_names_a_bad_method_and_mode():
    x = _x(2, 4)
    with pytest.raises(
        ValueError, match=_exact("unknown divergence method 'bogus'; choose div='exact' or 'hutchinson'")
    ):
        divergence(_linear, x, "bogus")
    with pytest.raises(
        ValueError, match=_exact("unknown divergence mode 'sideways'; choose 'forward' or 'reverse'")
    ):
        divergence(_linear, x, mode="sideways")


# -- estimators ---------------------------------------------------------------------------


def test_estimator_names_and_their_errors():
    est = sp.get_estimator("paper")
    assert est.name == "paper" and est.for_score(_cubic, F64).name == "paper"
    assert repr(sp.get_estimator("exact", dt="central")) == "Autograd('exact', dt='central')"
    names = "['directional', 'exact', 'forward_fd', 'hutchinson', 'paper']"
    with pytest.raises(ValueError, match=_exact(f"unknown estimator 'bogus'; choose one of {names}")):
        sp.get_estimator("bogus")
    message = (
        "dt='one_sided' reuses the corners' mean of forward_fd as s(x, t); "
        "use it with estimator='forward_fd', or pick dt='jvp', 'central' or 'fd3'"
    )
    with pytest.raises(ValueError, match=_exact(message)):
        sp.get_estimator("exact", dt="one_sided")


#: (estimator, options, s, T of EDM, t, p(t), the stencil's slope p̂′(t)), from the module docstring
CASES = {
    "exact": ("exact", {}, _cubic, 2.0, T_HALF, T_HALF**3, 3 * T_HALF**2),
    # the paper's fd3 with (h_s, h_d) = (1e-3, 5e-4): 3t² + h_s·h_d
    "paper": ("paper", {}, _cubic, 2.0, T_HALF, T_HALF**3, 3 * T_HALF**2 + 1e-3 * 5e-4),
    "central": ("exact", dict(dt="central", h=(0.01, 0.01)), _cubic, 2.0, T_HALF, T_HALF**3, 0.75 + 1e-4),
    # h = 1e-4/rate = 0.01 from the score's rate, in float64
    "auto": ("exact", dict(dt="central", h="auto"), Timed(0.01), 2.0, T_HALF, T_HALF**3, 0.75 + 1e-4),
    # at t = T = 2 the forward stencil shifts to the nodes 1.9, 2: (2² − 1.9²)/0.1 = 3.9
    "forward_at_T": ("exact", dict(dt="forward", h=(0.1, 0.1)), _square, 2.0, 2.0, 4.0, 3.9),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_residual_and_its_operator_are_the_closed_form(case):
    estimator, options, score, T, t0, p, dp_hat = CASES[case]
    sde, x = sp.EDMSDE(sigma_max=T), _x()
    t = torch.full((4,), t0, dtype=F64)
    expected = _eps_closed(x, t0, p, dp_hat)
    torch.testing.assert_close(sp.residual(score, sde, x, t, estimator, **options), expected)
    operator = sp.residual(score, sde, estimator, **options)
    torch.testing.assert_close(operator(x, t), expected)
    norm_sq, L = sp.residual_norm_sq(score, sde, x, t, estimator, **options)
    torch.testing.assert_close(norm_sq, expected.pow(2).sum(1))
    if estimator != "paper":  # div s exact: L = t (−D p + p² ‖x‖²); the paper's is by one probe
        torch.testing.assert_close(L, t0 * (-3 * p + p**2 * x.pow(2).sum(1)))


def test_for_score_fixes_auto_steps_from_the_score_and_dtype():
    """for_score resolves h="auto" from the score's rate and the dtype (h = 1e-4/0.01 in
    float64), so the estimator keeps those steps when later handed a wrapper without a rate."""
    est = sp.get_estimator("exact", dt="central").for_score(Timed(0.01), F64)
    assert est.time_step(_cubic, F64) == pytest.approx((0.01, 0.01), rel=1e-12)


def test_residual_fixes_auto_steps_before_it_wraps_the_score():
    """residual resolves h="auto" from the score and x's dtype before it wraps the score in its
    shape check: central steps h = 0.01 (one sample, D = 1; not the paper's 1e-3)."""
    x, t = torch.tensor([[0.7]], dtype=F64), torch.tensor([T_HALF], dtype=F64)
    got = sp.residual(Timed(0.01), sp.EDMSDE(sigma_max=2.0), x, t, dt="central", h="auto")
    assert torch.allclose(got, _eps_closed(x, T_HALF, T_HALF**3, 0.75 + 1e-4), rtol=1e-9, atol=0)


def test_forward_stencil_shifts_inside_the_horizon_of_the_sde():
    """At t = T = 2 (EDM with σ_max = 2) the residual's forward stencil takes the nodes 1.9
    and 2 of [0, T]: p̂′ = (2² − 1.9²)/0.1 = 3.9 for p = t² (one sample, D = 1)."""
    x, t = torch.tensor([[0.7]], dtype=F64), torch.tensor([2.0], dtype=F64)
    got = sp.residual(_square, sp.EDMSDE(sigma_max=2.0), x, t, dt="forward", h=(0.1, 0.1))
    torch.testing.assert_close(got, _eps_closed(x, 2.0, 4.0, 3.9))


def test_residual_norm_sq_default_is_the_exact_estimator():
    sde, x = sp.EDMSDE(sigma_max=2.0), _x()
    t = torch.full((4,), T_HALF, dtype=F64)
    norm_sq, _ = sp.residual_norm_sq(_cubic, sde, x, t)
    torch.testing.assert_close(norm_sq, _eps_closed(x, T_HALF, T_HALF**3, 0.75).pow(2).sum(1))


def test_residual_norm_sq_is_unbiased_by_default(gmm2):
    """For a stochastic estimator the default is ⟨ε̂₁, ε̂₂⟩ of two draws in one batched call
    (the residual at [x, x] with the same generator), not the plug-in ‖ε̂‖²."""
    sde = sp.VPSDE()
    x = torch.tensor([[0.3, -0.2], [1.0, 2.0], [-1.5, 0.5]], dtype=F64)
    t = torch.full((3,), 0.3, dtype=F64)
    score = lambda y, s: gmm2.score(y, s, sde)
    eps = sp.residual(score, sde, torch.cat([x, x]), torch.cat([t, t]), "hutchinson", generator=_gen(5))
    e1, e2 = eps.chunk(2)
    default, _ = sp.residual_norm_sq(score, sde, x, t, "hutchinson", generator=_gen(5))
    torch.testing.assert_close(default, (e1 * e2).sum(1))
    plug_in, _ = sp.residual_norm_sq(score, sde, x, t, "hutchinson", unbiased=False, generator=_gen(5))
    one = sp.residual(score, sde, x, t, "hutchinson", generator=_gen(5))
    torch.testing.assert_close(plug_in, one.pow(2).sum(1))
    assert not torch.allclose(default, plug_in)


def test_the_stencil_reuses_s_at_t():
    """The autograd family passes s(x, t) to the stencil in t: the paper's fd3 then evaluates
    the score at its two other nodes only (2B rows in one call, not 3B)."""
    rows = []

    def score(y, s):
        rows.append(y.shape[0])
        return _cubic(y, s)

    sde, x = sp.EDMSDE(sigma_max=2.0), _x()
    sp.residual(score, sde, x, torch.full((4,), T_HALF, dtype=F64), "paper", validate=False)
    assert 2 * 4 in rows and 3 * 4 not in rows


def test_residual_operator_refuses_bad_names_at_once_and_validates_later():
    sde = sp.EDMSDE(sigma_max=2.0)
    with pytest.raises(ValueError, match="unknown residual option"):
        sp.residual(_cubic, sde, bogus=1)
    with pytest.raises(ValueError, match=re.escape("t must lie in [0, 2.0]")):
        sp.residual(_cubic, sde)(_x(), torch.full((4,), 3.0, dtype=F64))
    # validate=False is bound too: a score that mixes samples is then evaluated, not refused
    mixing = lambda y, s: -(y - y.mean(0)) * s[:, None]
    x, t = _x(), torch.full((4,), T_HALF, dtype=F64)
    with pytest.raises(ValueError):
        sp.residual(mixing, sde, x, t)
    torch.testing.assert_close(
        sp.residual(mixing, sde, validate=False)(x, t), sp.residual(mixing, sde, x, t, validate=False)
    )


def test_residual_needs_both_x_and_t_or_neither():
    sde, x = sp.EDMSDE(sigma_max=2.0), _x()
    message = (
        "residual needs both x and t (to evaluate ε there) or neither (for the "
        "operator (x, t) -> ε); got only one of them"
    )
    with pytest.raises(ValueError, match=_exact(message)):
        sp.residual(_cubic, sde, x)
    with pytest.raises(ValueError, match=_exact(message)):
        sp.residual(_cubic, sde, t=T_HALF)
    with pytest.raises(ValueError, match="x must be a tensor"):
        sp.residual(_cubic, sde, [[0.0, 1.0]], T_HALF)


def test_fp_objective_refuses_a_bad_option_when_built():
    with pytest.raises(ValueError, match="unknown residual option"):
        sp.FPObjective(torch.nn.Linear(2, 2), sp.VPSDE(), beta=1.0, bogus=1)


# -- SDE parameters -----------------------------------------------------------------------


def test_sde_parameter_checks():
    with pytest.raises(ValueError, match=_exact("need 0 < sigma_min < sigma_max, got 1.0, 1.0")):
        sp.VESDE(sigma_min=1.0, sigma_max=1.0)
    with pytest.raises(ValueError, match=_exact("need 0 <= beta_min < beta_max, got 1.0, 1.0")):
        sp.VPSDE(beta_min=1.0, beta_max=1.0)
    # beta_min = 0 is allowed: β(t) = 20t, σ_t² = 1 − exp(−10t²)
    sde, t = sp.VPSDE(beta_min=0.0, beta_max=20.0), torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    torch.testing.assert_close(sde.beta(t), 20 * t)
    torch.testing.assert_close(sde.marginal_variance(t), 1 - torch.exp(-10 * t**2))


# -- Gaussian mixtures --------------------------------------------------------------------


def _log_iso(x, means, stds, weights):
    """log Σ_k w_k N(x; μ_k, s_k² I) by the math module, one sample x (a list)."""
    D = len(x)
    terms = [
        math.log(w)
        - 0.5 * sum((xi - mi) ** 2 for xi, mi in zip(x, m)) / s**2
        - 0.5 * D * math.log(2 * math.pi * s**2)
        for m, s, w in zip(means, stds, weights)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(v - top) for v in terms))


def test_isotropic_mixture_stores_float64_parameters_and_its_density():
    """Means, weights (1/K by default) and stds in float64 from Python floats; variances s²;
    log q_0 to 1e-13 (0.1 or 1/3 in float32 would move it by ~1e-8)."""
    means, stds = [[0.1, -0.3], [1.0, 2.0], [0.0, 0.7]], [0.5, 2.0, 1.3]
    gm = sp.GaussianMixture(means, stds)
    assert gm.means.dtype == gm.weights.dtype == gm.stds.dtype == gm.variances.dtype == F64
    assert gm.kind == "iso" and repr(gm) == "GaussianMixture(K=3, D=2, cov='iso')"
    torch.testing.assert_close(gm.means, torch.tensor(means, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(gm.weights, torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=0)
    var = torch.tensor([[s * s] * 2 for s in stds], dtype=F64)
    torch.testing.assert_close(gm.variances, var, rtol=1e-15, atol=0)
    torch.testing.assert_close(gm.coordinate_variances(), var, rtol=1e-15, atol=0)
    # Var_j = Σ_k w_k (μ_kj² + s_k²) − (Σ_k w_k μ_kj)²
    second = [sum((m[j] ** 2 + s * s) / 3 for m, s in zip(means, stds)) for j in range(2)]
    first = [sum(m[j] / 3 for m in means) for j in range(2)]
    assert gm.coordinate_std() == pytest.approx(
        math.sqrt(sum(a - b * b for a, b in zip(second, first)) / 2), rel=1e-14
    )
    x = [[0.2, 0.1], [-1.0, 1.5], [0.9, -0.4]]
    expected = [_log_iso(xi, means, stds, [1 / 3] * 3) for xi in x]
    torch.testing.assert_close(
        gm.log_prob(torch.tensor(x, dtype=F64)), torch.tensor(expected, dtype=F64), rtol=1e-13, atol=1e-13
    )


def test_one_dimensional_mixture_density_at_t0():
    """D = 1 (the data density, no SDE): log Σ_k w_k N(x; μ_k, s_k²)."""
    means, stds, weights = [[0.5], [-1.0]], [0.4, 1.5], [0.3, 0.7]
    gm = sp.GaussianMixture(means, stds, weights)
    x = [[0.0], [1.2], [-2.0]]
    expected = [_log_iso(xi, means, stds, weights) for xi in x]
    torch.testing.assert_close(
        gm.log_prob(torch.tensor(x, dtype=F64)), torch.tensor(expected, dtype=F64), rtol=1e-13, atol=1e-13
    )


def test_full_mixture_stores_float64_eigenpairs_and_its_density():
    """covs from Python floats are kept in float64: log q_0 against torch.distributions'
    MultivariateNormal to 1e-12."""
    means = [[0.1, 0.0, -0.2], [1.0, -1.0, 0.5]]
    covs = [
        [[1.0, 0.3, 0.1], [0.3, 0.7, -0.2], [0.1, -0.2, 0.9]],
        [[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]],
    ]
    gm = sp.GaussianMixture(means, weights=[0.35, 0.65], covs=covs)
    assert gm.kind == "full" and repr(gm) == "GaussianMixture(K=2, D=3, cov='full')"
    assert gm.variances.dtype == gm.basis.dtype == F64
    x = torch.tensor([[0.0, 0.1, 0.2], [1.1, -0.9, 0.3], [-0.5, 0.5, 0.0]], dtype=F64)
    mvn = torch.distributions.MultivariateNormal(
        torch.tensor(means, dtype=F64), torch.tensor(covs, dtype=F64)
    )
    expected = torch.logsumexp(mvn.log_prob(x[:, None, :]) + torch.tensor([0.35, 0.65], dtype=F64).log(), 1)
    torch.testing.assert_close(gm.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_mixture_refuses_bad_parameters_by_name():
    means = [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match=_exact("means must be [K, D], got shape (3,)")):
        sp.GaussianMixture([0.0, 1.0, 2.0], 1.0)
    weights_message = _exact("weights must be [K] and positive, one per mean")
    for weights in ([0.5, 0.25, 0.25], [1.5, -0.5], [1.0, 0.0]):
        with pytest.raises(ValueError, match=weights_message):
            sp.GaussianMixture(means, 1.0, weights)
    both = _exact(
        "give the covariances one way: stds [K] (isotropic), stds [K, D] (diagonal) or covs [K, D, D] (full)"
    )
    with pytest.raises(ValueError, match=both):
        sp.GaussianMixture(means)
    with pytest.raises(ValueError, match=both):
        sp.GaussianMixture(means, 1.0, covs=torch.eye(2).expand(2, 2, 2))
    for stds in ([1.0, 0.0], [1.0, -1.0]):
        with pytest.raises(ValueError, match=_exact("stds must be positive")):
            sp.GaussianMixture(means, stds)
