"""A wheel built from the checkout works outside it (issue 29): installed into a fresh venv
(no system site-packages) in a temporary folder, its console commands run from another
folder, with no source checkout anywhere on the path.

Slow (minutes: it installs torch and the dependencies into the venv); run with --runslow.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def _run(cmd, cwd, env, timeout=1800):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited with {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_commands(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # only what the wheel is built from: a command that needs anything else fails below
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "scorepde", src / "scorepde", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src], tmp_path, env)
    wheel = next(dist.glob("scorepde-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)  # no --system-site-packages
    bin_ = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_ / "python"
    _run([python, "-m", "pip", "install", "-q", TORCH], tmp_path, env)
    _run([python, "-m", "pip", "install", "-q", wheel], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**env, "PATH": f"{bin_}{os.pathsep}{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    where = _run([python, "-c", "import scorepde; print(scorepde.__file__)"], elsewhere, env)
    assert str(venv) in where and str(ROOT) not in where
    assert "usage" in _run([bin_ / "scorepde-train", "--help"], elsewhere, env)
    out = elsewhere / "cauchy"
    _run([bin_ / "scorepde-cauchy", "--quick", "--out", out], elsewhere, env)
    assert (out / "metrics.json").is_file()
    assert "usage" in _run([python, "-m", "scorepde.audit", "--help"], elsewhere, env)
