"""The residual audit: closed forms, comparable numbers, comparison, provenance, the way in."""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scorepde as sp
from scorepde.audit import audit, main

ROOT = Path(__file__).resolve().parents[1]
TINY = "scorepde.examples.tiny_diffusers:factory"
FAST = ["--n", "4", "--times", "2", "--curl", "none", "--no-progress"]


def _gmm_setup(rotation=0.0):
    sde = sp.VPSDE()
    gmm = sp.GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.8], [0.4, 0.6])
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    score = lambda x, t: gmm.score(x, t, sde) + rotation * x @ A.T
    return score, sde, gmm.sample(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _run(argv, capsys):
    """main(argv) -> (exit code, stdout, stderr); what it returns, or 0."""
    try:
        code = main(argv) or 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_true_score_audits_to_zero_residual_and_curl():
    score, sde, x0 = _gmm_setup()
    res = audit(
        score, sde, x0, [0.05, 0.5, 1.0], estimator="exact", curl="exact", batch_size=10, progress=False
    )
    for row in res["r_fp"] + res["curl"] + res["rel_fp"] + res["rel_curl"]:
        assert row["mean"] < 1e-6
    for row in res["r_dsm"] + res["abs_L"] + res["dt_s"]:
        assert row["mean"] > 1e-3 and 0 < row["se"] < row["mean"]


def test_a_rotational_field_has_the_closed_form_curl_and_a_relative_residual_in_0_1():
    """s + c A x with A = [[0, 1], [−1, 0]]: ‖J − Jᵀ‖_F = ‖2cA‖_F = 2√2 c, with no spread."""
    c = 0.3
    score, sde, x0 = _gmm_setup(rotation=c)
    res = audit(score, sde, x0, [0.2, 0.6], estimator="exact", curl="exact", progress=False)
    assert res["curl"][0]["mean"] == pytest.approx(2 * math.sqrt(2) * c, rel=1e-10)
    for row in res["r_fp"]:
        assert row["mean"] > 0.01  # a rotation does not solve the score FPE
    for row in res["rel_fp"] + res["rel_curl"]:
        assert 0.01 < row["mean"] < 1


def test_relative_residual_is_the_ratio_of_its_terms():
    """rel_fp = r_fp / (‖∂t s‖ + ‖∇x L‖) with ‖∇x L‖ = ‖∂t s − ε‖, checked on exact estimates."""
    score, sde, x0 = _gmm_setup(rotation=0.5)
    res = audit(score, sde, x0, [0.3], estimator="exact", curl=None, progress=False)
    t = torch.full((x0.shape[0],), 0.3, dtype=torch.float64)
    assert res["rel_fp"][0]["mean"] == pytest.approx(
        res["r_fp"][0]["mean"] / (res["dt_s"][0]["mean"] + res["grad_L"][0]["mean"]), rel=1e-12
    )
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype))
    eps = sp.residual(score, sde, xt, t, "exact")
    assert eps.norm(dim=1).pow(2).mean().sqrt() > 0.01  # ε is far from 0 here: the ratio means something


# --- "What the trial found", item 1: numbers one can interpret ---------------------------------


def test_small_n_never_reports_nan(capsys):
    """A mean square whose unbiased estimate is ≤ 0 read 'r_fp 0 ± nan' (trial: --n 4)."""
    score, sde, x0 = _gmm_setup()
    res = audit(score, sde, x0[:4], [0.05, 0.2, 0.5, 0.9], estimator="hutchinson", curl=None, progress=False)
    for key in ("r_fp", "rel_fp", "r_dsm", "abs_L"):
        for row in res[key]:
            assert row["se"] is None or math.isfinite(row["se"])
            assert row["mean"] is None or math.isfinite(row["mean"])


def test_a_root_of_a_mean_square_near_zero_has_the_se_of_its_gradient_point():
    """r = √m takes its slope at max(m, se(m)): a mean square of 0 ± se gets SE √se / 2 (the
    delta method at m = se), not the 1/(2√tiny) of a slope taken at 0."""
    from scorepde.audit.summary import summarize

    sq = torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64)  # an unbiased estimate of 0
    se = sq.std() / math.sqrt(sq.numel())
    out = summarize([{"fp2": sq}], [0.5], [1.0], dim=1)["r_fp"][0]
    assert out["mean"] == 0.0
    assert out["se"] == pytest.approx(math.sqrt(se) / 2, rel=1e-12)


