"""toy/density.py resumes exactly: a run stopped by SIGTERM mid-training and continued gives
the same per-seed results as one that was never interrupted (issue 10's must-hold)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--budget",
    "tiny",
    "--steps",
    "120",
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
    "1",
    "--no-progress",
]


def cmd(out):
    return [sys.executable, os.path.join(ROOT, "toy", "density.py"), "--out", str(out), *ARGS]


def results(out):
    runs = out / "runs"
    return {
        f: json.loads(Path(runs / f).read_text()) for f in sorted(os.listdir(runs)) if f.endswith(".json")
    }


@pytest.mark.slow  # three subprocess runs: ~35 s of CPU, minutes on a busy machine
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run(cmd(whole), check=True, capture_output=True, timeout=600, env=env)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd(cut), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ckpt_dir, deadline = cut / "ckpt", time.time() + 300
    # interrupt the second run (FP), once it has a checkpoint: the vanilla run is done by then
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.is_dir() and any("beta=0.0015" in f for f in os.listdir(ckpt_dir)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "interrupted" in err.decode()
    assert len(results(cut)) == 1  # vanilla done, FP not yet

    again = subprocess.run(cmd(cut), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 of 2 runs done" in again.stdout  # the finished run is skipped
    a, b = results(whole), results(cut)
    assert a.keys() == b.keys() and len(a) == 2
    fp = [k for k in b if "beta=0.0015" in k][0]
    assert b[fp]["resumed_at"] and 0 < b[fp]["resumed_at"][0] < 120  # it really resumed
    for k in a:
        for field in ("nll", "nll_se", "heldout_dsm", "residual_curves", "curve"):
            assert a[k][field] == b[k][field], (k, field)
