"""ε[s] from plain forward passes only: ``forward_fd`` (Eq. 24 by central differences).

⟨ε, v⟩ = ⟨∂t s, v⟩ − D_v L with every derivative of the score a difference of plain
forwards, all in one batched call (``projected_residual_fd``): no autograd through the score
in x or t, so it runs on any model, and ``FPObjective`` can share that call with the DSM
term. Steps hx·σ̃_t in x (σ̃_t² = σ_t² + ``sde.sigma_floor``²) and h in t (by default from the
score's time conditioning, ``derivatives.time_steps``).
"""

from __future__ import annotations

import torch
from torch.func import jvp

from ..derivatives import broadcast_to_batch, sample_probes, stencil_points, time_steps
from ..sde import SDE
from ..typing import Score
from .directional import Projected

__all__ = ["ForwardFD", "projected_residual_fd", "x_step"]


class ForwardFD(Projected):
    """⟨ε, v⟩ by ``projected_residual_fd``: div s with one Hutchinson probe, ∂t s by the
    stencil ``dt`` (``"central"``, ``"fd3"``, ``"one_sided"``) or a jvp (``"jvp"``)."""

    OPTIONS = dict(
        dt="central",
        h="auto",
        hx=0.05,
        probe="rademacher",
        direction_probe="rademacher",
        n_directions=1,
        div="hutchinson",
        n_probes=1,
    )

    def _check(self) -> None:
        if self._options["div"] != "hutchinson" or self._options["n_probes"] != 1:
            raise ValueError(
                f"{self.name!r} forms div s with one Hutchinson probe by differences: "
                "use div='hutchinson', n_probes=1"
            )
        if self._options["hx"] <= 0:
            raise ValueError(f"the step in x must be positive, got hx={self._options['hx']}")

    @property
    def needs_forward_mode(self) -> bool:
        """Only for ``dt="jvp"`` (a jvp of the score in t)."""
        return self.time_stencil is None

    def project(self, score, sde, x, t, v, generator=None):
        o = self._options
        return projected_residual_fd(
            score, sde, x, t, v, generator=generator, probe=o["probe"], hx=o["hx"], dt=o["dt"], h=o["h"]
        )


def x_step(sde: SDE, t: torch.Tensor, hx: float) -> torch.Tensor:
    """The step in x, per sample ``[B]``: hx·sqrt(σ_t² + σ_floor²), since the score varies
    on the scale σ_t; the floor (``sde.sigma_floor``, the same as the score's own σ̃) keeps it
    positive at t = 0, where σ_t = 0. hx itself for an SDE without a closed-form kernel."""
    if hx <= 0:
        raise ValueError(f"the step in x must be positive, got hx={hx}")
    try:
        var = sde.marginal_variance(t)
    except NotImplementedError:
        return torch.full_like(t, hx)
    return hx * torch.sqrt(var + sde.sigma_floor**2)


def projected_residual_fd(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    probe: str = "rademacher",
    hx: float = 0.05,
    dt: str = "central",
    h="auto",
) -> tuple[torch.Tensor, torch.Tensor]:
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
    d = x_step(sde, t, hx).to(x.dtype)
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
    mixed = dot(s_pp - s_pm - s_mp + s_mm, u) / (4 * d**2)
    div_s = dot(s_pp + s_pm - s_mp - s_mm, u) / (4 * d)
    s = 0.25 * (s_pp + s_pm + s_mp + s_mm)
    dv_s = (s_pp - s_pm + s_mp - s_mm) / broadcast_to_batch(4 * d, x)
    if dt == "jvp":
        dt_sv = jvp(lambda tt: dot(score(x, tt), v), (t,), (torch.ones_like(t),))[1]
    elif dt == "one_sided":
        dt_sv = weights[0] * dot(out[4] - s, v)
    else:
        dt_sv = sum(w * dot(o, v) for w, o in zip(weights, out[4:]))
    f, dv_f = jvp(lambda y: sde.drift(y, t), (x,), (v,))[:2]
    div_f, dv_div_f = jvp(lambda y: sde.drift_divergence(y, t), (x,), (v,))[:2]
    g2 = sde.diffusion(t) ** 2
    L = 0.5 * g2 * (div_s + dot(s, s)) - dot(f, s) - div_f
    dv_L = 0.5 * g2 * (mixed + 2 * dot(s, dv_s)) - dot(dv_f, s) - dot(f, dv_s) - dv_div_f
    return dt_sv - dv_L, L
