"""Figures (matplotlib, Agg backend): heat maps on a shared colour scale, scatter panels,
1-D densities, curves over t, error bars and image grids. Each function writes one PNG and
returns its path. No math here: callers pass arrays they computed with the library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

__all__ = [
    "grid_points",
    "heatmaps",
    "scatters",
    "densities_1d",
    "curves",
    "histogram_density",
    "training_curves",
    "smooth",
    "errorbars",
    "audit_figure",
    "save_grid",
    "work_precision",
]


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def grid_points(extent: tuple[float, float], n: int, dim: int = 2, dtype=torch.float32) -> torch.Tensor:
    """A regular grid over ``extent`` per axis: ``[n, 1]`` for dim 1, ``[n*n, 2]`` (row-major,
    y slowest) for dim 2, matching ``heatmaps``' ``reshape(n, n)``."""
    side = torch.linspace(extent[0], extent[1], n, dtype=dtype)
    if dim == 1:
        return side[:, None]
    if dim != 2:
        raise ValueError(f"grids are for 1-D or 2-D data, got dim={dim}")
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmaps(
    panels: dict[str, np.ndarray],
    extent: tuple[float, float],
    path: str,
    *,
    label: str = "density",
    vmin: float | None = None,
    vmax: float | None = None,
    suptitle: str | None = None,
    cmap: str = "inferno",
) -> str:
    """Side-by-side heat maps of ``[n, n]`` arrays (row index = y) on one colour scale.

    The scale spans all panels (or ``vmin``/``vmax``) and one colour bar labelled ``label``
    serves them all.
    """
    arrays = {k: _np(v) for k, v in panels.items()}
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays.values()])
    vmin = float(finite.min()) if vmin is None else vmin
    vmax = float(finite.max()) if vmax is None else vmax
    fig, axes = plt.subplots(
        1, len(arrays), figsize=(3.6 * len(arrays) + 0.8, 3.6), squeeze=False, constrained_layout=True
    )
    im = None
    for ax, (title, a) in zip(axes[0], arrays.items()):
        im = ax.imshow(
            a, origin="lower", extent=(*extent, *extent), vmin=vmin, vmax=vmax, cmap=cmap, aspect="equal"
        )
        ax.set_title(title)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    fig.colorbar(im, ax=list(axes[0]), label=label, shrink=0.9)
    if suptitle:
        fig.suptitle(suptitle, y=1.06)
    return _save(fig, path)


def scatters(
    panels: dict[str, np.ndarray],
    extent: tuple[float, float],
    path: str,
    *,
    suptitle: str | None = None,
    size: float = 2.0,
) -> str:
    """Side-by-side 2-D scatter plots of ``[N, 2]`` point sets on the same axes limits."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels.items()):
        p = _np(pts)
        ax.scatter(p[:, 0], p[:, 1], s=size, alpha=0.5, linewidths=0)
        ax.set_xlim(*extent)
        ax.set_ylim(*extent)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return _save(fig, path)


def densities_1d(
    x: np.ndarray,
    series: dict[str, np.ndarray],
    path: str,
    *,
    title: str | None = None,
    ylabel: str = "density",
    ymax: float | None = None,
) -> str:
    """Several 1-D densities over the same points ``x`` in one axes (y clipped at ``ymax``)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, y in series.items():
        ax.plot(_np(x).ravel(), _np(y).ravel(), label=name)
    ax.set_xlabel("x")
    ax.set_ylabel(ylabel)
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def curves(
    t: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str,
    *,
    ylabel: str,
    xlabel: str = "t",
    title: str | None = None,
    logy: bool = True,
    panels: dict[str, dict[str, Sequence[float]]] | None = None,
    suptitle: str | None = None,
) -> str:
    """Curves over t: one axes with ``series``, or one axes per entry of ``panels``
    (``{panel title: {label: values}}``, all sharing ``ylabel``); log y by default;
    ``suptitle`` above them all."""
    groups = panels if panels is not None else {title or "": series}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.6), squeeze=False)
    for ax, (gtitle, ser) in zip(axes[0], groups.items()):
        for name, y in ser.items():
            y = np.asarray(y, dtype=float)
            if logy:
                y = np.where(y > 0, y, np.nan)
            ax.plot(list(t), y, label=name, marker=".")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if gtitle:
            ax.set_title(gtitle)
    if suptitle:
        fig.suptitle(suptitle)
        fig.tight_layout()
    return _save(fig, path)


def histogram_density(samples, extent: tuple[float, float], n: int) -> np.ndarray:
    """An ``[n, n]`` normalised 2-D histogram of ``[N, 2]`` samples over ``extent`` (row = y),
    for showing a data set whose density has no closed form."""
    p = _np(samples)
    edges = np.linspace(extent[0], extent[1], n + 1)
    h, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=[edges, edges], density=True)
    return h


