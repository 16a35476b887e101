"""The price of a likelihood: scorepde.log_likelihood against a score_sde-style SciPy loop.

    python benchmarks/likelihood_cost.py [--out DIR] [--quick] [--points N] [--repeats R] [--compile]
    (or python -m scorepde.commands.likelihood_cost)

The baseline is the loop users know from score_sde_pytorch's ``likelihood.py``, written here
from its description: ``scipy.integrate.solve_ivp`` (RK45) on one flat float64 state of the
whole batch, a numpy → torch → numpy round trip at every evaluation, the drift from a plain
forward and the divergence from a second forward with ``autograd.grad`` (Hutchinson with one
fixed Rademacher probe; the exact trace by D gradients). scorepde runs the same points, the
same probe and the same tolerance (rtol = atol = 1e-5 by default) with ``mode="reverse"``
(its default: one forward and vjps per evaluation) and ``mode="forward"`` (the older jvp
path); with ``--compile`` also ``mode="reverse"`` on a ``torch.compile``'d score (mixture cases
only; its compile shows as its first-call cost). Cases: a 2-D Gaussian mixture (exact score)
with the exact and the Hutchinson trace, and a 784-D 28×28 U-Net (briefly DSM-trained on MNIST, else on 8×8 digits) with Hutchinson.

Solves are interleaved (A B C, C B A, …) after one warmup each; every ratio is a ratio of
medians from one run. The first-call cost (a fresh process's first solve minus its second)
is measured in a subprocess per method. Writes metrics.json and table.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch
from tqdm.auto import tqdm

import scorepde as sp
from scorepde.baselines import scipy_log_likelihood
from scorepde.benchmarking import call_seconds, interleaved_timings, load_average, machine_info, summarize
from scorepde.checkpoints import read_torch_file
from scorepde.cli import fail
from scorepde.derivatives import sample_probes
from scorepde.reporting import markdown_table

from ._bench import benchmark_parser, command_line, setup_run, train_briefly, write_report
from .step_cost import MNIST_DIR, build_unet, image_batch

EPS = 1e-5
METHODS = ("scipy_rk45", "scorepde_reverse", "scorepde_forward")
CASES = ("mixture_exact", "mixture_hutchinson", "unet_hutchinson")


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/likelihood_cost", "tiny sizes, for tests (well under a minute)")
    p.add_argument("--points", type=int, default=None, help="points per solve, mixture (default 64, quick 8)")
    p.add_argument(
        "--unet-points", type=int, default=None, help="points per solve, U-Net (default 4, quick 2)"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds, mixture (default 5, quick 1)")
    p.add_argument("--unet-repeats", type=int, default=None, help="timed rounds, U-Net (default 3, quick 1)")
    p.add_argument(
        "--unet-forward",
        action="store_true",
        help="also time scorepde's forward-mode path on the U-Net (about 6× slower per evaluation)",
    )
    p.add_argument(
        "--tol", type=float, default=None, help="rtol = atol of every solver (default 1e-5, quick 1e-3)"
    )
    p.add_argument(
        "--unet-train-steps",
        type=int,
        default=None,
        help="DSM steps that train the U-Net before timing (default 300, quick 5)",
    )
    p.add_argument(
        "--data-dir",
        default=MNIST_DIR,
        help="folder with MNIST IDX files for the U-Net (default: ../shared/data/mnist-10k); digits if absent",
    )
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time mode='reverse' on a torch.compile'd score (mixture cases)",
    )
    p.add_argument(
        "--no-first-call",
        action="store_true",
        help="skip the fresh-process first-call measurement (it starts one process per method)",
    )
    p.add_argument("--first-call", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def mixture_case(args, trace):
    sde = sp.VPSDE()
    gmm = sp.GaussianMixture([[-2.0, -1.0], [3.0, 2.0], [0.5, 4.0]], [0.3, 0.5, 0.4], [0.2, 0.5, 0.3])
    n = args.points or (8 if args.quick else 64)
    x = gmm.sample(n, generator=torch.Generator().manual_seed(args.seed))
    return (lambda y, t: gmm.score(y, t, sde)), sde, x, trace


def unet_case(args):
    """The step-cost U-Net, trained briefly by DSM so its ODE is a trained network's (the
    weights are kept in --out, so the first-call processes load instead of retraining)."""
    model = build_unet(args.quick, "cpu", args.seed)
    steps = args.unet_train_steps if args.unet_train_steps is not None else (5 if args.quick else 300)
    data, _ = image_batch(args.quick, 2048 if not args.quick else 64, "cpu", args.seed, args.data_dir)
    weights = os.path.join(args.out, f"unet_dsm{steps}_seed{args.seed}{'_quick' if args.quick else ''}.pt")
    if os.path.exists(weights):
        model.load_state_dict(
            read_torch_file(
                weights, what="cached U-Net weights file", hint=f"Delete {weights} to retrain it."
            )
        )
    else:
        train_briefly(
            model,
            data,
            steps,
            batch=32,
            generator=torch.Generator().manual_seed(args.seed),
            progress=args.first_call is None,
            desc="DSM-train the U-Net",
        )
        torch.save(model.state_dict(), weights + ".tmp")
        os.replace(weights + ".tmp", weights)
    model.eval().requires_grad_(False)
    n = args.unet_points or (2 if args.quick else 4)
    x = data[-n:]
    return model, model.sde, x, "hutchinson"


def build_case(args, name):
    if name == "unet_hutchinson":
        return unet_case(args)
    return mixture_case(args, name.split("_")[1])


def solvers(model, sde, x, trace, tol, seed, compile=False):
    """name → a function that solves once and returns (log-likelihood, NFE); one probe for all."""
    probe = sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(seed))[0]
    compiled = torch.compile(model) if compile else None

    def ours(mode, score=model):
        def run():
            ll, stats = sp.log_likelihood(
                score,
                sde,
                x,
                EPS,
                trace,
                rtol=tol,
                atol=tol,
                mode=mode,
                generator=torch.Generator().manual_seed(seed),
                return_stats=True,
            )
            return ll, stats["nfe"]

        return run

    fns = {
        "scipy_rk45": lambda: scipy_log_likelihood(model, sde, x, trace, probe, rtol=tol, atol=tol),
        "scorepde_reverse": ours("reverse"),
        "scorepde_forward": ours("forward"),
    }
    if compile:
        fns["scorepde_reverse_compiled"] = ours("reverse", compiled)
    return fns


def first_call(args, case, method):
    """(first solve, second solve) seconds in a fresh process, after imports and set-up."""
    flags = dict(
        seed=args.seed,
        tol=args.tol,
        data_dir=args.data_dir,
        out=args.out,
        points=args.points,
        unet_points=args.unet_points,
        unet_train_steps=args.unet_train_steps,
    )
    cmd = [sys.executable, "-m", "scorepde.commands.likelihood_cost", "--first-call", f"{case}:{method}"]
    cmd += [a for k, v in flags.items() if v is not None for a in (f"--{k.replace('_', '-')}", str(v))]
    cmd += [flag for flag, on in (("--quick", args.quick), ("--compile", args.compile)) if on]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"first-call measurement {case}:{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _first_call_child(args):
    case, method = args.first_call.split(":")
    model, sde, x, trace = build_case(args, case)
    fn = solvers(model, sde, x, trace, args.tol, args.seed, method.endswith("_compiled"))[method]
    seconds = call_seconds(fn, 2)
    print(json.dumps({"first": seconds[0], "second": seconds[1]}))


def case_methods(args, name):
    if name == "unet_hutchinson":
        return [m for m in METHODS if m != "scorepde_forward" or args.unet_forward]
    return list(METHODS) + (["scorepde_reverse_compiled"] if args.compile else [])


def run_case(args, name):
    model, sde, x, trace = build_case(args, name)
    methods = case_methods(args, name)
    fns = {
        m: fn
        for m, fn in solvers(
            model, sde, x, trace, args.tol, args.seed, "scorepde_reverse_compiled" in methods
        ).items()
        if m in methods
    }
    answers = {m: fns[m]() for m in tqdm(fns, desc=f"{name}: first solves")}  # also the warmup
    if name == "unet_hutchinson":
        repeats = args.unet_repeats or (1 if args.quick else 3)
    else:
        repeats = args.repeats or (1 if args.quick else 5)
    times = interleaved_timings(
        {m: (lambda fn=fn: fn()) for m, fn in fns.items()},
        repeats=repeats,
        warmup=0,
        progress=True,
        desc=name,
    )
    ref = answers["scipy_rk45"][0].double()
    # A tight solve (tol / 100, same probe) says how far each method is from the ODE's answer:
    # the two agree "within solver tolerance" when their gap is no larger than their own errors.
    tight = sp.log_likelihood(
        model,
        sde,
        x,
        EPS,
        trace,
        rtol=args.tol / 100,
        atol=args.tol / 100,
        generator=torch.Generator().manual_seed(args.seed),
    ).double()
    own_error = {m: (answers[m][0].double() - tight).abs().max().item() for m in fns}
    base = statistics.median(times["scipy_rk45"])
    rows = {}
    for m in fns:
        ll, nfe = answers[m]
        med = statistics.median(times[m])
        diff = (ll.double() - ref).abs()
        rows[m] = dict(
            nfe=nfe,
            seconds=summarize(times[m]),
            seconds_per_nfe=med / nfe,
            speedup_over_scipy=base / med,
            max_abs_diff_nats=diff.max().item(),
            max_abs_diff_nats_per_dim=diff.max().item() / x[0].numel(),
            max_abs_error_vs_tight_solve=own_error[m],
            mean_loglik=ll.double().mean().item(),
            times=times[m],
        )
    band = 2 * max(own_error.values())
    return dict(
        points=x.shape[0],
        dim=x[0].numel(),
        trace=trace,
        rows=rows,
        agreement_band_nats=band,
        answers_agree=all(r["max_abs_diff_nats"] <= band for r in rows.values()),
    )


def table(metrics) -> str:
    """table.md from a run's metrics.json."""
    info = metrics["machine"]
    lines = [
        f"Device: {info['device_name']} ({info['torch_threads']} thread), load average "
        f"{', '.join(f'{v:.2f}' for v in info['load_average'])} at the start; rtol = atol = {metrics['tol']}, "
        f"eps = {metrics['eps']}; medians of interleaved solves.",
        "",
    ]
    first = lambda r: (
        "–" if r.get("first_call") is None else f"{r['first_call']['first'] - r['first_call']['second']:.2f}"
    )
    cells = lambda case, res, m, r: [
        case,
        res["dim"],
        res["points"],
        m,
        r["nfe"],
        f"{r['seconds']['median']:.3f}",
        f"{1e3 * r['seconds_per_nfe']:.2f}",
        f"{r['speedup_over_scipy']:.2f}",
        first(r),
        f"{r['max_abs_diff_nats']:.2e}",
        f"{r['max_abs_error_vs_tight_solve']:.2e}",
    ]
    lines.append(
        markdown_table(
            [
                "case",
                "D",
                "points",
                "method",
                "NFE",
                "solve (s)",
                "ms / NFE",
                "× faster than SciPy",
                "first-call extra (s)",
                "max \\|Δ log p\\| vs SciPy (nats)",
                "max error vs tol/100 solve (nats)",
            ],
            (
                cells(case, res, m, r)
                for case, res in metrics["cases"].items()
                for m, r in res["rows"].items()
            ),
            "lrrlrrrrrrr",
        )
    )
    return "\n".join(lines) + "\n"


