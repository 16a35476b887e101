"""The Cauchy problem of the score FPE (Sec. 6.1, Eqs. 20-21): learn s(x, t) for
½N((−5,−5), I) + ½N((5,5), I) under VE (or, with --dim D, a K-component mixture in D
dimensions under VE or VP) from the initial score and the PDE alone.

    scorepde-cauchy [--out DIR] [--quick] [--seed N] [--device cpu|cuda]
    scorepde-cauchy --dim 32 [--sde ve|vp] [--method cauchy|dsm] [--minutes M]
    python toy/cauchy_gmm.py ...                  # the same command, from a source checkout

Writes DIR/metrics.json (score_rel_l2, its per-t curve, residual curves, NLLs) and figures:
rel_l2_over_t.png, residual_over_t.png, samples.png, density.png. With --dim: metrics.json
(score_rel_l2, its per-t curve, the error against training wall time) and
rel_l2_over_t.png, rel_l2_over_time.png. DIR defaults to out/cauchy_gmm (out/cauchy_gmm_dD)
in the current folder; a DIR that holds results is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence

import torch

from .. import plotting
from .. import reporting as rp
from ..cauchy import INIT_POINTS, RESIDUAL_WEIGHTINGS, TIME_SAMPLINGS, CauchyObjective, unbiased_square_for
from ..curves import residual_curves
from ..fpe import ESTIMATORS
from ..gmm import separated_mixture
from ..likelihood import log_likelihood
from ..losses import FPObjective
from ..metrics import cross_entropy, nll, relative_score_error, score_pinn_errors
from ..nn import MLPScore
from ..nn.mixture import MixtureScore
from ..outputs import announce
from ..sampling import probability_flow
from ..schedules import Cosine
from ..sde import VESDE, VPSDE
from ..toy import ToyDataset, ToyScore, toy_batches, toy_dataset, toy_model
from ..training import Budget, NonFiniteLossError, fit
from . import cauchy_scaling as cs
from ._toy import generator, parser, setup, train

EPS = 1e-5  # smallest t for likelihoods and the t grid
ODE_TOL = 1e-4  # rtol = atol of the PF-ODE solves

# -- --dim D: a K-component mixture in D dimensions, a wall-time budget, and a DSM baseline --------

SDES = {"ve": lambda: VESDE(0.01, 50.0), "vp": lambda: VPSDE(0.1, 20.0)}
METHODS = ("cauchy", "dsm")
#: Flags that only mean something with --dim (their defaults are filled in by run_dim).
DIM_ONLY = (
    "summarize",
    "components",
    "sde",
    "method",
    "estimator",
    "unbiased",
    "minutes",
    "clock",
    "condition",
    "n_evals",
    "gate",
    "cov",
    "gate_shape",
    "param",
    "mixture_components",
    "mixture_basis",
    "mixture_time_head",
    "scaling",
    "cpu_minutes",
    "dims",
    "covs",
)
DIM_DEFAULTS = dict(
    components=4,
    sde="ve",
    method="cauchy",
    estimator="forward_fd",
    minutes=20.0,
    clock="wall",
    n_evals=20,
    gate=True,
    cov="iso",
)
COVS = ("iso", "diag", "full")
#: The Cauchy fit's score parametrizations: ToyScore (an MLP, its skip term gated) or MixtureScore
#: (a learned Gaussian mixture's structure, plus nothing else).
PARAMS = ("gate", "mixture")


def add_dim_flags(p):
    g = p.add_argument_group("high dimension (--dim D)")
    g.add_argument(
        "--dim",
        type=int,
        default=None,
        help="solve for a K-component Gaussian mixture in D dimensions "
        "(scorepde.gmm.separated_mixture) instead of the paper's 2-D problem",
    )
    g.add_argument("--components", type=int, default=None, help="K, the mixture's components (4)")
    g.add_argument(
        "--summarize",
        default=None,
        metavar="DIR",
        help="train nothing: read DIR/*/metrics.json of earlier --dim runs and write "
        "DIR/summary.md (the README's tables) and DIR/rel_l2_over_t.png, "
        "DIR/estimators_d32.png",
    )
    g.add_argument("--sde", choices=sorted(SDES), default=None, help="VE(0.01, 50) or VP(0.1, 20) (ve)")
    g.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="'cauchy': initial score + score-FPE residual only; 'dsm': the baseline, "
        "plain DSM on samples of q_0 with the same budget (cauchy)",
    )
    g.add_argument(
        "--estimator",
        choices=sorted(ESTIMATORS),
        default=None,
        help="residual estimator of the Cauchy fit (forward_fd; see the README's measurement)",
    )
    g.add_argument(
        "--unbiased",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override the rule (scorepde.cauchy.unbiased_square_for): square the residual as the "
        "product of two independent draws (unbiased, about 1.5x the cost) or as one draw squared "
        "(--no-unbiased, the plug-in square)",
    )
    g.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training wall-time budget, evaluations excluded (20; --steps overrides)",
    )
    g.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default=None,
        help="what --minutes counts: wall time, or this process's CPU time (equal "
        "budgets on a shared machine; the same on an idle core) (wall)",
    )
    _add_dim_model_flags(g)


def _add_dim_model_flags(g):
    """--dim's flags for the network (condition, gate), the mixture's covariances, the evaluations."""
    g.add_argument(
        "--condition",
        choices=ToyScore.CONDITIONS,
        default=None,
        help="what the Cauchy fit's ToyScore conditions on (log_scale for VE, time for "
        "VP: log ŝ(t) barely moves once σ_t/a(t) passes the data scale under VP)",
    )
    g.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the Cauchy fit's ToyScore scales its skip term by a learned scalar per sample, "
        "s = −(ρ x/ŝ − F)/ŝ (scorepde.nn.ToyScore; on by default: see the README's "
        "measurement; --no-gate for the plain skip)",
    )
    g.add_argument(
        "--cov",
        choices=COVS,
        default=None,
        help="the components' covariances: isotropic, diagonal (stds per coordinate over "
        "0.3-3, a variance ratio of 100, in a different order per component) or full "
        "(those rotated at random) (scorepde.gmm.separated_mixture) (iso)",
    )
    g.add_argument(
        "--gate-shape",
        choices=ToyScore.GATES,
        default=None,
        help="the gate's shape: one ρ per sample (exact for isotropic components) or one "
        "per coordinate (exact for diagonal ones) (scalar for --cov iso, else diagonal)",
    )
    g.add_argument(
        "--scaling",
        default=None,
        metavar="DIR",
        help="run the scaling grid (D x covariance kind x {cauchy, dsm}) into DIR, skipping finished runs, "
        "and write DIR/scaling.md and DIR/scaling.png (scorepde.commands.cauchy_scaling)",
    )
    g.add_argument("--cpu-minutes", type=float, default=None, help="--scaling: CPU minutes per run (1)")
    g.add_argument(
        "--dims", type=int, nargs="+", default=None, help="--scaling: the D values (2 8 32 128 512 1000)"
    )
    g.add_argument(
        "--covs", choices=COVS, nargs="+", default=None, help="--scaling: the kinds (iso diag full)"
    )
    g.add_argument(
        "--param",
        choices=PARAMS,
        default=None,
        help="the Cauchy fit's score: 'gate', ToyScore over an MLP (--gate, --gate-shape), or "
        "'mixture', scorepde.nn.MixtureScore, the structure of a Gaussian mixture's score with every "
        "piece learned (gate for --cov iso, else mixture)",
    )
    g.add_argument(
        "--mixture-components",
        type=int,
        default=None,
        help="J, MixtureScore's learned components (8; the mixture has --components K = 4)",
    )
    g.add_argument(
        "--mixture-basis",
        choices=MixtureScore.BASES,
        default=None,
        help="MixtureScore's per-component basis: a learned rotation ('full') or none (diagonal "
        "precisions) (full for --cov full, else none)",
    )
    g.add_argument(
        "--mixture-time-head",
        choices=MixtureScore.TIME_HEADS,
        default=None,
        help="what MixtureScore's MLP of the noise level moves: every coordinate's (log κ, m) and β, or "
        "one shift/factor per component (O(J) outputs; for large D) (coordinate)",
    )
    g.add_argument(
        "--n-evals",
        type=int,
        default=None,
        help="evaluations of the error during training, for the error-vs-time curve (20)",
    )


def reject_dim_only_flags(args, p):
    given = [f"--{k.replace('_', '-')}" for k in DIM_ONLY if getattr(args, k) is not None]
    if given:
        p.error(f"{', '.join(given)} only apply with --dim D")


def _mixture_dataset(dim: int, k: int, cov: str = "iso") -> ToyDataset:
    gmm = separated_mixture(dim, k, cov=cov)
    name = f"gmm{k}_d{dim}" + ("" if cov == "iso" else f"_{cov}")
    return ToyDataset(
        name,
        dim,
        lambda n, g: gmm.sample(n, generator=g),
        (-6.0, 6.0),
        gmm.coordinate_std(),
        log_prob=lambda x: gmm.log_prob(x),
        mixture=gmm,
    )


def _cauchy_model(args, ds: ToyDataset, sde) -> torch.nn.Module:
    """The Cauchy fit's score: ToyScore over an MLP (``--param gate``) or MixtureScore, its means
    started on data samples (k-means++ seeding; ``--param mixture``). Neither is told the
    mixture's covariances, means or weights."""
    torch.manual_seed(args.seed)
    if args.param == "mixture":
        model = MixtureScore(
            ds.dim,
            sde,
            components=args.mixture_components,
            basis=args.mixture_basis,
            data_std=args.data_std,
            time_head=args.mixture_time_head,
        )
        model.init_means(
            ds.sample(max(256, args.mixture_components), generator(args.seed + 7)), generator(args.seed + 8)
        )
        return model
    gate = args.gate_shape if args.gate else False
    extra = ToyScore.gate_outputs(ds.dim, gate)
    net = MLPScore(
        ds.dim,
        hidden=args.hidden,
        depth=args.depth,
        embedding="fourier",
        fourier_scale=1.0,
        out_dim=ds.dim + extra if extra else None,
    )
    return ToyScore(net, sde, data_std=args.data_std, condition=args.condition, gate=gate)


