"""Residual curves over t (Sec. 3.1, Fig. 1; App. B.2, Table 4).

    r_FP(t)       = E ‖ε[s](x_t, t)‖₂
    r_DSM-like(t) = E ‖s(x_t, t) − ∇ log q_0t(x_t | x_0)‖₂,   x_t = a(t) x_0 + σ_t z

with x_0 from the data. The second is what DSM drives down; the first is what the score
FPE asks for. A score can be small in one and large in the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_inputs
from .derivatives import broadcast_to_batch
from .fpe import residual
from .sde import SDE
from .typing import Score, renamed_keywords

__all__ = ["residual_curves", "perturb_at", "dsm_like"]


def perturb_at(sde: SDE, x0: torch.Tensor, t: float, generator: torch.Generator | None = None):
    """(x_t, t, z): every x_0 pushed to the one time ``t`` with fresh z ~ N(0, I)."""
    tt = torch.full((x0.shape[0],), float(t), dtype=x0.dtype, device=x0.device)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return sde.perturb(x0, tt, z), tt, z


@renamed_keywords(model="score")
def dsm_like(score: Score, sde: SDE, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖s(x_t, t) − ∇ log q_0t(x_t | x_0)‖₂ per sample ``[B]``, with ∇ log q_0t = −z/σ_t."""
    with torch.no_grad():
        std = broadcast_to_batch(sde.marginal(t)[1], xt)
        return (score(xt, t) + z / std).flatten(1).norm(dim=1)


@renamed_keywords(model="score")
def residual_curves(
    score: Score,
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    estimator: str = "exact",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **options,
) -> dict[str, list]:
    """r_FP(t) and r_DSM-like(t) on the grid ``ts`` for data ``x0 [N, ...]``.

    Returns ``{"t": [...], "r_fp": [...], "r_dsm": [...]}`` (means over the N samples).
    ``estimator`` and ``options`` go to ``scorepde.residual``.
    """
    ts = [float(t) for t in ts]
    check_inputs(x0, 0.0, sde.T)
    if any(not 0 <= t <= sde.T for t in ts):
        raise ValueError(f"every t must lie in [0, {sde.T}], got {ts}")
    bs = batch_size or x0.shape[0]
    out = {"t": ts, "r_fp": [], "r_dsm": []}
    iterator = ts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ts, desc="residual curves")
    for t in iterator:
        fp, dsm = 0.0, 0.0
        for chunk in x0.split(bs):
            xt, tt, z = perturb_at(sde, chunk, t, generator)
            eps = residual(score, sde, xt, tt, estimator, generator=generator, **options)
            fp += eps.detach().flatten(1).norm(dim=1).sum().item()
            dsm += dsm_like(score, sde, xt, tt, z).sum().item()
        out["r_fp"].append(fp / x0.shape[0])
        out["r_dsm"].append(dsm / x0.shape[0])
    return out
