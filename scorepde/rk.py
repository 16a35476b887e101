"""Adaptive explicit Runge–Kutta for batches of independent ODEs, one step size per sample.

    dy_i/dt = f(t_i, y_i),   y_i(t0) = y0_i,   i = 1 … B,   integrated to t1

Each sample keeps its own time t_i and step h_i, so the hardest sample of a batch no longer
sets every sample's steps (torchode's idea, Lienen & Günnemann 2022); the batch is still
evaluated together, one call of ``f`` per stage, on the samples not yet at t1 (a finished
sample leaves the batch, so the last evaluations are cheaper). ``control="joint"`` gives
the classic batched solve instead: one step size, the error norm over the whole batch as
SciPy's ``solve_ivp`` measures it.

The error of a step is the embedded pair's difference e = h Σ_j ê_j k_j, measured per
sample as the weighted RMS

    r_i = sqrt( Σ_c w_c (e_ic / (atol + rtol · max(|y_ic|, |y_new,ic|)))² / Σ_c w_c )

(``weights`` w picks which components count: all of them, or only some, such as a
log-density), accepted when r ≤ 1; the next step is h · clamp(0.9 r^(−1/q), 0.2, 10) with
q the method's order (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4, as SciPy and
torchdiffeq). All four tableaux are first-same-as-last, so a step costs S − 1 evaluations.

A stage whose solution and error weights are both zero (dopri5's second, four of dopri8's)
only feeds the later stages. Components of y that f never reads (quadratures, such as the
log-density integral of a likelihood solve) are then not needed there: ``f_inner`` may give
dy/dt with them left at zero, at a lower cost (CVODES calls such components quadratures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Tableau", "TABLEAUS", "CONTROLS", "solve_batched"]

#: How the step size is chosen: each sample its own ("per_sample"), or one for the batch ("joint").
CONTROLS = ("per_sample", "joint")


@dataclass(frozen=True)
class Tableau:
    """An embedded explicit Runge–Kutta pair: nodes c, matrix a (row i: stage i's weights on
    the stages before it), solution weights b, error weights e = b − b̂, and the order q of
    the step-size rule. The last stage is evaluated at the new point (first same as last)."""

    c: tuple
    a: tuple
    b: tuple
    e: tuple
    order: int

    @property
    def inner(self) -> tuple:
        """The stages (by index) that enter neither the solution nor the error estimate:
        zero in b and e, and not the last (which is the next step's first)."""
        return tuple(i for i in range(1, len(self.c) - 1) if self.b[i] == 0.0 and self.e[i] == 0.0)


def _from_torchdiffeq(tableau, order: int) -> Tableau:
    """Our form of a torchdiffeq tableau (whose last stage is the new point's derivative)."""
    return Tableau(
        c=(0.0, *tableau.alpha.tolist()),
        a=((), *(tuple(row.tolist()) for row in tableau.beta)),
        b=tuple(tableau.c_sol.tolist()),
        e=tuple(tableau.c_error.tolist()),
        order=order,
    )


def _tableaus() -> dict:
    from torchdiffeq._impl.bosh3 import _BOGACKI_SHAMPINE_TABLEAU
    from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU
    from torchdiffeq._impl.dopri8 import _DOPRI8_TABLEAU

    # Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
    # simplifying assumption", Table 1; the last error weight's sign as corrected in
    # OrdinaryDiffEq.jl (issue 1654) and used by diffrax and torchode.
    b = (
        0.09646076681806523,
        0.01,
        0.4798896504144996,
        1.379008574103742,
        -3.290069515436081,
        2.324710524099774,
    )
    tsit5 = Tableau(
        c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
        a=(
            (),
            (0.161,),
            (-0.008480655492356989, 0.335480655492357),
            (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
            (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
            (
                5.86145544294642,
                -12.92096931784711,
                8.159367898576159,
                -0.071584973281401,
                -0.02826905039406838,
            ),
            b,
        ),
        b=(*b, 0.0),
        e=(
            0.00178001105222577714,
            0.0008164344596567469,
            -0.007880878010261995,
            0.1447110071732629,
            -0.5823571654525552,
            0.45808210592918697,
            -1 / 66,
        ),
        order=5,
    )
    return {
        "dopri5": _from_torchdiffeq(_DORMAND_PRINCE_SHAMPINE_TABLEAU, 5),
        "tsit5": tsit5,
        "bosh3": _from_torchdiffeq(_BOGACKI_SHAMPINE_TABLEAU, 3),
        "dopri8": _from_torchdiffeq(_DOPRI8_TABLEAU, 8),
    }


#: name → embedded pair: Dormand–Prince 5(4), Tsitouras 5(4), Bogacki–Shampine 3(2), Dormand–Prince 8(5,3).
TABLEAUS: dict[str, Tableau] = _tableaus()


def _combine(weights, ks, skip_zero=True):
    """Σ_j weights[j] k_j over the stages with a non-zero weight."""
    out = None
    for w, k in zip(weights, ks):
        if w == 0.0 and skip_zero:
            continue
        out = k * w if out is None else out.add(k, alpha=w)
    return out


def _error_ratio(err, y, y_new, rtol, atol, w, joint):
    """r per sample (``[b]``): the weighted RMS of err / (atol + rtol · max(|y|, |y_new|)),
    or the batch's one RMS over every sample when ``joint``."""
    scale = torch.maximum(y.abs(), y_new.abs()).mul_(rtol).add_(atol)
    sq = (err / scale).square_()
    r2 = sq.mean(1) if w is None else sq @ w
    return (r2.mean() if joint else r2).sqrt().expand(y.shape[0])


def _initial_step(f, t, y, k1, idx, t1, tab, rtol, atol, w, joint):
    """Hairer, Nørsett & Wanner's starting step (§II.4), per sample: one more evaluation."""
    norm = lambda v: _error_ratio(v, y, y, rtol, atol, w, joint)
    d0, d1 = norm(y), norm(k1)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, t1 - t)
    k2 = f(t + h0, y + h0[:, None] * k1, idx)
    d2 = norm(k2 - k1) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(
        big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), (0.01 / big) ** (1 / tab.order)
    )
    return torch.minimum(torch.minimum(100 * h0, h1), t1 - t)


def _stages(f, t, y, h, k1, idx, tab, f_inner=None):
    """The stages of one step from (t, y) with steps h: (y_new, error estimate, last stage);
    ``f_inner`` (if given) evaluates the stages of ``tab.inner``."""
    ks = [k1]
    hc = h[:, None]
    inner = tab.inner if f_inner is not None else ()
    for i in range(1, len(tab.c)):
        fi = f_inner if i in inner else f
        ks.append(fi(t + tab.c[i] * h, y + hc * _combine(tab.a[i], ks), idx))
    y_new = y + hc * _combine(tab.b, ks)
    return y_new, hc * _combine(tab.e, ks), ks[-1]


def solve_batched(
    f: Callable,
    y0: torch.Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float,
    atol: float,
    method: str = "dopri5",
    control: str = "per_sample",
    weights: torch.Tensor | None = None,
    max_steps: int = 100_000,
    f_inner: Callable | None = None,
) -> tuple[torch.Tensor, dict]:
    """y(t1) ``[B, n]`` for dy/dt = f(t, y, idx), y(t0) = y0 ``[B, n]``, t0 < t1, and stats.

    ``f(t [b], y [b, n], idx [b])`` gets the samples still on their way (``idx`` their rows
    of y0) at their own times and returns dy/dt ``[b, n]``. ``method`` names a tableau of
    ``TABLEAUS``, ``control`` one of ``CONTROLS``, ``weights`` (``[n]``, ≥ 0) the components
    the error norm counts (default all alike). ``f_inner`` (same signature) may stand in for f
    at the stages of ``Tableau.inner``, leaving components that f never reads at zero.
    Stats: ``nfe`` (calls of f and f_inner), ``nfe_inner`` (of f_inner), ``sample_evals`` (rows
    evaluated, summed), ``steps`` (accepted, the largest over samples), ``rejected``.
    A step size that underflows or ``max_steps`` steps raise a ValueError.
    """
    if method not in TABLEAUS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(TABLEAUS)}")
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; choose one of {list(CONTROLS)}")
    if not t1 > t0:
        raise ValueError(f"solve_batched integrates forward: t1 = {t1} must exceed t0 = {t0}")
    tab, joint = TABLEAUS[method], control == "joint"
    B = y0.shape[0]
    w = None if weights is None else (weights / weights.sum()).to(y0)
    out = torch.empty_like(y0)
    idx = torch.arange(B, device=y0.device)
    t = torch.full((B,), float(t0), dtype=y0.dtype, device=y0.device)
    y = y0
    k1 = f(t, y, idx)
    h = _initial_step(f, t, y, k1, idx, t1, tab, rtol, atol, w, joint)
    stats = dict(nfe=2, nfe_inner=0, sample_evals=2 * B, steps=0, rejected=0)
    n_inner = len(tab.inner) if f_inner is not None else 0
    while idx.numel():
        if stats["steps"] + stats["rejected"] >= max_steps:
            raise ValueError(f"the ODE solve took more than max_steps = {max_steps} steps; loosen rtol/atol")
        y_new, err, k_last = _stages(f, t, y, h, k1, idx, tab, f_inner)
        stats["nfe"] += len(tab.c) - 1
        stats["nfe_inner"] += n_inner
        stats["sample_evals"] += (len(tab.c) - 1) * idx.numel()
        r = _error_ratio(err, y, y_new, rtol, atol, w, joint)
        ok = r <= 1.0  # False for NaN
        factor = (0.9 * r.pow(-1.0 / tab.order)).nan_to_num_(0.2).clamp_(0.2, 10.0)
        if bool(ok.all()):
            t, y, k1 = t + h, y_new, k_last
            stats["steps"] += 1
        else:
            stats["rejected"] += 1
            stats["steps"] += int(ok.any())
            factor = torch.where(ok, factor, factor.clamp(max=1.0))
            okc = ok[:, None]
            t, y, k1 = torch.where(ok, t + h, t), torch.where(okc, y_new, y), torch.where(okc, k_last, k1)
        left = t1 - t
        h = torch.minimum(h * factor, left)
        done = left <= 1e-12 * max(1.0, abs(t1))
        if bool(done.any()):
            out[idx[done]] = y[done]
            keep = ~done
            idx, t, y, k1, h = idx[keep], t[keep], y[keep], k1[keep], h[keep]
        elif not bool((h > 1e-14 * t.abs().clamp(min=1.0)).all()):  # NaN h (f non-finite at t0) too
            raise ValueError(
                f"the ODE solve from t={t0} to t={t1} failed: its step size underflowed at "
                f"t = {t.min().item():.6g}; the right-hand side is probably non-finite there "
                f"(a broken model or an input far off the data)"
            )
    return out, stats
