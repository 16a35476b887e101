"""The score Fokker–Planck equation: L[s] (Eq. 7) and the residual ε[s] (Eq. 9).

    L[s](x, t) = ½g² div_x s + ½g² ‖s‖² − ⟨f, s⟩ − div_x f          (Eq. 7: ∂t log q_t = L[q's score])
    ε[s](x, t) = ∂t s − ∇x L[s]                                       (Eq. 9: zero for the true score)

The public face: ``fpe_rhs`` (L[s]), ``residual`` (ε[s], or the operator (x, t) -> ε) and
``residual_norm_sq`` (‖ε‖²), each taking an estimator by name. The estimators themselves
live in ``scorepde.estimators``: ``ESTIMATORS`` maps a name to (family, preset), and any
option of the family can be overridden by keyword (``dt=``, ``div=``, ``probe=``, ...).
"""

from __future__ import annotations

import functools

import torch

from .autodiff import explain_autodiff_errors
from .checks import check_batch_independent, check_inputs, check_output
from .estimators import ESTIMATORS, Estimator, fpe_rhs_and_score, get_estimator
from .estimators.base import div_probes
from .estimators.directional import Projected
from .estimators.forward_fd import projected_residual_fd
from .sde import SDE
from .typing import Score, renamed_keywords

__all__ = [
    "fpe_rhs",
    "residual",
    "projected_residual",
    "projected_residual_fd",
    "residual_norm_sq",
    "ESTIMATORS",
    "get_estimator",
]


def _prepared(
    score: Score, sde: SDE, x, t, estimator: str, options: dict, validate: bool
) -> tuple[Estimator, Score, torch.Tensor]:
    """(the estimator with its steps fixed for ``score``, the score, t as ``[B]``), validated."""
    est = get_estimator(estimator, **options).for_score(score, getattr(x, "dtype", torch.float32))
    if validate:
        t = check_inputs(x, t, sde.T)
        check_batch_independent(score, x, t)
        score = _shape_checked(score)
    return est, score, t


def projected_residual(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(⟨ε[s], v⟩, L[s]) per sample, each ``[B]``: ⟨∂t s, v⟩ − D_v L (App. C.4, Lemma C.3).

    Forward mode only: no reverse pass over x. ``options`` as in ``residual``
    (``dt``, ``div``, ``probe``, ``n_probes``, ``h``); inputs are not validated here.
    """
    est = get_estimator("directional", **options).for_score(score, x.dtype)
    assert isinstance(est, Projected)
    return est.project(score, sde, x, t, v, generator)


@renamed_keywords(model="score")
@explain_autodiff_errors
def residual(
    score: Score,
    sde: SDE,
    x: torch.Tensor | None = None,
    t: torch.Tensor | float | None = None,
    estimator: str = "exact",
    *,
    generator: torch.Generator | None = None,
    return_rhs: bool = False,
    validate: bool = True,
    **options,
):
    """The score-FPE residual ε[s](x, t) = ∂t s − ∇x L[s] (Eq. 9), shaped like x.

    ``residual(score, sde, **options)`` (no x, t) returns the residual *operator*, a
    callable ``(x, t) -> ε`` with the estimator, generator and options bound;
    ``residual(score, sde, x, t, ...)`` evaluates it at once. Both give the same numbers.

    ``score`` is any callable ``(x [B, ...], t [B]) -> score`` shaped like x. ``estimator``
    is a name in ``ESTIMATORS``: ``"exact"`` (autograd), ``"paper"`` (App. C: 3-point stencil,
    one Gaussian Hutchinson probe), ``"hutchinson"`` (exact ∂t, Hutchinson div),
    ``"directional"`` (Eq. 24) or ``"forward_fd"`` (Eq. 24 from plain forwards, see
    ``projected_residual_fd``). Options override its preset: ``dt``, ``div``, ``probe``
    (``"rademacher"``, ``"gaussian"``, ``"sphere"``), ``n_probes``, ``direction_probe``,
    ``n_directions``, ``h = (h_s, h_d)`` or ``"auto"`` (steps in t from the score's time
    conditioning, ``derivatives.time_steps``; the default except for ``"paper"``), ``hx`` (the
    relative step in x of ``"forward_fd"``), ``div_mode``, ``chunk_size``; an option its
    family does not have is a ValueError naming the ones it has. Stochastic estimators draw
    from ``generator``. With ``return_rhs`` returns ``(ε, L[s])``. ``validate`` checks
    shapes, t ∈ [0, T], finiteness and that the score is a function that keeps samples
    independent (no BatchNorm or dropout in train mode; turn it off inside torch.func
    transforms).
    """
    if isinstance(x, str) and t is None:  # residual(score, sde, "paper"): the estimator
        x, estimator = None, x
    if x is None and t is None:  # the operator; bad names are refused now, not at its first call
        get_estimator(estimator, **options)
        return functools.partial(
            residual,
            score,
            sde,
            estimator=estimator,
            generator=generator,
            return_rhs=return_rhs,
            validate=validate,
            **options,
        )
    if x is None or t is None:
        raise ValueError(
            "residual needs both x and t (to evaluate ε there) or neither (for the "
            "operator (x, t) -> ε); got only one of them"
        )
    est, score, t = _prepared(score, sde, x, t, estimator, options, validate)
    eps, L = est.residual(score, sde, x, t, generator)
    return (eps, L) if return_rhs else eps


@renamed_keywords(model="score")
@explain_autodiff_errors
def residual_norm_sq(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor | float,
    estimator: str = "exact",
    *,
    unbiased: bool = True,
    generator: torch.Generator | None = None,
    validate: bool = True,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(an estimate of ‖ε[s]‖², L[s]) per sample, each ``[B]``.

    Deterministic estimators give ‖ε‖² itself. For a stochastic one, ``unbiased`` forms the
    product of two independent estimates, E[ε̂₁·ε̂₂] = ‖ε‖² (for ``"directional"`` and
    ``"forward_fd"``: (1/K) Σ_k ⟨ε,v_k⟩⟨ε,v_k⟩' over K = ``n_directions`` directions, each
    ⟨ε,v_k⟩ from two independent inner probe sets along a shared v_k, E_v⟨ε,v⟩² = ‖ε‖²);
    all draws run as one batched call, and L[s] is their mean. The single-draw plug-in ‖ε̂‖² (``unbiased=False``)
    is biased upwards by tr Cov(ε̂). The paper estimator keeps its O(h²) stencil bias.
    """
    est, score, t = _prepared(score, sde, x, t, estimator, options, validate)
    return est.norm_sq(score, sde, x, t, unbiased=unbiased, generator=generator)


@renamed_keywords(model="score")
def fpe_rhs(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor | float,
    *,
    div: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """L[s](x, t) = ½g² div_x s + ½g² ‖s‖² − ⟨f, s⟩ − div_x f, shape ``[B]`` (Eq. 7)."""
    if validate:
        t = check_inputs(x, t, sde.T)
        check_batch_independent(score, x, t)
        score = _shape_checked(score)
    elif not isinstance(t, torch.Tensor):  # one time for every sample, as check_inputs reads it
        t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    probes = div_probes(x, dict(div=div, probe=probe, n_probes=n_probes), generator)
    return fpe_rhs_and_score(score, sde, x, t, div, probes)[0]


def _shape_checked(score: Score) -> Score:
    return lambda x, t: check_output(score(x, t), x)
