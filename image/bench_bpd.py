"""Vanilla DSM vs FP-Diffusion bits/dim: ``python image/bench_bpd.py`` = ``scorepde-bench-bpd``.
The code lives in scorepde/commands/bench_bpd.py (see its --help)."""

from scorepde.commands.bench_bpd import main

if __name__ == "__main__":
    raise SystemExit(main())
