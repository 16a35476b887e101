"""The one training loop reproduces the loops it replaced (issue 29): a short toy/density.py
run and two short toy/cauchy_gmm.py runs (the 2-D problem and --dim D with a step budget)
give the numbers that the code before the merge of the four loops wrote into
tests/fixtures/loop_*.json. On the machine that wrote them (same torch, same CPU model) they
must match bit for bit; elsewhere within float32 round-off, since CPUs differ in reduction
order. So the committed toy results stay valid without rerunning the grids.

    python tests/test_loop_fixtures.py     # rewrite the fixtures (only with the old loops!)
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

DENSITY = [
    "--budget",
    "tiny",
    "--steps",
    "30",
    "--datasets",
    "gmm8",
    "--seeds",
    "1",
    "--betas",
    "0.0015",
    "--batch-size",
    "64",
    "--n-test",
    "32",
    "--ckpt-every",
    "7",
    "--no-progress",
]
CAUCHY_2D = ["--quick", "--steps", "20"]
CAUCHY_DIM = ["--dim", "4", "--quick", "--steps", "30", "--n-evals", "3", "--hidden", "32"]


def machine() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            None,
        )
        if os.path.isfile("/proc/cpuinfo")
        else None
    )
    return {
        "torch": torch.__version__,
        "processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_model": cpu,
    }


def _run(script, out, args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "toy" / script), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=str(out.parent),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def density(tmp: Path) -> dict:
    """Per run of the grid: the learning curve (window means of every step's loss and DSM
    term), the test NLL and its SE, the held-out DSM loss and the residual curves."""
    _run("density.py", tmp / "density", DENSITY)
    runs = tmp / "density" / "runs"
    keep = ("curve", "nll", "nll_se", "heldout_dsm", "residual_curves")
    return {
        f: {k: json.loads((runs / f).read_text())[k] for k in keep}
        for f in sorted(os.listdir(runs))
        if f.endswith(".json")
    }


def cauchy_2d(tmp: Path) -> dict:
    """The last step's loss terms and the reported score error (per t and mean) and NLL."""
    _run("cauchy_gmm.py", tmp / "cauchy2d", CAUCHY_2D)
    m = json.loads((tmp / "cauchy2d" / "metrics.json").read_text())
    return {k: m[k] for k in ("final_losses", "score_rel_l2", "score_rel_l2_curve", "nll_model")}


def cauchy_dim(tmp: Path) -> dict:
    """The score error at each evaluation during training and after it, and the steps run."""
    _run("cauchy_gmm.py", tmp / "cauchyD", CAUCHY_DIM)
    m = json.loads((tmp / "cauchyD" / "metrics.json").read_text())
    return {
        "history": [{k: h[k] for k in ("step", "score_rel_l2", "worst_rel_l2")} for h in m["history"]],
        **{k: m[k] for k in ("score_rel_l2", "score_rel_l2_curve", "steps")},
    }


RUNS = {"density": density, "cauchy_2d": cauchy_2d, "cauchy_dim": cauchy_dim}


#: Numbers now computed otherwise than when the fixtures were written, not by the loop: the
#: test NLL's SE comes from scorepde.stats.standard_error in float64 (it was float32 torch).
ROUND_OFF_ONLY = {"nll_se": 1e-6}


def _close(a, b, rtol, path="") -> None:
    """``a == b`` up to ``rtol`` in every number of two JSON trees (0: bit for bit)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, sorted(a), sorted(b))
        for k in a:
            _close(a[k], b[k], max(rtol, ROUND_OFF_ONLY.get(k, 0)), f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rtol, f"{path}[{i}]")
    elif isinstance(a, float) and rtol:
        assert b == pytest.approx(a, rel=rtol, abs=1e-7), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_loop_reproduces_the_fixture(name, tmp_path):
    fixture = json.loads((FIXTURES / f"loop_{name}.json").read_text())
    got = RUNS[name](tmp_path)
    # bit for bit where the fixture was written; float32 round-off on another CPU or torch
    same = fixture["machine"] == machine()
    _close(fixture["result"], json.loads(json.dumps(got)), 0 if same else 1e-5)


if __name__ == "__main__":
    import tempfile

    FIXTURES.mkdir(exist_ok=True)
    for name, fn in RUNS.items():
        with tempfile.TemporaryDirectory() as d:
            result = fn(Path(d))
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        (FIXTURES / f"loop_{name}.json").write_text(
            json.dumps(
                {
                    "written_by": f"tests/test_loop_fixtures.py at {head}",
                    "machine": machine(),
                    "args": {"density": DENSITY, "cauchy_2d": CAUCHY_2D, "cauchy_dim": CAUCHY_DIM}[name],
                    "result": result,
                },
                indent=1,
            )
            + "\n"
        )
        print("wrote", name)
