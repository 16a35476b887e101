"""Exact log-likelihood of a score model through the probability-flow ODE.

    dx/dt = f(x, t) − ½g(t)² s(x, t)                       (the probability-flow ODE)
    d log p_t(x(t))/dt = −div_x [f − ½g² s](x(t), t)       (instantaneous change of variables)

so integrating x from x(eps) = x up to x(T) gives

    log p_eps(x) = log p_T(x(T)) + ∫_eps^T div_x [f − ½g² s](x(t), t) dt

with p_T the SDE's prior. The divergence is exact (D products with unit vectors) or
Hutchinson's estimate with probes drawn once per solve and held fixed along it, which keeps
the integral an unbiased estimate of the exact one. By default (``mode="reverse"``) each ODE
evaluation makes one network forward and reverse-mode vector-Jacobian products on its graph,
which give the drift and the divergence together; ``mode="forward"`` is the older path
(a plain forward for the drift, Jacobian-vector products for the divergence), kept as the
reference the fast path is tested against. ``scorepde.commands.likelihood_cost`` times both
against a score_sde-style SciPy loop.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torchdiffeq import odeint

from .checks import check_finite, check_inputs, check_output
from .derivatives import (
    broadcast_to_batch,
    divergence,
    sample_probes,
    value_and_divergence,
    value_and_stacked_divergence,
)
from .rk import CONTROLS, TABLEAUS, solve_batched
from .sde import SDE
from .time_change import time_change
from .typing import Score, renamed_keywords

__all__ = [
    "probability_flow_drift",
    "solve_ode",
    "log_likelihood",
    "joint_rms_norm",
    "TRACES",
    "MODES",
    "SOLVERS",
    "ERROR_ON",
    "SMALL_DIM",
    "error_weights",
]

#: How div_x s is formed along the solve.
TRACES = ("exact", "hutchinson")
#: Which ODE solver integrates: scorepde.rk's batched Runge–Kutta, or torchdiffeq.odeint.
SOLVERS = ("rk", "torchdiffeq")
#: What the step-size controller of the "rk" solver measures: x and log p alike ("state"), log p
#: only, or x's mean square and log p's with half the weight each ("balanced").
ERROR_ON = ("state", "logp", "balanced")
#: How each ODE evaluation differentiates: one forward + vjps ("reverse"), a forward + jvps
#: ("forward"), or, for the exact trace, one forward on D stacked copies + one vjp ("stacked").
MODES = ("reverse", "forward", "stacked")

#: Up to this D a solve counts as small, its cost per call rather than per row: the default
#: ``mode`` of an exact trace is "stacked" (one forward on D copies and one backward,
#: ``value_and_stacked_divergence``, not D backward passes) and the default ``control`` of the
#: "rk" solver "joint" (dropping finished rows saves nothing there, per-sample norms cost calls).
SMALL_DIM = 16

#: torchdiffeq's adaptive Runge–Kutta solvers, which accept ``step_t``.
_ADAPTIVE = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}


@renamed_keywords(model="score")
def probability_flow_drift(score: Score, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x, t) − ½g(t)² s(x, t), the probability-flow ODE's velocity, shaped like x."""
    return _drift(sde, x, t, score(x, t))


def _score_and_divergence(score: Score, x, t, div: str, probes, mode: str):
    """(s(x, t), div_x s) by ``mode`` (one of ``MODES``)."""
    if mode == "stacked":
        return value_and_stacked_divergence(lambda z: score(z, t.repeat(x[0].numel())), x)
    if mode == "reverse":
        return value_and_divergence(lambda z: score(z, t), x, div, probes=probes)
    return score(x, t), divergence(lambda z: score(z, t), x, div, probes=probes)


def _drift_and_divergence(
    score: Score, sde: SDE, x, t, div: str, probes, mode: str = "reverse", net_dtype=None
):
    """(f − ½g² s, div_x [f − ½g² s] = div f − ½g² div s), s and div s formed ``mode``'s way
    (one of ``MODES``; "reverse": one forward of the model and vjps on its graph). The model
    sees x and t in ``net_dtype`` (default x's); everything else is in x's dtype."""
    net = x.dtype if net_dtype is None else net_dtype
    s, div_s = _score_and_divergence(score, x.to(net), t.to(net), div, probes, mode)
    g2 = sde.diffusion(t) ** 2
    return _drift(sde, x, t, s.to(x.dtype)), sde.drift_divergence(x, t) - 0.5 * g2 * div_s.to(x.dtype)