def chosen_cases(args):
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        fail(f"unknown case(s) {bad} in --cases; choose from {list(CASES)}")
    return cases


def main(argv=None):
    args = parse_args(argv)
    args.tol = args.tol or (1e-3 if args.quick else 1e-5)
    if args.first_call:  # a child process of first_call(): it reads the parent's --out
        setup_run(args, prepare=False)
        return _first_call_child(args)
    if args.device != "cpu":
        fail("likelihood_cost.py compares against a numpy loop: --device cpu only")
    cases = chosen_cases(args)
    info = machine_info(setup_run(args))
    results = {}
    for case in cases:
        results[case] = run_case(args, case)
        # the first-call extra is per process, not per model: measured on the mixture only
        if (
            not args.no_first_call
            and case != "unet_hutchinson"
            and not (args.quick and case != "mixture_hutchinson")
        ):
            for m in tqdm(results[case]["rows"], desc=f"first calls, {case}"):
                fc = first_call(args, case, m)
                results[case]["rows"][m]["first_call"] = dict(fc, extra=fc["first"] - fc["second"])
    info["load_average_end"] = load_average()
    speedups = {c: r["rows"]["scorepde_reverse"]["speedup_over_scipy"] for c, r in results.items()}
    metrics = dict(
        speedup_over_scipy=speedups,
        min_speedup_over_scipy=min(speedups.values()),
        goals=dict(
            at_least_1_5x_faster=min(speedups.values()) >= 1.5,
            answers_agree=all(r["answers_agree"] for r in results.values()),
        ),
        cases=results,
        machine=info,
        tol=args.tol,
        eps=EPS,
        command=command_line("benchmarks/likelihood_cost.py", argv),
    )
    for name in os.listdir(args.out):  # the U-Net weights were only for the first-call processes
        if name.startswith("unet_dsm") and name.endswith(".pt"):
            os.remove(os.path.join(args.out, name))
    write_report(args.out, metrics, table(metrics))
    print(json.dumps({k: metrics[k] for k in ("speedup_over_scipy", "goals")}, indent=2))


if __name__ == "__main__":
    main()