def _build(args, ds: ToyDataset, sde):
    """(model, objective) of the chosen method; no math here, only scorepde pieces."""
    gmm = ds.mixture
    assert gmm is not None, "the --dim data set is a mixture"
    if args.method == "dsm":
        model = toy_model(
            ds,
            sde,
            hidden=args.hidden,
            depth=args.depth,
            seed=args.seed,
            device=args.device,
            param="score_model",
        )
        return model, FPObjective(model, sde, beta=0.0, eps=EPS)
    model = _cauchy_model(args, ds, sde).to(args.device)
    return model, _objective(args, model, sde, gmm, estimator=args.estimator, unbiased=args.unbiased)


def _objective(args, model, sde, gmm, **dim_only) -> CauchyObjective:
    """The Cauchy fit's objective from the flags of both problems (``dim_only``: --dim's own)."""
    return CauchyObjective(
        model,
        sde,
        lambda x: gmm.score(x),
        weighting=args.weighting,
        data_std=args.data_std,
        init_points=args.init_points,
        init_weight=args.init_weight,
        time_sampling=args.time_sampling,
        **dim_only,
    )


# --- --dim D: train on a budget, evaluate, write ---------------------------------------


def _budgeted_training(args, model, objective, ds, evaluate):
    """Adam, cosine decay to 5% over the budget (steps, or training wall or CPU time);
    ``evaluate()`` runs ``n_evals + 1`` times with the clock stopped. Returns the ``FitResult``."""
    budget = Budget(steps=args.steps) if args.steps else Budget(seconds=60.0 * args.minutes, clock=args.clock)
    gen = generator(args.seed)
    try:
        return fit(
            objective,
            torch.optim.Adam(model.parameters(), lr=args.lr),
            toy_batches(ds, args.batch_size, gen, args.device),
            budget=budget,
            generator=gen,
            schedule=Cosine(0.05),
            grad_clip=1.0,
            model=model,
            evaluate=evaluate,
            n_evals=args.n_evals,
            desc=f"{args.method} D={args.dim}",
        )
    except NonFiniteLossError as err:
        raise SystemExit(f"training stopped: {err}") from None


