"""The Cauchy fit against the dimension, and the summary tables that compare runs across settings.

    scorepde-cauchy --scaling DIR [--cpu-minutes M] [--dims 2 8 ...] [--covs iso diag full]

runs the grid D × covariance kind × {cauchy, dsm}, each on M minutes of its own CPU time (equal
budgets, whatever the load), one folder per run (``DIR/<cov>_<method>_d<D>/metrics.json``); a run
whose metrics.json exists is skipped, so the command resumes a grid where it stopped. Then it
writes DIR/scaling.md (the table) and DIR/scaling.png (the error against D). Full covariances stop
at ``FULL_MAX_DIM``: their closed-form score costs O(K D²) per point, the fit's rotations O(J D³).

``goal_section``, ``score_pinn_section`` and ``rule_section`` are the summary's tables of the goal
rows, of the runs in Score-PINN's error convention and of the plug-in/unbiased measurements.
"""

from __future__ import annotations

import json
import os

from .. import plotting
from .. import reporting as rp

DIMS = (2, 8, 32, 128, 512, 1000)
COV_KINDS = ("iso", "diag", "full")
FULL_MAX_DIM = 128


def grid(dims, covs, cpu_minutes: float) -> list[tuple[str, list[str]]]:
    """(run name, argv) of every run of the scaling grid, in the order they run."""
    runs = []
    for cov in covs:
        for dim in dims:
            if cov == "full" and dim > FULL_MAX_DIM:
                continue
            for method in ("cauchy", "dsm"):
                argv = ["--dim", str(dim), "--cov", cov, "--method", method]
                argv += ["--minutes", f"{cpu_minutes:g}", "--clock", "cpu", "--n-evals", "4"]
                runs.append((f"{cov}_{method}_d{dim}", argv))
    return runs


def run_grid(folder: str, dims=DIMS, covs=COV_KINDS, cpu_minutes: float = 1.0, run=None) -> str:
    """Run the missing runs of the grid one after another with ``run(argv)`` (the command's
    ``run``), then write the table and the figure; returns the table."""
    for name, argv in grid(dims, covs, cpu_minutes):
        out = os.path.join(folder, name)
        if os.path.isfile(os.path.join(out, "metrics.json")):
            print(f"{name}: done, skipped")
            continue
        run(argv + ["--out", out, "--overwrite"])
    return scaling_report(folder)


def load_runs(folder: str) -> dict:
    """Each DIR/<run>/metrics.json, by run name (sorted); {} if there is none."""
    runs = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                runs[name] = json.load(f)
    return runs


def _cell(m: dict | None) -> list[str]:
    if m is None:
        return ["—"] * 4
    return [
        f"{m['score_rel_l2']:.3f}",
        f"{m['worst_rel_l2']:.2f} at {m['worst_t']:.2f}",
        str(m["steps"]),
        f"{m['train_cpu_seconds'] / 60:.2f} ({m['train_seconds'] / 60:.1f})",
    ]


def scaling_report(folder: str) -> str:
    """DIR/scaling.md: per covariance kind and D, the Cauchy fit beside DSM at equal CPU time;
    DIR/scaling.png: the time-averaged error against D, one line per kind and method."""
    runs = load_runs(folder)
    rows: list[list[str]] = []
    series: dict[str, dict[int, float]] = {}
    for cov in COV_KINDS:
        for dim in DIMS:
            pair = {meth: runs.get(f"{cov}_{meth}_d{dim}") for meth in ("cauchy", "dsm")}
            if not any(pair.values()):
                continue
            c = pair["cauchy"]
            param = "—" if c is None else c["config"].get("param", "gate")
            rows.append([cov, str(dim), param] + _cell(c) + _cell(pair["dsm"]))
            for meth, m in pair.items():
                if m is not None:
                    series.setdefault(f"{meth}, {cov}", {})[dim] = m["score_rel_l2"]
    head = ["cov", "D", "Cauchy param"]
    head += [
        f"{w}, {meth}"
        for meth in ("Cauchy", "DSM")
        for w in ("rel_l2", "worst at t", "steps", "CPU (wall) min")
    ]
    loads = sorted(m["load_average"][0] for m in runs.values())
    text = rp.markdown_section("Scaling with D (equal CPU time per run)", head, rows)
    if loads:
        text += f"\n\nLoad average (1 min) at the end of the runs: {loads[0]:.1f}–{loads[-1]:.1f}.\n"
    rp.write_text(folder, "scaling.md", text)
    if series:
        dims = sorted({d for s in series.values() for d in s})
        plotting.curves(
            dims,
            {k: [v.get(d, float("nan")) for d in dims] for k, v in sorted(series.items())},
            os.path.join(folder, "scaling.png"),
            xlabel="D",
            ylabel="time-averaged rel. L2 (21 t)",
            title="Cauchy fit and DSM at equal CPU time",
        )
    print(text)
    return text


