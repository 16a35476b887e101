"""From a grid of finished runs to what an experiment reports: summaries over seeds, paired
comparisons against a control, markdown and console tables, metrics.json and the
paired-difference figure. Plain functions over plain dicts (a run is the dict that
``RunStore.save`` wrote); the statistics come from ``scorepde.stats``.

A typical report (toy/density.py: NLL of FP at each β against vanilla, paired over seeds)::

    runs = index_runs(store.all(), ("data", "beta", "seed"), where={"budget": budget})
    control = {s: r for (d, b, s), r in runs.items() if d == name and b == 0.0}
    fp = {s: r for (d, b, s), r in runs.items() if d == name and b == beta}
    e = {**seed_summary(fp, "nll"), "paired": paired_vs_control(fp, control, "nll")}
    write_metrics(out, metrics)                               # atomic
    write_text(out, "summary.md", markdown_table(head, rows))
    paired_figure({name: summaries}, path, xlabel="β", ylabel="NLL FP − vanilla")
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from .atomic import atomic_write
from .stats import mean_se, paired_difference

__all__ = [
    "index_runs",
    "seed_summary",
    "paired_vs_control",
    "average",
    "paired_series",
    "markdown_table",
    "markdown_section",
    "residual_table",
    "text_table",
    "fmt",
    "fmt_interval",
    "minus",
    "write_metrics",
    "write_text",
    "paired_figure",
]


# --- from run files to summaries --------------------------------------------------------


def index_runs(
    runs: Iterable[dict], keys: Sequence[str], where: Mapping[str, object] | None = None
) -> dict[tuple, dict]:
    """``{(run[k] for k in keys): run}`` for the runs whose fields match ``where``.

    Two runs with the same key are an error (they would silently replace each other).
    """
    out: dict[tuple, dict] = {}
    for run in runs:
        if where and any(run.get(k) != v for k, v in where.items()):
            continue
        missing = [k for k in keys if k not in run]
        if missing:
            raise ValueError(
                f"a run has no field {missing}; index by fields every run has (this one has {sorted(run)})"
            )
        key = tuple(run[k] for k in keys)
        if key in out:
            raise ValueError(
                f"two runs share {dict(zip(keys, key))}; index by more fields or narrow them with where="
            )
        out[key] = run
    return out


def seed_summary(runs: Mapping[Hashable, dict], key: str, level: float = 0.95) -> dict:
    """``{"seeds": [...], key: [per-seed values], **stats.mean_se(values)}`` over
    ``runs = {seed: run}``: the mean over seeds with its SE and t-interval."""
    values = [runs[s][key] for s in runs]
    return {"seeds": list(runs), key: values, **mean_se(values, level)}


def paired_vs_control(
    runs: Mapping[Hashable, dict],
    control: Mapping[Hashable, dict],
    key: str,
    level: float = 0.95,
    label: str = "seeds",
) -> dict | None:
    """``stats.paired_difference`` of ``run[key] − control[key]`` over the replicates both
    have (``{replicate: run}``, e.g. seeds); the shared replicates are stored under
    ``label``. None when they share none."""
    both = [k for k in runs if k in control]
    if not both:
        return None
    return {
        **paired_difference([runs[k][key] for k in both], [control[k][key] for k in both], level),
        label: both,
    }


def average(runs: Iterable[dict], *path: str):
    """The mean over runs of ``run[path[0]][path[1]]...``: a float, or (for list values, such
    as curves over t) the element-wise mean as a list."""
    values = []
    for run in runs:
        for k in path:
            run = run[k]
        values.append(run)
    if not values:
        raise ValueError(f"no runs to average {'/'.join(path)} over")
    mean = np.mean(values, axis=0)
    return mean.tolist() if mean.ndim else float(mean)


def paired_series(summaries: Mapping[float, dict]) -> tuple[list, list, list]:
    """(levels, paired means, half-widths) of the summaries that hold a ``"paired"`` entry:
    one series of ``paired_figure``'s (and ``plotting.errorbars``')."""
    xs, ys, hs = [], [], []
    for x, e in summaries.items():
        pd = e.get("paired")
        if pd:
            xs.append(x)
            ys.append(pd["mean"])
            hs.append(pd["half_width"])
    return xs, ys, hs


# --- tables and numbers as text ---------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A markdown table; ``align``: one letter per column, ``l`` or ``r`` (default all ``l``)."""
    align = align or "l" * len(headers)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one 'l' or 'r' per column ({len(headers)}), got {align!r}")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "".join(" --- |" if a == "l" else " ---: |" for a in align),
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {list(row)}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def markdown_section(
    title: str, headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None
) -> str:
    """A bold title line, then the table, after a blank line (sections join with ``"\\n"``)."""
    return f"\n**{title}**\n\n" + markdown_table(headers, rows, align)