def test_n_below_two_is_refused(capsys):
    code, _, err = _run(["--model", TINY, "--data", "digits", "--n", "1"], capsys)
    assert code == 2 and "at least 2 samples" in err


@pytest.fixture(scope="module")
def tiny_audit(tmp_path_factory):
    """One audit of the tiny diffusers UNet (v-prediction, cosine schedule, DDIM), as a new user would."""
    pytest.importorskip("diffusers")
    folder = tmp_path_factory.mktemp("models")
    (folder / "mymodels.py").write_text(
        "from scorepde.examples.tiny_diffusers import factory as tiny\n"
        "def ddim():\n    return tiny('squaredcos_cap_v2', 'v_prediction', 'DDIMScheduler')\n"
        "def ddpm():\n    return tiny('squaredcos_cap_v2', 'v_prediction', 'DDPMScheduler')\n"
        "def broken():\n    return helper()\n"
        "def helper():\n    raise RuntimeError('a bug in my factory')\n"
    )
    out = tmp_path_factory.mktemp("audit") / "ddim"
    argv = ["--model", f"{folder / 'mymodels.py'}:ddim", "--data", "digits", "--out", str(out), *FAST]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(argv)
    return folder, out, json.loads((out / "metrics.json").read_text()), stdout.getvalue()


def test_each_absolute_number_has_a_dimensionless_one_in_0_1(tiny_audit):
    metrics = tiny_audit[2]
    q = metrics["models"][0]["quantities"]
    for absolute, relative in (("r_fp", "rel_fp"), ("r_dsm", "rel_dsm")):
        assert len(q[absolute]) == len(q[relative]) == 2
    for row in q["rel_fp"]:
        assert 0 <= row["mean"] <= 1 and row["se"] is not None and math.isfinite(row["se"])


def test_t_is_shown_in_ddpm_steps(tiny_audit):
    metrics, stdout = tiny_audit[2], tiny_audit[3]
    assert metrics["native"]["name"] == "DDPM step k"
    steps = [1000 * t - 1 for t in metrics["t"]]
    assert metrics["native"]["values"] == pytest.approx(steps)
    assert metrics["native"]["values"][0] == pytest.approx(9) and "DDPM step k 9" in stdout


def test_provenance_is_complete(tiny_audit):
    metrics = tiny_audit[2]
    model = metrics["models"][0]
    assert model["prediction_type"] == "v_prediction"
    assert model["scheduler"]["class"] == "DDIMScheduler"
    assert model["scheduler"]["beta_schedule"] == "squaredcos_cap_v2"
    assert "alphas_cumprod" in model["scheduler_note"] and "DDIM" in model["scheduler_note"]
    assert metrics["sde"]["class"] == "DiscreteVPSDE" and metrics["sde"]["params"]["N"] == 1000
    assert 0 < metrics["sde"]["params"]["alpha_bar_last"] < metrics["sde"]["params"]["alpha_bar_first"] < 1
    assert metrics["data"]["scaling"] == "[-1,1]" and -1 <= metrics["data"]["range"]["min"] < 0
    assert set(metrics["versions"]) >= {"scorepde", "torch", "diffusers"}
    est = metrics["estimator"]  # what the estimator is, as the audit ran it: steps of 1/20 DDPM step
    assert est["name"] == "forward_fd" and est["time_stencil"] == "central" and est["stochastic"]
    assert est["time_step"] == pytest.approx([0.05 / 1000] * 2) and not est["needs_autograd"]
    assert metrics["command"].startswith("python -m scorepde.audit --model") and "--n 4" in metrics["command"]


def test_samplers_of_one_schedule_give_identical_numbers(tiny_audit, tmp_path, capsys):
    folder, _, metrics, _ = tiny_audit
    out = tmp_path / "ddpm"
    code, _, err = _run(
        ["--model", f"{folder / 'mymodels.py'}:ddpm", "--data", "digits", "--out", str(out), *FAST], capsys
    )
    assert code == 0, err
    other = json.loads((out / "metrics.json").read_text())
    ours, theirs = other["models"][0]["quantities"], metrics["models"][0]["quantities"]
    for q in ours:
        for a, b in zip(ours[q], theirs[q]):
            if a is None or b is None:  # not measured (--curl none)
                assert a is b, q
                continue
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-6, abs=1e-12), q
    assert other["models"][0]["scheduler"]["class"] == "DDPMScheduler"


