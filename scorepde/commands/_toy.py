"""What the toy commands (density, cauchy, conservativity) share on the command line: the
parser with their common flags and help, and the checks and output folder before a run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..cli import add_run_flags, fail, user_errors
from ..cli import parser as base_parser
from ..distributed import resolve_device
from ..outputs import prepare_out
from ..toy import ToyDataset, train_toy

#: Help for the flags the toy commands share, used where a command gives none.
SHARED_HELP = {
    "--batch-size": "samples per training step",
    "--hidden": "width of the MLP's hidden layers",
    "--lr": "Adam learning rate (cosine decay to 5%% of it over the run)",
    "--device": "where to train and evaluate",
    "--datasets": "which data sets to run",
    "--init-points": "where the initial condition is enforced: the data, the collocation points, or both",
    "--time-sampling": "how the collocation times are drawn",
}

#: Flags that must be positive wherever a toy command has them (None: not given, the default).
POSITIVE = ("steps", "lr", "batch_size", "hidden", "depth", "threads", "seeds", "minutes")


def parser(description: str, prog: str, *, overwrite: bool = True) -> argparse.ArgumentParser:
    """The toy commands' parser: ``--out`` (default ``out/<prog>`` in the current folder),
    ``--quick``, ``--seed``, ``--device``, ``--threads`` and (``overwrite``) ``--overwrite``."""
    p = base_parser(description, shared_help=SHARED_HELP)
    add_run_flags(
        p,
        out_help=f"output folder for metrics.json and figures (default: out/{prog} "
        "in the current folder; one that holds results is refused, see --overwrite)",
        threads_help="torch CPU threads (default 1: the toy nets are too small to gain from more)",
    )
    if overwrite:
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="write into an --out folder that holds results (files of the same name are replaced)",
        )
    return p


def setup(args, name: str, *, resume: bool = False) -> str:
    """Check the shared numeric flags and the device, make the output folder (refusing one that
    holds results unless ``resume`` or ``args.overwrite``), set the threads; returns the folder
    (absolute, and recorded in ``args.out`` for the config in metrics.json)."""
    for flag in POSITIVE:
        value = getattr(args, flag, None)
        if value is not None and not value > 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {value}")
    path = Path(args.out or Path("out") / name)
    overwrite = bool(getattr(args, "overwrite", False))
    with user_errors():  # these commands have no --resume flag to offer
        resolve_device(args.device)
        out = prepare_out(path, resume=resume, overwrite=overwrite, can_resume=False)
    args.out = str(path)  # as given (metrics.json records it): relative to where the command ran
    torch.set_num_threads(args.threads or 1)
    return os.path.abspath(out)


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def train(args, objective, model, ds: ToyDataset, steps: int, desc: str) -> dict:
    """``scorepde.toy.train_toy`` with the run flags' batch size, learning rate, seed and device."""
    return train_toy(
        objective,
        model,
        ds,
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        desc=desc,
        device=args.device,
    )
