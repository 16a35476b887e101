"""Each toy script runs end to end with --quick and writes finite metrics and its figures."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, tmp_path, *extra):
    out = tmp_path / script
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "toy", f"{script}.py"), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.json") as f:
        return json.load(f), out, proc.stdout


def numbers(obj):
    """Every number in a JSON tree (None allowed only where the caller says)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def assert_finite(tree):
    vals = list(numbers(tree))
    assert vals and all(math.isfinite(v) for v in vals)


def pngs(out):
    files = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    for name in files:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    return files


@pytest.mark.parametrize("script", ["cauchy_gmm", "density", "conservativity"])
def test_help(script):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "toy", f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--device" in proc.stdout


def test_cauchy_gmm_quick(tmp_path):
    m, out, stdout = run("cauchy_gmm", tmp_path)
    for key in ("score_rel_l2", "score_rel_l2_curve", "residual_curves", "nll_model", "nll_true"):
        assert key in m
    assert_finite(
        {k: m[k] for k in ("score_rel_l2", "score_rel_l2_curve", "residual_curves", "nll_model", "nll_true")}
    )
    assert 0 <= m["score_rel_l2"]
    assert max(m["residual_curves"]["true"]["r_fp"]) < 1e-6  # the closed form solves the PDE
    assert {"rel_l2_over_t.png", "residual_over_t.png", "samples.png", "density.png"} <= set(pngs(out))
    assert "score_rel_l2" in stdout


def test_density_quick(tmp_path):
    m, out, stdout = run("density", tmp_path)
    for name in ("gmm1d", "checkerboard", "swiss_rolls", "gmm8"):
        entry = m[name]
        for key in ("nll_vanilla", "nll_fp", "nll_true", "nll_vanilla_std", "nll_fp_std"):
            assert key in entry
        assert_finite({k: v for k, v in entry.items() if v is not None})
        assert f"density_{name}.png" in pngs(out)
    assert m["swiss_rolls"]["nll_true"] is None
    assert m["checkerboard"]["nll_true"] == pytest.approx(math.log(32.0))
    assert all(m[n]["nll_true"] is not None for n in ("gmm1d", "gmm8"))
    text = (out / "summary.md").read_text()  # the README's table and a note
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and all(line.count("|") == 11 for line in table)
    assert "| 8-mode GMM | tiny (30 of 100k) | 0.0015 | 1 |" in table[-1]
    g = m["gmm8"]["grid_failed"]  # the figures' blank points, counted
    assert f"8-mode GMM: vanilla {g['vanilla']}, FP {g['fp']} of {g['points']}" in text


def test_conservativity_quick(tmp_path):
    m, out, stdout = run("conservativity", tmp_path)
    assert set(m["curl_mse"]) == {"dsm", "fp_beta_0.003", "fp_beta_0.01", "true"}
    assert_finite(m["curl_mse"])
    assert_finite(m["residual_curves"])
    assert m["curl_mse"]["true"] < 1e-12
    assert max(m["residual_curves"]["true"]["r_fp"]) < 1e-6
    assert {"curl_mse_over_t.png", "residual_over_t.png"} <= set(pngs(out))


def test_density_grid_blanks_only_the_points_whose_solve_fails(monkeypatch):
    """A long-trained model's PF-ODE can diverge from far-tail grid points (its score grows
    faster than linearly outside the data); that must blank those points, not lose the run."""
    import torch

    import scorepde.metrics
    from scorepde.commands import density

    def fake_log_likelihood(model, sde, x, eps, **kw):
        if (x[:, 0] < -1.0).any():
            raise ValueError("the ODE solve failed")
        return torch.zeros(len(x))

    monkeypatch.setattr(scorepde.metrics, "log_likelihood", fake_log_likelihood)
    ds, sde = density._setup("gmm1d", "cpu")
    grid, dens = density._density_grid(None, sde, ds, 400)
    assert torch.equal(dens.isnan(), grid[:, 0] < -1.0) and 0 < int(dens.isnan().sum()) < 400
    assert torch.all(dens[~dens.isnan()] == 1.0)


