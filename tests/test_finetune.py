"""image/finetune.py: help, one-line errors, and (slow) the whole protocol at a tiny size."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "image", "finetune.py")
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


def run(*args, timeout=1200):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_help_names_every_phase():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--base-stages", "--steps", "--betas", "--eval-repeats", "--rtol", "--shard", "--report"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,match", [(["--betas", "0"], "positive"),
                                        (["--base-steps", "3"], "not one of --base-stages"),
                                        (["--shard", "2/2"], "shard")])
def test_bad_input_is_one_line(tmp_path, args, match):
    proc = run("--out", str(tmp_path), *args)
    assert proc.returncode == 2 and match in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # two base stages, four tiny fine-tunings, five evaluations: minutes
def test_tiny_protocol_end_to_end(tmp_path):
    out = tmp_path / "ft"
    args = ["--out", str(out), "--base-stages", "10", "20", "--steps", "6", "--seeds", "2", "--betas", "0.1",
            "--eval-images", "8", "--eval-repeats", "2", "--rtol", "1e-3", "--residual-images", "4",
            "--heldout-repeats", "2", "--no-progress",
            "--base-args", "--sample-steps 2 --n-samples 4 --warmup 2 --no-progress"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.load(open(out / "metrics.json"))
    assert [c["steps"] for c in m["base_curve"]] == [10, 20] and m["base_steps"] == 20
    e = m["betas"]["0.1"]
    assert e["seeds"] == [0, 1] and len(e["paired"]["diffs"]) == 2
    assert e["paired"]["mean"] == pytest.approx(sum(e["bpd_per_seed"]) / 2 - sum(m["dsm"]["bpd_per_seed"]) / 2)
    assert {"base_curve.png", "bpd_vs_beta.png", "finetune_curves.png"} <= set(os.listdir(out))
    again = run(*args)                                        # everything done: nothing retrains
    assert again.returncode == 0 and "4 of 4 runs done" in again.stdout
