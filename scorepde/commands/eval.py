"""Evaluate a checkpoint written by scorepde-train (image/train.py) on its dataset's test split.

    scorepde-eval runs/image/checkpoint.pt            (or: python image/eval.py ...)
    scorepde-eval CKPT --images 0 --repeats 5 --out runs/image/eval

Writes to --out (default: the checkpoint's folder/eval):
  metrics.json   bpd, bpd_stderr (SE over test images), eval_se (SE over repeats), bpd_std
                 (std over repeats), per-repeat values, NFE, the residual curves
  residuals.md   r_FP(t) and r_DSM-like(t) at t ∈ {1e-3, 0.1, …, 1.0}, laid out as the
                 paper's Table 4 (App. B.2)
  samples.png    a sample grid (Euler–Maruyama)
Bits/dim: PF-ODE from t_eps, uniform dequantization at the dataset's levels, Hutchinson
trace, mean ± standard error over --repeats repeats (the paper's five); the line printed names
the test images, repeats and wall time. All math is in scorepde.
"""

from __future__ import annotations

import argparse
import os

import torch

from .. import distributed as dd
from ..checkpoints import load_checkpoint
from ..cli import user_errors
from ..curves import residual_curves
from ..data import load_dataset, to_model_space
from ..flags import add_device_flag, add_trust_flag
from ..fpe import ESTIMATORS
from ..image_config import load_trained, model_scaling
from ..image_eval import TABLE4_TIMES, bpd_metrics, bpd_of_test_images, sample_grid
from ..outputs import announce, prepare_out
from ..reporting import residual_table, write_metrics, write_text

__all__ = ["main", "parse_args"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="scorepde-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="checkpoint.pt written by image/train.py")
    p.add_argument("--out", help="output folder (default: CKPT's folder/eval)")
    p.add_argument(
        "--overwrite", action="store_true", help="write over the results an earlier evaluation left in --out"
    )
    p.add_argument(
        "--data-dir",
        help="the dataset's folder or the folder holding it, if not where the checkpoint's run found it",
    )
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument(
        "--images",
        type=int,
        default=0,
        help="test images for bits/dim (default 0: the whole test split; -1: skip)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="repeats of dequantization + Hutchinson probe; the ± is their standard error (default 5)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="test images per ODE solve (default 256)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE rtol (and atol) (default 1e-5, the paper's)")
    p.add_argument(
        "--residual-images",
        type=int,
        default=64,
        help="test images for the residual curves (default 64; 0: skip)",
    )
    p.add_argument(
        "--residual-estimator",
        default="auto",
        choices=["auto", *sorted(ESTIMATORS)],
        help="ε[s] estimator, from scorepde.ESTIMATORS (default auto: exact up to 256 dims, "
        "else hutchinson, whose ‖ε̂‖ is biased up)",
    )
    p.add_argument(
        "--n-samples", type=int, default=64, help="images in the sample grid (default 64; 0: none)"
    )
    p.add_argument(
        "--sample-steps", type=int, default=500, help="Euler–Maruyama steps for samples (default 500)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of dequantization, probes and samples (default 0)"
    )
    add_device_flag(p, "evaluate")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_trust_flag(p)
    return p.parse_args(argv)


def _check(args) -> None:
    for flag, value, low in [
        ("--repeats", args.repeats, 1),
        ("--batch-size", args.batch_size, 1),
        ("--images", args.images, -1),
        ("--residual-images", args.residual_images, 0),
        ("--n-samples", args.n_samples, 0),
        ("--sample-steps", args.sample_steps, 1),
    ]:
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.rtol <= 0:
        raise ValueError(f"--rtol must be > 0, got {args.rtol}")


def _residuals(args, model, sde, cfg, test, out, gen, device) -> dict:
    """The Table-4 residual curves on the first test images; writes residuals.md."""
    k = test.images[: min(args.residual_images, len(test))].to(device)
    x0, _ = to_model_space(k, test.levels, model_scaling(cfg), dequantized=True, generator=gen(2))
    estimator = args.residual_estimator
    if estimator == "auto":
        estimator = "exact" if x0[0].numel() <= 256 else "hutchinson"
    curves = residual_curves(
        model,
        sde,
        x0,
        TABLE4_TIMES,
        estimator=estimator,
        batch_size=16,
        generator=gen(3),
        progress=not args.no_progress,
    )
    label = f"{cfg.sde.upper()} {cfg.objective.upper()}" + (f" (β={cfg.beta:g})" if cfg.fp_on else "")
    table = residual_table(curves, label)
    write_text(
        out,
        "residuals.md",
        f"Score-FPE residuals, {x0.shape[0]} test images, estimator {estimator}\n\n{table}",
    )
    print(table, flush=True)
    return {"residual_curves": curves, "residual_estimator": estimator, "residual_images": x0.shape[0]}


def main(argv: list | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with user_errors():
        _check(args)
        device = dd.resolve_device(args.device)
        state = load_checkpoint(args.checkpoint, map_location=device, trust=args.trust_checkpoint)
        config = state.get("config", {})
        test = load_dataset(config.get("dataset", "digits"), "test", args.data_dir or config.get("data_dir"))
        cfg, sde, model = load_trained(state, test.shape, args.weights, device)
        out = str(
            prepare_out(
                args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval"),
                overwrite=args.overwrite,
                can_resume=False,
            )
        )
    gen = lambda k: torch.Generator(device).manual_seed(args.seed * 100 + k)  # noqa: E731
    metrics = {
        "checkpoint": os.path.abspath(args.checkpoint),
        "step": state.get("step"),
        "weights": args.weights,
        "dataset": cfg.dataset,
        "sde": cfg.sde,
        "objective": cfg.objective,
        "beta": cfg.beta if cfg.fp_on else 0.0,
    }
    if args.images >= 0:
        res, n, seconds = bpd_of_test_images(
            model,
            sde,
            cfg,
            test,
            args.images,
            rtol=args.rtol,
            repeats=args.repeats,
            batch_size=args.batch_size,
            generator=gen(1),
            progress=not args.no_progress,
            device=device,
        )
        metrics.update(**bpd_metrics(res), images=n, repeats=args.repeats, rtol=args.rtol, bpd_time_s=seconds)
    if args.residual_images > 0:
        metrics.update(_residuals(args, model, sde, cfg, test, out, gen, device))
    if args.n_samples > 0:
        metrics["samples"] = sample_grid(
            model,
            sde,
            cfg,
            test.shape,
            test.levels,
            os.path.join(out, "samples.png"),
            n=args.n_samples,
            steps=args.sample_steps,
            generator=gen(4),
            device=device,
        )
    write_metrics(out, metrics)
    announce(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
