"""Per-sample measurements of the audit: every model on the same x_t, the same probes, the same t.

For each t of the grid and each held-out x_0 (pushed to x_t = a(t) x_0 + σ_t z), one row
of ``COLUMNS`` per model, each an unbiased estimate of its expectation:

  fp2    ‖ε[s]‖²              (``residual_norm_sq``; Eq. 9)
  dt2    ‖∂t s‖²              (as the estimator forms it: its stencil and step in t, or exactly)
  gradL2 ‖∇x L[s]‖²           = ‖∂t s‖² − 2⟨∂t s, ε̂⟩ + ‖ε‖², with ε̂ an unbiased estimate of ε
  dsm2   ‖s + z/σ_t‖²         (the DSM-like residual, Sec. 3.1)
  curl2  ‖J − Jᵀ‖_F²          (Hutchinson or exact, Sec. 6.2)
  jac2   ‖J‖_F²               (one Hutchinson probe: E‖J u‖²)
  absL   |L[s]|               (Eq. 7)

Models see identical draws: each (t, chunk) has its own seed, and every model's generator
restarts from it. ``scorepde.audit.summary`` turns the rows into means, ratios and SEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from torch.func import jvp

from ..autodiff import explained
from ..curl import antisymmetry
from ..curves import dsm_like, perturb_at
from ..derivatives import STENCILS, sample_probes, time_derivative
from ..estimators import get_estimator
from ..fpe import residual, residual_norm_sq
from ..sde import SDE

__all__ = ["COLUMNS", "measure", "estimator_options", "describe_estimator"]

COLUMNS = ("fp2", "dt2", "gradL2", "dsm2", "curl2", "jac2", "absL")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _jacobian_sq(score: Callable, x: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor:
    """‖J u‖² per sample for one Rademacher u: unbiased for ‖J‖_F², J = ∂s/∂x."""
    u = sample_probes(x, 1, "rademacher", generator)[0]
    return jvp(lambda y: score(y, t), (x,), (u,))[1].flatten(1).pow(2).sum(1)


def estimator_options(sde: SDE, options: dict) -> dict:
    """The residual options the audit uses: the caller's, with a discrete (DDPM) SDE's ``fd_h``
    as the steps in t unless given (a fraction of one step k, for any network's clock)."""
    if hasattr(sde, "fd_h") and "h" not in options:
        return {**options, "h": sde.fd_h}
    return dict(options)


def describe_estimator(name: str, score: Callable, sde: SDE, options: dict, dtype=torch.float32) -> dict:
    """What the estimator is, as it runs on ``score``: its repr, how it forms ∂t s (a stencil
    and its steps, or exactly), whether it draws probes, what autodiff it needs."""
    est = get_estimator(name, **estimator_options(sde, options))
    return {
        "name": name,
        "estimator": repr(est),
        "time_stencil": est.time_stencil or "exact (jvp)",
        "time_step": est.time_step(score, dtype),
        "stochastic": est.stochastic,
        "needs_autograd": est.needs_autograd,
        "needs_forward_mode": est.needs_forward_mode,
    }


def _time_derivative(score: Callable, sde: SDE, xt, tt, estimator: str, options: dict) -> torch.Tensor:
    """∂t s as the estimator forms it: its stencil and step in t, or exactly (jvp) where it is exact."""
    est = get_estimator(estimator, **options)
    stencil = est.time_stencil
    if stencil is None:
        return time_derivative(score, xt, tt, "jvp").detach()
    with torch.no_grad():
        return time_derivative(
            score,
            xt,
            tt,
            stencil if stencil in STENCILS else "central",
            h=est.time_step(score, xt.dtype),
            T=sde.T,
        )


def _rows(
    score: Callable, sde: SDE, xt, tt, z, *, estimator: str, curl: str | None, generator, options: dict
) -> dict[str, torch.Tensor]:
    """The ``COLUMNS`` of one model on one chunk, each ``[B]`` (float64, on the CPU)."""
    sq, L = residual_norm_sq(score, sde, xt, tt, estimator, generator=generator, **options)
    eps = residual(score, sde, xt, tt, estimator, generator=generator, **options)
    dt = _time_derivative(score, sde, xt, tt, estimator, options)
    dt2 = dt.flatten(1).pow(2).sum(1)
    out = {
        "fp2": sq,
        "dt2": dt2,
        "gradL2": dt2 - 2 * _dot(dt, eps) + sq,
        "dsm2": dsm_like(score, sde, xt, tt, z) ** 2,
        "absL": L.abs(),
    }
    if curl is not None:
        with explained(f"the curl (antisymmetry, {curl!r})"):
            out["curl2"] = antisymmetry(score, xt, tt, curl, generator=generator)
            out["jac2"] = _jacobian_sq(score, xt, tt, generator)
    return {k: v.detach().double().cpu() for k, v in out.items()}


def measure(
    models: Sequence[Callable],
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    estimator: str = "forward_fd",
    curl: str | None = "hutchinson",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    **options,
) -> dict:
    """Per-sample rows of every model at every t: ``{"t": [...], "rows": [model][t][column] -> [N]}``.

    ``models`` are scores on the one SDE ``sde``; ``x0 [N, ...]`` held-out data in its space.
    ``estimator`` and ``options`` go to ``residual_norm_sq`` and ``residual``; ``curl`` is
    ``"hutchinson"``, ``"exact"`` or None (skip ``curl2``/``jac2``).
    """
    from tqdm.auto import tqdm

    if any(not 0 < t <= sde.T for t in ts):
        raise ValueError(f"every t must lie in (0, {sde.T}], got {list(ts)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = estimator_options(sde, options)
    chunks = x0.split(batch_size)
    rows: list[list[dict[str, list[torch.Tensor]]]] = [[{k: [] for k in COLUMNS} for _ in ts] for _ in models]
    bar = tqdm(total=len(ts) * len(chunks) * len(models), desc="audit", disable=not progress)
    for i, t in enumerate(ts):
        for j, chunk in enumerate(chunks):
            draw_seed = (seed * 1_000_003 + i) * 10_007 + j
            for m, score in enumerate(models):
                gen = torch.Generator(device=x0.device).manual_seed(draw_seed)
                xt, tt, z = perturb_at(sde, chunk, t, gen)
                for k, v in _rows(
                    score, sde, xt, tt, z, estimator=estimator, curl=curl, generator=gen, options=options
                ).items():
                    rows[m][i][k].append(v)
                bar.update(1)
    bar.close()
    joined = [[{k: torch.cat(v) for k, v in at_t.items() if v} for at_t in per_model] for per_model in rows]
    return {"t": [float(t) for t in ts], "rows": joined}
