"""The vocabulary every module shares: the ``Score`` type, what a score may say about how it
sees time (``TimeConditioned``), and how a renamed keyword keeps working for one release."""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Protocol, runtime_checkable

import torch

__all__ = ["Score", "TimeConditioned", "time_conditioning", "renamed_keywords"]

#: The currency of scorepde: ``score(x [B, ...], t [B]) -> [B, ...]``, shaped like x.
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class TimeConditioned(Protocol):
    """A score that says how fast its fastest time feature turns, in radians per unit t
    (``ScoreModel``, ``ToyScore``, ``from_diffusers``' scores). Finite differences in t take
    their step from it (``scorepde.derivatives.time_steps``); a score without it gets the
    paper's steps. A score whose time features are computed in another precision than x
    also sets ``time_dtype`` (diffusers' step embedding is float32 whatever x is); a
    wrapper around a score forwards both (``time_conditioning`` reads them)."""

    def time_rate(self) -> float | None: ...


def time_conditioning(score: Score) -> tuple[float | None, torch.dtype | None]:
    """(time rate, time dtype) of ``score``: ``(None, None)`` for a score that says nothing,
    the dtype ``None`` where its time features follow x's dtype. The one place that reads
    the ``TimeConditioned`` protocol."""
    if not isinstance(score, TimeConditioned):
        return None, None
    return score.time_rate(), getattr(score, "time_dtype", None)


def renamed_keywords(**old_to_new: str) -> Callable:
    """Decorate a function whose keyword ``old`` is now ``new``: ``old=...`` still works for
    one release, with a DeprecationWarning naming the new keyword; both at once is a
    ValueError. ``@renamed_keywords(model="score")``."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise ValueError(f"{fn.__qualname__}: pass {new}= only ({old}= is its old name)")
                warnings.warn(
                    f"{fn.__qualname__}: the keyword {old}= is deprecated and will be "
                    f"removed in the next release; use {new}=",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
