"""Audit score models: how far is each from the score FPE, and where in t?

    scorepde-audit --model package.module:factory --data digits --out runs/audit
    scorepde-audit --model runs/dsm/checkpoint.pt --model runs/fp/checkpoint.pt --out runs/cmp
    python -m scorepde.audit --model path/to/my_models.py:factory --data x.npy --device cuda

``--model``: a factory returning ``(score, sde)`` (e.g. ``scorepde.from_diffusers(unet,
scheduler)``), as ``package.module:factory`` or ``path/to/file.py:factory``, or a checkpoint
written by image/train.py; given twice or more, the models are audited on the same x_t,
probes and grid, and each is compared with the first (paired differences with their SE).
On held-out x_0 pushed to each t of a log grid (x_t = a(t) x_0 + σ_t z) it reports, each
as mean ± SE over the samples (the estimator's own noise included), absolute and
dimensionless (``scorepde.audit.summary``):

  r_fp    √E‖ε[s](x_t, t)‖², the score-FPE residual (Eq. 9; Sec. 3.1, Fig. 1), and
          r_fp / (√E‖∂t s‖² + √E‖∇x L‖²): 0 solves the FPE, ≈0.7 unrelated terms
  r_dsm   √E‖s + z/σ_t‖², the DSM-like residual, and σ_t r_dsm/√D (1: the score s = 0)
  curl    √E‖J − Jᵀ‖_F² (Sec. 6.2), and curl / 2√E‖J‖_F²
  abs_L   E|L[s](x_t, t)|, the right-hand side of Eq. 7

Root mean squares, not the paper's mean norms: ‖ε‖² and ‖J − Jᵀ‖² have unbiased cheap
estimators, ‖ε‖ has none. t is shown in the model's own clock as well (the DDPM step k
for ``from_diffusers``, σ for EDM). Writes metrics.json (numbers and provenance: SDE and
schedule, prediction type, scheduler, data range, versions, the command) and audit.png to
--out, prints a table and a verdict. All math is in scorepde.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np
import torch

from ..errors import fail, user_errors
from ..flags import add_device_flag, add_trust_flag
from ..fpe import ESTIMATORS
from ..outputs import announce, prepare_out
from .loading import FactoryError, Loaded, check_range, load_data, load_model
from .measure import describe_estimator
from .provenance import describe_score, describe_sde, versions
from .report import figure, table, verdict
from .run import run, same_sde
from .summary import QUANTITIES

__all__ = ["main", "parse_args"]

DESCRIPTION = __doc__


def _prog() -> str:
    return (
        "scorepde-audit"
        if os.path.basename(sys.argv[0]).startswith("scorepde-audit")
        else "python -m scorepde.audit"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog(), description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="package.module:factory or path/to/file.py:factory returning (score, sde), or an "
        "image/train.py checkpoint; give it again to compare models on the same draws",
    )
    p.add_argument(
        "--data",
        help="held-out data: a dataset name (digits, mnist, fashion-mnist, cifar10, …; its "
        "test split) or a .pt/.npy tensor [N, ...] in the model's space "
        "(default: a checkpoint's own dataset)",
    )
    p.add_argument(
        "--data-dir",
        help="the named dataset's folder or its parent (default: a checkpoint's own); "
        "files are never downloaded",
    )
    p.add_argument(
        "--scaling",
        choices=["[-1,1]", "[0,1]"],
        help="the model's space: [-1,1] (diffusers/DDPM) or [0,1] (default: a checkpoint's own, "
        "else [-1,1]); a named dataset is scaled to it, a tensor must lie in it",
    )
    p.add_argument("--force", action="store_true", help="audit data that lies outside the model's space")
    add_device_flag(p, "run")
    p.add_argument(
        "--out", default="runs/audit", help="output folder, relative to the current one (default runs/audit)"
    )
    p.add_argument("--overwrite", action="store_true", help="write over an --out that holds results")
    p.add_argument("--n", type=int, default=64, help="held-out samples, at least 2 (default 64; --quick: 16)")
    p.add_argument(
        "--times", type=int, default=12, help="points of the log grid in t (default 12; --quick: 5)"
    )
    p.add_argument(
        "--t-min",
        type=float,
        help="smallest t (default: 10/N, step k = 9, for a DiscreteVPSDE, else 1e-2·T; "
        "nearer t = 0 the score moves like 1/σ_t)",
    )
    p.add_argument(
        "--estimator",
        default="forward_fd",
        choices=sorted(ESTIMATORS),
        help="estimator of ‖ε‖² (default forward_fd: plain forward passes, any model)",
    )
    p.add_argument(
        "--curl",
        default="hutchinson",
        choices=["hutchinson", "exact", "none"],
        help="‖J − Jᵀ‖_F² by one Hutchinson probe per sample (default), exactly, or not at all",
    )
    p.add_argument("--batch-size", type=int, default=32, help="samples per call of the model (default 32)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 16 samples, 5 times")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the data subset, noise and probes (default 0)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_trust_flag(p, "a --model checkpoint")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.times = min(args.n, 16), min(args.times, 5)
    if args.n < 2:
        p.error(f"--n {args.n}: the audit needs at least 2 samples for a standard error; pass --n 2 or more")
    if args.times < 1 or args.batch_size < 1:
        p.error("--times and --batch-size must be >= 1")
    return args


def _labels(specs: list[str]) -> list[str]:
    """Short names: a checkpoint's folder, a factory's spec; made unique by their position."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(s))) if os.path.isfile(s) else s for s in specs]
    return [n if names.count(n) == 1 else f"{i + 1}:{n}" for i, n in enumerate(names)]