#: Log fields that are bookkeeping, not terms of the objective.
_NOT_LOSSES = ("step", "lr", "step_time")


def _merge_equal(series: dict[str, list]) -> dict[str, list]:
    """Series that are equal everywhere drawn once, under a joint label ("loss = dsm"): a
    DSM run's loss is its dsm term, and two coinciding curves hide one another."""
    merged: dict[str, list] = {}
    for name, values in series.items():
        twin = next(
            (k for k, v in merged.items() if np.allclose(v, values, rtol=1e-12, atol=0, equal_nan=True)), None
        )
        if twin is None:
            merged[name] = values
        else:
            merged[f"{twin} = {name}"] = merged.pop(twin)
    return merged


def smooth(values: Sequence[float], span: int) -> np.ndarray:
    """The exponential moving average with the given ``span`` (α = 2/(span + 1)), bias-corrected
    at the start so that the first points are not pulled towards 0; NaNs are skipped."""
    alpha = 2.0 / (max(int(span), 1) + 1)
    out, avg, weight = [], 0.0, 0.0
    for v in np.asarray(values, dtype=float):
        if np.isfinite(v):
            avg, weight = (1 - alpha) * avg + alpha * v, (1 - alpha) * weight + alpha
        out.append(avg / weight if weight > 0 else np.nan)
    return np.array(out)