def goal_section(runs: dict, folder: str) -> list[str]:
    """The goal rows of DIR/goals.json (problem, D, goal, and per attempt its run and command):
    each attempt's error, whether it meets the goal or by how much it misses, its wall and CPU
    time and the load."""
    path = os.path.join(folder, "goals.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        goals = json.load(f)
    rows = []
    for g in goals:
        for attempt in g["attempts"]:
            m = runs.get(attempt["run"])
            if m is None:
                continue
            err, goal = m["score_rel_l2"], g["goal"]
            verdict = "**met**" if err <= goal else f"missed by {err - goal:.3f}"
            rows.append([
                g["problem"], str(g["dim"]), f"≤ {goal:g}", f"`{attempt['command']}`", f"{err:.4f}", verdict,
                f"{m['train_seconds'] / 60:.1f}", f"{m['train_cpu_seconds'] / 60:.1f}", f"{m['load_average'][0]:.1f}",
            ])  # fmt: skip
    head = ["problem", "D", "goal", "command", "score_rel_l2", "verdict", "train wall min", "CPU min", "load"]
    return [rp.markdown_section("Goals (issue 35)", head, rows)] if rows else []


def score_pinn_section(runs: dict) -> list[str]:
    """Runs with Score-PINN's measures beside ours (``scorepde.metrics.score_pinn_errors``)."""
    rows = []
    for name, m in runs.items():
        p = m.get("score_pinn")
        if p is None:
            continue
        cfg = m["config"]
        rows.append([
            f"`{name}`", str(cfg["dim"]), cfg.get("cov", "iso"), cfg["method"], f"{m['score_rel_l2']:.4f}",
            f"{p['score_mae']:.4f}", f"{p['score_rmse']:.4f}",
            f"{p['logp_per_dim_rel_l2']:.2e}" if "logp_per_dim_rel_l2" in p else "—",
        ])  # fmt: skip
    head = ["run", "D", "cov", "method", "ours: score_rel_l2", "score MAE", "score RMSE", "log q / D rel. L2"]
    return [rp.markdown_section("In Score-PINN's convention", head, rows)] if rows else []


#: Earlier runs that pair the plug-in and the unbiased square at D = 32 (plug-in run, unbiased run).
RULE_PAIRS = (
    ("abl_gate_d32_cpu4", "abl_gate_d32_cpu4_unbiased"),
    ("long_cauchy_ve_d32_cpu20", "unbiased_cauchy_ve_d32"),
)


def rule_section(runs: dict) -> list[str]:
    """The plug-in against the unbiased square, per D: the ``rule_*`` runs (equal CPU time) and
    the earlier D = 32 pairs of ``RULE_PAIRS``."""
    pairs: list[tuple[dict, dict]] = []
    by_dim: dict[int, dict[bool, dict]] = {}
    for name, m in runs.items():
        if name.startswith("rule_"):
            by_dim.setdefault(m["config"]["dim"], {})[bool(m["config"]["unbiased"])] = m
    pairs += [(pair[False], pair[True]) for _, pair in sorted(by_dim.items()) if len(pair) == 2]
    pairs += [(runs[a], runs[b]) for a, b in RULE_PAIRS if a in runs and b in runs]
    rows = [
        [
            str(p["config"]["dim"]), f"{p['score_rel_l2']:.4f}", f"{u['score_rel_l2']:.4f}",
            f"{p['steps']} / {u['steps']}", f"{p['train_cpu_seconds'] / 60:.1f} / {u['train_cpu_seconds'] / 60:.1f}",
            "unbiased" if u["score_rel_l2"] < p["score_rel_l2"] else "plug-in",
        ]
        for p, u in pairs
    ]  # fmt: skip
    head = ["D", "plug-in", "unbiased", "steps", "CPU min", "lower"]
    return [rp.markdown_section("Plug-in or unbiased square", head, rows)] if rows else []
