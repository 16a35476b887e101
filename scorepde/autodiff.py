"""What to do when PyTorch cannot differentiate a model: plain errors, and math attention.

Every estimator but ``"forward_fd"`` differentiates the model itself: ``"exact"``,
``"hutchinson"`` and ``"directional"`` by forward mode (jvp), ``"paper"`` by reverse mode
twice. Fused kernels often lack these (PyTorch 2.13: no forward AD for CPU flash
attention, no double backward of it). ``explain_autodiff_errors`` turns such a failure
into an ``AutodiffError`` (a ValueError) that names the operation, the estimator that
failed and the one that works; ``math_attention`` swaps a diffusers model's attention for
plain math attention while it is active, which every estimator can differentiate.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from typing import Callable

import torch

__all__ = ["AutodiffError", "explain_autodiff_errors", "explained", "math_attention", "MathAttention"]

#: The estimator that needs plain forward passes only (no autograd through the model).
FORWARD_ONLY = "forward_fd"

#: (pattern of PyTorch's message, what failed): the op name is the pattern's group 1 if any.
_FAILURES = [
    (r"Trying to use forward AD with (\S+) that does not support it", "forward-mode AD (jvp)"),
    (r"derivative for (\S+) is not implemented", "reverse-mode AD (a derivative of a derivative)"),
    (
        r"view size is not compatible with input tensor's size and stride",
        "forward-mode AD (a view of a non-contiguous tangent, e.g. group_norm after attention)",
    ),
    (r"does not support (?:forward|backward|double backward)", "automatic differentiation"),
    (
        r"Cannot access data pointer of Tensor that doesn't have storage",
        "torch.func transforms (the score leaves torch, e.g. through numpy)",
    ),
]


class AutodiffError(ValueError):
    """PyTorch cannot form a derivative an estimator needs; the message says what works."""


def _explain(err: BaseException, what: str):
    text = str(err)
    for pattern, needs in _FAILURES:
        match = re.search(pattern, text)
        if match:
            op = match.group(1) if match.groups() else "an operation of the model"
            return AutodiffError(
                f"{what} needs {needs} through {op}, which PyTorch does not provide "
                f"for this model. For the residual use estimator={FORWARD_ONLY!r}: it needs plain forward "
                f"passes only. "
                "For a diffusers model, scorepde.from_diffusers (or the context manager "
                "scorepde.math_attention(unet)) runs attention as math attention, which every "
                f"estimator can differentiate. PyTorch said: {text.splitlines()[0]}"
            )
    return None


@contextlib.contextmanager
def explained(what: str):
    """Inside, PyTorch's autodiff failures become an ``AutodiffError`` that says ``what``
    needed which derivative through which operation, and what works instead."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as err:
        explanation = _explain(err, what)
        if explanation is None:
            raise
        raise explanation from err


def explain_autodiff_errors(fn: Callable) -> Callable:
    """Decorate ``fn(model, sde, x, t, estimator=...)`` so that PyTorch's autodiff failures
    inside it become an ``AutodiffError`` naming the estimator, the operation and ``"forward_fd"``."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        estimator = bound.arguments.get("estimator", signature.parameters["estimator"].default)
        with explained(f"estimator {estimator!r}"):
            return fn(*args, **kwargs)

    return wrapper


class MathAttention:
    """A diffusers attention processor: softmax(QKᵀ/√d)V by plain matmuls (diffusers'
    ``AttnProcessor``), output made contiguous so that forward-mode AD can take views of
    its tangent downstream (``group_norm`` does)."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor

        self._inner = AttnProcessor()

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        out = self._inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return out.contiguous()


@contextlib.contextmanager
def math_attention(model):
    """While active, every diffusers ``Attention`` module in ``model`` uses ``MathAttention``;
    on exit each gets its own processor back. Math attention computes the same function as
    the fused kernels (up to round-off), so the score is unchanged; only its derivatives
    become available. A model without diffusers attention is left as it is."""
    modules = []
    if isinstance(model, torch.nn.Module):
        try:
            from diffusers.models.attention_processor import Attention

            modules = [m for m in model.modules() if isinstance(m, Attention)]
        except ImportError:  # no diffusers, so no diffusers attention
            pass
    saved = [m.processor for m in modules]
    try:
        if modules:
            processor = MathAttention()
            for m in modules:
                m.set_processor(processor)
        yield model
    finally:
        for m, p in zip(modules, saved):
            m.set_processor(p)
