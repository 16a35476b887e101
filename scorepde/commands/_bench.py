"""What every benchmark command and script shares, so each only says what to measure: its
flags, device and output folder, the command line it records, metrics.json and table.md,
and a brief training of the network it measures. (Not a command: no ``main``.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import torch

from .. import reporting
from ..cli import parser, user_errors
from ..distributed import resolve_device
from ..losses import FPObjective
from ..outputs import prepare_out
from ..training import fit, make_optimizer

__all__ = ["benchmark_parser", "setup_run", "command_line", "write_report", "random_batches", "train_briefly"]


def benchmark_parser(doc: str, default_out: str, quick_help: str) -> argparse.ArgumentParser:
    """The flags every benchmark shares: --out, --overwrite, --quick, --device, --threads, --seed."""
    p = parser(doc.split("\n\n")[0])
    p.add_argument(
        "--out",
        default=default_out,
        help=f"output folder (default {default_out}; refused when it already holds results)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out that already holds results (same-named files are replaced)",
    )
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to measure")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared machine OpenMP spin-waits make 2 threads far slower)",
    )
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    return p


def setup_run(args: argparse.Namespace, *, prepare: bool = True) -> torch.device:
    """Apply --threads and --device and make --out (``outputs.prepare_out``: refused when it
    already holds results, unless --overwrite). Bad input ends in a one-line ``error:``."""
    with user_errors():
        device = resolve_device(args.device)
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        if prepare:
            prepare_out(args.out, overwrite=getattr(args, "overwrite", False), can_resume=False)
    return device


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that ran, as metrics.json records it: ``python <script> <flags>``."""
    return " ".join(["python", script] + (sys.argv[1:] if argv is None else list(argv)))


def write_report(out: str, metrics: Mapping[str, Any], table: str | None = None, *, indent: int = 2) -> None:
    """Write ``metrics.json`` (and ``table.md``, printed too) into ``out``, atomically."""
    reporting.write_metrics(out, dict(metrics), indent=indent)
    if table is not None:
        reporting.write_text(out, "table.md", table)
        print(table)


def random_batches(data: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch`` rows of ``data`` drawn with replacement by ``generator``."""
    while True:
        yield data[torch.randint(0, data.shape[0], (batch,), generator=generator)]


def train_briefly(
    model: torch.nn.Module,
    data: torch.Tensor,
    steps: int,
    *,
    batch: int,
    generator: torch.Generator,
    lr: float = 2e-3,
    objective: Callable | None = None,
    progress: bool = True,
    desc: str = "DSM-train",
) -> torch.nn.Module:
    """``steps`` Adam steps of ``objective`` (default: DSM, ``FPObjective(model, model.sde)``)
    on random batches of ``data``, by ``training.fit``: a benchmark's model is then a trained
    network's, not a random one's. Batches and noise both come from ``generator``."""
    objective = objective if objective is not None else FPObjective(model, model.sde)
    optimizer, _ = make_optimizer(model.parameters(), lr=lr)
    fit(
        objective,
        optimizer,
        random_batches(data, batch, generator),
        steps,
        generator=generator,
        progress=progress,
        desc=desc,
    )
    return model
