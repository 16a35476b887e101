"""Named estimators of the score-FPE residual ε[s] (Eq. 9), one module per family.

    ESTIMATORS[name] = (family, preset)      get_estimator(name, **overrides) -> Estimator

A family (``Estimator`` subclass) is the code: ``autograd`` (∇x L by reverse mode),
``directional`` (⟨ε, v⟩v by forward mode, Eq. 24), ``forward_fd`` (Eq. 24 from plain
forwards). A preset fixes some of its options; keywords override them. A new estimator is
one family (or an existing one) plus one line in ``ESTIMATORS``; ``residual``,
``residual_norm_sq``, ``FPObjective`` and the audit then take its name.
"""

from __future__ import annotations

from ..derivatives import PAPER_STEPS
from .autograd import Autograd
from .base import Estimator, fpe_rhs_and_score
from .directional import Directional, Projected
from .forward_fd import ForwardFD

__all__ = [
    "ESTIMATORS",
    "get_estimator",
    "Estimator",
    "Autograd",
    "Directional",
    "Projected",
    "ForwardFD",
    "fpe_rhs_and_score",
]

#: name -> (family, preset of its options).
ESTIMATORS: dict[str, tuple[type[Estimator], dict]] = {
    "exact": (Autograd, dict(dt="jvp", div="exact")),
    # The published recipe (App. C): 3-point stencil in t with the published steps (h_s, h_d)
    # = (1e-3, 5e-4), one Gaussian Hutchinson probe formed by a vector-Jacobian product, then
    # autograd's gradient of L. Those steps turn the fastest time feature of a net conditioned
    # on 999 t or on Fourier features of log σ by about a radian: ∂t s is then 10-20% off the
    # jvp (benchmarks/time_steps.py). Pass h="auto" for steps from the net's conditioning.
    "paper": (
        Autograd,
        dict(dt="fd3", div="hutchinson", probe="gaussian", div_mode="reverse", h=PAPER_STEPS),
    ),
    "hutchinson": (Autograd, dict(dt="jvp", div="hutchinson")),
    "directional": (Directional, dict(dt="jvp", div="hutchinson")),
    # ⟨ε, v⟩ v with every derivative a central difference of plain forwards, all in one
    # batched forward (no autograd in x or t): steps hx·σ_t in x, h in t (by default from the
    # net's time conditioning, ``derivatives.time_steps``).
    "forward_fd": (ForwardFD, dict(dt="central")),
}


def get_estimator(name: str, **overrides) -> Estimator:
    """The estimator ``name`` of ``ESTIMATORS`` with its preset and ``overrides``; an unknown
    name or option is a ValueError naming the valid ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    family, preset = ESTIMATORS[name]
    return family(name, **{**preset, **overrides})
