"""Summaries of repeated experiments: a mean with its standard error, and paired differences
with a Student-t interval (FP − vanilla per seed, when both methods share seeds and batches).

    d_i = a_i − b_i,   d̄ ± t_{n−1, (1+level)/2} · sd(d) / √n

Pairing removes what the two methods share (the seed's initialization, batches and test
set), so the interval is about the method, not about the draw of seeds.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

__all__ = ["mean_se", "paired_difference", "delta_method"]


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


def mean_se(xs: Sequence[float], level: float = 0.95) -> Dict[str, Optional[float]]:
    """Mean, sample std (ddof 1), standard error and the ``level`` t-interval of ``xs``.

    With one value the std, SE and interval are None (nothing to estimate them from).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    vals = _values("xs", xs)
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "se": None, "half_width": None,
                "lo": None, "hi": None, "level": level}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t_quantile(0.5 + level / 2, n - 1) * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "half_width": half,
            "lo": mean - half, "hi": mean + half, "level": level}


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


def delta_method(fn, samples, at=None) -> Dict[str, Optional[float]]:
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
