"""Samplers: plain functions of a score model that run the SDE backwards from the prior.

    reverse SDE:      dx = [f(x, t) − g(t)² s(x, t)] dt + g(t) dw̄      (t from T down to eps)
    probability flow: dx/dt = f(x, t) − ½g(t)² s(x, t)

Each sampler takes ``shape_or_xT``: a shape (x_T is then drawn from the SDE's prior with
``generator``) or the initial noise itself. The SDE samplers step on a uniform grid
T = t_0 > … > t_steps = eps; with ``denoise`` the last step returns its mean, without noise.
Nothing here keeps an autograd graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
from tqdm.auto import tqdm

from .checks import check_finite
from .derivatives import broadcast_to_batch
from .likelihood import probability_flow_drift, solve_ode
from .sde import SDE
from .typing import Score, renamed_keywords

ShapeOrNoise = Union[Sequence[int], torch.Tensor]

__all__ = ["reverse_drift", "euler_maruyama", "predictor_corrector", "probability_flow"]


@renamed_keywords(model="score")
def reverse_drift(score: Score, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x, t) − g(t)² s(x, t), the reverse SDE's drift, shaped like x."""
    return sde.drift(x, t) - broadcast_to_batch(sde.diffusion(t) ** 2, x) * score(x, t)


def _initial(sde: SDE, shape_or_xT: ShapeOrNoise, generator, device, dtype) -> torch.Tensor:
    """x_T: the given noise, or a prior draw of the given shape."""
    if isinstance(shape_or_xT, torch.Tensor):
        if not torch.is_floating_point(shape_or_xT) or shape_or_xT.dim() < 2:
            raise ValueError(
                f"initial noise must be a floating tensor of shape [B, ...], got "
                f"{shape_or_xT.dtype} {tuple(shape_or_xT.shape)}; or pass a shape"
            )
        return shape_or_xT.detach().clone()
    shape = tuple(int(n) for n in shape_or_xT)
    if len(shape) < 2:
        raise ValueError(f"shape must be (B, ...) with at least 2 dims, got {shape}; add a feature axis")
    return sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)


def _grid(sde: SDE, steps: int, eps: float, x: torch.Tensor):
    """T = t_0 > t_1 > … > t_steps = eps on x's device, and the step sizes as floats (no syncs later)."""
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}; 1e-3 is usual for sampling")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    ts = torch.linspace(sde.T, eps, int(steps) + 1, dtype=torch.float64)
    return ts.to(x.device, x.dtype), (ts[:-1] - ts[1:]).tolist()


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _reverse_step(score, sde, x, t, h, generator):
    """One Euler–Maruyama step of the reverse SDE from t down to t − h: (mean, draw)."""
    mean = x - reverse_drift(score, sde, x, t) * h
    g = broadcast_to_batch(sde.diffusion(t), x)
    return mean, mean + g * math.sqrt(h) * _noise(x, generator)


def _langevin_alpha(sde: SDE, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """(a(t)/a(t_next))², score_sde's α_i = 1 − β_i for VP and 1 for VE; 1 without a kernel."""
    try:
        a, _ = sde.marginal(t)
        a_next, _ = sde.marginal(t_next)
    except NotImplementedError:
        return torch.ones_like(t)
    return (a / a_next) ** 2


def _langevin_step(score, sde, x, t, snr, alpha, generator):
    """x + δ s + sqrt(2δ) z with δ = 2α (snr ‖z‖ / ‖s‖)², norms averaged over the batch (score_sde)."""
    s = score(x, t)
    z = _noise(x, generator)
    grad_norm = s.flatten(1).norm(dim=1).mean()
    noise_norm = z.flatten(1).norm(dim=1).mean()
    step = broadcast_to_batch(2 * alpha * (snr * noise_norm / grad_norm) ** 2, x)
    mean = x + step * s
    return mean, mean + torch.sqrt(2 * step) * z


@torch.no_grad()
@renamed_keywords(model="score")
def euler_maruyama(
    score: Score,
    sde: SDE,
    shape_or_xT: ShapeOrNoise,
    *,
    steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Euler–Maruyama on the reverse SDE from T to eps in ``steps`` uniform steps.

    x ← x − [f − g² s](x, t) h + g(t) sqrt(h) z,  h = (T − eps)/steps.
    """
    x = _initial(sde, shape_or_xT, generator, device, dtype)
    ts, hs = _grid(sde, steps, eps, x)
    B = x.shape[0]
    for i in tqdm(range(int(steps)), disable=not progress, desc="euler_maruyama"):
        mean, x = _reverse_step(score, sde, x, ts[i].expand(B), hs[i], generator)
    x = mean if denoise else x
    return check_finite(x, "the Euler–Maruyama sample")


@torch.no_grad()
@renamed_keywords(model="score")
def predictor_corrector(
    score: Score,
    sde: SDE,
    shape_or_xT: ShapeOrNoise,
    *,
    steps: int = 1000,
    snr: float = 0.16,
    n_corrector: int = 1,
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Predictor–corrector sampling as in score_sde (Song et al., 2021): at each t, ``n_corrector``
    Langevin steps at signal-to-noise ratio ``snr``, then one reverse-SDE (Euler–Maruyama) step.

    Langevin step: x ← x + δ s + sqrt(2δ) z, δ = 2α (snr ‖z‖/‖s‖)² with batch-mean norms and
    α = (a(t)/a(t − h))², which is score_sde's 1 − β_i for VP and 1 for VE.
    """
    if snr <= 0 or int(n_corrector) != n_corrector or n_corrector < 0:
        raise ValueError(f"need snr > 0 and an integer n_corrector >= 0, got {snr}, {n_corrector}")
    x = _initial(sde, shape_or_xT, generator, device, dtype)
    ts, hs = _grid(sde, steps, eps, x)
    B = x.shape[0]
    for i in tqdm(range(int(steps)), disable=not progress, desc="predictor_corrector"):
        t, t_next = ts[i].expand(B), ts[i + 1].expand(B)
        alpha = _langevin_alpha(sde, t, t_next)
        for _ in range(int(n_corrector)):
            _, x = _langevin_step(score, sde, x, t, snr, alpha, generator)
        mean, x = _reverse_step(score, sde, x, t, hs[i], generator)
    x = mean if denoise else x
    return check_finite(x, "the predictor–corrector sample")


@torch.no_grad()
@renamed_keywords(model="score")
def probability_flow(
    score: Score,
    sde: SDE,
    shape_or_xT: ShapeOrNoise,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
    return_nfe: bool = False,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
):
    """Integrate the probability-flow ODE dx/dt = f − ½g² s from T down to eps (torchdiffeq).

    Deterministic given x_T. Returns x(eps), and the number of ODE evaluations with ``return_nfe``.
    """
    x = _initial(sde, shape_or_xT, generator, device, dtype)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}; 1e-3 is usual for sampling")
    B, nfe = x.shape[0], 0

    def ode(t, y):
        nonlocal nfe
        nfe += 1
        return probability_flow_drift(score, sde, y, t.to(y.dtype).expand(B))

    x = solve_ode(ode, x, sde.T, eps, rtol=rtol, atol=atol, method=method, options=options)
    check_finite(x, "the probability-flow sample x(eps)")
    return (x, nfe) if return_nfe else x
