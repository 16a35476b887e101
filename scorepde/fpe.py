"""The score Fokker–Planck equation: L[s] (Eq. 7) and the residual ε[s] (Eq. 9).

    L[s](x, t) = ½g² div_x s + ½g² ‖s‖² − ⟨f, s⟩ − div_x f          (Eq. 7: ∂t log q_t = L[q's score])
    ε[s](x, t) = ∂t s − ∇x L[s]                                       (Eq. 9: zero for the true score)

An estimator is a named choice of three parts: how ∂t s is formed (``dt``: ``"jvp"`` exact,
``"fd3"`` the paper's stencil, ``"central"``, or for ``"forward_fd"`` only ``"one_sided"``,
which reuses the corners' mean as s(x, t): 5 network rows per sample instead of 6), how
div_x s is formed (``div``: ``"exact"`` or ``"hutchinson"``) and how ∇x L is formed
(``grad``: ``"full"`` by reverse mode, or ``"directional"``, Eq. 24, ⟨ε, v⟩ v with
E[v vᵀ] = I, or ``"directional_fd"``, the same projection from plain forward passes only). ``ESTIMATORS`` names the presets; any part can
be overridden by keyword.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple, Union

import torch
from torch.func import grad, jvp

from .autodiff import explain_autodiff_errors
from .checks import check_batch_independent, check_inputs, check_output
from .derivatives import (PAPER_STEPS, broadcast_to_batch, divergence, sample_probes, stencil_points,
                          time_derivative, time_steps)
from .sde import SDE
from .typing import Score, renamed_keywords


__all__ = ["fpe_rhs", "residual", "projected_residual", "projected_residual_fd", "residual_norm_sq",
           "ESTIMATORS"]

#: Named estimators of ε[s]: presets of (dt, div, grad) and their probes.
ESTIMATORS = {
    "exact": dict(dt="jvp", div="exact", grad="full"),
    # The published recipe (App. C): 3-point stencil in t with the published steps (h_s, h_d)
    # = (1e-3, 5e-4), one Gaussian Hutchinson probe formed by a vector-Jacobian product, then
    # autograd's gradient of L. Those steps turn the fastest time feature of a net conditioned
    # on 999 t or on Fourier features of log σ by about a radian: ∂t s is then 10-20% off the
    # jvp (benchmarks/time_steps.py). Pass h="auto" for steps from the net's conditioning.
    "paper": dict(dt="fd3", div="hutchinson", probe="gaussian", div_mode="reverse", grad="full",
                  h=PAPER_STEPS),
    "hutchinson": dict(dt="jvp", div="hutchinson", grad="full"),
    "directional": dict(dt="jvp", div="hutchinson", grad="directional"),
    # ⟨ε, v⟩ v with every derivative a central difference of plain forwards, all in one
    # batched forward (no autograd in x or t): steps hx·σ_t in x, h in t (by default from the
    # net's time conditioning, ``derivatives.time_steps``).
    "forward_fd": dict(dt="central", div="hutchinson", grad="directional_fd"),
}

_DEFAULTS = dict(dt="jvp", div="exact", grad="full", probe="rademacher", n_probes=1,
                 div_mode="forward", direction_probe="rademacher", n_directions=1,
                 h="auto", chunk_size=None, hx=0.05)


def _options(estimator: str, overrides: dict, model: Optional[Score] = None,
             dtype: torch.dtype = torch.float32) -> dict:
    """The estimator's parts with ``overrides``; ``h="auto"`` resolved against ``model``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    unknown = set(overrides) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown residual option(s) {sorted(unknown)}; valid: {sorted(_DEFAULTS)}")
    opts = {**_DEFAULTS, **ESTIMATORS[estimator], **overrides}
    if opts["dt"] == "one_sided" and opts["grad"] != "directional_fd":
        raise ValueError("dt='one_sided' reuses the corners' mean of forward_fd as s(x, t); "
                         "use it with estimator='forward_fd', or pick dt='jvp', 'central' or 'fd3'")
    if model is not None:
        opts["h"] = time_steps(model, opts["h"], dtype)
    return opts


