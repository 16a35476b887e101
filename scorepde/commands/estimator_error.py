"""How wrong is each estimator of the score-FPE residual, and what does it cost (App. C.3)?

    python benchmarks/estimator_error.py [--out DIR] [--quick] [--device cpu|cuda]   (or scorepde-estimator-error)

For every estimator in scorepde (exact, paper, hutchinson, directional, forward_fd; each
probe distribution; M ∈ {1, 4, 16} probes or directions) and three fields (the closed-form
GMM score, where the exact ε = 0; a random MLP; an MLP trained briefly by DSM) in D ∈ {2,
64, 784}: the bias, variance and relative RMSE of ε̂ and of ‖ε‖² (``residual_norm_sq``,
unbiased) against the exact residual (same dtype; its float32-vs-float64 gap is reported too), and the wall time per sample.
Estimates are float32, as in training. Estimators are timed interleaved, each round drawing
fresh probes, so the draws that give the errors are the calls that give the times. Then a
sweep of the finite-difference steps in float32 and float64 against Proposition C.2.
Writes metrics.json, table.md, error_vs_time.png and fd_sweep.png to --out.
"""

from __future__ import annotations

import copy
import os
import statistics
import zlib

import torch

import scorepde as sp
from scorepde.benchmarking import error_stats, interleaved_timings, machine_info
from scorepde.losses import FPObjective, sample_time
from scorepde.nn import MLPScore
from scorepde.reporting import markdown_table
from scorepde.training import fit, make_optimizer

from ._bench import benchmark_parser, command_line, setup_run, write_report

PROBES = ("rademacher", "gaussian", "sphere")


def estimator_grid(ms):
    """name → (estimator, options): every estimator, probe distribution and M."""
    grid = {"exact": ("exact", {})}
    for m in ms:
        grid[f"paper M={m}"] = ("paper", dict(n_probes=m))
        for p in PROBES:
            grid[f"hutchinson {p} M={m}"] = ("hutchinson", dict(probe=p, n_probes=m))
            grid[f"directional {p} M={m}"] = ("directional", dict(direction_probe=p, n_directions=m))
            grid[f"forward_fd {p} M={m}"] = ("forward_fd", dict(direction_probe=p, n_directions=m))
    return grid


def draw_seed(seed: int, round_: int, name: str) -> int:
    """The generator seed of one estimator's draws in one round: the same in every process
    (``hash(str)`` is salted per process, so seeding with it made runs irreproducible)."""
    return seed + 1000 * round_ + zlib.crc32(name.encode()) % 997


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/estimator_error", "D = 2 only, few draws (for tests)")
    p.add_argument("--points", type=int, default=None, help="evaluation points (default 8, quick 4)")
    p.add_argument("--draws", type=int, default=None, help="draws per point per round (default 16, quick 4)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, quick 2)")
    return p.parse_args(argv)


def make_mixture(dim: int, seed: int) -> sp.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    return sp.GaussianMixture(means, [0.3, 0.5, 0.4], [0.2, 0.5, 0.3])