def test_the_figure_has_one_panel_per_quantity_and_the_peak_in_its_title(tiny_audit, tmp_path, monkeypatch):
    import scorepde.plotting as plotting
    from scorepde.audit.report import figure
    from scorepde.audit.summary import MAIN, QUANTITIES

    seen = {}
    monkeypatch.setattr(plotting, "audit_figure", lambda *a, **kw: seen.update(args=a, kwargs=kw))
    result = {k: tiny_audit[2][k] for k in ("t", "native", "models", "differences")}
    figure(result, str(tmp_path / "a.png"), "tiny")
    curves = seen["args"][2]
    assert list(curves) == [QUANTITIES[q][0] for q in MAIN]  # one quantity (one unit) per panel
    assert "peaks at" in seen["kwargs"]["suptitle"] and "DDPM step k" in seen["kwargs"]["suptitle"]


def test_a_verdict_is_printed(tiny_audit):
    stdout = tiny_audit[3]
    assert "largest relative to its terms at t =" in stdout and "results in" in stdout
    assert re.search(r"wall time: \d+\.\d s", stdout)  # docs/own-model.md quotes none: the run says
    assert "note: the audit sees a diffusers scheduler only through alphas_cumprod" in stdout


@pytest.mark.parametrize(
    "sde, ts, name, values",
    [
        (sp.EDMSDE(), [0.5, 2.0], "σ", [0.5, 2.0]),  # t is σ
        (
            sp.DiscreteVPSDE(torch.linspace(0.99, 0.01, 10)),
            [0.5, 1.0],
            "DDPM step k",
            [4.0, 9.0],
        ),  # k = N t − 1
        (sp.VPSDE(), [1.0], "σ_t", [float(sp.VPSDE().marginal(torch.tensor(1.0))[1])]),
    ],
)
def test_native_time_is_the_models_own_clock(sde, ts, name, values):
    from scorepde.audit.provenance import native_time

    got_name, got = native_time(sde, ts)
    assert got_name == name and got == pytest.approx(values)


# --- "What the trial found", item 2: the way in -------------------------------------------------


def test_data_dir_is_a_flag(tmp_path, capsys):
    code, _, err = _run(
        [
            "--model",
            TINY,
            "--data",
            "mnist",
            "--data-dir",
            str(tmp_path / "nodata"),
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ],
        capsys,
    )
    assert code == 2 and "nodata" in err and "unrecognized" not in err


def test_a_missing_file_is_no_such_file(tmp_path, capsys):
    code, _, err = _run(
        ["--model", TINY, "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"), *FAST], capsys
    )
    assert code == 2 and "no such file" in err and "unknown dataset" not in err
    code, _, err = _run(["--model", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and "no such file" in err


def test_data_outside_the_model_space_is_refused_unless_forced(tmp_path, capsys):
    pytest.importorskip("diffusers")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (8, 1, 8, 8)).astype(np.uint8))
    argv = ["--model", TINY, "--data", str(tmp_path / "x.npy"), *FAST]
    code, _, err = _run(argv + ["--out", str(tmp_path / "a")], capsys)
    assert code == 2 and re.search(r"\[0, 25\d\]", err) and "[-1,1]" in err and "--force" in err
    code, _, err = _run(argv + ["--out", str(tmp_path / "b"), "--force"], capsys)
    assert code == 0, err


def test_nan_pixels_in_the_data_are_refused_by_name(tmp_path, capsys):
    pytest.importorskip("diffusers")
    x = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    x[3, 0, 2, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    argv = ["--model", TINY, "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"), *FAST]
    code, _, err = _run(argv + ["--force"], capsys)
    assert code == 2 and "--data" in err and "x.npy has 1 non-finite value" in err


