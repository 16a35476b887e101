"""Synthetic density benchmarks (Sec. 7.1, Figs. 4-5, App. D.1): vanilla DSM against
FP-Diffusion at the paper's toy setting in the official code's units
(``scorepde.losses.PAPER_SETTINGS["toy"]``: β = 0.0015 on ‖ε‖/D, γ = 0, λ_FP = 1, m = 1, the
one-probe "paper" estimator, start time 1e-3) and β 10× either side, under VE, on the 1-D
3-mode GMM, the checkerboard, the Swiss rolls and the 8-mode GMM; test NLL by the PF-ODE.

    scorepde-density                              # the paper's 0.1M steps (many hours: see --budget)
    scorepde-density --budget small               # 2k steps per run
    scorepde-density --budget small --shard 0/2 &  scorepde-density --budget small --shard 1/2
    scorepde-density --budget small --report      # tables and figures from what is done
    python toy/density.py ...                     # the same command, from a source checkout

Resumable: one result file per (data set, β, seed, budget) in OUT/runs/, skipped when present;
a run interrupted (Ctrl-C, SIGTERM) saves OUT/ckpt/<run>.pt and continues from it exactly.
Both methods see the same seeds, weights at init, data batches and (t, z) draws.
Writes OUT/metrics.json (per-seed NLLs, paired FP − vanilla differences with 95% t-intervals),
OUT/summary.md (the table the README quotes),
OUT/nll_vs_beta.png, OUT/learning_curves.png and one density figure per data set: the report
of one budget, so each budget gets its own OUT (another budget's report there is refused).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch

from .. import plotting
from .. import reporting as rp
from ..cli import fail
from ..curves import residual_curves
from ..losses import PAPER_SETTINGS, FPObjective, held_out_dsm
from ..metrics import cross_entropy, nll
from ..outputs import announce
from ..runstore import RunStore, parse_shard, shard_of
from ..schedules import Cosine
from ..sde import VESDE
from ..stats import standard_error
from ..toy import sigma_max_from_data, toy_batches, toy_dataset, toy_model
from ..training import Checkpointing, StopRequested, fit
from ._toy import generator, parser, setup

DATASETS = ("gmm1d", "checkerboard", "swiss_rolls", "gmm8")
PRESET = PAPER_SETTINGS["toy"]
BETA = PRESET["beta"]  # 0.0015, in the official code's units (‖ε‖/D)


def beta_key(beta: float) -> float:
    """β as it names a run: 10 significant digits, so 0.0015/10 and a typed 0.00015 agree."""
    return float(f"{float(beta):.10g}")


SWEEP = tuple(beta_key(b) for b in (BETA, BETA / 10, BETA * 10))  # the preset first: a cut-short grid has it
#: Training steps per run. "paper": App. D.1's 0.1M iterations.
BUDGETS = {"paper": 100_000, "medium": 20_000, "small": 2_000, "tiny": 30}
EPS = PRESET["eps"]  # start time for training and likelihood
ODE_TOL = 1e-5
SIGMA_MIN = 0.01
N_SIGMA_MAX = 2000  # draws that σ_max is measured on
FOURIER_SCALE = 1.0  # log σ spans ~10: scale 16 makes c ↦ emb(c) noise
TEST_SEED = 10_000  # one test set per data set, shared by every model
EVAL_TIMES = (0.01, 0.1, 0.5, 0.9)  # where the residual and held-out DSM are measured
MD_HEAD = (
    "data set",
    "budget",
    "β",
    "seeds",
    "NLL vanilla",
    "NLL FP",
    "FP − vanilla, 95% CI",
    "true NLL",
    "held-out DSM, vanilla / FP",
    f"r_FP({EVAL_TIMES[0]:g}), vanilla / FP",
)
TITLES = {
    "gmm1d": "1-D 3-mode GMM",
    "checkerboard": "checkerboard",
    "swiss_rolls": "Swiss rolls",
    "gmm8": "8-mode GMM",
}


def _label(beta: float) -> str:
    return "vanilla" if beta == 0 else "fp"


# --- one run: train, evaluate, save -------------------------------------------------------


def _density_grid(model, sde, ds, n_side):
    """The model's density on the figure's grid, NaN where a point's PF-ODE solve fails: a
    figure never costs a run."""
    grid = plotting.grid_points(ds.extent, n_side, ds.dim)
    return grid, (
        -nll(model, sde, grid, EPS, batch_size=1024, nan_on_failure=True, rtol=ODE_TOL, atol=ODE_TOL)
    ).exp()


def _setup(name, dev=None):
    ds = toy_dataset(name)
    sde = VESDE(SIGMA_MIN, sigma_max_from_data(ds.sample(N_SIGMA_MAX, generator(20_000))))
    return ds, sde


def _objective(model, sde, beta, subbatch):
    """DSM (β = 0) or DSM + the toy preset's R_FP at ``beta`` (reference units)."""
    return FPObjective(model, sde, **{**PRESET, "beta": beta, "subbatch": subbatch})


