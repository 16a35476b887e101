"""What every estimator of ε[s] is, and L[s] itself, which they all form.

    L[s](x, t) = ½g² div_x s + ½g² ‖s‖² − ⟨f, s⟩ − div_x f          (Eq. 7)
    ε[s](x, t) = ∂t s − ∇x L[s]                                       (Eq. 9)

An ``Estimator`` is a small object made from a name's preset and the caller's overrides
(``scorepde.estimators.ESTIMATORS``). It says what it needs of the score (reverse mode in x,
forward mode, or plain forwards only) and which stencil in t it uses, and it gives ε with
L[s] (``residual``) and ‖ε‖² (``norm_sq``: plug-in or unbiased). Callers ask it; they never
read its options.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..derivatives import divergence, sample_probes, time_steps
from ..sde import SDE
from ..typing import Score

__all__ = ["Estimator", "fpe_rhs_and_score", "div_probes"]


def fpe_rhs_and_score(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    div: str = "exact",
    probes: torch.Tensor | None = None,
    *,
    div_mode: str = "forward",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L[s](x, t) ``[B]``, s(x, t)) with div s formed as ``div`` says (Eq. 7)."""
    s = score(x, t)
    g2 = sde.diffusion(t) ** 2
    div_s = divergence(lambda y: score(y, t), x, div, probes=probes, mode=div_mode, chunk_size=chunk_size)
    f = sde.drift(x, t)
    L = (
        0.5 * g2 * (div_s + s.flatten(1).pow(2).sum(1))
        - (f * s).flatten(1).sum(1)
        - sde.drift_divergence(x, t)
    )
    return L, s


def div_probes(x: torch.Tensor, options: dict, generator) -> torch.Tensor | None:
    """The Hutchinson probes of div s (``n_probes`` of kind ``probe``), or None for ``div="exact"``."""
    if options["div"] != "hutchinson":
        return None
    return sample_probes(x, options["n_probes"], options["probe"], generator)


class Estimator:
    """One family of estimators of ε[s]; an instance is one configured member of it.

    A family sets ``OPTIONS`` (its option names and defaults: a name outside them is a
    ValueError naming the valid ones), ``needs_autograd`` and ``needs_forward_mode``, and
    implements ``residual``; ``norm_sq`` comes for free (override it where a family does
    better). Instances are immutable and hold no tensors.
    """

    #: This family's option names and their defaults.
    OPTIONS: ClassVar[dict] = {}

    def __init__(self, name: str, **options):
        unknown = set(options) - set(self.OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown residual option(s) {sorted(unknown)} for estimator {name!r}; "
                f"valid: {sorted(self.OPTIONS)}"
            )
        self.name = name
        self._options = {**self.OPTIONS, **options}
        self._check()

    def _check(self) -> None:
        """Refuse option values this family cannot use (a ValueError naming the fix)."""

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._options.items() if self.OPTIONS.get(k) != v}
        return f"{type(self).__name__}({self.name!r}{''.join(f', {k}={v!r}' for k, v in changed.items())})"

    def for_score(self, score: Score, dtype: torch.dtype) -> Estimator:
        """This estimator with its steps in t fixed for ``score`` (``h="auto"`` resolved from the
        score's time conditioning, ``derivatives.time_steps``), so wrapping the score later
        cannot change them."""
        resolved = type(self).__new__(type(self))
        resolved.name = self.name
        resolved._options = dict(self._options)
        if "h" in resolved._options:
            resolved._options["h"] = time_steps(score, self._options["h"], dtype)
        return resolved

    # -- what it is ------------------------------------------------------------------------
    #: Reverse mode through the score in x (``torch.func.grad``).
    needs_autograd: ClassVar[bool] = True

    @property
    def needs_forward_mode(self) -> bool:
        """Forward mode (jvp) through the score, in x or in t."""
        return self.time_stencil is None

    @property
    def plain_forwards_only(self) -> bool:
        """Only plain forward calls of the score: no torch.func transform around it, so its
        outputs may leave the call (``FPObjective`` then shares the DSM forward with it)."""
        return not (self.needs_autograd or self.needs_forward_mode)

    @property
    def time_stencil(self) -> str | None:
        """The finite-difference stencil in t (``derivatives.STENCILS``), or None when ∂t s is
        exact (forward mode)."""
        dt = self._options.get("dt", "jvp")
        return None if dt == "jvp" else dt

    def time_step(self, score: Score, dtype: torch.dtype = torch.float32) -> tuple[float, float] | None:
        """(h_s, h_d), the steps in t this estimator takes for ``score``; None when ∂t s is exact."""
        if self.time_stencil is None:
            return None
        return time_steps(score, self._options["h"], dtype)

    @property
    def stochastic(self) -> bool:
        """Whether ε̂ depends on random draws (then ``norm_sq(unbiased=True)`` uses two)."""
        return self._options.get("div") == "hutchinson"

    # -- what it gives ---------------------------------------------------------------------
    def residual(
        self,
        score: Score,
        sde: SDE,
        x: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂ shaped like x, L[s] ``[B]``) at (x, t); inputs already validated."""
        raise NotImplementedError

    def norm_sq(
        self,
        score: Score,
        sde: SDE,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        unbiased: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(an estimate of ‖ε‖², L[s]), each ``[B]``: ‖ε̂‖² (deterministic, or ``unbiased=False``:
        biased upwards by tr Cov ε̂), else ⟨ε̂₁, ε̂₂⟩ of two independent draws in one batched
        call, E = ‖ε‖²."""
        if not (self.stochastic and unbiased):
            eps, L = self.residual(score, sde, x, t, generator)
            return eps.flatten(1).pow(2).sum(1), L
        eps, L = self.residual(score, sde, torch.cat([x, x]), torch.cat([t, t]), generator)
        e1, e2 = eps.chunk(2)
        return (e1 * e2).flatten(1).sum(1), L.chunk(2)[0]
