"""ε[s] with ∇x L[s] by reverse mode: ``exact``, ``paper`` and ``hutchinson`` (Eq. 9).

    ε = ∂t s − ∇x L[s],   L[s] from ``fpe_rhs_and_score`` (Eq. 7)

∂t s by forward mode (``dt="jvp"``) or a stencil in t (``"fd3"``, the paper's App. C.1;
``"central"``; ``"forward"``); div s exact (D jvps) or by Hutchinson (App. C.2), each
vᵀJv by a jvp (``div_mode="forward"``) or a vjp (``"reverse"``, as the paper's code).
"""

from __future__ import annotations

import torch
from torch.func import grad

from ..derivatives import time_derivative
from ..sde import SDE
from ..typing import Score
from .base import Estimator, div_probes, fpe_rhs_and_score

__all__ = ["Autograd"]


class Autograd(Estimator):
    """∇x L by ``torch.func.grad``: needs reverse mode through the score in x."""

    OPTIONS = dict(
        dt="jvp", h="auto", div="exact", probe="rademacher", n_probes=1, div_mode="forward", chunk_size=None
    )

    def _check(self) -> None:
        if self._options["dt"] == "one_sided":
            raise ValueError(
                "dt='one_sided' reuses the corners' mean of forward_fd as s(x, t); "
                "use it with estimator='forward_fd', or pick dt='jvp', 'central' or 'fd3'"
            )

    @property
    def needs_forward_mode(self) -> bool:
        """A jvp in t (``dt="jvp"``) or in x (div s with ``div_mode="forward"``)."""
        return self.time_stencil is None or self._options["div_mode"] == "forward"

    def residual(
        self,
        score: Score,
        sde: SDE,
        x: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        o = self._options
        probes = div_probes(x, o, generator)

        def total_rhs(y):
            L, s = fpe_rhs_and_score(
                score, sde, y, t, o["div"], probes, div_mode=o["div_mode"], chunk_size=o["chunk_size"]
            )
            return L.sum(), (L, s)

        grad_L, (L, s) = grad(total_rhs, has_aux=True)(x)
        dt_s = time_derivative(score, x, t, o["dt"], h=o["h"], T=sde.T, center=s)
        return dt_s - grad_L, L