def make_fields(dim, sde, gmm, quick, device, seed):
    """name → float32 score callable (and its float64 twin for the exact reference)."""
    torch.manual_seed(seed)
    random_net = MLPScore(dim, hidden=64, depth=2).to(device)
    trained = copy.deepcopy(random_net)
    opt, _ = make_optimizer(trained.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            yield gmm.sample(128, generator=gen).to(device)

    fit(
        FPObjective(trained, sde),
        opt,
        batches(),
        20 if quick else 300,
        generator=gen,
        desc=f"DSM D={dim}",
        progress=not quick,
    )
    gmm_score = lambda x, t: gmm.score(x, t, sde)
    return {
        "gmm": (gmm_score, gmm_score),
        "random": (random_net, copy.deepcopy(random_net).double()),
        "dsm": (trained, copy.deepcopy(trained).double()),
    }


def measure_field(model, model64, sde, x, t, grid, draws, rounds, device, seed, field, dim):
    """Error statistics and time per sample of every estimator at the points (x, t)."""
    P = x.shape[0]
    xr, tr = x.repeat(draws, 1), t.repeat(draws)
    # reference: the exact residual in the estimates' own dtype (so the exact estimator's error
    # is 0); its float32 round-off against float64 is reported separately as exact_vs_float64
    eps_exact = sp.residual(model, sde, x, t, "exact", validate=False).detach().double()
    eps64 = sp.residual(model64, sde, x.double(), t.double(), "exact", validate=False).detach()
    sq_exact = eps_exact.pow(2).sum(1)
    dts = sp.time_derivative(model64, x.double(), t.double(), "jvp").detach()
    # the GMM's exact ε is 0: measure errors on the scale of the terms that cancel, ∂t s
    scale = (dts if field == "gmm" else eps_exact).pow(2).sum(1).mean().sqrt().item()
    collected = {name: ([], []) for name in grid}
    counter = {"round": 0}

    def call(name, est, opts):
        def run():
            g = torch.Generator(device=device).manual_seed(draw_seed(seed, counter["round"], name))
            xx, tt = (x, t) if est == "exact" else (xr, tr)
            eps = sp.residual(model, sde, xx, tt, est, generator=g, validate=False, **opts).detach()
            sq = sp.residual_norm_sq(model, sde, xx, tt, est, generator=g, validate=False, **opts)[0].detach()
            collected[name][0].append(eps.reshape(-1, P, dim))
            collected[name][1].append(sq.reshape(-1, P))

        return run

    fns = {name: call(name, est, opts) for name, (est, opts) in grid.items()}
    times = interleaved_timings(
        fns, repeats=rounds, warmup=1, device=device, progress=True, desc=f"{field} D={dim}"
    )
    rows = {}
    for name, (est, opts) in grid.items():
        eps_draws = torch.cat(collected[name][0]).double()
        sq_draws = torch.cat(collected[name][1]).double()
        samples = P if est == "exact" else P * draws
        rows[name] = dict(
            estimator=est,
            options=opts,
            field=field,
            dim=dim,
            eps=error_stats(eps_draws, eps_exact, scale),
            norm_sq=error_stats(sq_draws, sq_exact, scale**2),
            seconds_per_sample=statistics.median(times[name]) / samples,
            draws=int(eps_draws.shape[0]),
            exact_vs_float64=error_stats(eps_exact[None], eps64, scale)["rel_rmse"],
        )
    return rows


def fd_sweep(sde, dim, device, seed, quick):
    """‖∂t s by the paper's stencil (h_s, h_d) = (h, h/2) − exact‖ / ‖exact‖, and the same for
    forward_fd's step hx in x, in float32 and float64 (Prop. C.2: O(h²) truncation meets
    round-off ~ machine ε / h)."""
    torch.manual_seed(seed)
    net = MLPScore(dim, hidden=64, depth=2).to(device).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, dim, generator=g, dtype=torch.float64).to(device)
    t = torch.full((8,), 0.5, dtype=torch.float64, device=device)
    hs = torch.logspace(-8, -0.5, 7 if quick else 16).tolist()
    hxs = torch.logspace(-5, 0, 6 if quick else 11).tolist()
    out = {"h": hs, "hx": hxs}
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(net).to(dtype)
        xd, td = x.to(dtype), t.to(dtype)
        exact = sp.time_derivative(net, x, t, "jvp").detach()
        errs = []
        for h in hs:
            fd = sp.time_derivative(model, xd, td, "fd3", h=(h, h / 2)).detach().double()
            errs.append(((fd - exact).norm() / exact.norm()).item())
        out[str(dtype).split(".")[1]] = errs
        # forward_fd: the same probes in both, so only the differences differ
        ref = sp.residual(
            net,
            sde,
            x,
            t,
            "directional",
            dt="jvp",
            validate=False,
            generator=torch.Generator(device=device).manual_seed(1),
        ).detach()
        errs_x = []
        for hx in hxs:
            est = (
                sp.residual(
                    model,
                    sde,
                    xd,
                    td,
                    "forward_fd",
                    dt="jvp",
                    hx=hx,
                    validate=False,
                    generator=torch.Generator(device=device).manual_seed(1),
                )
                .detach()
                .double()
            )
            errs_x.append(((est - ref).norm() / ref.norm()).item())
        out[f"hx_{str(dtype).split('.')[1]}"] = errs_x
        eps_mach = torch.finfo(dtype).eps
        finite = [i for i, e in enumerate(errs) if e == e]  # equal nodes in float32 give NaN
        out[f"h_best_{str(dtype).split('.')[1]}"] = hs[min(finite, key=errs.__getitem__)]
        out[f"h_prop_c2_{str(dtype).split('.')[1]}"] = eps_mach ** (1 / 3)
    return out