def _held_out(model, sde, x_test, seed=1, repeats=10):
    """On the shared test set: the held-out DSM loss (the training objective's DSM term, mean
    of ``repeats`` draws of (t, z)) and r_FP(t) = E‖ε‖, r_DSM(t) = E‖s + z/σ_t‖ at EVAL_TIMES
    (``scorepde.residual_curves``, exact ε; Table 4's quantities)."""
    gen = generator(seed)
    dsm, _ = held_out_dsm(
        model, sde, x_test, repeats, weighting=PRESET["dsm_weighting"], eps=EPS, generator=gen
    )
    curves = residual_curves(model, sde, x_test, EVAL_TIMES, generator=gen)
    return dsm, curves


def _train(name, beta, seed, budget, steps, args, ckpt):
    """Adam, cosine to 5%, clip 1; the (t, z, probe) draws of each step reseeded by
    ``step_seed(seed, step)``, the data stream's state kept in the checkpoint."""
    ds, sde = _setup(name, args.device)
    model = toy_model(
        ds,
        sde,
        hidden=args.hidden,
        seed=seed,
        device=args.device,
        param="score_model",
        fourier_scale=FOURIER_SCALE,
    )
    data_gen = generator(seed)
    fitted = fit(
        _objective(model, sde, beta, args.fp_subbatch),
        torch.optim.Adam(model.parameters(), lr=args.lr),
        toy_batches(ds, args.batch_size, data_gen, args.device),
        steps,
        generator=generator(0),
        seed=seed,
        schedule=Cosine(0.05),
        grad_clip=1.0,
        model=model,
        checkpoint=Checkpointing(ckpt, every=args.ckpt_every, at_end=False, generator=data_gen),
        curve_every=max(1, steps // 200),
        curve_keys=("loss", "dsm"),
        progress=not args.no_progress,
        desc=f"{name} β={beta:g} seed{seed} [{budget}]",
    )
    return ds, sde, model.eval(), fitted


def _evaluate(ds, sde, model, n_test, device) -> dict:
    """Test NLL by the PF-ODE (a point whose solve fails is counted, not averaged), its SE,
    the held-out DSM loss and the residual curves."""
    t1 = time.time()
    x_test = ds.sample(n_test, generator(TEST_SEED)).to(device)
    per_sample = nll(model, sde, x_test, EPS, nan_on_failure=True, rtol=ODE_TOL, atol=ODE_TOL)
    solved = per_sample[~per_sample.isnan()]
    dsm, curves = _held_out(model, sde, x_test)
    return {
        "nll": float(solved.mean()),
        "nll_se": standard_error(solved),
        "n_test": n_test,
        "test_failed": n_test - len(solved),
        "heldout_dsm": dsm,
        "residual_curves": curves,
        "eval_s": time.time() - t1,
    }


def run_one(name, beta, seed, budget, steps, args, store, ckpt_dir, *, want_grid, n_test):
    """Train one model (resuming from its checkpoint if any), evaluate it, save its result."""
    key = dict(data=name, beta=float(beta), seed=seed, budget=budget)
    ckpt = os.path.join(ckpt_dir, os.path.basename(store.path(**key))[:-5] + ".pt")
    ds, sde, model, fitted = _train(name, beta, seed, budget, steps, args, ckpt)
    ev = _evaluate(ds, sde, model, n_test, args.device)
    result = {
        "method": _label(beta),
        "steps": steps,
        **{k: ev[k] for k in ev if k != "eval_s"},
        "curve": fitted.curve,
        "train_s": fitted.train_seconds,
        "eval_s": ev["eval_s"],
        "resumed_at": fitted.resumed_at,
        "sde": repr(sde),
        "config": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "hidden": args.hidden,
            "fp_subbatch": args.fp_subbatch,
            "ode_tol": ODE_TOL,
            "eps": EPS,
            "objective": {**PRESET, "beta": beta},
        },
    }
    if want_grid:
        n_side = 400 if ds.dim == 1 else args.grid
        _, dens = _density_grid(model, sde, ds, n_side)
        result["grid"] = {
            "n_side": n_side,
            "failed": int(dens.isnan().sum()),  # null: a failed solve
            "density": [None if d != d else d for d in dens.tolist()],
        }
    store.save(result, **key)
    if os.path.isfile(ckpt):
        os.remove(ckpt)
    return result