def _rhs(score: Score, sde: SDE, x, t, div: str, probes, opts) -> Tuple[torch.Tensor, torch.Tensor]:
    """(L[s](x, t), s(x, t)) with the divergence formed as ``div`` says (Eq. 7)."""
    s = score(x, t)
    g2 = sde.diffusion(t) ** 2
    div_s = divergence(lambda y: score(y, t), x, div, probes=probes, mode=opts["div_mode"],
                       chunk_size=opts["chunk_size"])
    f = sde.drift(x, t)
    L = (0.5 * g2 * (div_s + s.flatten(1).pow(2).sum(1))
         - (f * s).flatten(1).sum(1) - sde.drift_divergence(x, t))
    return L, s


def _div_probes(x, opts, generator):
    if opts["div"] != "hutchinson":
        return None
    return sample_probes(x, opts["n_probes"], opts["probe"], generator)


def _full(score, sde, x, t, opts, generator):
    """ε = ∂t s − ∇x L with ∇x L by reverse mode."""
    probes = _div_probes(x, opts, generator)

    def total_rhs(y):
        L, s = _rhs(score, sde, y, t, opts["div"], probes, opts)
        return L.sum(), (L, s)

    grad_L, (L, s) = grad(total_rhs, has_aux=True)(x)
    dt_s = time_derivative(score, x, t, opts["dt"], h=opts["h"], T=sde.T, center=s)
    return dt_s - grad_L, L