def test_a_bug_in_the_users_factory_shows_their_traceback(tiny_audit, tmp_path, capsys):
    folder = tiny_audit[0]
    code, _, err = _run(
        [
            "--model",
            f"{folder / 'mymodels.py'}:broken",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ],
        capsys,
    )
    assert code == 2 and "Traceback" in err and "mymodels.py" in err and "in helper" in err
    assert "a bug in my factory" in err.splitlines()[-1] and "your factory" in err.splitlines()[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_thing"], "package.module:factory"),
        (
            ["--model", "no_such_module_xyz:factory", "--data", "digits"],
            "no module named 'no_such_module_xyz'",
        ),
        (
            ["--model", "scorepde.examples.tiny_diffusers:nosuchfn", "--data", "digits"],
            "has no 'nosuchfn'.*factory",
        ),
        (["--model", "math:pi", "--data", "digits"], "not a factory"),
    ],
)
def test_bad_model_is_one_line_error_with_the_right_hint(argv, message, capsys, tmp_path):
    code, _, err = _run(argv + ["--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and re.search(message, err) and err.count("\n") == 1
    if "nosuchfn" in argv[1]:
        assert "PYTHONPATH" not in err and "no module" not in err


def test_example_factory_imports_from_any_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("diffusers")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorepde.audit",
            "--model",
            TINY,
            "--data",
            "digits",
            "--out",
            "a",
            *FAST,
            "--times",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "a" / "metrics.json").is_file()  # --out is relative to the current folder
    monkeypatch.chdir(tmp_path)  # path/to/file.py:factory, from another folder
    code, _, err = _run(
        [
            "--model",
            f"{ROOT / 'examples' / 'tiny_diffusers.py'}:factory",
            "--data",
            "digits",
            "--out",
            "b",
            *FAST,
            "--times",
            "1",
        ],
        capsys,
    )
    assert code == 0, err


def test_main_is_the_console_entry_point_and_refuses_an_out_with_results(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    code, _, err = _run(["--model", TINY, "--data", "digits", "--out", str(tmp_path), *FAST], capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "metrics.json").read_text() == "{}"


# --- comparison and checkpoints -------------------------------------------------------------------


def _train(tmp_path, name, *extra):
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_train", ROOT / "image" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    run = tmp_path / name
    train.main(
        [
            "--channels",
            "8",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--no-progress",
            "--steps",
            "1",
            "--eval-images",
            "-1",
            "--n-samples",
            "0",
            "--out",
            str(run),
            *extra,
        ]
    )
    return run / "checkpoint.pt"


def test_two_checkpoints_are_compared_on_shared_draws(tmp_path, capsys):
    """DSM and an FP fine-tune of it, in one command: each curve and their paired difference."""
    dsm = _train(tmp_path, "dsm")
    fp = _train(tmp_path, "fp", "--init-from", str(dsm), "--objective", "fp", "--estimator", "forward_fd")
    out = tmp_path / "cmp"
    code, stdout, err = _run(
        [
            "--model",
            str(dsm),
            "--model",
            str(fp),
            "--out",
            str(out),
            "--n",
            "4",
            "--times",
            "2",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["label"] for m in metrics["models"]] == ["dsm", "fp"]
    assert metrics["data"]["name"] == "digits" and metrics["data"]["shape"] == [1, 8, 8]
    diff = metrics["differences"][0]
    assert (diff["a"], diff["b"]) == ("dsm", "fp")
    for i in range(2):
        a, b = (metrics["models"][k]["quantities"]["r_fp"][i]["mean"] for k in (0, 1))
        assert diff["quantities"]["r_fp"][i]["mean"] == pytest.approx(b - a, rel=1e-9)
        assert diff["quantities"]["r_fp"][i]["se"] > 0
    assert metrics["models"][1]["training"]["objective"] == "fp" and (out / "audit.png").stat().st_size > 0
    assert "fp vs dsm" in stdout


def test_the_same_model_twice_differs_by_exactly_zero(tmp_path, capsys):
    """Same x_t, same probes: a model compared with itself differs by 0 with SE 0."""
    score, sde, x0 = _gmm_setup(rotation=0.2)
    from scorepde.audit import run

    res = run([score, score], ["a", "b"], sde, x0[:6], [0.1, 0.5], estimator="forward_fd", progress=False)
    for q, rows in res["differences"][0]["quantities"].items():
        for row in rows:
            assert row["mean"] == 0 and row["se"] < 1e-12, q


def gmm_factory():
    """(score, sde) of a closed-form mixture: a factory for --model."""
    score, sde, _ = _gmm_setup()
    return score, sde


def test_load_model_still_unpacks_as_the_old_tuple_with_a_warning():
    from scorepde.audit import load_model

    loaded = load_model(f"{__name__}:gmm_factory")
    with pytest.warns(DeprecationWarning, match="4-tuple"):
        score, sde, scaling, dataset = loaded
    assert score is loaded.score and sde is loaded.sde and (scaling, dataset) == (None, None)


def test_models_on_different_forward_processes_are_not_paired(tmp_path, capsys):
    pytest.importorskip("diffusers")
    code, _, err = _run(
        [
            "--model",
            TINY,
            "--model",
            f"{__name__}:gmm_factory",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ],
        capsys,
    )
    assert code == 2 and "needs one forward process" in err and "DiscreteVPSDE" in err