def _drift(sde: SDE, x, t, s):
    """f(x, t) − ½g(t)² s from the score's value s, shaped like x."""
    return sde.drift(x, t) - 0.5 * broadcast_to_batch(sde.diffusion(t) ** 2, x) * s


def solve_ode(
    func: Callable,
    y0,
    t0: float,
    t1: float,
    *,
    rtol: float,
    atol: float,
    method: str,
    options: dict | None = None,
):
    """y(t1) for dy/dt = func(t, y), y(t0) = y0, by ``torchdiffeq.odeint``.

    The model is only ever evaluated inside [t0, t1]. torchdiffeq's adaptive solvers
    otherwise step past the end and interpolate back, so steps are made to land on t1
    (``step_t``), and its initial-step heuristic probes a trial point that may lie far
    outside (for VE at t = 20, where g² overflows), so func sees t clamped into the interval.
    A failed solve raises a ValueError.
    """
    ref = y0[0] if isinstance(y0, tuple) else y0
    times = torch.tensor([t0, t1], dtype=ref.dtype, device=ref.device)
    options = dict(options or {})
    if method in _ADAPTIVE:
        options.setdefault("step_t", times[1:])
    lo, hi = min(t0, t1), max(t0, t1)
    try:
        ys = odeint(
            lambda t, y: func(t.clamp(lo, hi), y),
            y0,
            times,
            rtol=rtol,
            atol=atol,
            method=method,
            options=options,
        )
    except AssertionError as err:  # torchdiffeq reports a failed solve by assert
        raise ValueError(
            f"the ODE solve from t={t0} to t={t1} failed ({str(err)[:200]}); the "
            f"model's score probably became non-finite on the way"
        ) from err
    return tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]


def joint_rms_norm(tensors) -> torch.Tensor:
    """The RMS of every component of the ODE state together (x and log p as one vector).

    The error norm of SciPy's ``solve_ivp`` and so of score_sde's likelihood loop;
    torchdiffeq's default for a tuple state is the max of per-tensor RMS norms, which lets
    the B log p components alone drive the step size.
    """
    return torch.sqrt(sum(t.pow(2).sum() for t in tensors) / sum(t.numel() for t in tensors))


def _rk_rhs(
    score: Score,
    sde: SDE,
    shape,
    div: str,
    probes,
    mode: str,
    tc,
    net_dtype,
    t_lo: float,
    t_hi: float,
    inner: bool = False,
):
    """dy/du for y = (x flattened, log-density integral) in the clock u of ``tc``, rows ``idx``
    of the batch: the network sees x and t in ``net_dtype``, everything else is y's dtype.
    With ``inner``, x's part only, from one plain forward (d log p/du left at zero: the
    ``f_inner`` of ``scorepde.rk.solve_batched``, for the stages the log-density never reads)."""
    D = math.prod(shape)

    def rhs(u, y, idx):
        t = (u if tc.identity else tc.t_of_u(u)).clamp(t_lo, t_hi)
        xs = y[:, :D].reshape(-1, *shape)
        if inner:
            v = _drift(sde, xs, t, score(xs.to(net_dtype), t.to(net_dtype)).to(xs.dtype))
            dlogp = torch.zeros_like(t)
        else:
            pr = None if probes is None else probes[:, idx]
            v, dlogp = _drift_and_divergence(score, sde, xs, t, div, pr, mode, net_dtype)
        out = torch.cat([v.flatten(1), dlogp[:, None]], 1)
        return out if tc.identity else out.mul_(tc.dt_du(u)[:, None])

    return rhs


