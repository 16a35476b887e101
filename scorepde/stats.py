"""The one home of the project's statistics: standard errors, means with t-intervals,
paired differences, and the standard error of a (chunked, repeated) evaluation.

    se(x) = sd(x) / √n   (sd with ddof 1)
    d_i = a_i − b_i,   d̄ ± t_{n−1, (1+level)/2} · sd(d) / √n

Pairing removes what the two methods share (the seed's initialization, batches and test
set), so the interval is about the method, not about the draw of seeds.

An evaluation (bits/dim, NLL) averages per-item values over the items and over repeats
(independent dequantization and trace probes). Two errors describe it, and each reported
name means one of them:

- the SE over items, ``standard_error(per_item)`` (``bpd_stderr``, ``nll_se``): how much
  the number would move with another test set of the same size;
- the SE over repeats, ``standard_error(per_repeat)`` (``eval_se``): the evaluation's own
  noise on this test set, what a paired comparison on shared images must beat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["standard_error", "mean_se", "paired_difference", "pool_chunks", "paired_eval_se", "delta_method"]


def _values(name: str, xs: Sequence[float]) -> list:
    vals = [float(x) for x in xs]
    if not vals:
        raise ValueError(f"{name} is empty; pass at least one value")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} holds non-finite values {bad}; drop the failed runs first")
    return vals


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def standard_error(values) -> float:
    """sd(x)/√n over every element of ``values`` (a sequence, array or tensor; ddof 1),
    computed in float64; NaN with fewer than two values (nothing to estimate it from)."""
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().double().numpy()
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        return float("nan")
    return float(v.std(ddof=1) / math.sqrt(v.size))


def mean_se(xs: Sequence[float], level: float = 0.95) -> dict[str, float | None]:
    """Mean, sample std (ddof 1), standard error and the ``level`` t-interval of ``xs``.

    With one value the std, SE and interval are None (nothing to estimate them from).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    vals = _values("xs", xs)
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return {
            "n": 1,
            "mean": mean,
            "sd": None,
            "se": None,
            "half_width": None,
            "lo": None,
            "hi": None,
            "level": level,
        }
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t_quantile(0.5 + level / 2, n - 1) * se
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "se": se,
        "half_width": half,
        "lo": mean - half,
        "hi": mean + half,
        "level": level,
    }


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """The paired differences a_i − b_i and their mean with a ``level`` t-interval.

    ``a`` and ``b`` are per-seed values in the same seed order (e.g. FP and vanilla NLL).
    Returns ``mean_se`` of the differences plus ``diffs`` and ``excludes_zero`` (whether the
    interval lies on one side of 0; None with one pair).
    """
    av, bv = _values("a", a), _values("b", b)
    if len(av) != len(bv):
        raise ValueError(f"paired values need the same seeds: a has {len(av)}, b has {len(bv)}")
    diffs = [x - y for x, y in zip(av, bv)]
    out = mean_se(diffs, level)
    out["diffs"] = diffs
    out["excludes_zero"] = None if out["lo"] is None else bool(out["lo"] > 0 or out["hi"] < 0)
    return out


def pool_chunks(per_repeat: Sequence[Sequence[float]], per_item: Sequence[Sequence[float]]) -> dict:
    """Evaluation chunks of one model (disjoint slices of the test items, same repeats) as
    one evaluation.

    ``per_repeat[c][r]``: chunk c's mean in repeat r; ``per_item[c]``: chunk c's per-item
    values (averaged over repeats). Returns ``mean`` over all items, ``per_repeat`` (each
    repeat's mean over all items, item-weighted), ``per_item`` (concatenated), ``n_items``
    and ``se``, the SE over repeats (``standard_error(per_repeat)``; NaN for one repeat).
    """
    if not per_repeat or len(per_repeat) != len(per_item):
        raise ValueError(
            f"pool_chunks needs one per_repeat and one per_item list per chunk, "
            f"got {len(per_repeat)} and {len(per_item)}"
        )
    sizes = [len(items) for items in per_item]
    if len({len(r) for r in per_repeat}) != 1 or min(sizes) < 1:
        raise ValueError("every chunk needs the same number of repeats and at least one item")
    pooled = np.average(np.asarray(per_repeat, dtype=np.float64), axis=0, weights=sizes)
    items = [float(v) for chunk in per_item for v in chunk]
    return {
        "mean": float(np.mean(items)),
        "per_repeat": pooled.tolist(),
        "per_item": items,
        "n_items": len(items),
        "se": standard_error(pooled),
    }


def paired_eval_se(a: Mapping, b: Mapping, keys: Sequence | None = None) -> float:
    """The evaluation's SE of one seed's a − b, root-mean-square over seeds:

        sqrt( mean_s var_i(a_s,i − b_s,i) / n_s )

    ``a[s]``, ``b[s]``: seed s's per-item values of two models on the same items (the same
    images, dequantization and probes, so what they share cancels). ``keys``: the seeds
    (default: those of ``a``).
    """
    keys = list(a) if keys is None else list(keys)
    if not keys:
        raise ValueError("paired_eval_se needs at least one seed")
    se2 = []
    for s in keys:
        if len(a[s]) != len(b[s]) or len(a[s]) < 2:
            raise ValueError(
                f"seed {s!r}: a and b need the same items, at least two (got {len(a[s])} and {len(b[s])})"
            )
        se2.append(np.var(np.subtract(a[s], b[s]), ddof=1) / len(a[s]))
    return float(np.sqrt(np.mean(se2)))


def delta_method(fn, samples, at=None) -> dict[str, float | None]:
    """``fn`` of the column means of ``samples [n, k]`` with its delta-method standard error:

        f(m̄) ± sqrt(∇fᵀ Σ ∇f / n),   Σ the columns' sample covariance (ddof 1)

    ``fn`` maps a float64 tensor ``[k]`` to a scalar tensor (differentiable by torch).
    Columns of paired quantities (the same samples seen by two models) enter together, so
    ``fn = f(m_A) − f(m_B)`` gives the SE of a paired difference. ``at`` is where the
    gradient is taken (default the means; e.g. a root's at max(m, se(m)), where sqrt has an
    infinite slope at 0). The SE is None with fewer than two rows.
    """
    import torch

    x = torch.as_tensor(samples, dtype=torch.float64).detach().cpu()
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"samples must be [n, k] with n >= 1, got shape {tuple(x.shape)}")
    means = x.mean(0)
    value = float(fn(means))
    if x.shape[0] < 2:
        return {"mean": value, "se": None}
    point = means if at is None else torch.as_tensor(at, dtype=torch.float64).detach().cpu()
    grad = torch.func.grad(fn)(point)
    centred = x - means
    var = (centred @ grad).pow(2).sum() / (x.shape[0] - 1) / x.shape[0]
    return {"mean": value, "se": float(var.sqrt())}