def _dim_defaults(args, p):
    """Fill in the --dim flags' defaults and check them (``p.error`` on a bad one)."""
    for k, v in DIM_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick:
        args.steps = args.steps or 200
        args.n_evals = min(args.n_evals, 4)
    args.hidden = args.hidden or (64 if args.quick else 256)
    args.gate_shape = args.gate_shape or ("scalar" if args.cov == "iso" else "diagonal")
    args.param = args.param or ("gate" if args.cov == "iso" else "mixture")
    args.mixture_components = args.mixture_components or 8
    args.mixture_basis = args.mixture_basis or ("full" if args.cov == "full" else "none")
    args.mixture_time_head = args.mixture_time_head or "coordinate"
    # MixtureScore's means and bases must travel O(1) from their start (k-means++ seeds, the identity):
    # at 2e-3 they had not by 400 steps (D = 8, full: 0.30 against 0.08 at 1e-2).
    args.lr = args.lr or (1e-2 if args.param == "mixture" and args.method == "cauchy" else 2e-3)
    args.unbiased_rule = "flag" if args.unbiased is not None else "auto"
    if args.unbiased is None:
        args.unbiased = unbiased_square_for(args.dim)
    # Under VP ŝ(t)² = 1 + a²(data_std² − 1) flattens to 1 by t ≈ 0.6: a clock on log ŝ squeezes
    # the late times together (D = 8, --quick: 0.48 on log ŝ against 0.31 on t).
    args.condition = args.condition or ("time" if args.sde == "vp" else "log_scale")
    # In D dims the x_t at large t lie far outside q_0, where s0 is huge and irrelevant: the
    # initial condition there swamped the data's (D = 8, 400 steps: t = 0 error 0.62 vs 0.26).
    args.init_points = args.init_points or "data"
    if args.dim < 1 or args.components < 1 or args.n_evals < 1:
        p.error("--dim, --components and --n-evals must be positive")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1):
        p.error("--minutes and --steps must be positive")
    if args.dim < 63 and args.components > 2**args.dim:
        p.error(
            f"--components {args.components} needs at least {math.ceil(math.log2(args.components))} "
            "dimensions (the means are distinct sign vectors)"
        )


