"""Optimisation plumbing shared by the toy and image scripts: the step loop, warmup, EMA,
atomic checkpoints and a NaN guard. No math lives here; the loss is any objective module
``objective(x0, generator) -> (loss, parts)`` such as ``scorepde.losses.FPObjective``.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checks import NonFiniteError
# Checkpoint I/O lives in scorepde.checkpoints; the names stay importable from here.
from .checkpoints import (load_checkpoint, restore_training_state, rng_state,  # noqa: F401
                          save_checkpoint, set_rng_state, training_state, weights_id)

__all__ = ["NonFiniteLossError", "make_optimizer", "make_ema", "train_step", "fit",
           "save_checkpoint", "load_checkpoint", "weights_id", "rng_state", "set_rng_state",
           "training_state", "restore_training_state", "JsonlLog",
           "StopRequested", "InterruptFlag"]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops rather than continue on garbage.

    ``step`` is the step whose loss it was; the parameters are still those before it.
    """

    def __init__(self, message: str, step: Optional[int] = None):
        super().__init__(message)
        self.step = step


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
               model: Optional[torch.nn.Module] = None,
               all_finite: Optional[Callable[[bool], bool]] = None) -> Dict[str, float]:
    """One optimiser step; raises ``NonFiniteLossError`` naming ``step`` before any update,
    when the loss or any gradient is NaN or inf (the parameters are then those before it).

    ``all_finite`` turns this process's verdict into everyone's (under DDP: an all-reduce,
    so every rank stops together instead of one waiting forever for the others' gradients).
    """
    try:
        loss, parts = objective(x0, generator)
        finite, what = bool(torch.isfinite(loss)), None
    except NonFiniteError as err:  # scorepde's own finiteness checks inside the objective
        loss, parts, finite, what = None, {}, False, str(err)
    if all_finite is not None:
        finite = all_finite(finite)
    if not finite:
        if what is None:
            what = (f"the loss is {loss.item()}" if not bool(torch.isfinite(loss))
                    else "another process's loss is non-finite")
        raise NonFiniteLossError(f"{what} at step {step} "
                                 f"(parts: { {k: float(v) for k, v in parts.items()} }); "
                                 "lower the learning rate or beta, or check the data", step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # A finite loss can still have NaN/inf gradients (e.g. a derivative that overflows): one
    # optimiser step on them would corrupt every weight, so the guard checks them too.
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p.grad).all())]
    grads_finite = all_finite(not bad) if all_finite is not None else not bad
    if not grads_finite:
        optimizer.zero_grad(set_to_none=True)
        what = (f"{len(bad)} parameter tensor(s) have non-finite gradients" if bad
                else "another process's gradients are non-finite")
        raise NonFiniteLossError(f"{what} at step {step} although the loss is finite "
                                 f"({loss.item():.6g}); the weights were not updated. "
                                 "Lower the learning rate or beta, or set a grad clip", step)
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
        on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
        all_finite: Optional[Callable[[bool], bool]] = None) -> list:
    """Run steps ``start .. steps-1``; returns the per-step logs.

    ``on_step(step, log)`` runs after each completed step; raising ``StopRequested`` there
    ends training cleanly (the step is done, nothing is half-updated). If it returns a dict
    (e.g. the log averaged over DDP ranks), the progress bar shows that dict's loss, so the
    bar and the written log show the same number.
    """
    logs = []
    it = range(start, steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, initial=start, total=steps, dynamic_ncols=True)
    for step in it:
        log = train_step(objective, optimizer, next(batches), step=step, generator=generator,
                         scheduler=scheduler, grad_clip=grad_clip, ema=ema, model=model,
                         all_finite=all_finite)
        logs.append(log)
        shown = on_step(step, log) if on_step is not None else None
        if progress:
            it.set_postfix(loss=f"{(shown if isinstance(shown, dict) else log)['loss']:.4g}")
    return logs


class JsonlLog:
    """One JSON object per line. Opened at ``start`` > 0 (a resumed run), lines of steps
    ``>= start`` left by the interrupted run are dropped first, so the log holds each step
    once and reads like an uninterrupted run's."""

    def __init__(self, path: str, start: int = 0):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kept = []
        if start > 0 and os.path.isfile(path):
            with open(path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by the interruption
                    if rec.get("step", -1) < start:
                        kept.append(line if line.endswith("\n") else line + "\n")
        self.path = path
        self._f = open(path, "w")
        self._f.writelines(kept)
        self._f.flush()

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    @staticmethod
    def read(path: str) -> List[dict]:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]


class StopRequested(Exception):
    """Raised from ``fit``'s ``on_step`` to end training after a completed step."""


class InterruptFlag:
    """A context that turns SIGINT/SIGTERM into a flag, checked between steps, so an
    interrupted run stops after a whole step and can save a consistent checkpoint. A
    second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised: Optional[int] = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.raised is not None:
            raise KeyboardInterrupt
        self.raised = signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
