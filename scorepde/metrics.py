"""Scalar diagnostics of a score model over t and of its density (toy experiments).

    rel_L2(t)   = sqrt(E_{q_t} ‖s_θ − s‖²) / sqrt(E_{q_t} ‖s‖²)   (against a reference score s)
    curl_MSE(t) = E_{q_t} (∂₁s₂ − ∂₂s₁)²                            (Sec. 6.2, Fig. 3; 2-D)
    NLL         = −(1/N) Σ log p(x_i)                                (nats per sample)

The expectations under q_t use x_t = a(t) x_0 + σ_t z for the given data x_0 and fresh z.
Each curve returns ``{"t": [...], <name>: [...], "mean": float}``, the mean being the
average over the grid (a time average for a uniform grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

from .curl import curl
from .curves import perturb_at
from .likelihood import log_likelihood
from .sde import SDE
from .typing import Score, renamed_keywords

__all__ = ["relative_score_error", "curl_mse", "nll", "cross_entropy"]


def _progress(ts, progress, desc):
    if not progress:
        return ts
    from tqdm.auto import tqdm

    return tqdm(ts, desc=desc, leave=False)


def _curve(name: str, value: Callable, sde: SDE, x0, ts, generator, progress: bool, desc: str) -> dict:
    """``{"t", name: value(x_t, t) at each t of ts, "mean"}``, x_t drawn from x0 afresh at each t."""
    out = {"t": [float(t) for t in ts], name: []}
    for t in _progress(out["t"], progress, desc):
        xt, tt, _ = perturb_at(sde, x0, t, generator)
        out[name].append(value(xt, tt))
    out["mean"] = sum(out[name]) / len(out[name])
    return out


@renamed_keywords(model="score")
def relative_score_error(
    score: Score,
    reference: Score,
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict:
    """rel_L2(t) of ``score`` against ``reference`` on the grid ``ts`` (both ``score(x, t)``)."""

    def rel_l2(xt, tt):
        with torch.no_grad():
            ref = reference(xt, tt)
            err = (score(xt, tt) - ref).flatten(1).pow(2).sum(1).mean()
            return float(torch.sqrt(err / ref.flatten(1).pow(2).sum(1).mean()))

    return _curve("rel_l2", rel_l2, sde, x0, ts, generator, progress, "score rel. L2")


@renamed_keywords(model="score")
def curl_mse(
    score: Score,
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict:
    """curl_MSE(t) of a 2-D score on the grid ``ts``: the mean squared curl under q_t."""
    value = lambda xt, tt: float(curl(score, xt, tt).detach().pow(2).mean())
    return _curve("curl_mse", value, sde, x0, ts, generator, progress, "curl MSE")


@renamed_keywords(model="score")
def nll(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    eps: float = 1e-5,
    *,
    batch_size: int = 1000,
    progress: bool = False,
    nan_on_failure: bool = False,
    **likelihood_options,
) -> torch.Tensor:
    """−log p_eps(x) per sample ``[N]`` by the probability-flow ODE (``scorepde.log_likelihood``),
    in batches of ``batch_size``; ``likelihood_options`` (div, rtol, atol, ...) go there.
    ``nan_on_failure``: a batch whose solve fails is halved until the failing points are
    alone, and those come back NaN (far-tail or stiff points of a long-trained model)."""

    def solve(c):
        try:
            return -log_likelihood(score, sde, c, eps, **likelihood_options)
        except ValueError:
            if not nan_on_failure:
                raise
            if len(c) == 1:
                return torch.full((1,), float("nan"))
            return torch.cat([solve(half) for half in c.split((len(c) + 1) // 2)])

    chunks = x.split(batch_size)
    return torch.cat([solve(c) for c in _progress(chunks, progress and len(chunks) > 1, "NLL")])


def cross_entropy(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """−(1/N) Σ log p(x_i) for an exact log-density: the true NLL, the floor for a model's."""
    return float(-log_prob(x).mean())
