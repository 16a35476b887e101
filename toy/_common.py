"""Plumbing shared by the toy scripts: arguments, seeding, building and training a toy score
model, and writing metrics. No math: every loss, residual and likelihood comes from scorepde.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Iterator, Optional

import torch

import scorepde as sp
from scorepde.atomic import atomic_write
from scorepde.cli import fail
from scorepde.losses import FPObjective
from scorepde.nn import MLPScore, ScoreModel
from scorepde.nn.precond import ToyScore
from scorepde.toy import ToyDataset
from scorepde.schedules import Cosine
from scorepde.training import fit


#: Help for the flags the toy scripts share, used where a script gives none.
SHARED_HELP = {
    "--batch-size": "samples per training step",
    "--hidden": "width of the MLP's hidden layers",
    "--lr": "Adam learning rate (cosine decay to 5%% of it over the run)",
    "--device": "where to train and evaluate",
    "--datasets": "which data sets to run",
    "--init-points": "where the initial condition is enforced: the data, the collocation points, or both",
    "--time-sampling": "how the collocation times are drawn",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help does not state its default already and
    the default is a value (not None, not a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def add_argument(self, *names, **kwargs):
        if not kwargs.get("help"):
            kwargs["help"] = next((SHARED_HELP[n] for n in names if n in SHARED_HELP), None)
        return super().add_argument(*names, **kwargs)


def parser(description: str) -> argparse.ArgumentParser:
    p = _Parser(description=description, formatter_class=_HelpFormatter)
    p.add_argument("--out", default=None, help="output folder for metrics.json and figures "
                   "(default: toy/out/<script name>)")
    p.add_argument("--quick", action="store_true", help="a tiny run (<1 min) for tests")
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1: the toy nets are too small to gain from more)")
    return p


#: Flags that must be positive wherever a toy script has them (None: not given, the default).
POSITIVE = ("steps", "lr", "batch_size", "hidden", "depth", "threads", "seeds", "minutes")


def setup(args, script: str) -> str:
    """Check the shared numeric flags, make the output folder, set threads; returns the folder."""
    for name in POSITIVE:
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", script)
    os.makedirs(out, exist_ok=True)
    args.out = os.path.abspath(out)  # so the config recorded in metrics.json says where it went
    torch.set_num_threads(args.threads or 1)
    return out


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


#: Score parametrizations the scripts can train (``--param``).
PARAMS = ("toy", "score_model")


def make_model(ds: ToyDataset, sde, *, hidden: int, depth: int = 3, data_std: Optional[float] = None,
               seed: int = 0, device="cpu", skip: bool = True, param: str = "toy",
               fourier_scale: Optional[float] = None) -> torch.nn.Module:
    """``"toy"``: a ``ToyScore`` over an ``MLPScore`` (Fourier features of log ŝ, scale 1).
    ``"score_model"``: the library's NCSN++-style ``ScoreModel`` (−net/σ_t, Fourier features
    of log σ(t), by default at NCSN++'s scale 16) over the same MLP. ``fourier_scale``
    overrides the embedding's frequency scale for either."""
    torch.manual_seed(seed)
    if param == "score_model":
        net = MLPScore(ds.dim, hidden=hidden, depth=depth, fourier_scale=fourier_scale or 16.0)
        return ScoreModel(net, sde).to(device)
    if param != "toy":
        raise ValueError(f"unknown param {param!r}; choose one of {PARAMS}")
    net = MLPScore(ds.dim, hidden=hidden, depth=depth, embedding="fourier",
                   fourier_scale=fourier_scale or 1.0)
    return ToyScore(net, sde, data_std=data_std or ds.data_std, skip=skip).to(device)


def batches(ds: ToyDataset, batch_size: int, gen: torch.Generator, device="cpu") -> Iterator[torch.Tensor]:
    while True:
        yield ds.sample(batch_size, gen).to(device)


def train(objective, model, ds: ToyDataset, *, steps: int, batch_size: int, lr: float, seed: int,
          desc: str, device="cpu", progress: bool = True) -> dict:
    """Adam with a cosine decay to 5% over ``steps``; returns the last log and the wall time."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = generator(seed)
    t0 = time.time()
    logs = fit(objective, opt, batches(ds, batch_size, gen, device), steps, generator=gen,
               schedule=Cosine(0.05), grad_clip=1.0, progress=progress, desc=desc)
    return {"last": logs[-1], "seconds": time.time() - t0}


def fp_objective(model, sde, beta: float, *, eps: float = 1e-5,
                 subbatch: Optional[int] = None) -> FPObjective:
    """The paper's toy objective (β, γ, λ_FP, m) = (beta, 0, 1, 1), exact residual on the first
    ``subbatch`` samples of each batch; β = 0 is DSM."""
    return FPObjective(model, sde, beta=beta, gamma=0.0, fp_weighting="none", m=1,
                       estimator="exact", eps=eps, subbatch=subbatch)


def finite_or_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_metrics(out: str, metrics: dict) -> str:
    """OUT/metrics.json, written atomically (a reader never sees half a report)."""
    return atomic_write(os.path.join(out, "metrics.json"),
                        lambda f: json.dump(metrics, f, indent=2, default=float), binary=False)


def table(rows, headers) -> str:
    """A plain fixed-width table (rows of already formatted cells)."""
    cols = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cols[1:]])


def fmt(mean, std=None, digits=3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