def _dim_figures(args, out, ts, rel, history):
    label = f"{args.method}" + (
        f" ({args.estimator}{', unbiased' if args.unbiased else ''})" if args.method == "cauchy" else ""
    )
    plotting.curves(
        ts,
        {label: rel["rel_l2"]},
        os.path.join(out, "rel_l2_over_t.png"),
        ylabel=r"$\|s_\theta - s\|_{L^2(q_t)} / \|s\|_{L^2(q_t)}$",
        title=f"D={args.dim}, {args.sde.upper()}: mean {rel['mean']:.4f}",
    )
    plotting.curves(
        [h["train_seconds"] for h in history],
        {label: [h["score_rel_l2"] for h in history]},
        os.path.join(out, "rel_l2_over_time.png"),
        xlabel="training wall time (s)",
        ylabel="time-averaged rel. L2",
        title=f"D={args.dim}, {args.sde.upper()}",
    )


def _mixture_record(args, ds: ToyDataset) -> dict:
    """The mixture in metrics.json: stds as before for isotropic and diagonal components, the
    covariances' eigenvalues (variances) for full ones."""
    gmm = ds.mixture
    assert gmm is not None, "the --dim data set is a mixture"
    record = {
        "dim": args.dim,
        "components": args.components,
        "data_std": ds.data_std,
        "weights": gmm.weights.tolist(),
    }
    if gmm.kind != "iso":
        record["cov"] = gmm.kind
    if gmm.stds is not None:
        record["stds"] = gmm.stds.tolist()
    else:
        record["variances"] = gmm.variances.tolist()
    return record


def _score_pinn_metrics(args, model, ds, sde, x_eval) -> dict:
    """The fit in Score-PINN's convention (``scorepde.metrics.score_pinn_errors``) at t = 0.1, 0.3,
    ..., 0.9: the score's MAE and RMSE over 500 points per t, and the per-dimension log-density
    error on 32 of them per t (4 and 2 t with --quick) by the PF-ODE (exact divergence up to
    D = 32, one Rademacher probe above; tolerance 1e-3)."""
    gmm = ds.mixture
    assert gmm is not None, "the --dim data set is a mixture"
    ts = [0.3, 0.7] if args.quick else [0.1, 0.3, 0.5, 0.7, 0.9]
    div = "exact" if args.dim <= 32 else "hutchinson"
    return score_pinn_errors(
        model,
        lambda x, t: gmm.score(x, t, sde),
        sde,
        x_eval[:500],
        ts,
        reference_log_prob=lambda x, t: gmm.log_prob(x, t, sde),
        n_log_prob=4 if args.quick else 32,
        generator=generator(args.seed + 4000),
        div=div,
        rtol=1e-3,
        atol=1e-3,
    )


