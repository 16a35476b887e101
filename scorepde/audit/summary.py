"""The audit's numbers from per-sample rows: each quantity, absolute and dimensionless, with its SE.

Every quantity is a function of the means of some ``measure.COLUMNS``, so one rule gives
every standard error, the paired differences between models included: the delta method
(``scorepde.stats.delta_method``) over the samples, which all models share.

  absolute                                   dimensionless (comparable across models, data, t)
  r_fp   sqrt E‖ε‖²                          rel_fp   r_fp / (sqrt E‖∂t s‖² + sqrt E‖∇x L‖²)
  r_dsm  sqrt E‖s + z/σ_t‖²                  rel_dsm  σ_t r_dsm / √D
  curl   sqrt E‖J − Jᵀ‖_F²                   rel_curl curl / (2 sqrt E‖J‖_F²)
  dt_s, grad_L: the two terms of ε = ∂t s − ∇x L (RMS); abs_L: E|L[s]|

Each ratio lies in [0, 1] (triangle inequality): 0 for the true score; about 0.7 for two
unrelated terms of equal size; rel_dsm = 1 is the score s = 0 (a network that predicts no
noise). Roots take their gradient at max(m, se(m)), so a mean square indistinguishable from
zero gets an SE of about sqrt(se)/2, not an infinite one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import torch

from ..stats import delta_method, standard_error

__all__ = ["QUANTITIES", "summarize", "differences", "MAIN"]

_TINY = 1e-300


def _root(m: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(m, min=0.0))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den  # NaN (reported as None) where both terms vanish


#: name → (label, columns, fn(means, σ_t, D)); the columns are those of ``measure.COLUMNS``.
QUANTITIES: dict[str, tuple[str, tuple[str, ...], Callable]] = {
    "rel_fp": (
        "r_FP / (‖∂t s‖ + ‖∇x L‖)",
        ("fp2", "dt2", "gradL2"),
        lambda m, s, d: _ratio(_root(m[0]), _root(m[1]) + _root(m[2])),
    ),
    "r_fp": ("r_FP = √E‖ε[s]‖²", ("fp2",), lambda m, s, d: _root(m[0])),
    "rel_dsm": ("σ_t r_DSM / √D", ("dsm2",), lambda m, s, d: s * _root(m[0]) / math.sqrt(d)),
    "r_dsm": ("r_DSM = √E‖s + z/σ_t‖²", ("dsm2",), lambda m, s, d: _root(m[0])),
    "rel_curl": (
        "‖J − Jᵀ‖_F / 2‖J‖_F",
        ("curl2", "jac2"),
        lambda m, s, d: _ratio(_root(m[0]), 2 * _root(m[1])),
    ),
    "curl": ("√E‖J − Jᵀ‖_F²", ("curl2",), lambda m, s, d: _root(m[0])),
    "dt_s": ("√E‖∂t s‖²", ("dt2",), lambda m, s, d: _root(m[0])),
    "grad_L": ("√E‖∇x L[s]‖²", ("gradL2",), lambda m, s, d: _root(m[0])),
    "abs_L": ("E|L[s]|", ("absL",), lambda m, s, d: m[0]),
}

#: The quantities of the figure and the printed table, in that order.
MAIN = ("rel_fp", "r_fp", "rel_dsm", "rel_curl")


def _columns(rows: dict[str, torch.Tensor], cols: Sequence[str]) -> torch.Tensor | None:
    if any(c not in rows for c in cols):
        return None
    return torch.stack([rows[c] for c in cols], 1)


def _gradient_point(x: torch.Tensor) -> torch.Tensor:
    """max(mean, se, tiny) per column: where a root's slope is finite (module docstring)."""
    se = torch.tensor([standard_error(col) for col in x.T], dtype=x.dtype).nan_to_num(0.0)
    return torch.maximum(torch.maximum(x.mean(0), se), torch.full_like(se, _TINY))


def _estimate(fn: Callable, x: torch.Tensor) -> dict[str, float | None]:
    out = delta_method(fn, x, at=_gradient_point(x))
    mean = out["mean"]
    if mean is None or not math.isfinite(mean):
        return {"mean": None, "se": None}
    if out["se"] is not None and not math.isfinite(out["se"]):
        out["se"] = None
    return out


def summarize(
    rows: list[dict[str, torch.Tensor]], ts: Sequence[float], sigmas: Sequence[float], dim: int
) -> dict[str, list]:
    """``{quantity: [{"mean", "se"} or None per t]}`` of one model (None: not measured)."""
    out: dict[str, list] = {}
    for name, (_, cols, fn) in QUANTITIES.items():
        out[name] = []
        for at_t, sigma in zip(rows, sigmas):
            x = _columns(at_t, cols)
            out[name].append(None if x is None else _estimate(lambda m: fn(m, sigma, dim), x))
    return out


def differences(
    rows_a: list[dict[str, torch.Tensor]],
    rows_b: list[dict[str, torch.Tensor]],
    sigmas: Sequence[float],
    dim: int,
) -> dict[str, list]:
    """``{quantity: [{"mean", "se"} of B − A per t]}``, paired over the shared samples."""
    out: dict[str, list] = {}
    for name, (_, cols, fn) in QUANTITIES.items():
        k = len(cols)
        out[name] = []
        for a, b, sigma in zip(rows_a, rows_b, sigmas):
            xa, xb = _columns(a, cols), _columns(b, cols)
            if xa is None or xb is None:
                out[name].append(None)
                continue
            pair = lambda m: fn(m[k:], sigma, dim) - fn(m[:k], sigma, dim)
            out[name].append(_estimate(pair, torch.cat([xa, xb], 1)))
    return out