def error_weights(error_on: str, D: int, dtype=torch.float64, device=None) -> torch.Tensor | None:
    """The weights ``[D + 1]`` (summing to 1) of the step-size controller's mean square over
    (x, log p) for ``error_on``: None for "state" (every component alike, 1/(D + 1) each),
    log p alone for "logp", and for "balanced" x's mean square and log p's half each
    (1/(2D) per x component, 1/2 for log p: with "state" the one log-p component of D + 1
    weighs little, yet bits/dim is log p; with "logp" x drifts unwatched)."""
    if error_on == "state":
        return None
    w = torch.full((D + 1,), 0.0 if error_on == "logp" else 0.5 / D, dtype=dtype, device=device)
    w[-1] = 1.0 if error_on == "logp" else 0.5
    return w


def _solve_rk(
    score, sde, x, eps, div, probes, mode, *, rtol, atol, method, control, error_on, state_dtype, time
):
    """(x(T), ∫ div dt, stats) by ``scorepde.rk.solve_batched`` on the state (x, log p) in
    ``state_dtype``, integrated in the clock ``time`` (``scorepde.time_change``)."""
    T = float(sde.T)
    tc = time_change(sde, time, eps, T)
    dtype = x.dtype if state_dtype is None else state_dtype
    B, D = x.shape[0], x[0].numel()
    y0 = torch.cat([x.flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], 1).to(dtype)
    weights = error_weights(error_on, D, dtype=dtype, device=x.device)
    problem = (score, sde, x.shape[1:], div, probes, mode, tc, x.dtype, eps, T)
    y_T, stats = solve_batched(
        _rk_rhs(*problem), y0, tc.u0, tc.u1, rtol=rtol, atol=atol, method=method, control=control,
        weights=weights, f_inner=_rk_rhs(*problem, inner=True),
    )  # fmt: skip
    return y_T[:, :D].reshape(x.shape), y_T[:, D], stats


def _solve_torchdiffeq(score, sde, x, eps, div, probes, mode, *, rtol, atol, method, options):
    """(x(T), ∫ div dt, stats) by ``torchdiffeq.odeint`` on the state (x, log p) in x's dtype,
    error norm ``joint_rms_norm`` unless ``options`` names one."""
    B, nfe = x.shape[0], 0

    def ode(t, state):
        nonlocal nfe
        nfe += 1
        y = state[0]
        return _drift_and_divergence(score, sde, y, t.to(y.dtype).expand(B), div, probes, mode)

    y0 = (x, torch.zeros(B, dtype=x.dtype, device=x.device))
    options = dict(options or {})
    if method in _ADAPTIVE:
        options.setdefault("norm", joint_rms_norm)
    x_T, delta_logp = solve_ode(
        ode, y0, eps, float(sde.T), rtol=rtol, atol=atol, method=method, options=options
    )
    return x_T, delta_logp, dict(nfe=nfe)


def _check_choices(
    eps: float, T: float, div: str, mode: str, solver: str, control: str, error_on: str
) -> None:
    if not 0.0 < eps < T:
        raise ValueError(
            f"eps must lie in (0, T) = (0, {T}), got {eps}; a small positive value such as 1e-5 is usual"
        )
    for what, value, allowed in (
        ("trace (divergence) div", div, TRACES),
        ("mode", mode, MODES),
        ("solver", solver, SOLVERS),
        ("control", control, CONTROLS),
        ("error_on", error_on, ERROR_ON),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what}={value!r}; choose one of {list(allowed)}")
    if mode == "stacked" and div != "exact":
        raise ValueError(f"mode='stacked' forms the exact trace only, got div={div!r}; use mode='reverse'")


def _trace_probes(x, div: str, probes, n_probes: int, probe: str, generator):
    """The Hutchinson probes of one solve: the given ones (checked against x) or a fresh draw;
    None for the exact trace."""
    if div != "hutchinson":
        return None
    if probes is None:
        return sample_probes(x, n_probes, probe, generator)
    if probes.dim() != x.dim() + 1 or probes.shape[1:] != x.shape:
        raise ValueError(f"probes must be [M, *x.shape] = [M, {list(x.shape)}], got {list(probes.shape)}")
    return probes


