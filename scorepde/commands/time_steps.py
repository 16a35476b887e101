"""How far is a finite difference in t from the exact ∂t s on the default image U-Nets?

    python benchmarks/time_steps.py [--out DIR] [--dsm-steps N] [--quick]

The default image networks see t through fast features: VP's U-Net through sinusoids of
c = 999 t, VE's through Gaussian Fourier features (scale 16) of log σ(t). A step of 1e-3 in t
turns their fastest feature by about a radian. For each SDE (the image defaults, float32),
at random init and after ``--dsm-steps`` DSM steps on the default data set, this measures
the relative error ‖FD − jvp‖ / ‖jvp‖ per sample of:

- ``paper``: the published stencil, (h_s, h_d) = (1e-3, 5e-4) (``ESTIMATORS["paper"]``);
- ``central 1e-3``: a central difference with h = 1e-3 (``forward_fd`` before ``h="auto"``);
- ``auto fd3`` / ``auto central``: steps from the net's time conditioning
  (``scorepde.derivatives.time_steps``: h_s = FD_PHASE / ``model.time_rate()``), what
  ``forward_fd`` and any ``dt="fd3"/"central"`` override now use by default;
- a sweep of the phase φ = h·rate for the central difference, to show where FD_PHASE sits.

The reference is the jvp of a float64 copy of the network; the float32 jvp's own gap to it
is reported too. Writes metrics.json, table.md and phase_sweep.png to --out.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
from tqdm.auto import tqdm

import scorepde as sp
from scorepde.benchmarking import machine_info
from scorepde.cli import fail
from scorepde.commands._bench import benchmark_parser, command_line, setup_run, write_report
from scorepde.data import load_dataset, to_model_space
from scorepde.derivatives import FD_PHASE, PAPER_STEPS, time_steps
from scorepde.image_config import ImageConfig, build_objective, build_score_model, build_sde, model_scaling
from scorepde.training import fit, make_optimizer

PHASES = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/time_steps", "VP only, 20 DSM steps, 8 points (for tests)")
    p.add_argument(
        "--dsm-steps",
        type=int,
        default=None,
        help="DSM steps before the 'trained' measurement (default 300, quick 20)",
    )
    p.add_argument("--points", type=int, default=None, help="evaluation points (default 32, quick 8)")
    p.add_argument(
        "--dataset",
        default="digits",
        help="data set for the DSM steps (default: the image default, sklearn's 8×8 digits)",
    )
    p.add_argument("--data-dir", default=None, help="where --dataset's files are (IDX data sets)")
    return p.parse_args(argv)


def relative_errors(model, model64, x, t, h, method):
    """Per-sample ‖FD − jvp₆₄‖ / ‖jvp₆₄‖, ``[B]``."""
    ref = sp.time_derivative(model64, x.double(), t.double(), "jvp").detach().flatten(1)
    if method == "jvp":
        est = sp.time_derivative(model, x, t, "jvp")
    else:
        est = sp.time_derivative(model, x, t, method, h=h)
    return ((est.detach().double().flatten(1) - ref).norm(dim=1) / ref.norm(dim=1)).tolist()


def measure(model, sde, x, t):
    model64 = copy.deepcopy(model).double()
    rate = model.time_rate()
    auto = time_steps(model, "auto", x.dtype)
    rows = {
        "jvp float32": relative_errors(model, model64, x, t, None, "jvp"),
        "paper (1e-3, 5e-4)": relative_errors(model, model64, x, t, PAPER_STEPS, "fd3"),
        "central 1e-3": relative_errors(model, model64, x, t, PAPER_STEPS, "central"),
        f"auto fd3 ({auto[0]:.2g}, {auto[1]:.2g})": relative_errors(model, model64, x, t, auto, "fd3"),
        f"auto central ({auto[0]:.2g})": relative_errors(model, model64, x, t, auto, "central"),
    }
    sweep = {
        phi: relative_errors(model, model64, x, t, (phi / rate, phi / rate / 2), "central")
        for phi in tqdm(PHASES, desc="phase sweep")
    }
    summary = lambda e: {"median": float(torch.tensor(e).median()), "max": max(e)}
    return {
        "time_rate": rate,
        "auto_steps": auto,
        "rows": {k: summary(v) for k, v in rows.items()},
        "phase_sweep": {str(k): summary(v) for k, v in sweep.items()},
    }


def run_sde(name, args, device, progress=True):
    torch.manual_seed(args.seed)
    cfg = ImageConfig(sde=name, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed)
    data = load_dataset(cfg.dataset, "train", cfg.data_dir)
    shape = tuple(data.images.shape[1:])
    sde = build_sde(cfg, shape)
    model = build_score_model(cfg, sde, shape).to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    images = data.images.to(device)

    def batch(n):
        idx = torch.randint(0, images.shape[0], (n,), generator=gen, device=device)
        return to_model_space(images[idx], data.levels, model_scaling(cfg), dequantized=True, generator=gen)[
            0
        ]

    x0 = batch(args.points)
    t = cfg.t_eps + (1 - cfg.t_eps) * torch.rand(args.points, generator=gen, device=device)
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=gen, device=device))
    out = {"init": measure(model, sde, xt, t)}

    def batches():
        while True:
            yield batch(cfg.batch_size)

    opt, sched = make_optimizer(model.parameters(), lr=cfg.lr, warmup=cfg.warmup)
    logs = fit(
        build_objective(cfg, model, sde),
        opt,
        batches(),
        args.dsm_steps,
        generator=gen,
        scheduler=sched,
        grad_clip=cfg.grad_clip,
        progress=progress,
        desc=f"DSM {name}",
    )
    out[f"after {args.dsm_steps} DSM steps"] = measure(model, sde, xt, t)
    out["final_dsm_loss"] = logs[-1]["loss"] if logs else None
    out["shape"] = shape
    return out


def table(metrics) -> str:
    """table.md from a run's metrics.json."""
    results = metrics["results"]
    lines = ["| SDE | net state | ∂t form | median rel. error | max rel. error |", "|---|---|---|---|---|"]
    for sde_name, res in results.items():
        for state, m in res.items():
            if not isinstance(m, dict) or "rows" not in m:
                continue
            for form, e in m["rows"].items():
                lines.append(f"| {sde_name} | {state} | {form} | {e['median']:.2e} | {e['max']:.2e} |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for sde_name, res in results.items():
        for state, m in res.items():
            if isinstance(m, dict) and "phase_sweep" in m:
                phis = [float(k) for k in m["phase_sweep"]]
                ax.loglog(
                    phis, [v["median"] for v in m["phase_sweep"].values()], "o-", label=f"{sde_name}, {state}"
                )
    ax.axvline(FD_PHASE[torch.float32], color="k", ls=":", label="FD_PHASE (float32)")
    ax.axhline(1e-3, color="r", ls="--", lw=0.8, label="1e-3")
    ax.set_xlabel("phase φ = h · time_rate (radians)")
    ax.set_ylabel("median ‖FD − jvp‖ / ‖jvp‖")
    ax.set_title("central difference in t, default image U-Nets, float32")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.dsm_steps = args.dsm_steps if args.dsm_steps is not None else (20 if args.quick else 300)
    args.points = args.points or (8 if args.quick else 32)
    if args.dsm_steps < 0 or args.points < 1:
        fail("--dsm-steps must be >= 0 and --points >= 1")
    device = setup_run(args)
    results = {name: run_sde(name, args, device) for name in (("vp",) if args.quick else ("vp", "ve"))}
    metrics = {
        "results": results,
        "fd_phase": {str(k): v for k, v in FD_PHASE.items()},
        "machine": machine_info(device),
        "command": command_line("benchmarks/time_steps.py", argv),
    }
    write_report(args.out, metrics, table(metrics))
    plot(results, os.path.join(args.out, "phase_sweep.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
