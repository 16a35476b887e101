"""The benchmark scripts run end to end with --quick and write what they promise."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def test_estimator_error_quick(tmp_path):
    m = _run("estimator_error.py", tmp_path)
    for name in ("table.md", "error_vs_time.png", "fd_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
    exact = [r for r in m["rows"] if r["estimator"] == "exact"]
    assert {r["field"] for r in exact} == {"gmm", "random", "dsm"}
    for r in exact:  # the exact estimator against the exact residual: no error at all
        assert r["eps"]["rmse"] == 0.0 == r["eps"]["bias"] == r["eps"]["variance"]
    estimators = {r["estimator"] for r in m["rows"]}
    assert estimators == {"exact", "paper", "hutchinson", "directional", "forward_fd"}
    for r in m["rows"]:
        assert set(r["eps"]) >= {"bias", "variance", "rmse", "rel_rmse"} and r["seconds_per_sample"] > 0
    sweep = m["fd_sweep"]
    for key in ("float32", "float64"):
        assert len(sweep[key]) == len(sweep["h"])
        assert len(sweep["hx_" + key]) == len(sweep["hx"])
    assert sweep["h_best_float64"] < sweep["h_best_float32"]  # round-off floor sits higher in float32


def test_step_cost_quick(tmp_path):
    m = _run("step_cost.py", tmp_path)
    for key in ("ratio_default_over_dsm", "ratio_paper_over_dsm", "per_sample_ratio_default_over_paper"):
        assert m[key] > 0
    assert set(m["table"]) == {"dsm", "paper", "hutchinson", "directional", "forward_fd", "default"}
    assert m["table"]["dsm"]["ratio_to_dsm"] == 1.0
    assert set(m["effect"]) == {"dsm", "paper", "default"}
    assert (tmp_path / "table.md").stat().st_size > 0 and (tmp_path / "step_cost.png").stat().st_size > 0
