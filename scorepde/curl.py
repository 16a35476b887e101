"""Conservativity diagnostics: how far a score field is from being a gradient (Sec. 6.2).

A true score is a gradient, so its Jacobian J = ∂s/∂x is symmetric. In 2-D the curl is
∂₁s₂ − ∂₂s₁; in any D the antisymmetric part ‖J − Jᵀ‖_F measures the same thing
(‖J − Jᵀ‖_F² = 2 curl² in 2-D).
"""

from __future__ import annotations

import math

import torch
from torch.func import jvp

from .checks import check_batch_independent, check_inputs, check_output
from .derivatives import jacobian, sample_probes, vector_jacobian
from .typing import Score, renamed_keywords

__all__ = ["curl", "antisymmetry"]


def _prepare(score, x, t):
    t = check_inputs(x, t, T=math.inf)  # no SDE here, so no horizon: any t ≥ 0 the score takes
    check_batch_independent(score, x, t)
    return t, (lambda y: check_output(score(y, t), y))


@renamed_keywords(model="score")
def curl(score: Score, x: torch.Tensor, t) -> torch.Tensor:
    """The 2-D curl ∂₁s₂ − ∂₂s₁ of s(·, t) at x ``[B, 2]``, shape ``[B]``."""
    if x.flatten(1).shape[1] != 2:
        raise ValueError(
            f"curl is defined for 2-D fields; x has {x.flatten(1).shape[1]} features. "
            "Use scorepde.antisymmetry for any dimension"
        )
    t, field = _prepare(score, x, t)
    J = jacobian(field, x)
    return J[:, 1, 0] - J[:, 0, 1]


@renamed_keywords(model="score")
def antisymmetry(
    score: Score,
    x: torch.Tensor,
    t,
    method: str = "exact",
    *,
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """‖J − Jᵀ‖_F² per sample, ``[B]``, J = ∂s/∂x.

    ``"exact"`` forms J with D Jacobian-vector products (small D). ``"hutchinson"`` uses
    E_v ‖(J − Jᵀ) v‖² = ‖J − Jᵀ‖_F² for E[v vᵀ] = I: one jvp and one vjp per probe,
    unbiased for the squared norm (its square root is not).
    """
    t, field = _prepare(score, x, t)
    if method == "exact":
        J = jacobian(field, x)
        return (J - J.transpose(1, 2)).pow(2).sum((1, 2))
    if method != "hutchinson":
        raise ValueError(f"unknown method {method!r}; choose 'exact' or 'hutchinson'")
    total = 0.0
    for v in sample_probes(x, n_probes, probe, generator):
        Jv = jvp(field, (x,), (v,))[1]
        vJ = vector_jacobian(field, x, v)
        total = total + (Jv - vJ).flatten(1).pow(2).sum(1)
    return total / n_probes
