"""The Cauchy problem of the score FPE (Sec. 6.1, Eqs. 20-21): learn s(x, t) for
½N((−5,−5), I) + ½N((5,5), I) under VE from the initial score and the PDE alone.

    python toy/cauchy_gmm.py [--out DIR] [--quick] [--seed N] [--device cpu|cuda]

Writes DIR/metrics.json (score_rel_l2, its per-t curve, residual curves, NLLs) and figures:
rel_l2_over_t.png, residual_over_t.png, samples.png, density.png.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import scorepde as sp  # noqa: E402
from scorepde import plotting  # noqa: E402
from scorepde.cauchy import INIT_POINTS, RESIDUAL_WEIGHTINGS, TIME_SAMPLINGS, CauchyObjective  # noqa: E402
from scorepde.likelihood import log_likelihood  # noqa: E402
from scorepde.metrics import cross_entropy, nll, relative_score_error  # noqa: E402
from scorepde.sampling import probability_flow  # noqa: E402
from scorepde.toy import toy_dataset  # noqa: E402

EPS = 1e-5          # smallest t for likelihoods and the t grid
ODE_TOL = 1e-4      # rtol = atol of the PF-ODE solves


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default 2000, quick 150)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weighting", default="scaled", choices=sorted(RESIDUAL_WEIGHTINGS),
                   help="w(t) on the residual; 'none' is the paper's plain Eq. 21")
    p.add_argument("--init-points", default="data+colloc", choices=INIT_POINTS)
    p.add_argument("--time-sampling", default="log_scale", choices=TIME_SAMPLINGS)
    p.add_argument("--no-skip", action="store_true", help="drop ToyScore's Gaussian skip term")
    p.add_argument("--data-std", type=float, default=1.0,
                   help="the data scale in ŝ(t)² = data_std² + σ_t² (the components' std)")
    args = p.parse_args(argv)
    out = C.setup(args, "cauchy_gmm")
    dev = args.device
    steps = args.steps or (150 if args.quick else 2000)
    n_grid_t = 6 if args.quick else 21
    n_eval = 300 if args.quick else 2000
    n_nll = 64 if args.quick else 1000
    n_side = 12 if args.quick else 48
    n_samples = 200 if args.quick else 2000

    ds = toy_dataset("gmm2")
    gmm, sde = ds.mixture, sp.VESDE(0.01, 50.0)
    true_score = lambda x, t: gmm.score(x, t, sde)
    model = C.make_model(ds, sde, hidden=args.hidden, data_std=args.data_std, seed=args.seed, device=dev,
                         skip=not args.no_skip)
    objective = CauchyObjective(model, sde, lambda x: gmm.score(x), weighting=args.weighting,
                                data_std=args.data_std, init_points=args.init_points,
                                time_sampling=args.time_sampling)
    info = C.train(objective, model, ds, steps=steps, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, desc="cauchy", device=dev)
    model.eval()

    ts = torch.linspace(EPS, 1.0, n_grid_t).tolist()
    gen = C.generator(args.seed + 1000)
    x_test = ds.sample(n_eval, gen).to(dev)
    rel = relative_score_error(model, true_score, sde, x_test, ts, generator=gen, progress=True)
    # The closed form in float64: its residual is zero up to rounding.
    curves = {name: sp.residual_curves(s, sde, x[:500], ts, generator=C.generator(args.seed + 2000))
              for name, s, x in (("learned", model, x_test), ("true", true_score, x_test.double()))}

    x_nll = ds.sample(n_nll, gen).to(dev)
    nll_model = nll(model, sde, x_nll, EPS, rtol=ODE_TOL, atol=ODE_TOL, progress=True)
    nll_true = cross_entropy(lambda x: gmm.log_prob(x), x_nll)

    grid = plotting.grid_points(ds.extent, n_side).to(dev)
    logp_grid = torch.cat([log_likelihood(model, sde, c, EPS, rtol=ODE_TOL, atol=ODE_TOL)
                           for c in grid.split(1024)])
    samples = probability_flow(model, sde, (n_samples, 2), eps=EPS, rtol=ODE_TOL, atol=ODE_TOL,
                               generator=C.generator(args.seed + 3000))

    plotting.curves(ts, {"learned (Cauchy)": rel["rel_l2"]}, os.path.join(out, "rel_l2_over_t.png"),
                    ylabel=r"$\|s_\theta - s\|_{L^2(q_t)} / \|s\|_{L^2(q_t)}$",
                    title=f"relative L2 error of the score (mean {rel['mean']:.4f})")
    plotting.curves(ts, {}, os.path.join(out, "residual_over_t.png"), ylabel="residual",
                    panels={r"$r_{FP}(t) = E\|\varepsilon[s]\|$":
                            {k: v["r_fp"] for k, v in curves.items()},
                            r"$r_{DSM-like}(t)$": {k: v["r_dsm"] for k, v in curves.items()}})
    plotting.scatters({"data (true mixture)": ds.sample(n_samples, gen), "PF-ODE samples": samples},
                      ds.extent, os.path.join(out, "samples.png"))
    shape = (n_side, n_side)
    plotting.heatmaps({"true density": gmm.log_prob(grid.cpu()).exp().reshape(shape),
                       "PF-ODE density (learned)": logp_grid.exp().reshape(shape).cpu()},
                      ds.extent, os.path.join(out, "density.png"), label="density")

    metrics = {
        "score_rel_l2": rel["mean"],
        "score_rel_l2_curve": {"t": rel["t"], "rel_l2": rel["rel_l2"]},
        "residual_curves": curves,
        "nll_model": float(nll_model.mean()), "nll_model_std": float(nll_model.std()),
        "nll_true": nll_true,
        "train_seconds": info["seconds"], "final_losses": info["last"],
        "config": {**vars(args), "steps": steps, "sde": repr(sde), "eps": EPS, "ode_tol": ODE_TOL,
                   "n_eval": n_eval, "n_nll": n_nll},
    }
    C.write_metrics(out, metrics)
    print(C.table([["score_rel_l2 (mean over t)", f"{rel['mean']:.4f}"],
                   ["score_rel_l2 at t=eps / t=1", f"{rel['rel_l2'][0]:.4f} / {rel['rel_l2'][-1]:.4f}"],
                   ["NLL learned (nats)", C.fmt(float(nll_model.mean()))],
                   ["NLL true (nats)", C.fmt(nll_true)],
                   ["mean r_FP learned / true", f"{sum(curves['learned']['r_fp']) / len(ts):.3g} / "
                                                 f"{sum(curves['true']['r_fp']) / len(ts):.3g}"]],
                  ["metric", "value"]))
    print(f"wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    main()
