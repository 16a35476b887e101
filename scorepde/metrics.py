"""Scalar diagnostics of a score model over t and of its density (toy experiments).

    rel_L2(t)   = sqrt(E_{q_t} ‖s_θ − s‖²) / sqrt(E_{q_t} ‖s‖²)   (against a reference score s)
    curl_MSE(t) = E_{q_t} (∂₁s₂ − ∂₂s₁)²                            (Sec. 6.2, Fig. 3; 2-D)
    NLL         = −(1/N) Σ log p(x_i)                                (nats per sample)

``score_pinn_errors`` gives the same fit in the convention of Score-PINN (Hu et al., SIAM J.
Sci. Comput. 2025; their code's ``L2_pinn``, ``L2_pinn_Q``): the score's absolute errors pooled
over (x, t) pairs and coordinates, and the relative L2 error of the per-dimension log-density
log q_t(x)/D.

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

__all__ = ["relative_score_error", "score_pinn_errors", "curl_mse", "nll", "cross_entropy"]


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


def score_pinn_errors(
    score: Score,
    reference: Score,
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    reference_log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    n_log_prob: int = 0,
    generator: torch.Generator | None = None,
    **likelihood_options,
) -> dict:
    """Score-PINN's error measures at x_t ~ q_t for each t in ``ts`` (pooled over the pairs):

        score_mae  = mean |s_θ − s|,   score_rmse = sqrt(mean (s_θ − s)²)   over pairs and coordinates
        logp_per_dim_rel_l2 = ‖q̂ − q‖₂ / ‖q‖₂,   q = log q_t(x)/D over pairs

    Score-PINN learns q with a second network; here q̂ is the fitted score's own log-density by
    the probability-flow ODE from t to T (``scorepde.log_likelihood`` with ``likelihood_options``),
    on the first ``n_log_prob`` points per t (0: skipped), against ``reference_log_prob(x, t)``."""
    abs_sum, sq_sum, count, q_true, q_model = 0.0, 0.0, 0, [], []
    for t in ts:
        xt, tt, _ = perturb_at(sde, x0, t, generator)
        with torch.no_grad():
            err = (score(xt, tt) - reference(xt, tt)).flatten(1)
        abs_sum, sq_sum, count = (
            abs_sum + float(err.abs().sum()),
            sq_sum + float(err.pow(2).sum()),
            count + err.numel(),
        )
        if n_log_prob and reference_log_prob is not None and 0.0 < t < sde.T:
            x = xt[:n_log_prob]
            q_model.append(log_likelihood(score, sde, x, float(t), **likelihood_options) / x[0].numel())
            q_true.append(reference_log_prob(x, tt[: len(x)]) / x[0].numel())
    out = {"score_mae": abs_sum / count, "score_rmse": (sq_sum / count) ** 0.5, "t": [float(t) for t in ts]}
    if q_true:
        q, q_hat = torch.cat(q_true).double(), torch.cat(q_model).double()
        out["logp_per_dim_rel_l2"] = float(torch.linalg.norm(q_hat - q) / torch.linalg.norm(q))
        out["n_log_prob"] = int(q.numel())
    return out


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
