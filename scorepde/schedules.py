"""Learning-rate schedules, each defined once: a linear warmup, and a cosine decay to a floor
(the toy scripts' "cosine to 5%"). No math of the score FPE lives here.

A schedule is a multiplier of the base learning rate. Over a budget of steps it runs as a torch
scheduler (``schedule.scheduler(optimizer, steps)``, stepped by ``scorepde.training.fit`` after
each step and saved in its checkpoints); over a budget of seconds, ``fit`` sets the rate to
``base × schedule.factor(fraction of the budget used)`` before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Schedule", "Constant", "Warmup", "Cosine"]


class Schedule:
    """A multiplier of the base learning rate as the budget is used up."""

    def factor(self, frac: float, step: int = 0) -> float:
        """The multiplier after ``frac`` ∈ [0, 1] of the budget (and ``step`` steps)."""
        raise NotImplementedError

    def scheduler(self, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The torch scheduler of this schedule over ``steps`` steps."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step / steps, step))


@dataclass(frozen=True)
class Constant(Schedule):
    """The base rate throughout."""

    def factor(self, frac: float, step: int = 0) -> float:
        return 1.0


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warmup: ``min(1, (step + 1) / steps)``, then the base rate."""

    steps: int = 0

    def factor(self, frac: float, step: int = 0) -> float:
        return min(1.0, (step + 1) / max(1, self.steps))

    def scheduler(self, optimizer, steps=None):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(0.0, step))


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from the base rate to ``floor`` × it at the end of the budget:
    ``floor + (1 − floor)/2 · (1 + cos π·frac)``.

    Over steps it is torch's ``CosineAnnealingLR`` (``eta_min = floor × lr``), which evaluates
    the same curve recursively: the toy results were trained with that arithmetic (the closed
    form differs in the last bits of the rate, and in 3 of 100k float32 Adam steps)."""

    floor: float = 0.05

    def factor(self, frac: float, step: int = 0) -> float:
        return self.floor + (1 - self.floor) / 2 * (1 + math.cos(math.pi * min(1.0, frac)))

    def scheduler(self, optimizer, steps):
        group = optimizer.param_groups[0]
        lr = group.get("initial_lr", group["lr"])
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * self.floor)
