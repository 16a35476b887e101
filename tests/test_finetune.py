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
    # a shard other than 0 owns no base evaluation (here no run at all): it must not evaluate the base
    idle = run(*args, "--eval-images", "4", "--seed", "5", "--seeds", "1", "--shard", "1/2")
    assert idle.returncode == 0 and "0 of 0 runs done" in idle.stdout
    assert not [f for f in os.listdir(out / "runs") if "images=4" in f]


def _fake_run(store, bpd, **key):
    per_image = [bpd + 0.01 * i for i in (-1, 0, 1)]
    store.save({"bpd": bpd, "bpd_per_image": per_image, "eval_se": 0.001, "heldout_dsm": 2.0,
                "residual_curves": {"r_fp": [1.0], "r_dsm": [1.0]}, "bpd_per_repeat": [bpd],
                "curve": [{"step": 1, "dsm": 2.0}], "train_s": 1.0}, **key)


def test_report_pairs_only_runs_from_the_same_base(tmp_path):
    """Two retrained bases (A, B): FP seed 0 from A pairs with DSM seed 0 from A, never B's."""
    from scorepde.runstore import RunStore
    store = RunStore(str(tmp_path / "runs"))
    ev = dict(images=8, reps=2, rtol=1e-3)
    tune = lambda bid, beta, seed: dict(phase="tune", data="digits", base=20, base_id=bid,  # noqa: E731
                                        beta=beta, seed=seed, steps=6, sub="all", **ev)
    _fake_run(store, 2.0, **tune("A", 0.0, 0))
    _fake_run(store, 3.0, **tune("B", 0.0, 0))
    _fake_run(store, 2.5, **tune("B", 0.0, 1))
    _fake_run(store, 2.1, **tune("A", 0.1, 0))
    _fake_run(store, 2.7, **tune("B", 0.1, 1))
    _fake_run(store, 9.0, **{**tune("A", 0.1, 1), "steps": 7})          # other fine-tuning length: not this grid
    proc = run("--out", str(tmp_path), "--report", "--base-stages", "10", "20", "--steps", "6", "--seeds", "2",
               "--betas", "0.1", "--eval-images", "8", "--eval-repeats", "2", "--rtol", "1e-3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    e = json.load(open(tmp_path / "metrics.json"))["betas"]["0.1"]
    assert sorted(zip(e["paired"]["seeds"], e["paired"]["base_ids"])) == [(0, "A"), (1, "B")]
    assert sorted(e["paired"]["diffs"]) == pytest.approx([0.1, 0.2])
    by_base = json.load(open(tmp_path / "metrics.json"))["dsm_by_base"]
    assert {b: v["bpd_per_seed"] for b, v in by_base.items()} == {"A": [2.0], "B": pytest.approx([3.0, 2.5])}