def table(metrics) -> str:
    """table.md from a run's metrics.json: the estimators' errors and times, then the FD sweeps."""
    rows, sweep, info, setup = metrics["rows"], metrics["fd_sweep"], metrics["machine"], metrics["setup"]
    lines = [
        f"Device: {info['device_name']} ({info['device']}, {info['torch_threads']} thread(s)). "
        f"{setup['points']} points × {setup['draws_total']} draws, float32 estimates against the "
        "float32 exact residual; VP SDE, t ~ U(0.01, 1).",
        "",
        "Relative RMSE = RMSE / RMS‖ε‖ (GMM: / RMS‖∂t s‖, since its ε = 0); ‖ε‖² by "
        "`residual_norm_sq` (unbiased product of two draws), relative to RMS‖ε‖² (GMM: RMS‖∂t s‖²).",
        "",
        "Bias has the noise of the mean over draws taken out (tr Cov / R), so small biases read as 0.",
        "",
    ]
    cells = lambda r: [
        r["dim"],
        r["field"],
        r["name"],
        f"{r['eps']['rel_bias']:.2e}",
        f"{r['eps']['rel_rmse']:.2e}",
        f"{r['norm_sq']['rel_bias']:.2e}",
        f"{r['norm_sq']['rel_rmse']:.2e}",
        f"{1e6 * r['seconds_per_sample']:.0f}",
    ]
    lines.append(
        markdown_table(
            [
                "D",
                "field",
                "estimator",
                "rel. bias ε",
                "rel. RMSE ε",
                "rel. bias ‖ε‖²",
                "rel. RMSE ‖ε‖²",
                "µs / sample",
            ],
            (cells(r) for r in rows),
            "rllrrrrr",
        )
    )
    sweep_table = lambda steps, a, b: markdown_table(
        [steps, "float32", "float64"],
        ([f"{h:.1e}", f"{x:.2e}", f"{y:.2e}"] for h, x, y in zip(sweep[steps], sweep[a], sweep[b])),
        "rrr",
    )
    lines += ["", "Finite-difference sweep (relative error of ∂t s by the (h, h/2) stencil, random MLP):", ""]
    lines.append(sweep_table("h", "float32", "float64"))
    lines += [
        "",
        f"Best h: float32 {sweep['h_best_float32']:.1e}, float64 {sweep['h_best_float64']:.1e}; "
        f"Prop. C.2 balance ε_mach^(1/3): {sweep['h_prop_c2_float32']:.1e}, {sweep['h_prop_c2_float64']:.1e}.",
        "",
        "forward_fd's relative step hx in x (error of ⟨ε,v⟩v against forward mode with the same probes):",
        "",
    ]
    lines.append(sweep_table("hx", "hx_float32", "hx_float64"))
    return "\n".join(lines) + "\n"


COLORS = {
    "exact": "k",
    "paper": "tab:red",
    "hutchinson": "tab:blue",
    "directional": "tab:green",
    "forward_fd": "tab:purple",
}
MARKERS = {"random": "o", "dsm": "s", "gmm": "^"}


