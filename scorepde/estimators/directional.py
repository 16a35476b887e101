"""ε[s] from its projections ⟨ε, v⟩ on random directions, E[v vᵀ] = I (Eq. 24), by forward
mode only: ``directional``.

    ε ≈ (1/K) Σ_k ⟨ε, v_k⟩ v_k,      ⟨ε, v⟩ = ⟨∂t s, v⟩ − D_v L[s]     (App. C.4, Lemma C.3)

unbiased for ε; E_v ⟨ε, v⟩² = ‖ε‖², so ‖ε‖² needs no D-dimensional vector at all.
``Projected`` is what every such family shares; it only needs ``project``.
"""

from __future__ import annotations

import torch
from torch.func import jvp

from ..derivatives import broadcast_to_batch, sample_probes, time_derivative
from ..sde import SDE
from ..typing import Score
from .autograd import Autograd
from .base import Estimator, div_probes, fpe_rhs_and_score

__all__ = ["Projected", "Directional"]


class Projected(Estimator):
    """ε and ‖ε‖² from ``project`` = (⟨ε, v⟩, L[s]) along ``n_directions`` directions v of kind
    ``direction_probe``: no reverse pass over x."""

    needs_autograd = False

    def project(
        self,
        score: Score,
        sde: SDE,
        x: torch.Tensor,
        t: torch.Tensor,
        v: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(⟨ε, v⟩, L[s]) per sample, each ``[B]``."""
        raise NotImplementedError

    def _directions(self, x, generator) -> torch.Tensor:
        return sample_probes(x, self._options["n_directions"], self._options["direction_probe"], generator)

    def residual(self, score, sde, x, t, generator=None):
        """ε ≈ (1/K) Σ_k ⟨ε, v_k⟩ v_k (Eq. 24): unbiased for ε."""
        V = self._directions(x, generator)
        if V.shape[0] == 1:
            proj, L = self.project(score, sde, x, t, V[0], generator)
            return broadcast_to_batch(proj, x) * V[0], L
        # Probes must differ per direction: draw them outside vmap, one set per direction.
        projs, Ls = zip(*(self.project(score, sde, x, t, v, generator) for v in V))
        eps = sum(broadcast_to_batch(p, x) * v for p, v in zip(projs, V)) / V.shape[0]
        return eps, torch.stack(Ls).mean(0)

    def norm_sq(self, score, sde, x, t, *, unbiased=True, generator=None):
        """(1/K) Σ_k ⟨ε, v_k⟩² over K = ``n_directions``, E_v⟨ε, v⟩² = ‖ε‖²; unbiased: each
        ⟨ε, v_k⟩² as the product of two independent inner draws along a shared v_k. All draws
        run as one batched call; L[s] is their mean."""
        V = self._directions(x, generator)
        reps = 2 if (self.stochastic and unbiased) else 1
        n = V.shape[0] * reps
        vs = V.repeat_interleave(reps, dim=0).flatten(0, 1)
        proj, L = self.project(score, sde, x.repeat((n,) + (1,) * (x.dim() - 1)), t.repeat(n), vs, generator)
        proj = proj.view(V.shape[0], reps, x.shape[0])
        sq = proj[:, 0] * proj[:, -1]  # p₁p₂ (unbiased) or p² (single draw)
        return sq.mean(0), L.view(n, x.shape[0]).mean(0)


class Directional(Projected):
    """⟨ε, v⟩ = ⟨∂t s, v⟩ − D_v L by forward mode (a jvp of L along v); div s as in
    ``Autograd`` (exact or Hutchinson)."""

    OPTIONS = dict(Autograd.OPTIONS, direction_probe="rademacher", n_directions=1)
    _check = Autograd._check

    @property
    def needs_forward_mode(self) -> bool:
        return True

    def project(self, score, sde, x, t, v, generator=None):
        o = self._options
        probes = div_probes(x, o, generator)
        rhs = lambda y: fpe_rhs_and_score(
            score, sde, y, t, o["div"], probes, div_mode=o["div_mode"], chunk_size=o["chunk_size"]
        )[0]
        L, dv_L = jvp(rhs, (x,), (v,))
        if o["dt"] == "jvp":
            dt_sv = jvp(lambda tt: (score(x, tt) * v).flatten(1).sum(1), (t,), (torch.ones_like(t),))[1]
        else:
            dt_sv = (time_derivative(score, x, t, o["dt"], h=o["h"], T=sde.T) * v).flatten(1).sum(1)
        return dt_sv - dv_L, L