def residual_table(curves: dict, label: str = "model") -> str:
    """r_FP(t) and r_DSM-like(t) from ``scorepde.residual_curves`` as a markdown table laid
    out like the paper's Table 4 (one row per quantity, one column per time)."""
    ts = curves["t"]
    head = "| " + label + " / time | " + " | ".join(f"{t:g}" for t in ts) + " |"
    rule = "| --- " * (len(ts) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(f"{v:.3f}" for v in curves[key]) + " |"
        for name, key in (("r_FP(t)", "r_fp"), ("r_DSM-like(t)", "r_dsm"))
    ]
    return "\n".join([head, rule, *rows])


def text_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A fixed-width table for the console (cells already formatted)."""
    cols = [list(headers)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols[0]), line(["-" * w for w in widths])] + [line(r) for r in cols[1:]])


def fmt(mean: float | None, sd: float | None = None, digits: int = 3) -> str:
    """``mean`` or ``mean ± sd`` at ``digits`` decimals; ``—`` for a missing mean."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def fmt_interval(paired: dict | None, digits: int = 3, one: str = " (1 seed)", bold: bool = False) -> str:
    """A paired difference as ``+m [lo, hi]`` (``+m (1 seed)`` without an interval, ``—``
    without a difference); ``bold`` marks an interval that excludes 0 as ``**…**``."""
    if not paired:
        return "—"
    m = f"{paired['mean']:+.{digits}f}"
    if paired.get("half_width") is None:
        return m + one
    text = f"{m} [{paired['lo']:+.{digits}f}, {paired['hi']:+.{digits}f}]"
    return f"**{text}**" if bold and (paired["lo"] > 0 or paired["hi"] < 0) else text


def minus(text: str) -> str:
    """``-`` → ``−`` (the typographic minus the README's tables use)."""
    return text.replace("-", "−")


# --- files ------------------------------------------------------------------------------


def _plain(value):
    """numpy scalars and arrays (and 0-d tensors) as JSON (json's ``default``)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__float__"):  # a 0-d tensor
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON: store numbers, lists and dicts in metrics")


def write_metrics(out: str, metrics: dict | list, name: str = "metrics.json", indent: int = 2) -> str:
    """``OUT/metrics.json``, written atomically (a reader never sees half a report)."""
    return atomic_write(
        os.path.join(out, name), lambda f: json.dump(metrics, f, indent=indent, default=_plain), binary=False
    )


def write_text(out: str, name: str, text: str) -> str:
    """``OUT/name`` (a table, a summary), written atomically, ending in one newline."""
    return atomic_write(os.path.join(out, name), lambda f: f.write(text.rstrip("\n") + "\n"), binary=False)


# --- figures ----------------------------------------------------------------------------


def paired_figure(
    panels: Mapping[str, Mapping[str, Mapping[float, dict]]],
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    suptitle: str | None = None,
    logx: bool = True,
) -> str | None:
    """The standard figure of a grid against its control: per panel (data set), per series
    (method), the paired difference at each level (β) with its t-interval and a line at 0.
    ``panels = {panel: {series: {level: summary}}}``; panels with no paired point are left
    out, and with none at all nothing is drawn (returns None)."""
    from . import plotting

    drawn = {}
    for panel, series in panels.items():
        points = {label: paired_series(s) for label, s in series.items()}
        points = {label: p for label, p in points.items() if p[0]}
        if points:
            drawn[panel] = points
    if not drawn:
        return None
    return plotting.errorbars(drawn, path, xlabel=xlabel, ylabel=ylabel, suptitle=suptitle, logx=logx)
