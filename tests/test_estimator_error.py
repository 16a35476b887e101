"""scorepde.commands.estimator_error (benchmarks/estimator_error.py): its draws are
reproducible across processes (defect 7)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _seeds(hash_seed: str) -> list:
    code = (
        "import scorepde.commands.estimator_error as e; "
        "print([e.draw_seed(0, r, n) for r in (0, 1) for n in e.estimator_grid((1, 4))])"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return eval(out.stdout)


def test_draw_seeds_do_not_depend_on_the_process():
    # Both draws in fresh processes, each with its own hash salt.
    a, b = _seeds("1"), _seeds("2")
    assert a == b
    assert len(set(a)) == len(a)  # and every estimator and round draws its own probes
