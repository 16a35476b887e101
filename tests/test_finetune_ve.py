"""image/finetune.py under the VE SDE (issue 33) and Table 1's from-scratch protocol, tiny."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "image", "finetune.py")
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
TINY = [
    "--steps",
    "3",
    "--betas",
    "0.1",
    "--eval-images",
    "2",
    "--eval-repeats",
    "1",
    "--rtol",
    "1e-2",
    "--residual-images",
    "1",
    "--heldout-repeats",
    "1",
    "--no-progress",
    "--base-args",
    "--n-samples 0 --warmup 2 --no-progress",
]


def run(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd
    )


def _load(path):
    with open(path) as f:
        return json.load(f)


def _runs(out, phase):
    return [_load(p) for p in sorted((out / "runs").glob(f"phase={phase}__*.json"))]


def test_ve_base_arms_and_evaluation_share_the_sde(tmp_path):
    """--sde ve: the base trains under VE, each arm fine-tunes and is scored under it, the
    default folder is VP's name with _ve (VP's results stay apart), and a VP grid refuses it."""
    proc = run("--sde", "ve", "--base-stages", "10", "--seeds", "1", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "image" / "results" / "finetune_digits_ve"
    m = _load(out / "metrics.json")
    assert (m["sde"], m["protocol"]) == ("ve", "finetune")
    assert m["betas"]["0.1"]["paired"]["seeds"] == [0]
    assert [r["config"]["sde"] for r in _runs(out, "base")] == ["ve"]
    tuned = _runs(out, "tune")
    assert sorted(r["beta"] for r in tuned) == [0.0, 0.1] and {r["sde"] for r in tuned} == {"ve"}
    assert {r["sde"] for r in _runs(out, "base-eval")} == {"ve"}
    # the same folder under VP: refused in one line, before anything trains
    vp = run("--out", str(out), "--base-stages", "10", "--seeds", "1", *TINY)
    assert vp.returncode == 2 and "--sde ve" in vp.stderr and "Traceback" not in vp.stderr
    assert len(vp.stderr.strip().splitlines()) == 1


def test_scratch_runs_of_one_seed_start_from_one_network():
    """DSM and FP of one seed start from the same init (the id they pair by); seeds differ;
    --base-args and --sde reach the config; the caller's random state is left alone."""
    from scorepde.commands.finetune import Bench, parse_args, scratch_model

    _, args = parse_args(["--from-scratch", "--sde", "ve", "--base-args", "--channels 8"])
    bench = Bench(args)
    state = torch.random.get_rng_state()
    ids = [scratch_model(args, bench, seed)[3] for seed in (0, 0, 1)]
    assert ids[0] == ids[1] != ids[2]
    assert torch.equal(state, torch.random.get_rng_state())
    cfg, sde, *_ = scratch_model(args, bench, 0)
    assert (cfg.sde, cfg.channels, type(sde).__name__) == ("ve", 8, "VESDE")


@pytest.mark.slow  # four tiny trainings and evaluations, twice the command: a minute or two
def test_from_scratch_pairs_within_seed_and_resumes(tmp_path):
    """--from-scratch (Table 1): no base; every run trains from the network its seed draws, so
    DSM and FP of one seed share an init (their base_id) and seeds do not; done runs are skipped."""
    args = ["--from-scratch", "--sde", "ve", "--seeds", "2", *TINY]
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "image" / "results" / "scratch_digits_ve"
    assert not (out / "base").exists() and not _runs(out, "base") and not _runs(out, "tune")
    runs = _runs(out, "scratch")
    assert len(runs) == 4 and {r["sde"] for r in runs} == {"ve"}
    init = {(r["seed"], r["beta"]): r["base_id"] for r in runs}
    assert init[0, 0.0] == init[0, 0.1] and init[1, 0.0] == init[1, 0.1] and init[0, 0.0] != init[1, 0.0]
    m = _load(out / "metrics.json")
    assert (m["sde"], m["protocol"], m["base_steps"]) == ("ve", "scratch", 0)
    e = m["betas"]["0.1"]
    assert sorted(zip(e["paired"]["seeds"], e["paired"]["base_ids"])) == [
        (0, init[0, 0.0]),
        (1, init[1, 0.0]),
    ]
    again = run(*args, cwd=tmp_path)
    assert again.returncode == 0 and "4 of 4 runs done" in again.stdout


@pytest.mark.parametrize(
    "args,match", [(["--from-scratch", "--base-only"], "--base-only"), (["--sde", "ode"], "--sde")]
)
def test_bad_protocol_flags_are_one_line(tmp_path, args, match):
    proc = run("--out", str(tmp_path), *args)
    assert proc.returncode == 2 and match in proc.stderr and "Traceback" not in proc.stderr
