"""The accuracy side of two of #12's cheaper estimators, on the step-cost U-Net.

    python benchmarks/lever_error.py [--out DIR] [--quick] [--data-dir DIR]

The U-Net of ``benchmarks/step_cost.py`` after ``--dsm-steps`` DSM steps on MNIST (so its
curvature is not that of an untrained net), at x_t for a spread of t:

1. ``forward_fd``'s 5-row form (``dt="one_sided"``: ∂t s from s(x, t ± h) and the corners'
   mean) against its 6-row central form, over the step in x (``hx``): the relative error of
   ⟨ε̂, v⟩ for the same probes u, v against a float64 central reference with small steps.
   One-sided in t costs O(h) + O(δ²/h), δ = hx·σ_t: a small hx cuts the second term until
   float32 round-off (∝ 1/hx²) takes over.
   Then ⟨∂t s, v⟩ alone: the central stencil against the one-sided ``"forward"`` one from
   the exact s(x, t), the 5-row form a fused objective could have from its DSM rows.
2. The divergence of the score: Hutchinson with m Rademacher probes against Hutch++ with m
   Jacobian-vector products (``derivatives.hutchpp_divergence``), relative RMS error against
   the exact trace (D jvps) and the median wall time per call.

Writes metrics.json and table.md to --out.
"""

from __future__ import annotations

import copy
import statistics

import torch
from tqdm.auto import tqdm

import scorepde as sp
from scorepde.benchmarking import call_seconds, error_stats, interleaved_timings, load_average, machine_info
from scorepde.commands._bench import benchmark_parser, command_line, setup_run, train_briefly, write_report
from scorepde.commands.step_cost import MNIST_DIR, build_unet, image_batch
from scorepde.derivatives import hutchpp_divergence
from scorepde.fpe import projected_residual_fd
from scorepde.reporting import markdown_table

