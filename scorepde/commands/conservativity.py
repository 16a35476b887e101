"""Conservativity and the score-FPE residual (Sec. 6.2, Fig. 3; Figs. 1 and 6): scores for
½N((−5,−5), I) + ½N((5,5), I) under VE trained by DSM and by FP with β = 0.003 and 0.01
(γ = 0, λ_FP = 1, m = 1), and the closed-form score: curl MSE over t, r_FP(t), r_DSM-like(t).

    scorepde-conservativity [--out DIR] [--quick] [--seed N] [--device cpu|cuda]
    python toy/conservativity.py ...              # the same command, from a source checkout

Writes DIR/metrics.json (curl_mse: time averages; curl_mse_curves; residual_curves) and
curl_mse_over_t.png, residual_over_t.png.
"""

from __future__ import annotations

import os

import torch

from .. import plotting
from ..curves import residual_curves
from ..losses import FPObjective
from ..metrics import curl_mse
from ..outputs import announce
from ..reporting import text_table, write_metrics
from ..sde import VESDE
from ..toy import PARAMS, toy_dataset, toy_model
from ._toy import generator, parser, setup, train

RUNS = {"dsm": 0.0, "fp_beta_0.003": 0.003, "fp_beta_0.01": 0.01}  # β of each trained score
EPS = 1e-5


def parse_args(argv: list[str] | None = None):
    p = parser(__doc__.split("\n\n")[0], "conservativity")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500, quick 40)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fp-subbatch", type=int, default=64, help="samples per step the FP residual sees")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--param",
        default="score_model",
        choices=PARAMS,
        help="score parametrization: ToyScore (skip + EDM scalings) or the NCSN++-style ScoreModel",
    )
    return p.parse_args(argv)


def objective(model, sde, beta: float, subbatch: int) -> FPObjective:
    """Sec. 6.2's objective: (β, γ, λ_FP, m) = (beta, 0, 1, 1) with the exact residual on the
    first ``subbatch`` samples of each batch; β = 0 is DSM."""
    return FPObjective(
        model,
        sde,
        beta=beta,
        gamma=0.0,
        fp_weighting="none",
        m=1,
        estimator="exact",
        eps=EPS,
        subbatch=subbatch,
    )


def _curves(scores, gmm, sde, x0, ts, seed):
    """Curl MSE and residual curves of every trained score, and of the closed form in float64
    (its curl and residual are zero up to rounding)."""
    true = lambda x, t: gmm.score(x, t, sde)  # noqa: E731
    curl, res = {}, {}
    for name, (s, x) in {**{k: (v, x0) for k, v in scores.items()}, "true": (true, x0.double())}.items():
        curl[name] = curl_mse(s, sde, x, ts, generator=generator(seed + 2000), progress=name != "true")
        res[name] = residual_curves(s, sde, x[:500], ts, generator=generator(seed + 3000))
    return curl, res


def _figures(out, ts, curl, res):
    trained = [k for k in curl if k != "true"]
    plotting.curves(
        ts,
        {},
        os.path.join(out, "curl_mse_over_t.png"),
        ylabel=r"$E_{q_t}[(\partial_1 s_2 - \partial_2 s_1)^2]$",
        panels={
            "trained scores": {k: curl[k]["curl_mse"] for k in trained},
            "closed-form score (float64 rounding)": {"true": curl["true"]["curl_mse"]},
        },
    )
    plotting.curves(
        ts,
        {},
        os.path.join(out, "residual_over_t.png"),
        ylabel="residual",
        panels={
            r"$r_{FP}(t) = E\|\varepsilon[s]\|$, trained": {k: res[k]["r_fp"] for k in trained},
            r"$r_{FP}(t)$, closed form": {"true": res["true"]["r_fp"]},
            r"$r_{DSM-like}(t) = E\|s + z/\sigma_t\|$": {k: v["r_dsm"] for k, v in res.items()},
        },
    )


def run(argv: list[str] | None = None) -> dict:
    """Train the three scores, measure them against the closed form; returns metrics.json's content."""
    args = parse_args(argv)
    out = setup(args, "conservativity")
    steps = args.steps or (40 if args.quick else 1500)
    ds = toy_dataset("gmm2")
    gmm, sde = ds.mixture, VESDE(0.01, 50.0)
    scores, train_info = {}, {}
    for name, beta in RUNS.items():
        model = toy_model(ds, sde, hidden=args.hidden, seed=args.seed, device=args.device, param=args.param)
        train_info[name] = train(args, objective(model, sde, beta, args.fp_subbatch), model, ds, steps, name)
        scores[name] = model.eval()
    ts = torch.linspace(EPS, 1.0, 6 if args.quick else 21).tolist()
    n_eval = 200 if args.quick else 1000
    curl, res = _curves(
        scores, gmm, sde, ds.sample(n_eval, generator(args.seed + 1000)).to(args.device), ts, args.seed
    )
    _figures(out, ts, curl, res)
    metrics = {
        "curl_mse": {k: v["mean"] for k, v in curl.items()},
        "curl_mse_curves": {k: {"t": v["t"], "curl_mse": v["curl_mse"]} for k, v in curl.items()},
        "residual_curves": res,
        "r_fp_mean": {k: sum(v["r_fp"]) / len(v["r_fp"]) for k, v in res.items()},
        "r_dsm_mean": {k: sum(v["r_dsm"]) / len(v["r_dsm"]) for k, v in res.items()},
        "train": {k: {"seconds": v["seconds"], "final": v["last"]} for k, v in train_info.items()},
        "config": {
            **vars(args),
            "steps": steps,
            "sde": repr(sde),
            "eps": EPS,
            "n_eval": n_eval,
            "betas": RUNS,
        },
    }
    write_metrics(out, metrics)
    print(
        text_table(
            ["score", "curl MSE (t-avg)", "mean r_FP", "mean r_DSM-like"],
            [
                [
                    k,
                    f"{metrics['curl_mse'][k]:.3g}",
                    f"{metrics['r_fp_mean'][k]:.3g}",
                    f"{metrics['r_dsm_mean'][k]:.3g}",
                ]
                for k in curl
            ],
        )
    )
    announce(out, ["metrics.json", "curl_mse_over_t.png", "residual_over_t.png"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``scorepde-conservativity``."""
    run(argv)


if __name__ == "__main__":
    main()