def _load_models(specs: list[str], device, trust: bool) -> list[Loaded]:
    loaded = []
    for spec in specs:
        try:
            loaded.append(load_model(spec, device, trust=trust))
        except FactoryError as err:
            print(err.details, file=sys.stderr, end="")
            fail(str(err))
    return loaded


def _grid(sde, args) -> list[float]:
    t_min = args.t_min or (float(sde.time(9)) if hasattr(sde, "time") else 1e-2 * sde.T)
    if not 0 < t_min < sde.T:
        raise ValueError(f"--t-min must lie in (0, {sde.T}), got {t_min}")
    return np.geomspace(t_min, sde.T, args.times).tolist() if args.times > 1 else [sde.T]


def _setup(args) -> dict:
    """Models, data and grid from the flags; every refusal a one-line ValueError."""
    from ..distributed import resolve_device

    device = resolve_device(args.device)
    models = _load_models(args.model, device, args.trust_checkpoint)
    labels = _labels(args.model)
    sde = same_sde([m.sde for m in models], labels)
    first = models[0]
    scalings = {m.scaling for m in models if m.scaling}
    if len(scalings) > 1:
        raise ValueError(f"the models work in different spaces {sorted(scalings)}; audit them one at a time")
    scaling = args.scaling or first.scaling or "[-1,1]"
    data = args.data or first.dataset
    if data is None:
        raise ValueError(
            "--data is required for a factory model: a dataset name (e.g. digits) or a .pt/.npy file"
        )
    gen = torch.Generator().manual_seed(args.seed)
    data_dir = args.data_dir or (
        first.data_dir if data == first.dataset else None
    )  # a checkpoint's own folder
    x0, source = load_data(data, scaling, args.n, gen, data_dir)
    observed = (
        {"min": float(x0.min()), "max": float(x0.max())} if args.force else check_range(x0, scaling, data)
    )
    x0 = x0.to(device)
    ts = _grid(sde, args)
    for label, model in zip(labels, models):
        try:
            with torch.no_grad():
                model.score(x0[:2], torch.full((2,), ts[0], device=device))
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"{label} does not accept the data's shape {tuple(x0.shape[1:])} ({data}): "
                f"{str(err).splitlines()[0]}"
            ) from None
    return {
        "device": device,
        "models": models,
        "labels": labels,
        "sde": sde,
        "x0": x0,
        "ts": ts,
        "data": {
            "name": data,
            "source": source,
            "scaling": scaling,
            "range": observed,
            "n": int(x0.shape[0]),
            "shape": list(x0.shape[1:]),
            "forced": args.force,
        },
    }


def _metrics(args, argv: list[str], setup: dict, result: dict, wall: float) -> dict:
    models = [
        {"spec": spec, **m.info, **describe_score(m.score), **entry}
        for spec, m, entry in zip(args.model, setup["models"], result["models"])
    ]
    return {
        "command": f"{_prog()} {shlex.join(argv)}",
        "argv": argv,
        "versions": versions(),
        "sde": describe_sde(setup["sde"]),
        "data": setup["data"],
        "device": str(setup["device"]),
        "estimator": describe_estimator(args.estimator, setup["models"][0].score, setup["sde"], {}),
        "curl": args.curl,
        "seed": args.seed,
        "definitions": {k: v[0] for k, v in QUANTITIES.items()},
        "t": result["t"],
        "native": result["native"],
        "models": models,
        "differences": result["differences"],
        "verdict": verdict(result) + _notes(models),
        "wall_s": round(wall, 2),
    }


def _notes(models: list[dict]) -> list[str]:
    """Why a scheduler's class does not change the numbers, once, when a model has one."""
    notes = {m["scheduler_note"] for m in models if m.get("scheduler_note")}
    return [f"note: {n}." for n in sorted(notes)]


def main(argv: list[str] | None = None) -> None:
    """Run the audit with ``argv`` (default ``sys.argv[1:]``); errors exit 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.time()
    with user_errors():
        out = prepare_out(args.out, overwrite=args.overwrite, can_resume=False)
        setup = _setup(args)
        result = run(
            [m.score for m in setup["models"]],
            setup["labels"],
            setup["sde"],
            setup["x0"],
            setup["ts"],
            estimator=args.estimator,
            curl=None if args.curl == "none" else args.curl,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
    metrics = _metrics(args, argv, setup, result, time.time() - start)
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    title = f"{' vs '.join(setup['labels'])} on {setup['data']['name']} ({args.estimator}, n = {setup['data']['n']})"
    figure(result, str(out / "audit.png"), title)
    print("\n".join(table(result) + [""] + metrics["verdict"]))
    print(f"wall time: {metrics['wall_s']:.1f} s (metrics.json: wall_s)")
    announce(out, ["metrics.json", "audit.png"])