def training_curves(
    records: Sequence[dict], path: str, *, title: str | None = None, span: int | None = None
) -> str:
    """The training curves of a ``log.jsonl`` (one dict per step): the loss and its parts
    (``dsm``, ``fp``) in one panel, the regularizer's own parts (``fp_*``) in a second when the
    regularizer ran. Each series is drawn raw (faint) and smoothed (an EMA over ``span`` steps,
    default 1/20 of the run); series equal everywhere (a DSM run's loss and dsm) are drawn
    once under a joint label; log y where every value is positive."""
    if not records:
        raise ValueError("no training records to plot; the log is empty")
    steps = [r["step"] for r in records]
    names = [k for k in records[0] if k not in _NOT_LOSSES and isinstance(records[0][k], (int, float))]
    series = {k: [float(r.get(k, np.nan)) for r in records] for k in names}
    series = {k: v for k, v in series.items() if any(x != 0 for x in v)}  # fp = 0 under DSM
    main = _merge_equal({k: v for k, v in series.items() if not k.startswith("fp_")})
    parts = _merge_equal({k: v for k, v in series.items() if k.startswith("fp_")})
    panels = {"loss and its terms": main, **({"regularizer parts": parts} if parts else {})}
    positive = all(x > 0 for v in series.values() for x in v if np.isfinite(x))
    span = span or max(len(steps) // 20, 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (panel, ser) in zip(axes[0], panels.items()):
        for name, y in ser.items():
            y = np.asarray(y, dtype=float)
            (raw,) = ax.plot(steps, np.where(y > 0, y, np.nan) if positive else y, lw=0.6, alpha=0.3)
            ax.plot(steps, smooth(y, span), color=raw.get_color(), lw=1.5, label=f"{name} (EMA, span {span})")
        if positive:
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel="value (faint: per step)", title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def errorbars(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]]],
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    zero_line: bool = True,
    suptitle: str | None = None,
) -> str:
    """Points with error bars, one axes per panel: ``{panel: {label: (x, y, half_width)}}``
    (a half-width of None or NaN draws the point alone); a dashed line at y = 0 if asked."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        for label, (x, y, h) in series.items():
            order = np.argsort(np.asarray(x, dtype=float))  # draw the line left to right
            x = np.asarray(x, dtype=float)[order]
            y = np.asarray(y, dtype=float)[order]
            h = np.asarray([np.nan if v is None else v for v in h], dtype=float)[order]
            ax.errorbar(
                x, y, yerr=np.where(np.isfinite(h), h, 0.0), marker="o", capsize=3, label=label, linestyle="-"
            )
        if zero_line:
            ax.axhline(0.0, color="k", lw=0.8, ls="--")
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short range
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)  # once: beside each panel it overlaps
    if suptitle:
        fig.suptitle(suptitle, y=1.03)
    return _save(fig, path)


#: Half-width of the error bars of ``audit_figure``: about 95% for a normal estimate.
Z95 = 1.96


def _native_axis(ax, t: Sequence[float], native: tuple[str, Sequence[float]], ticks: int = 5) -> None:
    """A top axis with a few of the grid's t labelled in the model's own clock."""
    name, values = native
    top = ax.secondary_xaxis("top")
    idx = np.unique(np.linspace(0, len(t) - 1, min(ticks, len(t))).round().astype(int))
    fmt = (lambda v: f"{v:.0f}") if "step" in name else (lambda v: f"{v:.3g}")
    top.set_xticks([t[i] for i in idx], labels=[fmt(values[i]) for i in idx])
    top.xaxis.set_minor_formatter(NullFormatter())
    top.tick_params(axis="x", which="minor", top=False)
    top.set_xlabel(name, fontsize=8)


def _errorbar_panel(ax, t, series: dict[str, tuple[Sequence, Sequence]], *, logy: bool) -> None:
    x = np.asarray(t, dtype=float)
    for label, (y, se) in series.items():
        y = np.array([np.nan if v is None else v for v in y], dtype=float)
        h = Z95 * np.array([0.0 if v is None else v for v in se], dtype=float)
        if logy:
            keep = y > 0
            lower = np.minimum(h, 0.999 * np.where(keep, y, 0.0))  # a log axis has no room below 0
            ax.errorbar(x[keep], y[keep], yerr=[lower[keep], h[keep]], label=label, marker=".", capsize=2)
        else:
            ax.errorbar(x, y, yerr=h, label=label, marker=".", capsize=2)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")


def audit_figure(
    t: Sequence[float],
    native: tuple[str, Sequence[float]],
    curves: dict[str, dict[str, tuple[Sequence, Sequence]]],
    path: str,
    *,
    differences: dict[str, dict[str, tuple[Sequence, Sequence]]] | None = None,
    references: dict[str, tuple[float, str]] | None = None,
    suptitle: str | None = None,
) -> str:
    """The audit's figure: one panel per quantity with the models overlaid (``curves``:
    ``{panel: {model: (values, SEs)}}``, log axes) and, when given, a second row with the
    paired differences (``differences``, same layout, linear y, a line at 0). Error bars are
    ±1.96 SE; ``references`` draws ``{panel: (y, label)}`` as a dotted line. The top axis
    shows t in the model's own clock (``native``: (name, values on the grid))."""
    rows = 2 if differences else 1
    fig, axes = plt.subplots(
        rows,
        len(curves),
        figsize=(3.9 * len(curves), 3.5 * rows + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (title, series) in zip(axes[0], curves.items()):
        _errorbar_panel(ax, t, series, logy=True)
        if references and title in references:
            y, label = references[title]
            ax.axhline(y, color="0.4", ls=":", lw=1, label=label)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        _native_axis(ax, t, native)
    for ax, (title, series) in zip(axes[1] if differences else [], (differences or {}).items()):
        _errorbar_panel(ax, t, series, logy=False)
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"paired difference: {title}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("t (the SDE's time)")
    axes[0][0].set_ylabel("value (error bars ±1.96 SE)", fontsize=8)
    if differences:
        axes[1][0].set_ylabel("B − A (±1.96 SE, paired)", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path)


def save_grid(
    images: torch.Tensor,
    levels: int,
    path: str,
    *,
    nrow: int | None = None,
    pad: int = 1,
    min_cell: int = 32,
    title: str | None = None,
) -> str:
    """Write integer images ``[N, C, H, W]`` (values in [0, levels)) as one PNG grid.

    Grey for C = 1, RGB for C = 3; ``nrow`` images per row (default ⌈√N⌉); small images
    are enlarged by an integer factor (nearest neighbour) to at least ``min_cell`` pixels.
    Without ``title`` the PNG is the grid pixel for pixel; with it, a titled figure.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(images.shape)}")
    from matplotlib import image as mpimg

    arr = images.detach().cpu().to(torch.float32).numpy() / max(1, levels - 1)
    arr = np.clip(arr, 0.0, 1.0)
    n, c, h, w = arr.shape
    zoom = max(1, -(-min_cell // max(h, w)))
    arr = arr.repeat(zoom, axis=2).repeat(zoom, axis=3)
    h, w = h * zoom, w * zoom
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, nrow)
        tile = np.transpose(arr[i], (1, 2, 0))
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
        ] = tile if c == 3 else tile.repeat(3, axis=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if title is None:
        mpimg.imsave(path, canvas)
        return path
    import textwrap

    height, width = canvas.shape[:2]
    fig_w = max(5.0, width / 80)
    lines = textwrap.wrap(title, width=int(fig_w * 11))
    head = 0.2 + 0.2 * len(lines)  # inches of title
    fig = plt.figure(figsize=(fig_w, fig_w * height / width + head))
    ax = fig.add_axes([0, 0, 1, 1 - head / fig.get_figheight()])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle("\n".join(lines), fontsize=10, y=0.995, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def work_precision(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    targets: Mapping[str, float],
    path: str,
    ylabel: str = "per-image |Δ bits/dim|",
    xlabel: str = "CPU seconds per solve",
) -> str:
    """Error against time, log-log, one axes per case (``{case: {method: [(seconds, error)]}}``),
    one curve per method, a dashed line at each case's target error."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    for ax, (case, methods) in zip(axes[0], panels.items()):
        for name, points in methods.items():
            pts = sorted(points)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
        if case in targets:
            ax.axhline(targets[case], color="k", ls="--", lw=0.8, label="target")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=xlabel,
            ylabel=ylabel,
            title=case,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
