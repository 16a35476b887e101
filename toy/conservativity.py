"""Conservativity and the score-FPE residual (Sec. 6.2, Fig. 3; Figs. 1 and 6): scores for
½N((−5,−5), I) + ½N((5,5), I) under VE trained by DSM and by FP with β = 0.003 and 0.01
(γ = 0, λ_FP = 1, m = 1), and the closed-form score: curl MSE over t, r_FP(t), r_DSM-like(t).

    python toy/conservativity.py [--out DIR] [--quick] [--seed N] [--device cpu|cuda]

Writes DIR/metrics.json (curl_mse: time averages; curl_mse_curves; residual_curves) and
curl_mse_over_t.png, residual_over_t.png.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import scorepde as sp  # noqa: E402
from scorepde import plotting  # noqa: E402
from scorepde.metrics import curl_mse  # noqa: E402
from scorepde.toy import toy_dataset  # noqa: E402

RUNS = {"dsm": 0.0, "fp_beta_0.003": 0.003, "fp_beta_0.01": 0.01}   # β of each trained score
EPS = 1e-5


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500, quick 40)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fp-subbatch", type=int, default=64, help="samples per step the FP residual sees")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--param", default="score_model", choices=C.PARAMS,
                   help="score parametrization: ToyScore (skip + EDM scalings) or the NCSN++-style ScoreModel")
    args = p.parse_args(argv)
    out = C.setup(args, "conservativity")
    dev = args.device
    steps = args.steps or (40 if args.quick else 1500)
    n_t = 6 if args.quick else 21
    n_eval = 200 if args.quick else 1000

    ds = toy_dataset("gmm2")
    gmm, sde = ds.mixture, sp.VESDE(0.01, 50.0)
    scores, train_info = {}, {}
    for name, beta in RUNS.items():
        model = C.make_model(ds, sde, hidden=args.hidden, seed=args.seed, device=dev, param=args.param)
        obj = C.fp_objective(model, sde, beta, eps=EPS, subbatch=args.fp_subbatch)
        train_info[name] = C.train(obj, model, ds, steps=steps, batch_size=args.batch_size, lr=args.lr,
                                   seed=args.seed, desc=name, device=dev)
        scores[name] = model.eval()

    ts = torch.linspace(EPS, 1.0, n_t).tolist()
    x0 = ds.sample(n_eval, C.generator(args.seed + 1000)).to(dev)
    curl_curves, res_curves = {}, {}
    for name, s in scores.items():
        curl_curves[name] = curl_mse(s, sde, x0, ts, generator=C.generator(args.seed + 2000), progress=True)
        res_curves[name] = sp.residual_curves(s, sde, x0[:500], ts, generator=C.generator(args.seed + 3000))
    # The closed form in float64: its curl and residual are zero up to rounding.
    true = lambda x, t: gmm.score(x, t, sde)
    x64 = x0.double()
    curl_curves["true"] = curl_mse(true, sde, x64, ts, generator=C.generator(args.seed + 2000))
    res_curves["true"] = sp.residual_curves(true, sde, x64[:500], ts, generator=C.generator(args.seed + 3000))

    trained = [k for k in curl_curves if k != "true"]
    plotting.curves(ts, {}, os.path.join(out, "curl_mse_over_t.png"),
                    ylabel=r"$E_{q_t}[(\partial_1 s_2 - \partial_2 s_1)^2]$",
                    panels={"trained scores": {k: curl_curves[k]["curl_mse"] for k in trained},
                            "closed-form score (float64 rounding)": {"true": curl_curves["true"]["curl_mse"]}})
    plotting.curves(ts, {}, os.path.join(out, "residual_over_t.png"), ylabel="residual",
                    panels={r"$r_{FP}(t) = E\|\varepsilon[s]\|$, trained": {k: res_curves[k]["r_fp"] for k in trained},
                            r"$r_{FP}(t)$, closed form": {"true": res_curves["true"]["r_fp"]},
                            r"$r_{DSM-like}(t) = E\|s + z/\sigma_t\|$":
                                {k: v["r_dsm"] for k, v in res_curves.items()}})

    metrics = {
        "curl_mse": {k: v["mean"] for k, v in curl_curves.items()},
        "curl_mse_curves": {k: {"t": v["t"], "curl_mse": v["curl_mse"]} for k, v in curl_curves.items()},
        "residual_curves": res_curves,
        "r_fp_mean": {k: sum(v["r_fp"]) / len(v["r_fp"]) for k, v in res_curves.items()},
        "r_dsm_mean": {k: sum(v["r_dsm"]) / len(v["r_dsm"]) for k, v in res_curves.items()},
        "train": {k: {"seconds": v["seconds"], "final": v["last"]} for k, v in train_info.items()},
        "config": {**vars(args), "steps": steps, "sde": repr(sde), "eps": EPS, "n_eval": n_eval,
                   "betas": RUNS},
    }
    C.write_metrics(out, metrics)
    print(C.table([[k, f"{metrics['curl_mse'][k]:.3g}", f"{metrics['r_fp_mean'][k]:.3g}",
                    f"{metrics['r_dsm_mean'][k]:.3g}"] for k in curl_curves],
                  ["score", "curl MSE (t-avg)", "mean r_FP", "mean r_DSM-like"]))
    print(f"wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    main()