def grid_runs(datasets, betas, seeds, budget):
    """The grid in the order it should fill: β (preset first), then seed, then data set,
    each FP run right after the vanilla run it is paired with."""
    runs = []
    for i, beta in enumerate(betas):
        for seed in seeds:
            for name in datasets:
                if i == 0:
                    runs.append((name, 0.0, seed))
                runs.append((name, beta, seed))
    return runs


# --- the report: run files → metrics.json, summary.md, figures --------------------------


def _finished(store, budget):
    """The finished runs of ``budget``, by (data set, β, seed); warns when their settings differ."""
    done = rp.index_runs(store.all(), ("data", "beta", "seed"), where={"budget": budget})
    setups = {
        json.dumps({k: v for k, v in r["config"].items() if k != "objective"}, sort_keys=True)
        for r in done.values()
    }
    if len(setups) > 1:
        print(
            f"warning: the runs of budget {budget} differ in their settings ({len(setups)} kinds: "
            f"{sorted(setups)}); compare only runs made with the same flags",
            file=sys.stderr,
        )
    return done


def _tradeoff(results):
    """Seed means of what FP trades: held-out DSM loss, r_FP(t) and r_DSM(t)."""
    rs = list(results)
    return {
        "heldout_dsm": rp.average(rs, "heldout_dsm"),
        "r_fp": rp.average(rs, "residual_curves", "r_fp"),
        "r_dsm": rp.average(rs, "residual_curves", "r_dsm"),
    }


def _entry(name, done, betas, seeds) -> dict:
    """One data set's metrics: the true NLL, vanilla's and each β's NLL over seeds with what FP
    traded, and each β's paired difference to vanilla (``paired``) with ``nll_se_mean``, the
    mean over those seeds of a run's test-NLL SE over test points (not an SE over repeats)."""
    ds = toy_dataset(name)
    entry: dict[str, Any] = {"betas": {}}
    n_test = next((r["n_test"] for k, r in done.items() if k[0] == name), None)
    entry["nll_true"] = (
        None
        if ds.log_prob is None or n_test is None
        else cross_entropy(ds.log_prob, ds.sample(n_test, generator(TEST_SEED)))
    )
    van = {s: done[(name, 0.0, s)] for s in seeds if (name, 0.0, s) in done}
    if van:
        entry["vanilla"] = {**rp.seed_summary(van, "nll"), **_tradeoff(van.values())}
    for beta in betas:
        fp = {s: done[(name, beta, s)] for s in seeds if (name, beta, s) in done}
        if not fp:
            continue
        e = {**rp.seed_summary(fp, "nll"), **_tradeoff(fp.values())}
        paired = rp.paired_vs_control(fp, van, "nll")
        if paired:
            e["paired"] = paired
            e["nll_se_mean"] = float(np.mean([fp[s]["nll_se"] for s in paired["seeds"]]))
        entry["betas"][repr(beta)] = e
    pre = entry["betas"].get(repr(BETA))  # keys the quick test and older readers use: the preset β's
    if "vanilla" in entry and pre:
        entry.update(
            nll_vanilla=entry["vanilla"]["mean"],
            nll_vanilla_std=entry["vanilla"]["sd"] or 0.0,
            nll_fp=pre["mean"],
            nll_fp_std=pre["sd"] or 0.0,
        )
    return entry