@renamed_keywords(model="score", trace="div")
def log_likelihood(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    eps: float = 1e-5,
    div: str = "exact",
    *,
    probe: str = "rademacher",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
    mode: str | None = None,
    return_stats: bool = False,
    solver: str | None = None,
    control: str | None = None,
    error_on: str = "balanced",
    state_dtype: torch.dtype | None = torch.float64,
    time: str = "t",
    probes: torch.Tensor | None = None,
):
    """log p_eps(x) in nats, shape ``[B]``, by the probability-flow ODE from eps to T.

    ``div`` picks the divergence: ``"exact"`` or ``"hutchinson"`` with ``n_probes``
    probes of kind ``probe`` drawn once from ``generator``, or the given ``probes``
    ``[M, B, ...]`` (to cut a batch into solves with the probes of one draw). ``mode``
    (one of ``MODES``) forms the drift and the divergence: ``"reverse"`` from one forward
    and vjps, ``"forward"`` from a forward plus jvps, ``"stacked"`` (exact trace only) from
    one forward on D stacked copies of x and one vjp; all give the same estimate for the same
    probes. Default: "stacked" for an exact trace with D ≤ ``SMALL_DIM``, else "reverse".

    ``solver`` (one of ``SOLVERS``; default ``"rk"``, or ``"torchdiffeq"`` when ``method``
    is not an rk tableau or ``options`` are given) integrates: ``"rk"`` is ``scorepde.rk.solve_batched``
    with tableau ``method`` (dopri5, tsit5, bosh3, dopri8), step sizes per ``control``
    (``"per_sample"``, or ``"joint"``: the default for D ≤ ``SMALL_DIM``), the error measured
    on ``error_on`` (``error_weights``: ``"balanced"``, the default, x's mean square and log p's
    half each; ``"state"``: every component alike; ``"logp"``: log p only), the state (x, log p) in ``state_dtype`` (None: x's; the
    network always sees x's dtype) and the clock ``time`` (``scorepde.time_change``);
    ``"torchdiffeq"`` is ``torchdiffeq.odeint`` with ``method`` and ``options`` on a state in
    x's dtype, error norm :func:`joint_rms_norm` unless ``options`` names a ``norm``.
    With ``return_stats`` also returns a dict: ``nfe`` (ODE function evaluations),
    ``prior_logp`` = log p_T(x(T)), ``delta_logp`` = ∫ div dt (both ``[B]``) and ``x_T``
    (with ``"rk"`` also ``nfe_inner``, the evaluations of x's drift alone at the stages the
    log-density never reads, ``sample_evals``, ``steps``, ``rejected``). No graph is kept.
    """
    T = float(sde.T)
    if solver is None:  # torchdiffeq for what only it has (euler, rk4, …; its options)
        solver = "rk" if method in TABLEAUS and options is None else "torchdiffeq"
    small = math.prod(x.shape[1:]) <= SMALL_DIM
    mode = mode or ("stacked" if div == "exact" and small else "reverse")
    control = control or ("joint" if small else "per_sample")
    _check_choices(eps, T, div, mode, solver, control, error_on)
    t_eps = check_inputs(x, eps, T)

    with torch.no_grad():
        x = x.detach()
        # One host check before the solve: a model that is broken at the start fails by name
        # instead of deep inside the solver.
        check_finite(check_output(score(x, t_eps), x), f"the model's score at t=eps={eps}")
        probes = _trace_probes(x, div, probes, n_probes, probe, generator)
        if solver == "rk":
            x_T, delta_logp, stats = _solve_rk(
                score, sde, x, eps, div, probes, mode, rtol=rtol, atol=atol, method=method,
                control=control, error_on=error_on, state_dtype=state_dtype, time=time,
            )  # fmt: skip
        else:
            x_T, delta_logp, stats = _solve_torchdiffeq(
                score, sde, x, eps, div, probes, mode, rtol=rtol, atol=atol, method=method, options=options
            )
        check_finite(x_T, "the ODE's end point x(T)")
        check_finite(delta_logp, "the divergence integral ∫ div(f − ½g²s) dt")
        prior_logp = check_finite(sde.prior_log_prob(x_T), "the prior term log p_T(x(T))")
        logp = (prior_logp + delta_logp).to(x.dtype)

    if return_stats:
        return logp, dict(stats, prior_logp=prior_logp, delta_logp=delta_logp, x_T=x_T)
    return logp
