"""Reference implementations that scorepde's benchmarks compare against, written from the
published descriptions of other codebases. Not for use: each is here to be timed and to
agree with scorepde's answer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .likelihood import probability_flow_drift
from .sde import SDE

__all__ = ["scipy_log_likelihood"]


def _divergence_fn(drift: Callable, trace: str, probe: torch.Tensor) -> Callable:
    """div of the drift by a second forward and ``autograd.grad``: Hutchinson with one fixed
    probe, or the exact trace by D gradients."""

    def div_fn(y, t):
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            out = drift(y, t)
            if trace == "hutchinson":
                grad = torch.autograd.grad((out * probe).sum(), y)[0]
                return (grad * probe).flatten(1).sum(1)
            flat = out.flatten(1)
            return sum(
                torch.autograd.grad(flat[:, i].sum(), y, retain_graph=i < flat.shape[1] - 1)[0].flatten(1)[
                    :, i
                ]
                for i in range(flat.shape[1])
            )

    return div_fn


def scipy_log_likelihood(
    model: Callable,
    sde: SDE,
    x: torch.Tensor,
    trace: str,
    probe: torch.Tensor,
    *,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[torch.Tensor, int]:
    """log p_eps(x) and the NFE, as score_sde_pytorch's ``likelihood.py`` computes it:
    ``scipy.integrate.solve_ivp`` (RK45) on one flat float64 state of the whole batch, a
    numpy → torch → numpy round trip at every evaluation, the drift from a plain forward and
    the divergence from a second forward (``trace``: ``"hutchinson"`` with ``probe``, else exact)."""
    from scipy.integrate import solve_ivp

    shape, B, dtype = x.shape, x.shape[0], x.dtype
    drift_fn = lambda y, t: probability_flow_drift(model, sde, y, t)
    div_fn = _divergence_fn(drift_fn, trace, probe)
    nfe = 0

    def ode_func(t, state):
        nonlocal nfe
        nfe += 1
        y = torch.from_numpy(state[:-B]).to(dtype).reshape(shape)
        vec_t = torch.full((B,), t, dtype=dtype)
        with torch.no_grad():
            drift = drift_fn(y, vec_t).numpy().reshape(-1)
        logp_grad = div_fn(y, vec_t).detach().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad]).astype(np.float64)

    init = np.concatenate([x.detach().numpy().reshape(-1), np.zeros(B)]).astype(np.float64)
    sol = solve_ivp(ode_func, (eps, float(sde.T)), init, rtol=rtol, atol=atol, method="RK45")
    z = torch.from_numpy(sol.y[:-B, -1]).to(dtype).reshape(shape)
    delta = torch.from_numpy(sol.y[-B:, -1]).to(dtype)
    return sde.prior_log_prob(z) + delta, nfe
