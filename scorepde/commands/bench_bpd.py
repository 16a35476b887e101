"""Benchmark: vanilla DSM vs FP-Diffusion test bits/dim, same steps, seeds and network.

    scorepde-bench-bpd --data-dir ../shared/data --out runs/bench     (or: python image/bench_bpd.py ...)

For each dataset, runs scorepde-train twice (``--objective dsm`` and ``--objective fp``)
with identical flags otherwise, then gathers each run's metrics.json into bench.json and a
markdown table (bench.md). A script, not a test: it takes as long as the steps ask for.
Datasets: ``digits`` (no files), ``mnist-10k`` and ``fashion-mnist`` (IDX folders under
--data-dir; ``mnist-10k`` is read with the ``mnist`` loader).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ..cli import fail, user_errors
from ..outputs import announce, prepare_out
from ..reporting import markdown_table, write_metrics, write_text

__all__ = ["main", "parse_args", "DATASETS"]

#: Benchmark name → (loader name, sub-folder of --data-dir or None, its train flags).
DATASETS = {
    "digits": ("digits", None, "--channel-mult 1,2 --batch-size 64"),
    "mnist-10k": ("mnist", "mnist-10k", "--channel-mult 1,2,2 --batch-size 32"),
    "fashion-mnist": ("fashion-mnist", "fashion-mnist", "--channel-mult 1,2,2 --batch-size 32"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="scorepde-bench-bpd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--datasets",
        default="digits,mnist-10k,fashion-mnist",
        help=f"comma-separated, from {sorted(DATASETS)}",
    )
    p.add_argument(
        "--data-dir",
        default=os.path.join("..", "shared", "data"),
        help="the folder holding mnist-10k/ and fashion-mnist/ (default ../shared/data), or, "
        "for one dataset, its own folder (as image/train.py takes)",
    )
    p.add_argument(
        "--out",
        default="runs/bench",
        help="output folder: one sub-folder per run, bench.json and bench.md (default runs/bench)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write over the results of an earlier benchmark in --out"
    )
    p.add_argument(
        "--steps",
        default="digits=1000,mnist-10k=200,fashion-mnist=200",
        help="steps per dataset, name=N,... (same for both objectives; default %(default)s)",
    )
    p.add_argument("--eval-images", type=int, default=64, help="test images for bits/dim (default 64)")
    p.add_argument("--eval-repeats", type=int, default=2, help="evaluation repeats (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of both runs (default 0)")
    p.add_argument("--extra", default="--channels 16", help="more flags for both train.py runs, quoted")
    p.add_argument(
        "--fp-flags",
        default="",
        help="more flags for the FP run only, quoted "
        "(e.g. \"--estimator paper\", App. C's estimator; default: the library's, forward_fd)",
    )
    return p.parse_args(argv)


def _steps(text: str) -> dict:
    try:
        return {k.strip(): str(int(v)) for k, v in (kv.split("=") for kv in text.split(",") if kv)}
    except ValueError:
        raise ValueError(f"--steps must read name=N,... (e.g. digits=600), got {text!r}") from None


def _run(args, name: str, objective: str, steps: dict) -> dict | None:
    """One training run of the pair; its metrics.json with the command, or None if it failed."""
    loader, sub, flags = DATASETS[name]
    out = os.path.join(args.out, f"{name}-{objective}")
    cmd = [
        sys.executable,
        "-m",
        "scorepde.commands.train",
        "--dataset",
        loader,
        "--objective",
        objective,
        *flags.split(),
        "--steps",
        steps.get(name, "400"),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--out",
        out,
        "--eval-images",
        str(args.eval_images),
        "--eval-repeats",
        str(args.eval_repeats),
        "--no-progress",
        "--overwrite",
        *args.extra.split(),
        *(args.fp_flags.split() if objective == "fp" else []),
    ]
    if sub:  # --data-dir: the folder holding the dataset's folder, or that folder itself
        inside = os.path.join(args.data_dir, sub)
        cmd += ["--data-dir", inside if os.path.isdir(inside) else args.data_dir]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    if rc:
        print(f"error: {name} {objective} exited with {rc}", file=sys.stderr, flush=True)
        return None
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    m.update(benchmark=name, wall_s=time.perf_counter() - t0, command=" ".join(cmd))
    return m


def table(results: list) -> str:
    """bench.md: one row per run, bits/dim ± the std over evaluation repeats."""
    head = ["dataset", "objective", "steps", "test images × repeats", "bits/dim", "train s", "total s"]
    return markdown_table(
        head,
        [
            [
                m["benchmark"],
                m["objective"],
                m["steps"],
                f"{m.get('eval_images')} × {m.get('eval_repeats')}",
                f"{m['bpd']:.3f} ± {m['bpd_std']:.3f}",
                f"{m['train_time_s']:.0f}",
                f"{m['wall_s']:.0f}",
            ]
            for m in results
        ],
    )


def main(argv: list | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        fail(f"unknown dataset(s) {unknown}; choose from {sorted(DATASETS)}")
    with user_errors():
        steps = _steps(args.steps)
        out = prepare_out(args.out, overwrite=args.overwrite, can_resume=False)
    results = []
    for name in names:
        for objective in ("dsm", "fp"):
            m = _run(args, name, objective, steps)
            if m is not None:
                results.append(m)
                write_metrics(str(out), results, name="bench.json")
    text = table(results)
    write_text(str(out), "bench.md", text)
    print(text)
    announce(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
