"""Optimisation plumbing shared by the toy and image scripts: the step loop, warmup, EMA,
atomic checkpoints and a NaN guard. No math lives here; the loss is any objective module
``objective(x0, generator) -> (loss, parts)`` such as ``scorepde.losses.FPObjective``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

# Checkpoint I/O lives in scorepde.checkpoints; the names stay importable from here.
from .checkpoints import (  # noqa: F401
    load_checkpoint,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    training_state,
    weights_id,
)
from .checks import NonFiniteError
from .schedules import Schedule, Warmup

__all__ = [
    "NonFiniteLossError",
    "make_optimizer",
    "make_ema",
    "train_step",
    "fit",
    "FitResult",
    "Budget",
    "Checkpointing",
    "step_seed",
    "save_checkpoint",
    "load_checkpoint",
    "weights_id",
    "rng_state",
    "set_rng_state",
    "training_state",
    "restore_training_state",
    "JsonlLog",
    "StopRequested",
    "InterruptFlag",
]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops rather than continue on garbage.

    ``step`` is the step whose loss it was; the parameters are still those before it.
    """

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


def make_optimizer(params, lr: float = 2e-4, warmup: int = 0, **adam_kwargs):
    """Adam with a linear warmup over ``warmup`` steps: returns (optimizer, scheduler)."""
    opt = torch.optim.Adam(params, lr=lr, **adam_kwargs)
    return opt, Warmup(warmup).scheduler(opt)