def test_density_counts_test_points_whose_solve_fails(monkeypatch, tmp_path):
    """A diverging PF-ODE solve from a test point must not lose a finished run: the point is
    counted in ``test_failed``, left out of the mean, and the report lists the run."""
    import scorepde.metrics
    from scorepde.commands import density

    def fake_log_likelihood(model, sde, x, eps, **kw):
        if (x[:, 0] > 0.5).any():
            raise ValueError("the ODE solve failed")
        return -x[:, 0]

    monkeypatch.setattr(scorepde.metrics, "log_likelihood", fake_log_likelihood)
    density.main(["--quick", "--datasets", "gmm1d", "--no-progress", "--out", str(tmp_path)])
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    x = density.toy_dataset("gmm1d").sample(64, density.generator(density.TEST_SEED))[:, 0]
    kept = x[x <= 0.5]
    assert runs and all(r["test_failed"] == int((x > 0.5).sum()) > 0 for r in runs)
    assert all(r["nll"] == pytest.approx(float(kept.mean()), rel=1e-6) for r in runs)
    assert (
        "left out of that run's mean NLL: 1-D 3-mode GMM, β = 0, seed 0"
        in (tmp_path / "summary.md").read_text()
    )


def test_density_shard_leaves_the_folders_report_alone(tmp_path):
    """A shard sees only its own runs, so it must not rewrite OUT/metrics.json (the report of
    every shard's runs, which the README quotes); --report does."""
    from scorepde.commands import density

    out = tmp_path / "density"
    out.mkdir()
    before = json.dumps({"config": {"budget": "tiny"}, "every_shard": True})
    (out / "metrics.json").write_text(before)
    args = ["--quick", "--datasets", "gmm1d", "--out", str(out), "--no-progress"]
    density.main(args + ["--shard", "1/2"])  # one seed: shard 1 has no runs to train
    assert (out / "metrics.json").read_text() == before
    density.main(args + ["--report"])
    assert "every_shard" not in json.loads((out / "metrics.json").read_text())


def test_a_folder_holding_results_is_refused_unless_overwrite(tmp_path):
    """scorepde-cauchy never writes over earlier results by accident: one line naming the
    fix, exit status 2, nothing trained; --overwrite is the way to write there anyway."""
    out = tmp_path / "held"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    for argv in (["--quick"], ["--dim", "2", "--quick"]):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "toy", "cauchy_gmm.py"), *argv, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--overwrite" in lines[0], proc.stderr[-2000:]
        assert "--resume" not in lines[0]  # it has none to offer
    assert (out / "metrics.json").read_text() == "{}"


def test_the_default_out_folder_is_in_the_current_folder(tmp_path, monkeypatch):
    import argparse

    from scorepde.commands._toy import setup

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(out=None, device="cpu", threads=None, overwrite=False)
    assert setup(args, "cauchy_gmm") == str(tmp_path / "out" / "cauchy_gmm")
    assert args.out == os.path.join("out", "cauchy_gmm")  # recorded as given, not as this machine's path
    assert (tmp_path / "out" / "cauchy_gmm").is_dir()


def test_cauchy_quick_twice_from_another_folder_keeps_the_first_result(tmp_path):
    """Issue 32's trial, as a user ran it: `toy/cauchy_gmm.py --quick` from another folder writes
    under that folder (not into the checkout), and the same command again is refused, leaving
    the first run's results as they were."""
    cmd = [sys.executable, os.path.join(ROOT, "toy", "cauchy_gmm.py"), "--quick"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = tmp_path / "out" / "cauchy_gmm" / "metrics.json"
    before = metrics.read_bytes()
    assert str(metrics.parent) in " ".join(first.stdout.split()) + " ".join(first.stderr.split())
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and "--overwrite" in second.stderr, second.stderr[-2000:]
    assert metrics.read_bytes() == before
