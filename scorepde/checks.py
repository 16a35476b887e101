"""Input validation: bad input raises a ValueError that names the problem and the fix."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

__all__ = ["NonFiniteError", "check_inputs", "check_output", "check_batch_independent", "check_finite"]


class NonFiniteError(ValueError):
    """A value that must be finite holds NaN or inf (raised by ``check_finite``)."""


def check_inputs(x: torch.Tensor, t: torch.Tensor | float, T: float = 1.0) -> torch.Tensor:
    """Validate ``x [B, ...]`` and ``t``; return t as a ``[B]`` tensor of x's dtype and device.

    A float or 0-d t is broadcast over the batch.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(
            f"x must be a tensor of shape [B, ...] with at least 2 dims, got "
            f"{getattr(x, 'shape', type(x).__name__)}; add a feature axis (x[:, None])"
        )
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be floating point, got {x.dtype}; convert with x.float()")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:  # a copy, not an expanded view: jvp refuses primals whose elements alias
        t = t.repeat(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, "
            f"got {tuple(t.shape)}; pass one time per sample"
        )
    check_finite(x, "x")
    check_finite(t, "t")
    if bool(((t < 0) | (t > T)).any()):
        raise ValueError(
            f"t must lie in [0, {T}], got values in [{t.min().item():.4g}, "
            f"{t.max().item():.4g}]; rescale your times to the SDE's horizon"
        )
    return t


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``value`` holds NaN or inf, naming where it arose."""
    if not bool(torch.isfinite(value).all()):
        bad = (~torch.isfinite(value)).sum().item()
        raise NonFiniteError(
            f"{name} has {bad} non-finite value(s) (NaN or inf); "
            f"check the data, the step size and the learning rate"
        )
    return value


def check_output(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model's output must be shaped like x."""
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        raise ValueError(
            f"the model returned shape {tuple(getattr(s, 'shape', ()))} for x of shape "
            f"{tuple(x.shape)}; a score model must return a tensor shaped like x"
        )
    return s


@contextlib.contextmanager
def _fixed_rng(x: torch.Tensor, seed: int):
    """Run a block with every RNG seeded to ``seed``; restore the caller's RNG state after."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def check_batch_independent(score: Callable, x: torch.Tensor, t: torch.Tensor) -> None:
    """Refuse a model whose per-sample derivatives would be wrong.

    Two probes on the first two samples: (1) the model must be a function, i.e. two calls on
    the same input agree (dropout in train mode draws a new mask per call, and every residual
    estimator combines several calls or a transformed call with a plain one); (2) it must
    keep samples apart (BatchNorm in train mode couples them): perturbing sample 0 must not
    move sample 1's output. Probe (2) runs both calls under the same RNG seed, so a random
    model cannot pass for a coupling one.
    """
    x2, t2 = x[:2].detach(), t[:2].detach()
    with torch.no_grad():
        with _fixed_rng(x, 0):
            before = score(x2, t2)
        _check_probe_output(before, x2, x)
        with _fixed_rng(x, 1):
            again = score(x2, t2)
    scale = before.abs().max().clamp_min(1.0)
    tol = 1e3 * torch.finfo(x.dtype).eps * scale
    if bool((again - before).abs().max() > tol):
        raise ValueError(
            "the model is random: two calls on the same (x, t) returned different scores, so "
            "its derivatives (and every residual estimator, which combines several calls) "
            "would be noise. Dropout in train mode does this; train the FP regularizer with "
            "dropout 0, or call model.eval() to evaluate the residual"
        )
    if x.shape[0] < 2:
        return
    bumped = x2.clone()
    bumped[0] = bumped[0] + 1.0 + bumped[0].abs()
    with torch.no_grad(), _fixed_rng(x, 0):
        after = score(bumped, t2)
    if bool((after[1] - before[1]).abs().max() > tol):
        raise ValueError(
            "the model couples samples across the batch: changing sample 0 changed the output "
            "for sample 1, so per-sample divergences and residuals would be wrong. BatchNorm in "
            "train mode does this; use GroupNorm/LayerNorm, or call model.eval() first"
        )


def _check_probe_output(s, probe: torch.Tensor, x: torch.Tensor) -> None:
    """check_output for the checker's own probe batch, reported in the user's shapes."""
    if isinstance(s, torch.Tensor) and s.shape == probe.shape:
        return
    got = tuple(getattr(s, "shape", ()))
    if len(got) >= 1 and got[0] == probe.shape[0]:
        got = (x.shape[0],) + got[1:]  # the same per-sample shape at the user's batch size
        raise ValueError(
            f"the model returned shape {got} for x of shape {tuple(x.shape)}; "
            f"a score model must return a tensor shaped like x"
        )
    raise ValueError(
        f"the model returned shape {tuple(getattr(s, 'shape', ()))} for a batch of "
        f"{probe.shape[0]} samples of x (x has shape {tuple(x.shape)}); a score model "
        f"must return a tensor shaped like x"
    )
