"""Bits per dimension of discrete data under a continuous model, by uniform dequantization.

Data are integers k ∈ {0, …, L−1}^D (L = ``levels``). Dequantize u = (k + U)/L with
U ~ Uniform[0, 1)^D, so u ∈ [0, 1)^D, and feed the model x = a u + b (a = ``scale`` > 0,
b = ``shift``). The model's density on u is p_u(u) = a^D p_x(a u + b), and the discrete
model it induces puts on k the mass of k's bin, a cube of side 1/L:

    P(k) = ∫_{[k/L, (k+1)/L)^D} p_u(u) du = L^{−D} E_U[p_u((k + U)/L)]
    log P(k) ≥ E_U[log p_x(a u + b)] + D log a − D log L          (Jensen)

    bpd = −log P(k) / (D ln 2) ≤ −E_U[log p_x(x)] / (D ln 2) − log2 a + log2 L

The bound is tight when p_u is constant on each bin. score_sde's offset
``7 − inverse_scaler(−1)`` is this −log2 a + log2 L for L = 256 with a = 1, b = 0 (8) or
a = 2, b = −1 (7) only; here L, a and b are arguments.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .likelihood import log_likelihood
from .sde import SDE, VESDE
from .stats import standard_error
from .time_change import bpd_clock
from .typing import Score, renamed_keywords

__all__ = ["dequantize", "bits_per_dim", "evaluate_bpd", "bpd_solver_defaults", "check_discrete", "ORDERS"]


def _check_levels(levels: int) -> int:
    if int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer of at least 2 (256 for 8-bit images), got {levels}")
    return int(levels)


def check_discrete(k: torch.Tensor, levels: int) -> None:
    """Refuse data that are not integers in {0, …, levels−1}."""
    levels = _check_levels(levels)
    if k.is_complex() or k.dtype == torch.bool:
        raise ValueError(f"data must hold integers in 0..{levels - 1}, got dtype {k.dtype}")
    lo, hi = k.min().item(), k.max().item()
    if lo < 0 or hi > levels - 1:
        raise ValueError(
            f"data must lie in 0..{levels - 1} for levels={levels}, but observed "
            f"min {lo:g} and max {hi:g}; pass the integer data (e.g. uint8 pixels, "
            f"not images scaled to [0, 1]) and the matching number of levels"
        )
    if torch.is_floating_point(k) and not bool((k == k.round()).all()):
        raise ValueError(
            f"data must be integers in 0..{levels - 1} for levels={levels}, but some "
            f"values have a fractional part (observed max {hi:g}); pass the integer "
            f"data before any dequantization or scaling"
        )


def dequantize(
    k: torch.Tensor,
    levels: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """u = (k + U) / levels with U ~ Uniform[0, 1)^D: a point of k's bin in [0, 1)^D."""
    check_discrete(k, levels)
    noise = torch.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    # (k + U) can round up to k + 1 in float32 (255 + 0.99999994 → 256): stay inside [0, 1).
    return ((k.to(dtype) + noise) / levels).clamp_max(1.0 - torch.finfo(dtype).eps / 2)


def bits_per_dim(log_px: torch.Tensor, dim: int, levels: int, scale: float) -> torch.Tensor:
    """bpd = −log p_x / (D ln 2) − log2 a + log2 L: nats of the model density at x = a u + b to bits/dim.

    ``log_px`` is the model's log-density in nats at the dequantized, rescaled point (any
    shape); ``dim`` is D; the shift b does not enter.
    """
    levels = _check_levels(levels)
    if not scale > 0:
        raise ValueError(f"scale must be positive (x = scale·u + shift), got {scale}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer (features per sample), got {dim}")
    return -log_px / (dim * math.log(2)) - math.log2(scale) + math.log2(levels)


#: How the split is cut into solves (``evaluate_bpd``'s ``order``). With one step size for the
#: whole batch (``solver="torchdiffeq"`` or ``control="joint"``) the hardest sample sets
#: everyone's NFE (the default "rk" solver steps each sample on its own):
#: "given" keeps the data's order, "sorted" first orders samples by a cheap difficulty
#: proxy (‖s(x, eps)‖, one plain forward) so that each batch holds samples alike.
ORDERS = ("given", "sorted")


def _difficulty(score: Score, x: torch.Tensor, eps: float) -> torch.Tensor:
    """‖s(x, eps)‖ per sample: a large score at the start marks a stiff trajectory."""
    with torch.no_grad():
        t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
        return score(x, t).flatten(1).norm(dim=1)


