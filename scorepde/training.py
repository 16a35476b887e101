"""Optimisation plumbing shared by the toy and image scripts: the step loop, warmup, EMA,
atomic checkpoints and a NaN guard. No math lives here; the loss is any objective module
``objective(x0, generator) -> (loss, parts)`` such as ``scorepde.losses.FPObjective``.
"""
from __future__ import annotations

import os
import random
import tempfile
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["NonFiniteLossError", "make_optimizer", "make_ema", "train_step", "fit",
           "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops rather than continue on garbage."""


def make_optimizer(params, lr: float = 2e-4, warmup: int = 0, **adam_kwargs):
    """Adam with a linear warmup over ``warmup`` steps: returns (optimizer, scheduler)."""
    opt = torch.optim.Adam(params, lr=lr, **adam_kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, warmup)))
    return opt, sched


def make_ema(model: torch.nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of the model's parameters (and buffers)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_step(objective: Callable, optimizer, x0: torch.Tensor, *, step: int,
               generator: Optional[torch.Generator] = None, scheduler=None,
               grad_clip: Optional[float] = None, ema: Optional[AveragedModel] = None,
               model: Optional[torch.nn.Module] = None) -> Dict[str, float]:
    """One optimiser step; raises ``NonFiniteLossError`` naming ``step`` before any update."""
    loss, parts = objective(x0, generator)
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(f"the loss is {loss.item()} at step {step} "
                                 f"(parts: { {k: float(v) for k, v in parts.items()} }); "
                                 "lower the learning rate or beta, or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)
    return {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}


def fit(objective: Callable, optimizer, batches: Iterator[torch.Tensor], steps: int, *,
        generator: Optional[torch.Generator] = None, scheduler=None, grad_clip: Optional[float] = None,
        ema: Optional[AveragedModel] = None, model: Optional[torch.nn.Module] = None,
        progress: bool = True, desc: str = "train", start: int = 0,
        on_step: Optional[Callable[[int, Dict[str, float]], None]] = None) -> list:
    """Run steps ``start .. steps-1``; returns the per-step logs."""
    logs = []
    it = range(start, steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, initial=start, total=steps, dynamic_ncols=True)
    for step in it:
        log = train_step(objective, optimizer, next(batches), step=step, generator=generator,
                         scheduler=scheduler, grad_clip=grad_clip, ema=ema, model=model)
        logs.append(log)
        if progress:
            it.set_postfix(loss=f"{log['loss']:.4g}")
        if on_step is not None:
            on_step(step, log)
    return logs


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """Every random state a resumed run needs to continue exactly."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: a temporary file in the same folder, then an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; pass the path of a .pt file written by training")
    return torch.load(path, map_location=map_location, weights_only=False)
