"""Input validation: bad input raises a ValueError that names the problem and the fix."""
from __future__ import annotations

from typing import Callable, Union

import torch

__all__ = ["NonFiniteError", "check_inputs", "check_output", "check_batch_independent", "check_finite"]


class NonFiniteError(ValueError):
    """A value that must be finite holds NaN or inf (raised by ``check_finite``)."""


def check_inputs(x: torch.Tensor, t: Union[torch.Tensor, float], T: float = 1.0) -> torch.Tensor:
    """Validate ``x [B, ...]`` and ``t``; return t as a ``[B]`` tensor of x's dtype and device.

    A float or 0-d t is broadcast over the batch.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor of shape [B, ...] with at least 2 dims, got "
                         f"{getattr(x, 'shape', type(x).__name__)}; add a feature axis (x[:, None])")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be floating point, got {x.dtype}; convert with x.float()")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}; pass one time per sample")
    check_finite(x, "x")
    check_finite(t, "t")
    if bool(((t < 0) | (t > T)).any()):
        raise ValueError(f"t must lie in [0, {T}], got values in [{t.min().item():.4g}, "
                         f"{t.max().item():.4g}]; rescale your times to the SDE's horizon")
    return t


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``value`` holds NaN or inf, naming where it arose."""
    if not bool(torch.isfinite(value).all()):
        bad = (~torch.isfinite(value)).sum().item()
        raise NonFiniteError(f"{name} has {bad} non-finite value(s) (NaN or inf); "
                         f"check the data, the step size and the learning rate")
    return value


def check_output(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model's output must be shaped like x."""
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(getattr(s, 'shape', ()))} for x of shape "
                         f"{tuple(x.shape)}; a score model must return a tensor shaped like x")
    return s


def check_batch_independent(score: Callable, x: torch.Tensor, t: torch.Tensor) -> None:
    """Refuse a model that couples samples across the batch (e.g. BatchNorm in train mode).

    Every per-sample derivative assumes sample b's output depends on sample b alone. Probe:
    perturb sample 0 of a two-sample batch and require sample 1's output not to move.
    """
    if x.shape[0] < 2:
        return
    x2, t2 = x[:2].detach(), t[:2].detach()
    with torch.no_grad():
        before = score(x2, t2)
        check_output(before, x2)
        bumped = x2.clone()
        bumped[0] = bumped[0] + 1.0 + bumped[0].abs()
        after = score(bumped, t2)
    scale = before[1].abs().max().clamp_min(1.0)
    tol = 1e3 * torch.finfo(x.dtype).eps * scale
    if bool(((after[1] - before[1]).abs().max() > tol)):
        raise ValueError(
            "the model couples samples across the batch: changing sample 0 changed the output "
            "for sample 1, so per-sample divergences and residuals would be wrong. BatchNorm in "
            "train mode does this; use GroupNorm/LayerNorm, or call model.eval() first")
