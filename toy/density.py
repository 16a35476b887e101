"""Synthetic density benchmarks (Sec. 7.1, Figs. 4-5): vanilla DSM against FP-Diffusion
with the paper's toy setting (β, γ, λ_FP, m) = (0.0015, 0, 1, 1) under VE, on the 1-D 3-mode
GMM, the checkerboard, the Swiss rolls and the 8-mode GMM; test NLL by the PF-ODE (exact trace).

    python toy/density.py [--out DIR] [--quick] [--seed N] [--device cpu|cuda]

Setting (measured in toy/RESULTS.md §3): VE with σ_min = 0.01 and σ_max the largest pairwise
distance of 2000 draws of each data set (``scorepde.toy.sigma_max_from_data``; ≈ 2 for the
1-D GMM, 2.6 for the 8 modes, 11 for the checkerboard, 20 for the Swiss rolls), the
``ScoreModel`` over a 3×64 MLP with Fourier features of log σ at scale 1, 1000 Adam steps of
batch 1024 at lr 1e-2 (cosine decay), 3 seeds.

Writes DIR/metrics.json ({dataset: nll_vanilla, nll_fp, nll_true and their stds}) and one
density figure per data set (data | vanilla | FP, on a shared colour scale).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import scorepde as sp  # noqa: E402
from scorepde import plotting  # noqa: E402
from scorepde.likelihood import log_likelihood  # noqa: E402
from scorepde.metrics import cross_entropy, nll  # noqa: E402
from scorepde.toy import sigma_max_from_data, toy_dataset  # noqa: E402

DATASETS = ("gmm1d", "checkerboard", "swiss_rolls", "gmm8")
METHODS = {"vanilla": 0.0, "fp": 0.0015}     # β; γ = 0, λ_FP = 1, m = 1 for both
EPS = 1e-5                                   # start time for training and likelihood
ODE_TOL = 1e-4
SIGMA_MIN = 0.01
N_SIGMA_MAX = 2000                           # draws that σ_max is measured on
FOURIER_SCALE = 1.0                          # log σ spans ~10: scale 16 makes c ↦ emb(c) noise


def _density_grid(model, sde, ds, n_side):
    grid = plotting.grid_points(ds.extent, n_side, ds.dim)
    logp = torch.cat([log_likelihood(model, sde, c, EPS, rtol=ODE_TOL, atol=ODE_TOL)
                      for c in grid.split(1024)])
    return grid, logp.exp()


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", type=int, default=None, help="seeds per run (default 3, quick 1)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000, quick 40)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fp-subbatch", type=int, default=32, help="samples per step the FP residual sees")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--n-test", type=int, default=None, help="held-out samples (default 500, quick 64)")
    p.add_argument("--param", default="score_model", choices=C.PARAMS,
                   help="score parametrization: the NCSN++-style ScoreModel, or ToyScore")
    args = p.parse_args(argv)
    out = C.setup(args, "density")
    dev = args.device
    n_seeds = args.seeds or (1 if args.quick else 3)
    steps = args.steps or (40 if args.quick else 1000)
    n_test = args.n_test or (64 if args.quick else 500)
    n_side = 10 if args.quick else 40

    metrics, rows, sdes = {}, [], {}
    for name in args.datasets:
        ds = toy_dataset(name)
        sde = sp.VESDE(SIGMA_MIN, sigma_max_from_data(ds.sample(N_SIGMA_MAX, C.generator(20_000))))
        sdes[name] = repr(sde)
        x_test = ds.sample(n_test, C.generator(10_000 + args.seed)).to(dev)
        nll_true = None if ds.log_prob is None else cross_entropy(ds.log_prob, x_test.cpu())
        per_method, maps = {}, {}
        for method, beta in METHODS.items():
            vals = []
            for k in range(n_seeds):
                seed = args.seed + k
                model = C.make_model(ds, sde, hidden=args.hidden, seed=seed, device=dev, param=args.param,
                                     fourier_scale=FOURIER_SCALE)
                obj = C.fp_objective(model, sde, beta, eps=EPS, subbatch=args.fp_subbatch)
                C.train(obj, model, ds, steps=steps, batch_size=args.batch_size, lr=args.lr,
                        seed=seed, desc=f"{name}/{method}/seed{seed}", device=dev)
                model.eval()
                vals.append(float(nll(model, sde, x_test, EPS, rtol=ODE_TOL, atol=ODE_TOL).mean()))
                if k == 0:
                    maps[method] = _density_grid(model, sde, ds, 400 if ds.dim == 1 and not args.quick
                                                 else n_side)
            per_method[method] = vals
        entry = {}
        for method, vals in per_method.items():
            entry[f"nll_{method}"] = float(np.mean(vals))
            entry[f"nll_{method}_std"] = float(np.std(vals))
            entry[f"nll_{method}_seeds"] = vals
        entry["nll_true"] = nll_true
        metrics[name] = entry
        rows.append([name, C.fmt(entry["nll_vanilla"], entry["nll_vanilla_std"]),
                     C.fmt(entry["nll_fp"], entry["nll_fp_std"]), C.fmt(nll_true)])

        fig = os.path.join(out, f"density_{name}.png")
        if ds.dim == 1:
            grid = maps["vanilla"][0]
            series = {"vanilla DSM": maps["vanilla"][1], "FP (β=0.0015)": maps["fp"][1]}
            true = ds.log_prob(grid).exp()
            plotting.densities_1d(grid, {"true": true, **series}, fig, ymax=1.5 * float(true.max()),
                                  title=f"{name}: PF-ODE densities (seed {args.seed}; y clipped)")
        else:
            shape = (maps["vanilla"][0].shape[0] ** 0.5,) * 2
            shape = tuple(int(round(s)) for s in shape)
            data = (ds.log_prob(maps["vanilla"][0]).exp().reshape(shape) if ds.log_prob is not None
                    else plotting.histogram_density(ds.sample(100_000, C.generator(1)), ds.extent, shape[0]))
            plotting.heatmaps({"data": data,
                               "vanilla DSM": maps["vanilla"][1].reshape(shape),
                               "FP (β=0.0015)": maps["fp"][1].reshape(shape)},
                              ds.extent, fig, label="density",
                              suptitle=f"{name}: PF-ODE densities (seed {args.seed})")

    metrics["config"] = {**vars(args), "seeds": n_seeds, "steps": steps, "n_test": n_test,
                         "sde": sdes, "fourier_scale": FOURIER_SCALE, "eps": EPS, "ode_tol": ODE_TOL, "methods": METHODS}
    C.write_metrics(out, metrics)
    print(C.table(rows, ["dataset", "NLL vanilla", "NLL FP", "NLL true"]))
    print(f"(nats per sample, mean ± std over {n_seeds} seed(s)); wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    main()
