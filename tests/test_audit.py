"""The residual audit: closed forms, the README's one command, clear refusals."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scorepde as sp
from scorepde.audit import audit, main

ROOT = Path(__file__).resolve().parents[1]


def _gmm_setup(rotation=0.0):
    sde = sp.VPSDE()
    gmm = sp.GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.8], [0.4, 0.6])
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    score = lambda x, t: gmm.score(x, t, sde) + rotation * x @ A.T
    return score, sde, gmm.sample(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_true_score_audits_to_zero_residual_and_curl():
    score, sde, x0 = _gmm_setup()
    res = audit(score, sde, x0, [0.05, 0.5, 1.0], estimator="exact", curl="exact", batch_size=10,
                generator=torch.Generator().manual_seed(1), progress=False)
    for row in res["r_fp"] + res["curl"]:
        assert row["mean"] < 1e-6
    for row in res["r_dsm"] + res["abs_L"]:
        assert row["mean"] > 1e-3 and 0 < row["se"] < row["mean"]


def test_a_rotational_field_has_the_closed_form_curl():
    """s + c A x with A = [[0, 1], [−1, 0]]: ‖J − Jᵀ‖_F = ‖2cA‖_F = 2√2 c, with no spread."""
    c = 0.3
    score, sde, x0 = _gmm_setup(rotation=c)
    res = audit(score, sde, x0, [0.2], estimator="exact", curl="exact",
                generator=torch.Generator().manual_seed(1), progress=False)
    assert res["curl"][0]["mean"] == pytest.approx(2 * math.sqrt(2) * c, rel=1e-10)
    assert res["r_fp"][0]["mean"] > 0.01  # a rotation does not solve the score FPE


def test_readme_audit_command_runs_in_one_step(tmp_path):
    pytest.importorskip("diffusers")
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python -m scorepde.audit"))
    args = re.sub(r"--out \S+", f"--out {tmp_path}", command).split()[3:] + ["--no-progress"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "scorepde.audit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "audit.png").stat().st_size > 0
    assert len(metrics["t"]) == 5 and metrics["shape"] == [1, 8, 8]
    for key in ("r_fp", "r_dsm", "curl", "abs_L"):
        assert all(math.isfinite(r["mean"]) and math.isfinite(r["se"]) and r["mean"] > 0 for r in metrics[key])


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_thing"], "package.module:factory"),
    (["--model", "no_such_module_xyz:factory", "--data", "digits"], "cannot load"),
    (["--model", "math:pi", "--data", "digits"], "not a factory"),
])
def test_bad_model_is_one_line_error(argv, message, capsys):
    code = main(argv + ["--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and err.count("\n") == 1


def test_audit_of_an_image_train_checkpoint(tmp_path, capsys):
    """The other --model form: a checkpoint of image/train.py, audited on its own dataset."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("image_train", ROOT / "image" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    run = tmp_path / "run"
    assert train.main(["--channels", "8", "--batch-size", "8", "--threads", "1", "--no-progress", "--steps", "1",
                       "--eval-images", "-1", "--n-samples", "0", "--out", str(run)]) == 0
    out = tmp_path / "audit"
    assert main(["--model", str(run / "checkpoint.pt"), "--quick", "--times", "2", "--n", "4",
                 "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "digits" and metrics["shape"] == [1, 8, 8] and len(metrics["t"]) == 2
    assert all(math.isfinite(r["mean"]) for r in metrics["r_fp"] + metrics["curl"])