def run_dim(args, p):
    """--dim D: fit the K-component mixture's score on the budget, with the error tracked
    during training; returns metrics.json's content."""
    _dim_defaults(args, p)
    out = setup(args, f"cauchy_gmm_d{args.dim}" + ("" if args.cov == "iso" else f"_{args.cov}"))
    ds, sde = _mixture_dataset(args.dim, args.components, args.cov), SDES[args.sde]()
    true_score = lambda x, t: ds.mixture.score(x, t, sde)  # noqa: E731
    model, objective = _build(args, ds, sde)
    n_eval = 200 if args.quick else 2000
    ts = torch.linspace(EPS, 1.0, 11 if args.quick else 21).tolist()
    x_eval = ds.sample(n_eval, generator(args.seed + 1000)).to(args.device)

    def evaluate(n=n_eval // 4):
        rel = relative_score_error(
            model, true_score, sde, x_eval[:n], ts, generator=generator(args.seed + 2000)
        )
        return {"score_rel_l2": rel["mean"], "worst_rel_l2": max(rel["rel_l2"])}

    res = _budgeted_training(args, model, objective, ds, evaluate)
    model.eval()
    rel = relative_score_error(model, true_score, sde, x_eval, ts, generator=generator(args.seed + 3000))
    worst = max(range(len(ts)), key=lambda i: rel["rel_l2"][i])
    _dim_figures(args, out, ts, rel, res.history)
    metrics = {
        "command": "python toy/cauchy_gmm.py " + shlex.join(args.argv),
        "score_pinn": _score_pinn_metrics(args, model, ds, sde, x_eval),
        "score_rel_l2": rel["mean"],
        "score_rel_l2_curve": {"t": rel["t"], "rel_l2": rel["rel_l2"]},
        "worst_t": rel["t"][worst],
        "worst_rel_l2": rel["rel_l2"][worst],
        "history": res.history,
        "steps": res.steps,
        "train_seconds": res.train_seconds,
        "train_cpu_seconds": res.cpu_seconds,
        "load_average": list(os.getloadavg()),
        "mixture": _mixture_record(args, ds),
        "config": {**vars(args), "sde": repr(sde), "eps": EPS, "n_eval": n_eval},
    }
    rp.write_metrics(out, metrics)
    print(
        rp.text_table(
            ["metric", "value"],
            [
                ["score_rel_l2 (mean over t)", f"{rel['mean']:.4f}"],
                ["worst t / its rel_l2", f"{rel['t'][worst]:.3f} / {rel['rel_l2'][worst]:.4f}"],
                [
                    "rel_l2 at first / last evaluation",
                    f"{res.history[0]['score_rel_l2']:.4f} / {res.history[-1]['score_rel_l2']:.4f}",
                ],
                ["training steps / wall time (s)", f"{res.steps} / {res.train_seconds:.0f}"],
            ],
        )
    )
    announce(out, ["metrics.json", "rel_l2_over_t.png", "rel_l2_over_time.png"])
    return metrics


#: Run-name prefixes kept out of the figure and the Cauchy-vs-DSM tables.
SIDE_RUNS = ("est_", "abl_", "long_", "nogate_", "prev_", "cov_", "mix_", "rule_")


def _load_runs(folder: str) -> dict:
    runs = cs.load_runs(folder)
    if not runs:
        raise SystemExit(
            f"no */metrics.json under {folder}; run scorepde-cauchy --dim D --out {folder}/NAME first"
        )
    return runs


def _row(name, m):
    cfg = m["config"]
    method = cfg["method"] + (
        f" ({cfg['estimator']}{', unbiased' if cfg['unbiased'] else ''})" if cfg["method"] == "cauchy" else ""
    )
    if cfg.get("param") == "mixture" and cfg["method"] == "cauchy":
        method += f"; MixtureScore (J = {cfg['mixture_components']}, basis {cfg['mixture_basis']})"
    if cfg.get("cov", "iso") != "iso":
        method += f"; {cfg['cov']} covariances" + (
            f", {cfg['gate_shape']} gate"
            if cfg.get("param", "gate") == "gate" and cfg["method"] == "cauchy"
            else ""
        )
    budget = (
        f"{cfg['steps']} steps"
        if cfg["steps"]
        else f"{cfg['minutes']:g} min" + (" CPU" if cfg.get("clock") == "cpu" else "")
    )
    return [
        f"`{name}`",
        str(cfg["dim"]),
        cfg["sde"].split("(")[0],
        method,
        f"{m['score_rel_l2']:.4f}",
        f"{m['worst_rel_l2']:.3f} at t = {m['worst_t']:.2f}",
        f"{m['train_seconds'] / 60:.1f} min",
        f"{m['train_cpu_seconds'] / 60:.1f} min" if "train_cpu_seconds" in m else "—",
        str(m["steps"]),
        budget,
        f"{m['load_average'][0]:.1f}",
    ]


#: summary.md's sections of single runs: title, and which run names it holds.
SECTIONS = (
    (
        "Runs",
        lambda n: not n.startswith(("est_", "abl_", "nogate_", "prev_", "cov_", "mix_", "rule_")),
    ),  # long_: longer budgets
    ("Superseded: the same setting at a smaller or more loaded budget", lambda n: n.startswith("prev_")),
    ("Without the gate (ToyScore's plain skip, the earlier default)", lambda n: n.startswith("nogate_")),
    ("Beyond isotropic components (--cov diag|full)", lambda n: n.startswith("cov_")),
    (
        "MixtureScore: a Gaussian mixture's structure, learned (--param mixture)",
        lambda n: n.startswith("mix_"),
    ),
    ("Plug-in or unbiased square: the rule's runs", lambda n: n.startswith("rule_")),
    ("Estimator runs", lambda n: n.startswith("est_")),
    ("Ablations", lambda n: n.startswith("abl_")),
)
RUN_HEAD = [
    "run",
    "D",
    "SDE",
    "method",
    "score_rel_l2 (mean over t)",
    "worst t",
    "train wall time",
    "its CPU time",
    "steps",
    "budget",
    "load (1 min)",
]


def _rel_l2_figure(runs, folder):
    """One panel per (D, SDE) of the main runs: each method's error over t."""
    panels, ts = {}, None
    for name, m in runs.items():
        cfg = m["config"]
        if name.startswith(SIDE_RUNS):  # estimator, ablation, earlier runs: tables only
            continue
        panels.setdefault(f"D = {cfg['dim']}, {cfg['sde'].split('(')[0]}", {})[cfg["method"]] = m[
            "score_rel_l2_curve"
        ]["rel_l2"]
        ts = m["score_rel_l2_curve"]["t"]
    if panels:
        order = lambda kv: (kv[0].split(",")[1], int(kv[0].split()[2].rstrip(",")))  # noqa: E731
        plotting.curves(
            ts,
            {},
            os.path.join(folder, "rel_l2_over_t.png"),
            ylabel="relative L2 error",
            panels={
                k: dict(sorted(v.items()))  # one colour per method in every panel
                for k, v in sorted(panels.items(), key=order)
            },
        )


def _pairs(runs):
    """The main runs' Cauchy/DSM pairs, by (D, SDE), in the tables' order."""
    pairs = {}
    for name, m in runs.items():
        if not name.startswith(SIDE_RUNS):
            pairs.setdefault((m["config"]["dim"], m["config"]["sde"].split("(")[0]), {})[
                m["config"]["method"]
            ] = m
    return [
        (k, v)
        for k, v in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        if set(v) == set(METHODS)
    ]


def _wins_row(dim, sde_name, both):
    """Where in t the Cauchy fit's error is below DSM's, and both errors at five times."""
    t, a, b = (
        both["cauchy"]["score_rel_l2_curve"]["t"],
        both["cauchy"]["score_rel_l2_curve"]["rel_l2"],
        both["dsm"]["score_rel_l2_curve"]["rel_l2"],
    )
    spans, start = [], None
    for i, better in enumerate([x < y for x, y in zip(a, b)] + [False]):
        if better and start is None:
            start = i
        if not better and start is not None:
            spans.append(f"[{t[start]:.2f}, {t[i - 1]:.2f}]")
            start = None
    at = lambda v: min(range(len(t)), key=lambda i: abs(t[i] - v))  # noqa: E731
    return [str(dim), sde_name, " ∪ ".join(spans) or "none"] + [
        f"{a[at(v)]:.3f} / {b[at(v)]:.3f}" for v in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]


def _compact_row(dim, sde_name, c, d):
    """Cauchy against DSM at one (D, SDE): the errors (the lower in bold), cost and steps."""
    cpu = lambda m: f"{m['train_cpu_seconds'] / 60:.1f}" if "train_cpu_seconds" in m else "—"  # noqa: E731
    best = min(c["score_rel_l2"], d["score_rel_l2"])
    return [
        str(dim),
        sde_name,
        " / ".join(
            f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in (c["score_rel_l2"], d["score_rel_l2"])
        ),
        f"{c['worst_rel_l2']:.2f} at {c['worst_t']:.2f} / {d['worst_rel_l2']:.2f} at {d['worst_t']:.2f}",
        f"{c['train_seconds'] / 60:.1f} ({cpu(c)}) / {d['train_seconds'] / 60:.1f} ({cpu(d)})",
        " / ".join(
            f"{sum(r[1:]) / (len(r) - 1):.3f}"
            for r in (c["score_rel_l2_curve"]["rel_l2"], d["score_rel_l2_curve"]["rel_l2"])
        ),
        f"{c['steps']} / {d['steps']}",
        f"{c['config']['estimator']}",
    ]


def _estimator_section(runs, folder) -> list[str]:
    """The D = 32 estimator runs: a table (error at equal steps too) and error against time."""
    est = {n: m for n, m in runs.items() if n.startswith("est_")}
    if not est:
        return []
    fewest = min(m["steps"] for m in est.values())  # the error at equal steps: the smallest run's count
    at = lambda h: next(x["score_rel_l2"] for x in h if x["step"] >= fewest)  # noqa: E731
    head = [
        "estimator (D = 32, VE)",
        "steps",
        "wall s / step",
        "score_rel_l2",
        f"at step ≥ {fewest}",
        "rel_l2 at t = 0",
        "load (1 min)",
    ]
    rows = [
        [
            _row(n, m)[3],
            m["steps"],
            f"{m['train_seconds'] / m['steps']:.3f}",
            f"{m['score_rel_l2']:.4f}",
            f"{at(m['history']):.4f}",
            f"{m['score_rel_l2_curve']['rel_l2'][0]:.3f}",
            f"{m['load_average'][0]:.1f}",
        ]
        for n, m in est.items()
    ]
    # Evaluations run at the same fractions of each budget, so they share a time axis.
    first = next(iter(est.values()))
    grid = [
        60 * first["config"]["minutes"] * k / first["config"]["n_evals"] for k in range(len(first["history"]))
    ]
    series: dict[str, Sequence[float]] = {
        _row(n, m)[3]: [h["score_rel_l2"] for h in m["history"]][: len(grid)] for n, m in est.items()
    }
    plotting.curves(
        grid,
        series,
        os.path.join(folder, "estimators_d32.png"),
        xlabel="training wall time (s)",
        ylabel="time-averaged rel. L2",
        title="Cauchy fit at D = 32 (VE): error against wall time",
    )
    return ["\n" + rp.markdown_table(head, rows)]


def summarize(folder: str):
    """Tables and figures from finished --dim runs (no training): DIR/summary.md (the
    docs' tables), DIR/goals.md (the README's goal rows, from DIR/goals.json),
    DIR/rel_l2_over_t.png and DIR/estimators_d32.png."""
    runs = _load_runs(folder)
    parts = []
    for title, keep in SECTIONS:
        rows = [_row(n, m) for n, m in runs.items() if keep(n)]
        if rows:
            parts.append(rp.markdown_section(title, RUN_HEAD, rows))
    _rel_l2_figure(runs, folder)
    pairs = _pairs(runs)
    if pairs:
        parts.append(
            rp.markdown_section(
                "Cauchy vs DSM",
                [
                    "D",
                    "SDE",
                    "score_rel_l2, Cauchy / DSM",
                    "worst rel_l2 at t, Cauchy / DSM",
                    "train min, wall (CPU), Cauchy / DSM",
                    "mean without t = 1e-5",
                    "steps, Cauchy / DSM",
                    "estimator",
                ],
                [_compact_row(dim, sde, both["cauchy"], both["dsm"]) for (dim, sde), both in pairs],
            )
        )
        parts.append(
            rp.markdown_section(
                "Where each method wins",
                [
                    "D",
                    "SDE",
                    "Cauchy lower at t in",
                    "rel_l2 Cauchy / DSM at t = 0",
                    "t = 0.25",
                    "t = 0.5",
                    "t = 0.75",
                    "t = 1",
                ],
                [_wins_row(dim, sde, both) for (dim, sde), both in pairs],
            )
        )
    parts += _estimator_section(runs, folder)
    goals = cs.goal_section(runs, folder)
    if goals:  # the README's goal rows, on their own
        rp.write_text(folder, "goals.md", goals[0])
    parts = goals + parts + cs.rule_section(runs) + cs.score_pinn_section(runs)
    text = "\n".join(parts)
    rp.write_text(folder, "summary.md", text)
    print(text)
    return runs


# --- the 2-D problem (Sec. 6.1) and the command ------------------------------------------


def parse_args(argv: list[str] | None = None):
    p = parser(__doc__.split("\n\n")[0], "cauchy_gmm")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default 2000, quick 150; with --dim: default none, "
        "train for --minutes of wall time instead)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="data samples x_0 per step")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 64; with --dim 256)")
    p.add_argument("--depth", type=int, default=3, help="MLP hidden layers")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate, cosine decay to 5%% (2e-3; 1e-2 for --param mixture)",
    )
    p.add_argument(
        "--weighting",
        default="scaled",
        choices=sorted(RESIDUAL_WEIGHTINGS),
        help="w(t) on the residual; 'none' is the paper's plain Eq. 21",
    )
    p.add_argument(
        "--init-points",
        default=None,
        choices=INIT_POINTS,
        help="where s(x, 0) = s0(x) is enforced (default data+colloc; with --dim: data)",
    )
    p.add_argument(
        "--init-weight",
        type=float,
        default=1.0,
        help="λ0, the weight of the initial-condition term of Eq. 21",
    )
    p.add_argument(
        "--time-sampling",
        default="log_scale",
        choices=TIME_SAMPLINGS,
        help="collocation times: uniform, or half of them uniform in log(ŝ/a)",
    )
    p.add_argument("--no-skip", action="store_true", help="drop ToyScore's Gaussian skip term")
    p.add_argument(
        "--data-std",
        type=float,
        default=1.0,
        help="the data scale in ŝ(t)² = data_std² + σ_t² (the components' std)",
    )
    add_dim_flags(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return p, args


def _evaluate_2d(args, model, gmm, sde, ds, out):
    """Score error over t, residual curves (learned and closed form), NLL, the density on a
    grid and PF-ODE samples, with the figures; returns the numbers for metrics.json."""
    q = args.quick
    ts = torch.linspace(EPS, 1.0, 6 if q else 21).tolist()
    gen = generator(args.seed + 1000)
    x_test = ds.sample(200 if q else 2000, gen).to(args.device)
    true_score = lambda x, t: gmm.score(x, t, sde)  # noqa: E731
    rel = relative_score_error(model, true_score, sde, x_test, ts, generator=gen, progress=True)
    # The closed form in float64: its residual is zero up to rounding.
    curves = {
        name: residual_curves(s, sde, x[:500], ts, generator=generator(args.seed + 2000))
        for name, s, x in (("learned", model, x_test), ("true", true_score, x_test.double()))
    }
    x_nll = ds.sample(64 if q else 1000, gen).to(args.device)
    nll_model = nll(model, sde, x_nll, EPS, rtol=ODE_TOL, atol=ODE_TOL, progress=True)
    n_side, n_samples = (12, 200) if q else (48, 2000)
    grid = plotting.grid_points(ds.extent, n_side).to(args.device)
    logp_grid = torch.cat(
        [log_likelihood(model, sde, c, EPS, rtol=ODE_TOL, atol=ODE_TOL) for c in grid.split(1024)]
    )
    samples = probability_flow(
        model, sde, (n_samples, 2), eps=EPS, rtol=ODE_TOL, atol=ODE_TOL, generator=generator(args.seed + 3000)
    )
    plotting.curves(
        ts,
        {"learned (Cauchy)": rel["rel_l2"]},
        os.path.join(out, "rel_l2_over_t.png"),
        ylabel=r"$\|s_\theta - s\|_{L^2(q_t)} / \|s\|_{L^2(q_t)}$",
        title=f"relative L2 error of the score (mean {rel['mean']:.4f})",
    )
    plotting.curves(
        ts,
        {},
        os.path.join(out, "residual_over_t.png"),
        ylabel="residual",
        panels={
            r"$r_{FP}(t) = E\|\varepsilon[s]\|$": {k: v["r_fp"] for k, v in curves.items()},
            r"$r_{DSM-like}(t)$": {k: v["r_dsm"] for k, v in curves.items()},
        },
    )
    plotting.scatters(
        {"data (true mixture)": ds.sample(n_samples, gen), "PF-ODE samples": samples},
        ds.extent,
        os.path.join(out, "samples.png"),
    )
    plotting.heatmaps(
        {
            "true density": gmm.log_prob(grid.cpu()).exp().reshape(n_side, n_side),
            "PF-ODE density (learned)": logp_grid.exp().reshape(n_side, n_side).cpu(),
        },
        ds.extent,
        os.path.join(out, "density.png"),
        label="density",
    )
    return rel, curves, nll_model, cross_entropy(lambda x: gmm.log_prob(x), x_nll)


def run_2d(args):
    """The paper's 2-D problem: train the Cauchy fit, evaluate it; returns metrics.json's content."""
    args.hidden = args.hidden or 64
    args.lr = args.lr or 2e-3
    args.init_points = args.init_points or "data+colloc"
    out = setup(args, "cauchy_gmm")
    steps = args.steps or (150 if args.quick else 2000)
    ds = toy_dataset("gmm2")
    gmm, sde = ds.mixture, VESDE(0.01, 50.0)
    model = toy_model(
        ds,
        sde,
        hidden=args.hidden,
        depth=args.depth,
        data_std=args.data_std,
        seed=args.seed,
        device=args.device,
        skip=not args.no_skip,
    )
    objective = _objective(args, model, sde, gmm)
    info = train(args, objective, model, ds, steps, "cauchy")
    rel, curves, nll_model, nll_true = _evaluate_2d(args, model.eval(), gmm, sde, ds, out)
    n = len(rel["t"])
    metrics = {
        "score_rel_l2": rel["mean"],
        "score_rel_l2_curve": {"t": rel["t"], "rel_l2": rel["rel_l2"]},
        "residual_curves": curves,
        "nll_model": float(nll_model.mean()),
        "nll_model_std": float(nll_model.std()),
        "nll_true": nll_true,
        "train_seconds": info["seconds"],
        "final_losses": info["last"],
        "config": {
            **vars(args),
            "steps": steps,
            "sde": repr(sde),
            "eps": EPS,
            "ode_tol": ODE_TOL,
            "n_eval": 200 if args.quick else 2000,
            "n_nll": len(nll_model),
        },
    }
    rp.write_metrics(out, metrics)
    print(
        rp.text_table(
            ["metric", "value"],
            [
                ["score_rel_l2 (mean over t)", f"{rel['mean']:.4f}"],
                ["score_rel_l2 at t=eps / t=1", f"{rel['rel_l2'][0]:.4f} / {rel['rel_l2'][-1]:.4f}"],
                ["NLL learned (nats)", rp.fmt(float(nll_model.mean()))],
                ["NLL true (nats)", rp.fmt(nll_true)],
                [
                    "mean r_FP learned / true",
                    f"{sum(curves['learned']['r_fp']) / n:.3g} / {sum(curves['true']['r_fp']) / n:.3g}",
                ],
            ],
        )
    )
    announce(out, ["metrics.json", "rel_l2_over_t.png", "residual_over_t.png", "samples.png", "density.png"])
    return metrics


def run(argv: list[str] | None = None):
    """``--summarize DIR``, ``--dim D`` or the 2-D problem; returns what it wrote."""
    p, args = parse_args(argv)
    if args.summarize is not None:
        return summarize(args.summarize)
    if args.scaling is not None:
        return cs.run_grid(
            args.scaling, args.dims or cs.DIMS, args.covs or cs.COV_KINDS, args.cpu_minutes or 1.0, run=run
        )
    if args.dim is not None:
        return run_dim(args, p)
    reject_dim_only_flags(args, p)
    return run_2d(args)


def main(argv: list[str] | None = None) -> None:
    """``scorepde-cauchy``."""
    run(argv)


if __name__ == "__main__":
    main()
