"""Deprecated: ``resumable_fit`` is ``scorepde.training.fit`` with a ``Checkpointing`` (and
``step_seed`` lives in ``scorepde.training``). Kept for one release."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Callable

import torch

from .training import Checkpointing, fit, step_seed

__all__ = ["step_seed", "resumable_fit"]


def resumable_fit(
    objective: Callable,
    model: torch.nn.Module,
    optimizer,
    steps: int,
    *,
    batches: Callable[[int], Iterator[torch.Tensor]],
    ckpt_path: str,
    seed: int,
    scheduler=None,
    ema=None,
    grad_clip: float | None = None,
    ckpt_every: int = 500,
    curve_every: int | None = None,
    progress: bool = True,
    desc: str = "train",
    device="cpu",
) -> dict:
    """Deprecated alias of ``fit(..., seed=seed, checkpoint=Checkpointing(ckpt_path, ckpt_every),
    curve_every=...)``; returns ``curve``, ``resumed_at`` and ``train_s``."""
    warnings.warn(
        "scorepde.resumable.resumable_fit is deprecated: call scorepde.training.fit with "
        "checkpoint=Checkpointing(path, every) and seed=seed",
        DeprecationWarning,
        stacklevel=2,
    )
    res = fit(
        objective,
        optimizer,
        batches,
        steps,
        generator=torch.Generator(device),
        seed=seed,
        scheduler=scheduler,
        ema=ema,
        model=model,
        grad_clip=grad_clip,
        checkpoint=Checkpointing(ckpt_path, every=ckpt_every),
        curve_every=curve_every or max(1, steps // 200),
        progress=progress,
        desc=desc,
    )
    return {"curve": res.curve, "resumed_at": res.resumed_at, "train_s": res.train_seconds}