def bpd_solver_defaults(sde: SDE) -> dict:
    """The :func:`log_likelihood` keywords :func:`evaluate_bpd` uses unless told otherwise:
    the clock ``scorepde.time_change.bpd_clock(sde)`` (σ for VP, t otherwise) and, under VE,
    the error norm ``"state"`` (every component of (x, log p) alike), else log_likelihood's
    ``"balanced"``. On three VE U-Nets (digits at 8000 and 16000 DSM steps, Fashion-MNIST)
    "state" evaluated 10–42% fewer rows than "balanced" at tol 1e-5, inside issue 34's accuracy
    target on both measures; on the VP U-Nets "balanced" has the smaller per-image error at
    equal cost. ``error_on="logp"`` was faster on the VP U-Nets but lets x drift: on a 2-D
    mixture a sorted, chunked split moved a point by 1.2e-3 bits at tol 1e-6
    (docs/likelihood.md, "Likelihood levers")."""
    defaults = dict(time=bpd_clock(sde))
    if isinstance(sde, VESDE):
        defaults["error_on"] = "state"
    return defaults


@renamed_keywords(model="score", trace="div")
def evaluate_bpd(
    score: Score,
    sde: SDE,
    images_k: torch.Tensor,
    levels: int,
    scale: float,
    shift: float,
    repeats: int = 5,
    div: str = "hutchinson",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    order: str = "given",
    **ll_kwargs,
) -> dict:
    """Dataset bpd (upper bound) with its standard error, over ``repeats`` draws of noise and probes.

    Each repeat dequantizes every sample afresh, maps it to x = scale·u + shift (on
    ``device``, default the data's, in ``dtype``), runs :func:`log_likelihood` with
    ``div`` and ``ll_kwargs`` in solves of ``batch_size`` samples (default all at once; the
    clock ``time`` defaults to ``scorepde.time_change.bpd_clock(sde)``, σ for VP),
    cut in the ``order`` of ``ORDERS``, and converts with :func:`bits_per_dim`. Returns

    - ``bpd``: the mean over samples and repeats; ``bpd_stderr``: its standard error, the
      std over samples of each sample's repeat-mean, / √points (data sampling, dequantization
      and probe noise together);
    - ``bpd_std``: std over repeats of the dataset mean (0 for one); ``per_repeat``;
    - ``per_sample``: each sample's repeat-mean bpd in the data's order;
    - ``points``, ``repeats``, ``seconds`` (wall time), ``nfe`` (mean per solve), ``solves``.
    """
    import time

    check_discrete(images_k, levels)
    for key, value in bpd_solver_defaults(sde).items():
        ll_kwargs.setdefault(key, value)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {list(ORDERS)}")
    n = images_k.shape[0]
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dim = images_k[0].numel()
    device = images_k.device if device is None else torch.device(device)
    start = time.perf_counter()
    images_k = images_k.to(device)
    n_batches = -(-n // batch_size)

    bar = tqdm(total=repeats * n_batches, disable=not progress, desc="bpd")
    per_sample = torch.zeros(repeats, n, dtype=torch.float64)
    nfes = []
    for r in range(repeats):
        x = scale * dequantize(images_k, levels, generator, dtype=dtype) + shift
        if order == "sorted":
            eps = ll_kwargs.get("eps", 1e-5)
            perm = (
                torch.cat([_difficulty(score, x[i : i + batch_size], eps) for i in range(0, n, batch_size)])
                .argsort()
                .cpu()
            )
        else:
            perm = torch.arange(n)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            ll, stats = log_likelihood(
                score, sde, x[idx.to(device)], div=div, generator=generator, return_stats=True, **ll_kwargs
            )
            per_sample[r, idx] = bits_per_dim(ll, dim, levels, scale).double().cpu()
            nfes.append(stats["nfe"])
            bar.update(1)
    bar.close()
    return _bpd_summary(per_sample, nfes, seconds=time.perf_counter() - start)


def _bpd_summary(per_sample: torch.Tensor, nfes: list, seconds: float) -> dict:
    """:func:`evaluate_bpd`'s result from its (repeats, points) table of bpd per sample."""
    repeats, n = per_sample.shape
    sample_means = per_sample.mean(0)
    return dict(
        bpd=sample_means.mean().item(),
        bpd_stderr=standard_error(sample_means),
        bpd_std=per_sample.mean(1).std().item() if repeats > 1 else 0.0,
        per_repeat=per_sample.mean(1).tolist(),
        per_sample=sample_means.tolist(),
        points=n,
        repeats=repeats,
        seconds=seconds,
        nfe=sum(nfes) / len(nfes),
        solves=len(nfes),
    )