def plot_error_vs_time(rows, path):
    """error_vs_time.png: relative RMSE of ε̂ against wall time per sample, a panel per D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["dim"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(5.5 * len(dims), 4.5), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        for r in rows:
            if r["dim"] != dim or r["estimator"] == "exact":
                continue
            ax.scatter(
                1e6 * r["seconds_per_sample"],
                r["eps"]["rel_rmse"],
                c=COLORS[r["estimator"]],
                marker=MARKERS[r["field"]],
                s=22,
                alpha=0.8,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time per sample (µs)")
        ax.set_ylabel("relative RMSE of ε̂")
        ax.set_title(f"D = {dim}")
        ax.grid(alpha=0.3, which="both")
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in COLORS.items() if n != "exact"
    ]
    handles += [
        plt.Line2D([], [], color="gray", marker=m, ls="", label=f"field: {f}") for f, m in MARKERS.items()
    ]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fd_sweep(sweep, path):
    """fd_sweep.png: the FD errors against the step in t and in x, float32 and float64."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for dtype, c in (("float32", "tab:blue"), ("float64", "tab:orange")):
        axes[0].loglog(sweep["h"], sweep[dtype], "o-", c=c, label=dtype)
        axes[0].axvline(sweep[f"h_prop_c2_{dtype}"], c=c, ls=":", lw=1)
        axes[1].loglog(sweep["hx"], sweep[f"hx_{dtype}"], "o-", c=c, label=dtype)
    h = torch.tensor(sweep["h"])
    axes[0].loglog(h, (h**2).tolist(), "k--", lw=1, label="slope 2 (truncation)")
    axes[0].loglog(h, (1e-7 / h).tolist(), "k-.", lw=1, label="slope −1 (round-off)")
    axes[0].set_xlabel("h  (stencil steps (h_s, h_d) = (h, h/2))")
    axes[0].set_ylabel("relative error of ∂t s")
    axes[0].set_title("paper's 3-point stencil in t; dotted: ε_mach^(1/3)")
    axes[1].set_xlabel("hx  (step in x = hx · σ_t)")
    axes[1].set_ylabel("relative error of ⟨ε,v⟩v vs forward mode")
    axes[1].set_title("forward_fd's central differences in x")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def eval_points(gmm, sde, points, seed, dim, device):
    """``points`` x_t ~ q_t of the mixture at t ~ U(0.01, 1), seeded by (seed, dim)."""
    g = torch.Generator().manual_seed(seed + dim)
    x0 = gmm.sample(points, generator=g)
    t = sample_time(points, sde, 1e-2, generator=g)
    x = sde.perturb(x0, t, torch.randn(x0.shape, generator=g)).to(device)
    return x, t.to(device)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = setup_run(args)
    points = args.points or (4 if args.quick else 8)
    draws = args.draws or (4 if args.quick else 16)
    rounds = args.rounds or (2 if args.quick else 3)
    dims = (2,) if args.quick else (2, 64, 784)
    ms = (1,) if args.quick else (1, 4, 16)
    grid = estimator_grid(ms)
    sde = sp.VPSDE()
    rows = []
    for dim in dims:
        gmm = make_mixture(dim, args.seed)
        fields = make_fields(dim, sde, gmm, args.quick, device, args.seed)
        x, t = eval_points(gmm, sde, points, args.seed, dim, device)
        for field, (model, model64) in fields.items():
            for name, row in measure_field(
                model, model64, sde, x, t, grid, draws, rounds, device, args.seed, field, dim
            ).items():
                rows.append(dict(row, name=name))
    sweep = fd_sweep(sde, 64 if not args.quick else 2, device, args.seed, args.quick)
    setup = dict(
        points=points,
        draws_per_round=draws,
        rounds=rounds,
        draws_total=draws * rounds,
        dims=list(dims),
        ms=list(ms),
        sde="VPSDE",
        dtype="float32 estimates and reference",
    )
    metrics = dict(
        rows=rows,
        fd_sweep=sweep,
        setup=setup,
        machine=machine_info(device),
        command=command_line("benchmarks/estimator_error.py", argv),
    )
    write_report(args.out, metrics, table(metrics))
    plot_error_vs_time(rows, os.path.join(args.out, "error_vs_time.png"))
    plot_fd_sweep(sweep, os.path.join(args.out, "fd_sweep.png"))


if __name__ == "__main__":
    main()
