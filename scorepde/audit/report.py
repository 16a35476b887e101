"""The audit's report: the printed table and verdict, and the figure, from the summarized numbers.

``result`` is what ``scorepde.audit.run`` returns (and metrics.json holds): ``t``,
``native`` (the model's clock), ``models`` (each with ``label`` and ``quantities``) and
``differences`` (each model against the first, paired).
"""

from __future__ import annotations

import math

from .summary import MAIN, QUANTITIES

__all__ = ["cell", "table", "verdict", "figure"]

#: What a ratio of ``summary`` means at its ends.
SCALE = "0 = solves the score FPE; ≈0.7 = its two terms unrelated; 1 = opposed"


def cell(est: dict | None, digits: int = 3) -> str:
    """``mean ± se``; ``mean (SE undefined)`` without an SE; ``—`` when not measured."""
    if est is None or est.get("mean") is None:
        return "—"
    if est.get("se") is None:
        return f"{est['mean']:.{digits}g} (SE undefined)"
    return f"{est['mean']:.{digits}g} ± {est['se']:.2g}"


def _when(result: dict, i: int) -> str:
    name, values = result["native"]["name"], result["native"]["values"]
    v = f"{values[i]:.0f}" if "step" in name else f"{values[i]:.3g}"
    return f"t = {result['t'][i]:.3g} ({name} {v})"


def table(result: dict) -> list[str]:
    """One line per model and t: t, the native clock, and the ``MAIN`` quantities."""
    head = ["t", result["native"]["name"]] + [QUANTITIES[q][0] for q in MAIN]
    lines = ["  |  ".join(head)]
    for model in result["models"]:
        lines.append(f"[{model['label']}]")
        for i, t in enumerate(result["t"]):
            native = result["native"]["values"][i]
            cells = [f"{t:.3g}", f"{native:.4g}"] + [cell(model["quantities"][q][i]) for q in MAIN]
            lines.append("  |  ".join(cells))
    for diff in result["differences"]:
        lines.append(f"[{diff['b']} − {diff['a']}, paired]")
        for i, t in enumerate(result["t"]):
            lines.append(
                "  |  ".join(
                    [f"{t:.3g}", f"{result['native']['values'][i]:.4g}"]
                    + [cell(diff["quantities"][q][i]) for q in MAIN]
                )
            )
    return lines


def _peak(rows: list[dict | None]) -> int | None:
    means = [(r["mean"], i) for i, r in enumerate(rows) if r is not None and r.get("mean") is not None]
    return max(means)[1] if means else None


def verdict(result: dict) -> list[str]:
    """A few sentences: where each model's residual peaks, how large against its terms,
    and where two models differ by more than 1.96 SE."""
    lines = []
    for model in result["models"]:
        q = model["quantities"]
        i, j = _peak(q["rel_fp"]), _peak(q["r_fp"])
        if i is None or j is None:
            lines.append(f"{model['label']}: no residual could be measured")
            continue
        lines.append(
            f"{model['label']}: the score-FPE residual is largest relative to its terms at "
            f"{_when(result, i)}: r_FP/(‖∂t s‖ + ‖∇x L‖) = {cell(q['rel_fp'][i])} ({SCALE}); "
            f"in absolute terms r_FP peaks at {_when(result, j)}: {cell(q['r_fp'][j])}."
        )
    for diff in result["differences"]:
        rows = diff["quantities"]["rel_fp"]
        clear = [
            (i, r)
            for i, r in enumerate(rows)
            if r is not None and r.get("se") is not None and abs(r["mean"]) > 1.96 * r["se"]
        ]
        lower = sum(r["mean"] < 0 for _, r in clear)
        if not clear:
            lines.append(
                f"{diff['b']} vs {diff['a']}: no t where the relative residuals differ by more "
                "than 1.96 SE (paired)"
            )
            continue
        lines.append(
            f"{diff['b']} vs {diff['a']}: the relative residual differs by more than 1.96 SE "
            f"(paired) at {len(clear)} of {len(rows)} t; {diff['b']} is lower at {lower} of them "
            f"and higher at {len(clear) - lower}."
        )
    return lines


def figure(result: dict, path: str, title: str) -> str:
    """The audit figure (``scorepde.plotting.audit_figure``) of ``result``."""
    from ..plotting import audit_figure

    def series(q, entries, key):
        return {
            e[key]: (
                [r and r["mean"] for r in e["quantities"][q]],
                [r and r["se"] for r in e["quantities"][q]],
            )
            for e in entries
        }

    curves = {QUANTITIES[q][0]: series(q, result["models"], "label") for q in MAIN}
    for diff in result["differences"]:
        diff["name"] = f"{diff['b']} − {diff['a']}"
    diffs = {QUANTITIES[q][0]: series(q, result["differences"], "name") for q in MAIN}
    refs = {
        QUANTITIES["rel_fp"][0]: (math.sqrt(0.5), "unrelated terms"),
        QUANTITIES["rel_dsm"][0]: (1.0, "s = 0"),
        QUANTITIES["rel_curl"][0]: (math.sqrt(0.5), "unrelated"),
    }
    first = result["models"][0]["quantities"]["rel_fp"]
    peak = _peak(first)
    if peak is not None:
        title = f"{title}\n{result['models'][0]['label']}: r_FP relative peaks at {cell(first[peak])}, {_when(result, peak)}"
    native = (result["native"]["name"], result["native"]["values"])
    return audit_figure(
        result["t"],
        native,
        curves,
        path,
        differences=diffs if result["differences"] else None,
        references=refs,
        suptitle=title,
    )