def projected_residual(score: Score, sde: SDE, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                       *, generator: Optional[torch.Generator] = None, **options
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(⟨ε[s], v⟩, L[s]) per sample, each ``[B]``: ⟨∂t s, v⟩ − D_v L (App. C.4, Lemma C.3).

    Forward mode only: no reverse pass over x. ``options`` as in ``residual``
    (``dt``, ``div``, ``probe``, ``n_probes``, ``h``); inputs are not validated here.
    """
    opts = _options("directional", options, score, x.dtype)
    probes = _div_probes(x, opts, generator)
    L, dv_L = jvp(lambda y: _rhs(score, sde, y, t, opts["div"], probes, opts)[0], (x,), (v,))
    if opts["dt"] == "jvp":
        dt_sv = jvp(lambda tt: (score(x, tt) * v).flatten(1).sum(1), (t,), (torch.ones_like(t),))[1]
    else:
        dt_sv = (time_derivative(score, x, t, opts["dt"], h=opts["h"], T=sde.T) * v).flatten(1).sum(1)
    return dt_sv - dv_L, L


def _x_step(sde: SDE, t: torch.Tensor, hx: float) -> torch.Tensor:
    """The step in x, per sample ``[B]``: hx·sqrt(σ_t² + σ_floor²), since the score varies
    on the scale σ_t; the floor (``sde.sigma_floor``, the same as the score's own σ̃) keeps it
    positive at t = 0, where σ_t = 0. hx itself for an SDE without a closed-form kernel."""
    if hx <= 0:
        raise ValueError(f"the step in x must be positive, got hx={hx}")
    try:
        var = sde.marginal_variance(t)
    except NotImplementedError:
        return torch.full_like(t, hx)
    return hx * torch.sqrt(var + sde.sigma_floor ** 2)


def projected_residual_fd(score: Score, sde: SDE, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                          *, generator: Optional[torch.Generator] = None, probe: str = "rademacher",
                          hx: float = 0.05, dt: str = "central", h="auto"
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(⟨ε[s], v⟩, L[s]) per sample from plain forward passes: ⟨∂t s, v⟩ − D_v L by central
    differences, with one Hutchinson probe u for the divergence (App. C.2 and C.4).

    With δ = hx·σ_t and s_ab = s(x + aδu + bδv, t) at the four corners a, b = ±1,

        D_v div s ≈ ⟨u, s₊₊ − s₊₋ − s₋₊ + s₋₋⟩ / 4δ²      div s ≈ ⟨u, s₊₊ + s₊₋ − s₋₊ − s₋₋⟩ / 4δ
        D_v s     ≈ (s₊₊ − s₊₋ + s₋₊ − s₋₋) / 4δ           s     ≈ (s₊₊ + s₊₋ + s₋₊ + s₋₋) / 4

    and ∂t s by the stencil ``dt`` with steps ``h`` (``"central"``: 2 nodes; ``"auto"``: from
    the score's time conditioning, ``scorepde.derivatives.time_steps``). The corners and
    the stencil's nodes go through the network in one batched forward (6 points per sample
    for ``"central"``); ``dt="jvp"`` is exact but adds a forward-mode pass. Each difference is
    O(δ²) (O(h²) in t); round-off grows like machine ε / hx², independently of σ_t because
    the step scales with it. ``dt="one_sided"`` needs one node in t (5 points per sample):

        ∂t s ≈ ±(s(x, t ± h) − s̄)/h,   s̄ = the corners' mean = s(x, t) + O(δ²)

    (+ unless t + h > T), first order: O(h) + O(δ²/h). The δ²/h term grows with the
    dimension: on the 784-D step-cost U-Net the median error of ⟨ε̂, v⟩ is 5% at its best hx
    (0.002) and 675% at the default 0.05, against 0.2% for ``"central"``
    (``benchmarks/lever_error.py``): for low-dimensional fields, not images. The drift's
    derivatives are exact (forward mode on f alone, never through the network). No reverse
    pass over x or t.
    """
    B = x.shape[0]
    u = sample_probes(x, 1, probe, generator)[0]
    d = _x_step(sde, t, hx).to(x.dtype)
    du, dv = broadcast_to_batch(d, x) * u, broadcast_to_batch(d, x) * v
    corners = [x + du + dv, x + du - dv, x - du + dv, x - du - dv]
    h = time_steps(score, h, x.dtype)
    if dt == "one_sided":  # forward in t, backward where t + h would pass T
        side = torch.where(t + h[0] <= sde.T, 1.0, -1.0).to(t.dtype)
        times, weights = [t + side * h[0]], [side / h[0]]
    else:
        times, weights = ([], []) if dt == "jvp" else stencil_points(t, dt, h=h, T=sde.T)
    out = score(torch.cat(corners + [x] * len(times)), torch.cat([t] * 4 + times)).split(B)
    s_pp, s_pm, s_mp, s_mm = out[:4]
    dot = lambda a, b: (a * b).flatten(1).sum(1)
    mixed = dot(s_pp - s_pm - s_mp + s_mm, u) / (4 * d ** 2)
    div_s = dot(s_pp + s_pm - s_mp - s_mm, u) / (4 * d)
    s = 0.25 * (s_pp + s_pm + s_mp + s_mm)
    dv_s = (s_pp - s_pm + s_mp - s_mm) / broadcast_to_batch(4 * d, x)
    if dt == "jvp":
        dt_sv = jvp(lambda tt: dot(score(x, tt), v), (t,), (torch.ones_like(t),))[1]
    elif dt == "one_sided":
        dt_sv = weights[0] * dot(out[4] - s, v)
    else:
        dt_sv = sum(w * dot(o, v) for w, o in zip(weights, out[4:]))
    f, dv_f = jvp(lambda y: sde.drift(y, t), (x,), (v,))
    div_f, dv_div_f = jvp(lambda y: sde.drift_divergence(y, t), (x,), (v,))
    g2 = sde.diffusion(t) ** 2
    L = 0.5 * g2 * (div_s + dot(s, s)) - dot(f, s) - div_f
    dv_L = 0.5 * g2 * (mixed + 2 * dot(s, dv_s)) - dot(dv_f, s) - dot(f, dv_s) - dv_div_f
    return dt_sv - dv_L, L


def _directional(score, sde, x, t, opts, generator):
    """ε ≈ (1/K) Σ_k ⟨ε, v_k⟩ v_k, E[v vᵀ] = I (Eq. 24): unbiased for ε."""
    V = sample_probes(x, opts["n_directions"], opts["direction_probe"], generator)
    one = lambda v: _projection(opts)(score, sde, x, t, v, generator=generator)
    if V.shape[0] == 1:
        proj, L = one(V[0])
        return broadcast_to_batch(proj, x) * V[0], L
    # Probes must differ per direction: draw them outside vmap, one set per direction.
    projs, Ls = zip(*(one(v) for v in V))
    eps = sum(broadcast_to_batch(p, x) * v for p, v in zip(projs, V)) / V.shape[0]
    return eps, torch.stack(Ls).mean(0)


def _projection(opts: dict) -> Callable:
    """⟨ε, v⟩ by forward mode (``grad="directional"``) or by differences (``"directional_fd"``)."""
    if opts["grad"] == "directional_fd":
        if opts["div"] != "hutchinson" or opts["n_probes"] != 1:
            raise ValueError("grad='directional_fd' forms div s with one Hutchinson probe: "
                             "use div='hutchinson', n_probes=1")
        sub = {k: opts[k] for k in ("probe", "hx", "dt", "h")}
        return lambda *a, **kw: projected_residual_fd(*a, **kw, **sub)
    sub = {k: opts[k] for k in ("dt", "div", "probe", "n_probes", "div_mode", "h", "chunk_size")}
    return lambda *a, **kw: projected_residual(*a, **kw, **sub)


_GRADIENTS = {"full": _full, "directional": _directional, "directional_fd": _directional}


@renamed_keywords(model="score")
@explain_autodiff_errors
def residual(score: Score, sde: SDE, x: Optional[torch.Tensor] = None,
             t: Union[torch.Tensor, float, None] = None, estimator: str = "exact", *,
             generator: Optional[torch.Generator] = None, return_rhs: bool = False,
             validate: bool = True, **options):
    """The score-FPE residual ε[s](x, t) = ∂t s − ∇x L[s] (Eq. 9), shaped like x.

    ``residual(model, sde, **options)`` (no x, t) returns the residual *operator*, a
    callable ``(x, t) -> ε`` with the estimator, generator and options bound;
    ``residual(model, sde, x, t, ...)`` evaluates it at once. Both give the same numbers.

    ``model`` is any callable ``(x [B, ...], t [B]) -> score`` shaped like x. ``estimator``
    is one of ``ESTIMATORS``: ``"exact"`` (autograd), ``"paper"`` (App. C: 3-point stencil,
    one Gaussian Hutchinson probe), ``"hutchinson"`` (exact ∂t, Hutchinson div),
    ``"directional"`` (Eq. 24) or ``"forward_fd"`` (Eq. 24 from plain forwards, see
    ``projected_residual_fd``). Options override its parts: ``dt``, ``div``, ``probe``
    (``"rademacher"``, ``"gaussian"``, ``"sphere"``), ``n_probes``, ``direction_probe``,
    ``n_directions``, ``h = (h_s, h_d)`` or ``"auto"`` (steps in t from the model's time
    conditioning, ``derivatives.time_steps``; the default except for ``"paper"``), ``hx`` (the
    relative step in x of ``"forward_fd"``),
    ``div_mode``, ``chunk_size``. Stochastic
    estimators draw from ``generator``. With ``return_rhs`` returns ``(ε, L[s])``.
    ``validate`` checks shapes, t ∈ [0, T], finiteness and that the model is a function that
    keeps samples independent (no BatchNorm or dropout in train mode; turn it off inside
    torch.func transforms).
    """
    if isinstance(x, str) and t is None:  # residual(model, sde, "paper"): the estimator
        x, estimator = None, x
    if x is None and t is None:  # the operator; bad names are refused now, not at its first call
        if _options(estimator, options)["grad"] not in _GRADIENTS:
            raise ValueError(f"unknown grad option {options['grad']!r}; choose one of {sorted(_GRADIENTS)}")
        return functools.partial(residual, score, sde, estimator=estimator, generator=generator,
                                 return_rhs=return_rhs, validate=validate, **options)
    if x is None or t is None:
        raise ValueError("residual needs both x and t (to evaluate ε there) or neither (for the "
                         "operator (x, t) -> ε); got only one of them")
    opts = _options(estimator, options, score, getattr(x, "dtype", torch.float32))
    if opts["grad"] not in _GRADIENTS:
        raise ValueError(f"unknown grad option {opts['grad']!r}; choose one of {sorted(_GRADIENTS)}")
    if validate:
        t = check_inputs(x, t, sde.T)
        check_batch_independent(score, x, t)
        score = _shape_checked(score)
    eps, L = _GRADIENTS[opts["grad"]](score, sde, x, t, opts, generator)
    return (eps, L) if return_rhs else eps


@renamed_keywords(model="score")
@explain_autodiff_errors
def residual_norm_sq(score: Score, sde: SDE, x: torch.Tensor, t: Union[torch.Tensor, float],
                     estimator: str = "exact", *, unbiased: bool = True,
                     generator: Optional[torch.Generator] = None, validate: bool = True,
                     **options) -> Tuple[torch.Tensor, torch.Tensor]:
    """(an estimate of ‖ε[s]‖², L[s]) per sample, each ``[B]``.

    Deterministic estimators give ‖ε‖² itself. For a stochastic one, ``unbiased`` forms the
    product of two independent estimates, E[ε̂₁·ε̂₂] = ‖ε‖² (for ``"directional"`` and
    ``"forward_fd"``: (1/K) Σ_k ⟨ε,v_k⟩⟨ε,v_k⟩' over K = ``n_directions`` directions, each
    ⟨ε,v_k⟩ from two independent inner probe sets along a shared v_k, E_v⟨ε,v⟩² = ‖ε‖²);
    all draws run as one batched call, and L[s] is their mean. The single-draw plug-in ‖ε̂‖² (``unbiased=False``)
    is biased upwards by tr Cov(ε̂). The paper estimator keeps its O(h²) stencil bias.
    """
    opts = _options(estimator, options, score, getattr(x, "dtype", torch.float32))
    if validate:
        t = check_inputs(x, t, sde.T)
        check_batch_independent(score, x, t)
        score = _shape_checked(score)
    stochastic = opts["div"] == "hutchinson"
    if opts["grad"] in ("directional", "directional_fd"):
        # (1/K) Σ_k ⟨ε, v_k⟩² over K = n_directions directions, E_v⟨ε, v⟩² = ‖ε‖²; unbiased:
        # each ⟨ε, v_k⟩² as the product of two independent inner draws. One batched call.
        V = sample_probes(x, opts["n_directions"], opts["direction_probe"], generator)
        reps = 2 if (stochastic and unbiased) else 1
        n = V.shape[0] * reps
        vs = V.repeat_interleave(reps, dim=0).flatten(0, 1)
        proj, L = _projection(opts)(score, sde, x.repeat((n,) + (1,) * (x.dim() - 1)), t.repeat(n),
                                    vs, generator=generator)
        proj = proj.view(V.shape[0], reps, x.shape[0])
        sq = proj[:, 0] * proj[:, -1]  # p₁p₂ (unbiased) or p² (single draw)
        return sq.mean(0), L.view(n, x.shape[0]).mean(0)
    run = _GRADIENTS[opts["grad"]]
    if not (stochastic and unbiased):
        eps, L = run(score, sde, x, t, opts, generator)
        return eps.flatten(1).pow(2).sum(1), L
    eps, L = run(score, sde, torch.cat([x, x]), torch.cat([t, t]), opts, generator)
    e1, e2 = eps.chunk(2)
    return (e1 * e2).flatten(1).sum(1), L.chunk(2)[0]


@renamed_keywords(model="score")
def fpe_rhs(score: Score, sde: SDE, x: torch.Tensor, t: Union[torch.Tensor, float], *,
            div: str = "exact", probe: str = "rademacher", n_probes: int = 1,
            generator: Optional[torch.Generator] = None, validate: bool = True) -> torch.Tensor:
    """L[s](x, t) = ½g² div_x s + ½g² ‖s‖² − ⟨f, s⟩ − div_x f, shape ``[B]`` (Eq. 7)."""
    opts = {**_DEFAULTS, "div": div, "probe": probe, "n_probes": n_probes}
    if validate:
        t = check_inputs(x, t, sde.T)
        check_batch_independent(score, x, t)
        score = _shape_checked(score)
    return _rhs(score, sde, x, t, div, _div_probes(x, opts, generator), opts)[0]


def _shape_checked(score: Score) -> Score:
    return lambda x, t: check_output(score(x, t), x)