ONE_SIDED_HX = (0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
CENTRAL_HX = (0.05, 0.01)


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/lever_error", "tiny sizes, for tests (seconds)")
    p.add_argument(
        "--dsm-steps", type=int, default=None, help="DSM steps before measuring (default 60, quick 3)"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="draws per trace estimator and point (default 30, quick 3)"
    )
    p.add_argument("--data-dir", default=MNIST_DIR, help="folder with MNIST IDX files")
    return p.parse_args(argv)


def trained_unet(args, device):
    """The step-cost U-Net after --dsm-steps DSM steps on 64 images (batches of 32)."""
    model = build_unet(args.quick, device, args.seed)
    x0, name = image_batch(args.quick, 64, device, args.seed, args.data_dir)
    steps = args.dsm_steps if args.dsm_steps is not None else (3 if args.quick else 60)
    train_briefly(model, x0, steps, batch=32, generator=torch.Generator().manual_seed(args.seed))
    return model.eval(), x0, name, steps


def probe_points(model, x0, seed):
    """x_t at a spread of t (16 points at most) and one probe v per point."""
    t = torch.tensor([0.002, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 0.95]).repeat(2)[: len(x0)]
    g = torch.Generator().manual_seed(seed + 1)
    xt = model.sde.perturb(x0[: len(t)], t, torch.randn(x0[: len(t)].shape, generator=g))
    return xt, t, sp.sample_probes(xt, 1, generator=g)[0]


def relative_spread(err):
    """Median, 90th percentile and max of per-point relative errors."""
    return dict(median=err.median().item(), p90=err.quantile(0.9).item(), max=err.max().item())


def one_sided_sweep(model, x0, seed):
    """Relative error of ⟨ε̂, v⟩ per point for each (dt, hx), same u and v throughout."""
    sde = model.sde
    xt, t, v = probe_points(model, x0, seed)
    run = lambda m, x, tt, vv, **kw: projected_residual_fd(
        m, sde, x, tt, vv, generator=torch.Generator().manual_seed(seed), **kw
    )[0]
    with torch.no_grad():
        ref = run(copy.deepcopy(model).double(), xt.double(), t.double(), v.double(), hx=1e-3, h=(1e-6, 1e-6))
        out = {}
        steps = [(dt, hx) for dt, hxs in (("central", CENTRAL_HX), ("one_sided", ONE_SIDED_HX)) for hx in hxs]
        for dt, hx in tqdm(steps, desc="forward_fd over hx"):
            err = (run(model, xt, t, v, dt=dt, hx=hx).double() - ref).abs() / ref.abs()
            out[f"{dt} hx={hx:g}"] = dict(dt=dt, hx=hx, **relative_spread(err), per_point=err.tolist())
    return out, t.tolist()


def time_derivative_sweep(model, x0, seed):
    """Relative error of ⟨∂t s, v⟩ alone against float64 forward mode: the central stencil and
    the one-sided "forward" one from the exact s(x, t) (which the fused objective's DSM rows
    hold), over the step h in multiples of the automatic one."""
    xt, t, v = probe_points(model, x0, seed)
    dot = lambda a: (a.double() * v.double()).flatten(1).sum(1)
    h0 = sp.derivatives.time_steps(model)[0]
    out = {}
    with torch.no_grad():
        ref = dot(sp.time_derivative(copy.deepcopy(model).double(), xt.double(), t.double()))
        center = model(xt, t)
        for method, mults in (("central", (1.0,)), ("forward", (1.0, 1 / 3, 1 / 10))):
            for mult in mults:
                est = dot(sp.time_derivative(model, xt, t, method, h=(mult * h0, mult * h0), center=center))
                err = (est - ref).abs() / ref.abs()
                out[f"{method} h={mult:.3g}×auto"] = dict(
                    method=method, h=mult * h0, h_over_auto=mult, **relative_spread(err)
                )
    return out


def trace_draws(fn, x1, exact, seed, repeats, m):
    """Hutchinson (and, for m divisible by 3, Hutch++) with m matvecs at one point: the
    relative RMS error of ``repeats`` seeded draws against ``exact`` and the median seconds."""
    methods = {"hutchinson": lambda gen: sp.divergence(fn, x1, "hutchinson", n_probes=m, generator=gen)}
    if m % 3 == 0:
        methods["hutch++"] = lambda gen: hutchpp_divergence(fn, x1, m, generator=gen)
    draws = {name: [] for name in methods}
    draw = lambda name: draws[name].append(  # the r-th draw of every method is seeded by r
        methods[name](torch.Generator().manual_seed(seed + 1000 * len(draws[name]) + m)).item()
    )
    secs = interleaved_timings(
        {name: (lambda name=name: draw(name)) for name in methods}, repeats=repeats, warmup=0
    )
    exact_t = torch.tensor([exact], dtype=torch.float64)
    return {
        name: dict(
            rel_rmse=error_stats(
                torch.tensor(draws[name], dtype=torch.float64)[:, None], exact_t, abs(exact)
            )["rel_rmse"],
            seconds=statistics.median(secs[name]),
        )
        for name in methods
    }


def trace_estimators(model, x0, seed, repeats, budgets):
    """Relative RMS error against the exact trace and median seconds per call, per (method, m)."""
    t = torch.tensor([0.01, 0.1, 0.4, 0.9])
    g = torch.Generator().manual_seed(seed + 2)
    xt = model.sde.perturb(x0[: len(t)], t, torch.randn(x0[: len(t)].shape, generator=g))
    rows = {}
    with torch.no_grad():
        for i in tqdm(range(len(t)), desc="trace estimators"):
            x1, t1 = xt[i : i + 1], t[i : i + 1]
            fn = lambda y: model(y, t1)
            exact = []
            exact_seconds = call_seconds(
                lambda: exact.append(sp.divergence(fn, x1, "exact", chunk_size=49).item())
            )[0]
            for m in budgets:
                for name, res in trace_draws(fn, x1, exact[0], seed, repeats, m).items():
                    row = rows.setdefault(f"{name} m={m}", dict(method=name, matvecs=m, points=[]))
                    row["points"].append(
                        dict(t=t1.item(), exact=exact[0], exact_seconds=exact_seconds, **res)
                    )
    for row in rows.values():
        row["rel_rmse_mean"] = statistics.mean(p["rel_rmse"] for p in row["points"])
        row["seconds_median"] = statistics.median(p["seconds"] for p in row["points"])
    return rows


def table(m) -> str:
    """table.md from a run's metrics.json."""
    info = m["machine"]
    lines = [
        f"{info['device_name']}, {info['torch_threads']} thread(s), load average "
        f"{', '.join(f'{v:.2f}' for v in info['load_average'])} at the start, "
        f"{', '.join(f'{v:.2f}' for v in info['load_average_end'])} at the end; U-Net "
        f"({m['data']}) after {m['dsm_steps']} DSM steps.",
        "",
        "1. ⟨ε̂, v⟩ of forward_fd against a float64 reference, same probes; relative error over "
        f"{len(m['one_sided_t'])} points, t ∈ {sorted(set(round(x, 3) for x in m['one_sided_t']))}:",
        "",
    ]
    spread = lambda r: [f"{r['median']:.3g}", f"{r['p90']:.3g}", f"{r['max']:.3g}"]
    lines.append(
        markdown_table(
            ["∂t form", "rows / sample", "hx", "median", "90th pct", "max"],
            (
                [r["dt"], 5 if r["dt"] == "one_sided" else 6, f"{r['hx']:g}"] + spread(r)
                for r in m["one_sided"].values()
            ),
            "lrrrrr",
        )
    )
    lines += [
        "",
        "1b. ⟨∂t s, v⟩ alone against float64 forward mode, same points; one-sided from the "
        "exact s(x, t) (as the fused objective's DSM rows hold it: 5 rows per residual sample "
        "beyond DSM without the corners' δ² term):",
        "",
    ]
    lines.append(
        markdown_table(
            ["stencil", "h / automatic h", "h", "median", "90th pct", "max"],
            (
                [r["method"], f"{r['h_over_auto']:.3g}", f"{r['h']:.2e}"] + spread(r)
                for r in m["time_derivative"].values()
            ),
            "lrrrrr",
        )
    )
    lines += [
        "",
        f"2. div s: relative RMS error against the exact trace ({m['trace_repeats']} draws per point, "
        f"mean over t ∈ {[round(p['t'], 3) for p in next(iter(m['trace'].values()))['points']]}), median seconds per call:",
        "",
    ]
    lines.append(
        markdown_table(
            ["method", "matvecs", "rel. RMS error", "seconds / call"],
            (
                [r["method"], r["matvecs"], f"{r['rel_rmse_mean']:.3g}", f"{r['seconds_median']:.3f}"]
                for r in m["trace"].values()
            ),
            "lrrr",
        )
    )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    device = setup_run(args)
    info = machine_info(device)
    model, x0, data, steps = trained_unet(args, device)
    sweep, ts = one_sided_sweep(model, x0, args.seed)
    dt_sweep = time_derivative_sweep(model, x0, args.seed)
    repeats = args.repeats or (3 if args.quick else 30)
    trace = trace_estimators(model, x0, args.seed, repeats, (3, 6) if args.quick else (3, 6, 12, 24))
    info["load_average_end"] = load_average()
    m = dict(
        one_sided=sweep,
        one_sided_t=ts,
        time_derivative=dt_sweep,
        trace=trace,
        trace_repeats=repeats,
        data=data,
        dsm_steps=steps,
        machine=info,
        command=command_line("benchmarks/lever_error.py", argv),
    )
    write_report(args.out, m, table(m))


if __name__ == "__main__":
    main()