def make_ema(model: torch.nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of the model's parameters (and buffers)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_step(
    objective: Callable,
    optimizer,
    x0: torch.Tensor,
    *,
    step: int,
    generator: torch.Generator | None = None,
    scheduler=None,
    grad_clip: float | None = None,
    ema: AveragedModel | None = None,
    model: torch.nn.Module | None = None,
    all_finite: Callable[[bool], bool] | None = None,
) -> dict[str, float]:
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
            what = (
                f"the loss is {loss.item()}"
                if not bool(torch.isfinite(loss))
                else "another process's loss is non-finite"
            )
        raise NonFiniteLossError(
            f"{what} at step {step} "
            f"(parts: { {k: float(v) for k, v in parts.items()} }); "
            "lower the learning rate or beta, or check the data",
            step,
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # A finite loss can still have NaN/inf gradients (e.g. a derivative that overflows): one
    # optimiser step on them would corrupt every weight, so the guard checks them too.
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p.grad).all())]
    grads_finite = all_finite(not bad) if all_finite is not None else not bad
    if not grads_finite:
        optimizer.zero_grad(set_to_none=True)
        what = (
            f"{len(bad)} parameter tensor(s) have non-finite gradients"
            if bad
            else "another process's gradients are non-finite"
        )
        raise NonFiniteLossError(
            f"{what} at step {step} although the loss is finite "
            f"({loss.item():.6g}); the weights were not updated. "
            "Lower the learning rate or beta, or set a grad clip",
            step,
        )
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)
    return {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random draws in run ``seed``: ``fit(seed=...)`` reseeds its
    generator with it before every step, so a method that draws more (R_FP's probes) never
    shifts the (t, z) of later steps, and a resumed run draws what an uninterrupted one would."""
    return int(seed) * 1_000_003 + int(step)


@dataclass(frozen=True)
class Budget:
    """What a run may spend: ``steps`` optimiser steps, or ``seconds`` of training time on
    ``clock`` ("wall": the steps' wall time; "cpu": this process's CPU time, which a busy
    machine does not inflate). Evaluations and hooks are not counted."""

    steps: int | None = None
    seconds: float | None = None
    clock: str = "wall"

    def __post_init__(self):
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("a Budget is steps or seconds: give exactly one of them")
        if (self.steps is not None and self.steps < 0) or (self.seconds is not None and not self.seconds > 0):
            raise ValueError(f"a training budget is steps >= 0 or seconds > 0, got {self}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")

    def fraction(self, step: int, wall: float, cpu: float) -> float:
        """How much of the budget ``step`` steps that took ``wall``/``cpu`` seconds used (≤ 1)."""
        if self.steps == 0:
            return 1.0
        used = (
            step / self.steps
            if self.steps is not None
            else (cpu if self.clock == "cpu" else wall) / self.seconds
        )
        return min(1.0, used)


@dataclass
class Checkpointing:
    """Where and when ``fit`` saves (atomically) and resumes from: every ``every`` steps, also
    after ``seconds`` of wall time since the last save, on SIGINT/SIGTERM (then it raises
    ``StopRequested``), after a non-finite step (the weights before it) and, with ``at_end``,
    after the last step. ``generator``: a stream whose state the checkpoint keeps, such as the
    data sampler's (``rng[rank]``, gathered over ranks by ``gather``; only ``is_main`` writes).
    ``resume=False``: the caller restored the state itself and passes ``fit(start=...)``;
    ``trust=True``: resume from a checkpoint that names code (``scorepde.checkpoints``)."""

    path: str
    every: int = 500
    seconds: float | None = None
    at_end: bool = True
    generator: torch.Generator | None = None
    config: dict | None = None
    extra: dict = field(default_factory=dict)
    gather: Callable[[Any], list] = lambda obj: [obj]
    rank: int = 0
    is_main: bool = True
    resume: bool = True
    trust: bool = False


class FitResult(list):
    """The per-step logs (a list, as ``fit`` always returned), and what the run measured:
    ``steps`` (the next step), ``curve`` (window means of the logged parts), ``history`` (the
    evaluations), ``resumed_at``, ``train_seconds`` and ``cpu_seconds`` (the steps' own time,
    summed over resumes)."""

    steps: int = 0
    curve: list[dict]
    history: list[dict]
    resumed_at: list[int]
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0


class _Run:
    """The loop's state: what a checkpoint saves besides the weights."""

    def __init__(self, start: int, curve_every: int | None, curve_keys):
        self.logs, self.step = FitResult(), start
        self.curve, self.history, self.resumed_at = [], [], []
        self.wall = self.cpu = 0.0
        self.every, self.keys = curve_every, curve_keys
        self.window = {"n": 0, **{k: 0.0 for k in curve_keys or ()}}
        self.saved_at = time.perf_counter()

    def record(self, log: dict[str, float]) -> None:
        self.logs.append(log)
        self.step += 1
        if not self.every:
            return
        w = self.window
        w["n"] += 1
        for k in self.keys or log:
            w[k] = w.get(k, 0.0) + log[k]
        if self.step % self.every == 0:
            n = w.pop("n")
            self.curve.append({"step": self.step, **{k: v / n for k, v in w.items()}})
            self.window = {"n": 0, **{k: 0.0 for k in self.keys or ()}}

    def state(self) -> dict:
        return {
            "curve": self.curve,
            "resumed_at": self.resumed_at,
            "window": dict(self.window),
            "train_s": self.wall,
            "cpu_s": self.cpu,
            "history": self.history,
        }

    def load(self, state: dict) -> None:
        self.curve, self.history = state.get("curve", []), state.get("history", [])
        self.resumed_at = state.get("resumed_at", []) + [self.step]
        self.window = state.get("window", self.window)
        self.wall, self.cpu = state.get("train_s", 0.0), state.get("cpu_s", 0.0)

    def result(self) -> FitResult:
        res = self.logs
        res.steps, res.curve, res.history, res.resumed_at = (
            self.step,
            self.curve,
            self.history,
            self.resumed_at,
        )
        res.train_seconds, res.cpu_seconds = self.wall, self.cpu
        return res


def _save(ck: Checkpointing, run: _Run, step: int, model, optimizer, scheduler, ema) -> None:
    """Every rank takes part (the random states are gathered); the main one writes."""
    rng = ck.gather(rng_state(ck.generator)) if ck.generator is not None else []
    if ck.is_main:
        save_checkpoint(
            ck.path,
            training_state(step, model, optimizer, scheduler, ema, rng, ck.config, **ck.extra, **run.state()),
        )
    run.saved_at = time.perf_counter()


def _restore(ck: Checkpointing, run: _Run, model, optimizer, scheduler, ema) -> None:
    state = load_checkpoint(ck.path, trust=ck.trust)
    run.step = restore_training_state(state, model, optimizer, scheduler, ema)
    if ck.generator is not None and len(state.get("rng", [])) > ck.rank:
        set_rng_state(state["rng"][ck.rank], ck.generator)
    run.load(state)


def _evaluate(run: _Run, evaluate: Callable[[], dict], model, bar, frac: float, n_evals: int) -> int:
    """One evaluation, in eval mode and off the clock, appended to the history; returns the
    index of the next one (evaluations fall at multiples of 1/n_evals of the budget)."""
    if model is not None:
        model.eval()
    run.history.append({"step": run.step, "train_seconds": run.wall, "cpu_seconds": run.cpu, **evaluate()})
    if model is not None:
        model.train()
    if bar is not None:
        bar.set_postfix(
            {
                k: f"{v:.4g}"
                for k, v in run.history[-1].items()
                if k not in ("step", "train_seconds", "cpu_seconds") and isinstance(v, float)
            }
        )
    return math.floor(frac * max(1, n_evals)) + 1


def _progress(budget: Budget, start: int, desc: str):
    from tqdm.auto import tqdm

    if budget.steps is not None:
        return tqdm(total=budget.steps, initial=start, desc=desc, dynamic_ncols=True)
    return tqdm(total=round(budget.seconds), desc=desc, unit="s", dynamic_ncols=True)


def _advance(bar, budget: Budget, run: _Run, shown: dict) -> None:
    if budget.steps is not None:
        bar.update(1)
    else:
        bar.update(round(run.cpu if budget.clock == "cpu" else run.wall) - bar.n)
    bar.set_postfix(loss=f"{shown['loss']:.4g}", refresh=False)


def fit(
    objective: Callable,
    optimizer,
    batches,
    steps: int | None = None,
    *,
    budget: Budget | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    scheduler=None,
    schedule: Schedule | None = None,
    grad_clip: float | None = None,
    ema: AveragedModel | None = None,
    model: torch.nn.Module | None = None,
    start: int = 0,
    checkpoint: Checkpointing | None = None,
    curve_every: int | None = None,
    curve_keys: tuple[str, ...] | None = None,
    evaluate: Callable[[], dict] | None = None,
    n_evals: int = 0,
    on_step: Callable[[int, dict[str, float]], dict | None] | None = None,
    across_ranks: Callable[[dict], dict] | None = None,
    all_finite: Callable[[bool], bool] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """The training loop of every script: ``train_step`` (the one ``optimizer.step()``) until
    the budget (``steps``, or a ``Budget`` of seconds) is spent; returns a ``FitResult``.

    - ``objective(x0, generator) -> (loss, parts)``; ``batches``: an iterator of x0, or a
      function ``batches(start)`` giving the batches of steps start, start+1, ….
    - ``seed``: ``generator`` is reseeded with ``step_seed(seed, step)`` before every step.
    - ``scheduler`` (a torch scheduler, stepped after each step) or ``schedule`` (a
      ``scorepde.schedules.Schedule``: a torch scheduler over steps, the factor of the budget's
      fraction over seconds). ``grad_clip``, ``ema`` (updated from ``model``) per step.
    - ``checkpoint``: a ``Checkpointing`` (save, resume, SIGINT/SIGTERM → ``StopRequested``).
    - ``curve_every``: window means of the logged parts (``curve_keys``: which) every N steps.
    - ``evaluate()``: ``n_evals + 1`` times, at even fractions of the budget (off the clock).
    - ``on_step(step, log)``: after each step; it may raise ``StopRequested``; a dict it returns
      is what the progress bar shows.
    - ``across_ranks(dict) -> dict``: DDP's mean over ranks; it makes the NaN verdict, the
      logged parts, a stop and a timed save everyone's.
    A non-finite loss or gradient raises ``NonFiniteLossError`` (after saving the weights
    before that step, if checkpointing).
    """
    budget = _as_budget(steps, budget)
    if checkpoint is not None and model is None:
        raise ValueError("fit(checkpoint=...) needs model=: the checkpoint holds its weights")
    scheduler, all_finite, lr_of = _rates_and_verdicts(
        optimizer, budget, scheduler, schedule, across_ranks, all_finite
    )
    generator = torch.Generator() if seed is not None and generator is None else generator
    run = _Run(start, curve_every, curve_keys)
    if checkpoint is not None and checkpoint.resume and os.path.isfile(checkpoint.path):
        _restore(checkpoint, run, model, optimizer, scheduler, ema)
    stream = batches(run.step) if callable(batches) else batches
    step_kw = dict(scheduler=scheduler, grad_clip=grad_clip, ema=ema, model=model, all_finite=all_finite)
    save = lambda at: _save(checkpoint, run, at, model, optimizer, scheduler, ema)
    on_nan = save if checkpoint is not None else None
    bar = _progress(budget, run.step, desc) if progress else None
    with (
        InterruptFlag() if checkpoint is not None else contextlib.nullcontext() as flag,
        bar if bar is not None else contextlib.nullcontext(),
    ):
        next_eval = 0
        while True:
            frac = budget.fraction(run.step, run.wall, run.cpu)
            if evaluate is not None and frac >= next_eval / max(1, n_evals):
                next_eval = _evaluate(run, evaluate, model, bar, frac, n_evals)
            if frac >= 1.0:
                break
            _one_step(objective, optimizer, next(stream), run, generator, seed, lr_of, frac, step_kw, on_nan)
            shown = _after_step(run, checkpoint, flag, across_ranks, on_step, save, budget)
            if bar is not None:
                _advance(bar, budget, run, shown)
        if checkpoint is not None and checkpoint.at_end and run.logs:
            save(run.step)
    return run.result()


def _rates_and_verdicts(
    optimizer, budget: Budget, scheduler, schedule: Schedule | None, across_ranks, all_finite
):
    """The torch scheduler of a schedule over steps, else the factor to set the rate by over
    seconds (from each group's ``initial_lr``); the NaN verdict made everyone's over ranks."""
    if schedule is not None and scheduler is None and budget.steps is not None:
        scheduler = schedule.scheduler(optimizer, budget.steps)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if all_finite is None and across_ranks is not None:
        all_finite = lambda ok: across_ranks({"ok": float(ok)})["ok"] == 1.0  # noqa: E731
    lr_of = schedule.factor if schedule is not None and budget.steps is None else None
    return scheduler, all_finite, lr_of


def _as_budget(steps: int | None, budget: Budget | None) -> Budget:
    if (steps is None) == (budget is None):
        raise ValueError("fit needs a budget: pass steps=N or budget=Budget(...), not both")
    return budget if budget is not None else Budget(steps=max(0, int(steps or 0)))


def _one_step(objective, optimizer, x0, run: _Run, generator, seed, lr_of, frac, step_kw, save) -> None:
    """Reseed, set the budget-fraction rate, take the step on the clock, record it."""
    if seed is not None:
        generator.manual_seed(step_seed(seed, run.step))
    if lr_of is not None:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_of(frac, run.step)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        log = train_step(objective, optimizer, x0, step=run.step, generator=generator, **step_kw)
    except NonFiniteLossError as err:
        if save is not None:
            save(err.step)  # the weights are still those before the bad step
        raise
    run.wall += time.perf_counter() - t0
    run.cpu += time.process_time() - c0  # this process's CPU time: the load-free cost
    run.record(log)


def _after_step(
    run: _Run, ck: Checkpointing | None, flag, across_ranks, on_step, save, budget: Budget
) -> dict:
    """Agree over ranks, call the hook, save when due, stop when asked; returns what to show."""
    log = run.logs[-1]
    stop = ck is not None and flag.raised is not None
    due = ck is not None and (
        (run.step % ck.every == 0 and run.step != budget.steps)
        or (ck.seconds is not None and time.perf_counter() - run.saved_at >= ck.seconds)
    )
    shown = log
    if across_ranks is not None:
        rec = across_ranks({**log, "stop": float(stop), "due": float(due)})
        stop, due = rec.pop("stop") > 0, rec.pop("due") > 0
        shown = rec
    if on_step is not None:
        hooked = on_step(run.step - 1, shown)
        shown = hooked if isinstance(hooked, dict) else shown
    if due or stop:
        save(run.step)
    if stop:
        raise StopRequested
    return shown


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
    def read(path: str) -> list[dict]:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]


class StopRequested(Exception):
    """Raised from ``fit``'s ``on_step`` to end training after a completed step."""


class InterruptFlag:
    """A context that turns SIGINT/SIGTERM into a flag, checked between steps, so an
    interrupted run stops after a whole step and can save a consistent checkpoint. A
    second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised: int | None = None
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
