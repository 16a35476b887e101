"""The audit of one model or several on shared draws: measured, summarized, compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

from ..sde import SDE
from .measure import measure
from .provenance import describe_sde, native_time
from .summary import differences, summarize

__all__ = ["audit", "run"]


def _sigmas(sde: SDE, ts: Sequence[float]) -> list[float]:
    return sde.marginal(torch.tensor(list(ts), dtype=torch.float64))[1].tolist()


def run(
    scores: Sequence[Callable],
    labels: Sequence[str],
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    **options,
) -> dict:
    """Every score on the same x_t, probes and grid ``ts``; each compared with the first.
    ``options``: :func:`~scorepde.audit.measure.measure`'s keywords (``estimator``, ``curl``,
    ``batch_size``, ``seed``, ``progress`` and the estimator's own).

    Returns ``{"t", "native": {"name", "values"}, "models": [{"label", "quantities"}],
    "differences": [{"a", "b", "quantities"}]}``, quantities as in ``summary.QUANTITIES``
    (``{name: [{"mean", "se"} or None per t]}``; an SE is None where it is undefined).
    """
    if len(scores) != len(labels) or not scores:
        raise ValueError(f"need one label per model, got {len(scores)} models and {len(labels)} labels")
    measured = measure(scores, sde, x0, ts, **options)
    sigmas, dim = _sigmas(sde, measured["t"]), int(x0[0].numel())
    rows = measured["rows"]
    name, values = native_time(sde, measured["t"])
    return {
        "t": measured["t"],
        "native": {"name": name, "values": values},
        "models": [
            {"label": label, "quantities": summarize(r, measured["t"], sigmas, dim)}
            for label, r in zip(labels, rows)
        ],
        "differences": [
            {"a": labels[0], "b": labels[m], "quantities": differences(rows[0], rows[m], sigmas, dim)}
            for m in range(1, len(scores))
        ],
    }


def audit(
    score: Callable,
    sde: SDE,
    x0: torch.Tensor,
    ts: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    **kwargs,
) -> dict:
    """One model's numbers on the grid ``ts``: ``{"t": [...], quantity: [{"mean", "se"} per t]}``
    (``kwargs`` as for ``run``). A ``generator`` instead of ``seed`` draws the seed from it, so
    two calls with equally seeded generators see the same x_t and probes."""
    if generator is not None:
        if "seed" in kwargs:
            raise ValueError("pass seed or generator, not both")
        kwargs["seed"] = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    result = run([score], ["model"], sde, x0, ts, **kwargs)
    return {"t": result["t"], "native": result["native"], **result["models"][0]["quantities"]}


def same_sde(sdes: Sequence[SDE], labels: Sequence[str]) -> SDE:
    """The one SDE of models to compare; a ValueError naming the two that differ."""
    first = describe_sde(sdes[0])
    for sde, label in zip(sdes[1:], labels[1:]):
        other = describe_sde(sde)
        if (other["class"], other["params"]) != (first["class"], first["params"]):
            raise ValueError(
                f"{label} uses {other['repr']} {other['params']}, {labels[0]} uses "
                f"{first['repr']} {first['params']}: a paired comparison needs one forward "
                "process; audit them one at a time"
            )
    return sdes[0]
