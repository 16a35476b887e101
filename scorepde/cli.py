"""Command-line plumbing shared by the scripts: one-line fatal errors and the console
entry points of ``[project.scripts]``. No math lives here.

A user's mistake on the command line ends in one line on stderr, ``error: <what is wrong
and what to do>``, and exit status 2, never a traceback: scripts wrap their setup (flags,
files, devices) in ``user_errors()``, and the library raises ``ValueError`` (or
``FileNotFoundError``) with such a message.
"""
from __future__ import annotations

import contextlib
import runpy
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["fail", "user_errors", "SCRIPTS"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def user_errors(code: int = 2):
    """Turn the ``ValueError``/``FileNotFoundError`` of bad input inside the block into ``fail``."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        fail(str(err), code)


#: Console command → the script it runs, relative to the source checkout.
SCRIPTS = {
    "scorepde-train": "image/train.py",
    "scorepde-eval": "image/eval.py",
    "scorepde-bench-bpd": "image/bench_bpd.py",
    "scorepde-cauchy": "toy/cauchy_gmm.py",
    "scorepde-conservativity": "toy/conservativity.py",
    "scorepde-density": "toy/density.py",
    "scorepde-step-cost": "benchmarks/step_cost.py",
    "scorepde-estimator-error": "benchmarks/estimator_error.py",
}


def run_script(relative: str) -> None:
    """Run a script of the source checkout as ``python <script>`` would, with this argv."""
    path = Path(__file__).resolve().parents[1] / relative
    if not path.is_file():
        fail(f"{relative} is not here ({path}): the scripts ship with the source checkout; "
             "clone the repository and install it there with pip install -e .")
    sys.argv[0] = str(path)
    sys.path.insert(0, str(path.parent))
    runpy.run_path(str(path), run_name="__main__")


def _entry(command: str):
    def main() -> None:
        run_script(SCRIPTS[command])
    main.__name__ = command.replace("scorepde-", "").replace("-", "_")
    main.__doc__ = f"``{command}``: runs {SCRIPTS[command]}."
    return main


train = _entry("scorepde-train")
evaluate = _entry("scorepde-eval")
bench_bpd = _entry("scorepde-bench-bpd")
cauchy = _entry("scorepde-cauchy")
conservativity = _entry("scorepde-conservativity")
density = _entry("scorepde-density")
step_cost = _entry("scorepde-step-cost")
estimator_error = _entry("scorepde-estimator-error")
