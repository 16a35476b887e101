"""A training run that survives interruption: ``resumable_fit`` checkpoints every few steps
and on SIGINT/SIGTERM, and a later call with the same arguments continues from the
checkpoint to the same result an uninterrupted run gives.

Exactness comes from two rules: the per-step random draws are a function of (seed, step)
(the noise generator is reseeded before every step, so a method that draws more, such as
R_FP's probes, never shifts the (t, z) of later steps), and the data order is a function of
the step (``batches(start)`` yields the batches of steps start, start+1, …).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator, Optional

import torch

from .training import (InterruptFlag, StopRequested, fit, load_checkpoint, restore_training_state,
                       save_checkpoint, training_state)

__all__ = ["step_seed", "resumable_fit"]


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random draws in run ``seed``."""
    return int(seed) * 1_000_003 + int(step)


def resumable_fit(objective: Callable, model: torch.nn.Module, optimizer, steps: int, *,
                  batches: Callable[[int], Iterator[torch.Tensor]], ckpt_path: str, seed: int,
                  scheduler=None, ema=None, grad_clip: Optional[float] = None,
                  ckpt_every: int = 500, curve_every: Optional[int] = None,
                  progress: bool = True, desc: str = "train", device="cpu") -> dict:
    """Train steps 0 … steps−1, continuing from ``ckpt_path`` if it exists.

    ``objective(x0, generator)`` gets a generator reseeded with ``step_seed(seed, step)``
    before each step. Returns ``curve`` (window means of every logged part, one point per
    ``curve_every`` steps; default steps/200), ``resumed_at`` (the steps it continued
    from) and ``train_s``. Raises ``StopRequested`` after saving a checkpoint when
    interrupted; the caller reports it and exits. The checkpoint stays after the last step:
    delete it once the run's result is saved.
    """
    gen = torch.Generator(device).manual_seed(step_seed(seed, 0))
    every = curve_every or max(1, steps // 200)
    start, curve, resumed, wall = 0, [], [], 0.0
    window = {"n": 0}
    if os.path.isfile(ckpt_path):
        state = load_checkpoint(ckpt_path)
        start = restore_training_state(state, model, optimizer, scheduler, ema)
        curve, resumed, wall = state["curve"], state["resumed_at"] + [start], state["train_s"]
        window = state["window"]
    t0 = time.time()

    def save(next_step):
        save_checkpoint(ckpt_path, training_state(next_step, model, optimizer, scheduler, ema,
                                                  curve=curve, resumed_at=resumed, window=dict(window),
                                                  train_s=wall + time.time() - t0))

    def on_step(step, log):
        gen.manual_seed(step_seed(seed, step + 1))
        window["n"] += 1
        for k, v in log.items():
            window[k] = window.get(k, 0.0) + v
        if (step + 1) % every == 0:
            n = window.pop("n")
            curve.append({"step": step + 1, **{k: v / n for k, v in window.items()}})
            window.clear()
            window["n"] = 0
        if flag.raised is not None:
            save(step + 1)
            raise StopRequested
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            save(step + 1)

    gen.manual_seed(step_seed(seed, start))
    with InterruptFlag() as flag:
        fit(objective, optimizer, batches(start), steps, generator=gen, scheduler=scheduler,
            grad_clip=grad_clip, ema=ema, model=model, progress=progress, desc=desc, start=start,
            on_step=on_step)
    return {"curve": curve, "resumed_at": resumed, "train_s": wall + time.time() - t0}