def _md_row(name, budget, steps, beta, entry, fp):
    """One row of OUT/summary.md, the table the README and toy/RESULTS.md quote: NLL mean ± SD
    over seeds, the paired interval (bold when it excludes 0) and what FP traded for it."""

    def r(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"

    def k(n):
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    van = entry.get("vanilla")
    where = (
        f"{k(steps)}, the paper's" if steps == BUDGETS["paper"] else f"{k(steps)} of {k(BUDGETS['paper'])}"
    )
    return [
        TITLES[name],
        f"{budget} ({where})",
        f"{beta:g}",
        str(len(fp["seeds"])),
        rp.minus(rp.fmt(van["mean"], van["sd"])) if van else "—",
        rp.minus(rp.fmt(fp["mean"], fp["sd"])),
        rp.minus(rp.fmt_interval(fp.get("paired"), bold=True)),
        rp.minus(rp.fmt(entry["nll_true"])),
        "—" if not van else f"{van['heldout_dsm']:.4f} / {fp['heldout_dsm']:.4f}",
        "—" if not van else f"{r(van['r_fp'][0])} / {r(fp['r_fp'][0])}",
    ]


def _rows(name, entry, betas, budget, steps, order):
    """The console table's rows and summary.md's rows (sorted by (data set, β) later)."""
    rows, md = [], []
    for beta in betas:
        e = entry["betas"].get(repr(beta))
        if e is None:
            continue
        rows.append(
            [
                name,
                f"{beta:g}",
                f"{len(e['seeds'])}",
                rp.fmt(entry.get("vanilla", {}).get("mean")),
                rp.fmt(e["mean"]),
                rp.fmt_interval(e.get("paired")),
                rp.fmt(e.get("nll_se_mean")),
            ]
        )
        md.append((order, beta, _md_row(name, budget, steps, beta, entry, e)))
    return rows, md


def _grid_counts(name, entry, done, base_seed, curves):
    """The learning curves of the base seed's vanilla and preset runs, and how many points of
    their density figures' grids failed (``entry["grid_failed"]``); returns the note, if any."""
    for beta in (0.0, BETA):
        r = done.get((name, beta, base_seed))
        if r:
            curves.setdefault(name, {})[f"{_label(beta)} β={beta:g}"] = r["curve"]
        if r and (r.get("grid") or {}).get("failed") is not None:  # runs before 2026-12-02: no count
            entry.setdefault("grid_failed", {"points": len(r["grid"]["density"])})[_label(beta)] = r["grid"][
                "failed"
            ]
    g = entry.get("grid_failed", {})
    return (
        f"{TITLES[name]}: vanilla {g['vanilla']}, FP {g['fp']} of {g['points']}"
        if {"vanilla", "fp"} <= set(g)
        else None
    )


def _test_notes(metrics, done):
    """Runs with test points whose PF-ODE solve failed: into metrics and the summary's note."""
    notes = []
    for (d, b, s), r in sorted(done.items()):
        if d in metrics and r.get("test_failed"):
            metrics[d].setdefault("test_failed", {})[f"beta={b:g},seed={s}"] = r["test_failed"]
            notes.append(f"{TITLES[d]}, β = {b:g}, seed {s}: {r['test_failed']} of {r['n_test']}")
    return notes


def report(store, datasets, betas, seeds, budget, steps, out, base_seed, write=True):
    """metrics.json, the tables and (``write``) the figures and summary.md from the finished
    runs of ``budget``; also the start times those runs used."""
    done = _finished(store, budget)
    metrics, rows, md, grid_notes, curves = {}, [], [], [], {}
    for name in datasets:
        entry = metrics[name] = _entry(name, done, betas, seeds)
        r, m = _rows(name, entry, betas, budget, steps, datasets.index(name))
        rows += r
        md += m
        note = _grid_counts(name, entry, done, base_seed, curves)
        if note:
            grid_notes.append(note)
    test_notes = _test_notes(metrics, done)
    eps = sorted({r["config"]["eps"] for r in done.values()})
    if write:
        _figures(metrics, curves, done, datasets, base_seed, budget, steps, out)
        if md:
            _summary(out, md, base_seed, grid_notes, test_notes)
    return metrics, rows, eps


def _summary(out, md, base_seed, grid_notes, test_notes):
    text = rp.markdown_table(MD_HEAD, [row for *_, row in sorted(md)]) + "\n"
    if grid_notes:
        text += (
            f"\nPoints of the density figures' grid (seed {base_seed}, β = 0 and {BETA:g}) "
            "whose PF-ODE solve failed, left blank: " + "; ".join(grid_notes) + ".\n"
        )
    if test_notes:
        text += (
            "\nTest points whose PF-ODE solve failed, left out of that run's mean NLL: "
            + "; ".join(test_notes)
            + ".\n"
        )
    rp.write_text(out, "summary.md", text)


def _figures(metrics, curves, done, datasets, base_seed, budget, steps, out):
    for name in datasets:
        _density_figure(name, toy_dataset(name), done, base_seed, out)
    rp.paired_figure(
        {
            name: {"FP − vanilla": {float(b): e for b, e in metrics[name]["betas"].items()}}
            for name in datasets
        },
        os.path.join(out, "nll_vs_beta.png"),
        xlabel="β (official units, ‖ε‖/D)",
        ylabel="NLL FP − vanilla (nats)",
        suptitle=f"paired over seeds, 95% t-interval; budget {budget} ({steps} steps)",
    )
    if curves:
        first = next(iter(next(iter(curves.values())).values()))
        plotting.curves(
            [c["step"] for c in first],
            {},
            os.path.join(out, "learning_curves.png"),
            ylabel="train DSM loss (window mean)",
            xlabel="step",
            logy=True,
            panels={n: {k: [c["dsm"] for c in v] for k, v in s.items()} for n, s in curves.items()},
        )


def _density_figure(name, ds, done, seed, out):
    maps = {
        lab: done[(name, b, seed)]["grid"]
        for lab, b in (("vanilla DSM", 0.0), (f"FP (β={BETA:g})", BETA))
        if (name, b, seed) in done and "grid" in done[(name, b, seed)]
    }
    if len(maps) < 2:
        return
    fig = os.path.join(out, f"density_{name}.png")
    n_side = next(iter(maps.values()))["n_side"]
    grid = plotting.grid_points(ds.extent, n_side, ds.dim)
    series = {k: np.asarray(v["density"], dtype=float) for k, v in maps.items()}
    if ds.dim == 1:
        true = ds.log_prob(grid).exp()
        plotting.densities_1d(
            grid,
            {"true": true, **series},
            fig,
            ymax=1.5 * float(true.max()),
            title=f"{name}: PF-ODE densities (seed {seed}; y clipped)",
        )
        return
    shape = (n_side, n_side)
    data = (
        ds.log_prob(grid).exp().reshape(shape)
        if ds.log_prob is not None
        else plotting.histogram_density(ds.sample(100_000, generator(1)), ds.extent, n_side)
    )
    plotting.heatmaps(
        {"data": data, **{k: v.reshape(shape) for k, v in series.items()}},
        ds.extent,
        fig,
        label="density",
        suptitle=f"{name}: PF-ODE densities (seed {seed})",
    )


def _report_budget(out):
    """The budget whose report ``out`` holds, or None (no report there yet)."""
    path = os.path.join(out, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("config", {}).get("budget")


# --- the command ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    p = parser(__doc__.split("\n\n")[0], "density", overwrite=False)
    p.add_argument(
        "--budget",
        default="paper",
        choices=list(BUDGETS),
        help="steps per run: "
        + ", ".join(f"{k} = {v}" for k, v in BUDGETS.items())
        + " (paper: App. D.1's 0.1M iterations; --quick: tiny)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="override the budget's steps; the runs are "
        "then filed under the budget 'stepsN', apart from the named budgets",
    )
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, quick 1)")
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=None,
        help=f"FP β values in the official units (default {' '.join(f'{b:g}' for b in SWEEP)}; "
        "quick: the preset only); vanilla (β = 0) always runs",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="App. D.1 reads '?00' (a digit lost in the extraction); 500 assumed",
    )
    p.add_argument(
        "--lr", type=float, default=1e-2, help="Adam learning rate (App. D.1: 1e-2), cosine decay to 5%%"
    )
    p.add_argument(
        "--fp-subbatch",
        type=int,
        default=None,
        help="samples per step R_FP sees (default: the whole batch, as the official code)",
    )
    p.add_argument("--hidden", type=int, default=64, help="MLP width (3 layers)")
    p.add_argument("--n-test", type=int, default=None, help="held-out samples (default 2000, quick 64)")
    p.add_argument("--grid", type=int, default=40, help="density-figure grid side (2-D)")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps within a run")
    p.add_argument(
        "--shard",
        default=None,
        help="'i/n': the i-th of n shares of the runs, each β dealt "
        "round-robin (two processes: 0/2 and 1/2); a shard leaves OUT/metrics.json, summary.md and "
        "the figures to --report",
    )
    p.add_argument(
        "--report", action="store_true", help="train nothing: tables and figures from the finished runs"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        args.shard_ = parse_shard(args.shard)
    except ValueError as err:
        p.error(str(err))
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    args.betas = [beta_key(b) for b in args.betas] if args.betas else ([BETA] if args.quick else list(SWEEP))
    if any(b <= 0 for b in args.betas):
        p.error("--betas are the FP runs' β and must be positive; vanilla (β = 0) always runs")
    return args


def _train_grid(args, store, budget, steps, seeds, n_test, ckpt_dir) -> int | None:
    """Train the runs of the grid (this shard's) not done yet; 130 when interrupted."""
    runs = list(
        shard_of(grid_runs(args.datasets, args.betas, seeds, budget), args.shard_, kind=lambda run: run[1])
    )
    todo = [r for r in runs if not store.done(data=r[0], beta=float(r[1]), seed=r[2], budget=budget)]
    print(
        f"budget {budget} ({steps} steps/run): "
        f"{len(runs) - len(todo)} of {len(runs)} runs done, {len(todo)} to go",
        flush=True,
    )
    t_grid = time.time()
    for i, (name, beta, seed) in enumerate(todo):
        try:
            r = run_one(
                name,
                beta,
                seed,
                budget,
                steps,
                args,
                store,
                ckpt_dir,
                want_grid=seed == args.seed and beta in (0.0, BETA),
                n_test=n_test,
            )
        except StopRequested:
            print(
                f"\ninterrupted: {name} β={beta:g} seed {seed} checkpointed in {ckpt_dir}; "
                "run the same command to continue",
                file=sys.stderr,
                flush=True,
            )
            return 130
        left = (time.time() - t_grid) / (i + 1) * (len(todo) - i - 1)
        print(
            f"[{i + 1}/{len(todo)}] {name} β={beta:g} seed {seed}: NLL {r['nll']:.4f} "
            f"({r['train_s']:.0f} s train, {r['eval_s']:.0f} s eval); grid ETA {left / 60:.1f} min",
            flush=True,
        )
    return None


def run(argv: list[str] | None = None):
    """Train what is left of the grid and report; returns metrics.json's content (130 when
    interrupted)."""
    args = parse_args(argv)
    if args.quick:
        args.budget = "tiny"
    steps = BUDGETS[args.budget] if args.steps is None else args.steps
    budget = args.budget if args.steps is None else f"steps{args.steps}"
    # OUT is a resumable grid by design (one file per run, skipped when present): never refused
    out = setup(args, "density", resume=True)
    held = _report_budget(out)
    if held not in (None, budget):  # one report per OUT: never overwrite another budget's
        fail(
            f"{out}/metrics.json is the report of budget {held!r}, not {budget!r}; "
            f"give budget {budget!r} its own --out folder (or move that report away)"
        )
    store = RunStore(os.path.join(out, "runs"))
    ckpt_dir = os.path.join(out, "ckpt")
    os.makedirs(ckpt_dir, exist_ok=True)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if args.quick else 3))))
    n_test = args.n_test or (64 if args.quick else 2000)
    if not args.report and _train_grid(args, store, budget, steps, seeds, n_test, ckpt_dir) == 130:
        return 130
    # a shard sees its own grid only: the folder's report is left to --report, not overwritten
    write = args.report or args.shard is None
    metrics, rows, eps = report(store, args.datasets, args.betas, seeds, budget, steps, out, args.seed, write)
    metrics["config"] = {
        "budget": budget,
        "steps": steps,
        "paper_steps": BUDGETS["paper"],
        "seeds": seeds,
        "betas": args.betas,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": args.hidden,
        "fp_subbatch": args.fp_subbatch,
        "n_test": n_test,
        "eps": eps or [EPS],
        "ode_tol": ODE_TOL,
        "preset": PRESET,
        "fourier_scale": FOURIER_SCALE,
    }
    if write:
        rp.write_metrics(out, metrics)
    print(
        rp.text_table(
            ["dataset", "β", "seeds", "NLL vanilla", "NLL FP", "FP − vanilla [95% CI]", "NLL SE (test set)"],
            rows,
        )
    )
    print(
        f"(nats per sample; budget {budget}: {steps} steps/run, the paper's is {BUDGETS['paper']})"
        + ("" if write else f"; shard {args.shard}: run with --report once every shard is done")
    )
    if write:
        announce(out, ["metrics.json", "summary.md"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``scorepde-density``: exits 130 when interrupted (the run is checkpointed)."""
    if run(argv) == 130:
        sys.exit(130)


if __name__ == "__main__":
    main()
