"""The benchmark scripts run end to end with --quick and write what they promise; their
tables regenerate from the committed metrics.json byte for byte."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRIPTS = (
    "bpd_cost",
    "estimator_error",
    "lever_error",
    "likelihood_cost",
    "pfode_cost",
    "step_cost",
    "time_steps",
)


def _script(name):
    """A benchmark script as a module (importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
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
    """Structure only: no assertion on a timing (timings under load are the benchmark's job)."""
    m = _run("step_cost.py", tmp_path)
    forms = {
        "default",
        "default_every2",
        "default_every4",
        "default_5row",
        "default_sub2",
        "default_5row_sub2",
        "default_sub1",
    }
    configs = {
        "dsm",
        "paper",
        "hutchinson",
        "directional",
        "forward_fd",
        "dsm_channels_last",
        "default_channels_last",
    } | forms
    assert set(m["table"]) == configs
    for key in (
        "ratio_default_over_dsm",
        "ratio_default_every4_over_dsm",
        "ratio_paper_over_dsm",
        "per_sample_ratio_default_over_paper",
    ):
        assert isinstance(m[key], float)
    for row in m["table"].values():
        assert {"ratio_to_dsm", "residual_samples", "time", "peak_bytes", "every"} <= set(row)
        assert len(row["times"]) == m["setup"]["repeats"]
    assert m["table"]["dsm"]["ratio_to_dsm"] == 1.0 and m["table"]["default_every4"]["every"] == 4
    assert set(m["conditions"]) == {"as_found", "with_neighbour"}
    assert set(m["conditions"]["with_neighbour"]["ratio_to_dsm"]) == {"dsm", "paper"} | forms
    assert set(m["effect"]) == {"dsm", "paper"} | forms
    assert m["table"]["default_5row"]["residual_samples"] == m["table"]["default"]["residual_samples"]
    for e in m["effect"].values():
        assert e["curve"] and e["curve"][-1]["step"] == e["steps"]
        assert e["time_to_effect_seconds"] is None or isinstance(e["time_to_effect_seconds"], float)
    assert set(m["time_to_effect_seconds"]) == set(m["effect"])
    assert m["goals"]["cheapest_form_within_2x_paper"] in forms | {None}
    assert all(
        isinstance(m["goals"][k], bool)
        for k in (
            "default_at_most_1_3x_dsm",
            "fastest_default_form_at_most_1_3x_dsm",
            "cheapest_form_within_2x_paper_at_most_1_3x_dsm",
        )
    )
    assert isinstance(m["machine"]["load_average"], list)
    assert (tmp_path / "table.md").stat().st_size > 0 and (tmp_path / "step_cost.png").stat().st_size > 0
    assert (
        set(m["residual_tail_ratio_to_paper"]) == set(m["effect"])
        and m["residual_tail_ratio_to_paper"]["paper"] == 1.0
    )
    # --rederive measures nothing and derives the same numbers from the stored run
    from scorepde.commands import step_cost

    step_cost.main(["--rederive", "--out", str(tmp_path)])
    with open(tmp_path / "metrics.json") as f:
        again = json.load(f)
    assert again.pop("rederived_by").endswith("--rederive --out " + str(tmp_path))
    assert again == m


def test_likelihood_cost_quick(tmp_path):
    """Every lever at every tolerance on the mixture: NFE, time, both errors, the verdict
    against SciPy at 1e-5 and the work-precision figure (structure and accuracy, not speed)."""
    m = _run("likelihood_cost.py", tmp_path)
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    rows = m["cases"]["mixture"]["rows"]
    levers = [lv for lv in module.LEVERS if module.runs_here(lv, module.mixture_case(2, 0))]
    assert {(r["lever"], r["tol"]) for r in rows} == {(lv, t) for lv in levers for t in m["tols"]}
    for r in rows:
        assert r["nfe"] > 0 and r["seconds"] > 0 and r["sample_evals"] >= r["nfe"]
        if r["tol"] == 1e-5:  # every path is accurate at a tight tolerance (bits/dim, D = 2)
            assert r["image_error"] < 1e-3 and r["dataset_error"] <= r["image_error"] + 1e-12
    verdict = m["cases"]["mixture"]["verdict"]
    assert set(verdict["best"]) == set(module.CRITERIA)
    for best in verdict["best"].values():
        assert best["scipy_rk45"]["speedup"] >= 1.0  # its own 1e-5 point is within target
    assert (tmp_path / "work_precision.png").stat().st_size > 0 and (tmp_path / "table.md").stat().st_size > 0


@pytest.mark.slow
def test_bpd_cost_quick(tmp_path):
    """Structure only: each strategy reports bits/dim, stderr, points, repeats, time, NFE."""
    m = _run("bpd_cost.py", tmp_path)
    assert set(m["strategies"]) == {"one_solve", "chunks", "chunks_sorted", "per_sample"}
    assert m["fastest"] in m["strategies"]
    for r in m["strategies"].values():
        for key in (
            "bpd",
            "bpd_stderr",
            "seconds",
            "nfe",
            "bpd_diff_in_stderr",
            "max_abs_diff_from_one_solve",
        ):
            assert isinstance(r[key], float)
        assert r["points"] == len(r["per_sample"]) and isinstance(r["repeats"], int)
    assert m["strategies"]["per_sample"]["solves"] == m["strategies"]["per_sample"]["points"]
    assert m["strategies"]["one_solve"]["max_abs_diff_from_one_solve"] == 0.0
    assert (tmp_path / "table.md").stat().st_size > 0


@pytest.mark.slow
def test_lever_error_quick(tmp_path):
    """Structure, and the two facts the write-up leans on: the one-sided 5-row form is worse
    than the central 6-row one at the default hx, and every estimate has an error."""
    m = _run("lever_error.py", tmp_path)
    assert {r["dt"] for r in m["one_sided"].values()} == {"central", "one_sided"}
    assert m["one_sided"]["one_sided hx=0.05"]["median"] > m["one_sided"]["central hx=0.05"]["median"]
    assert {r["method"] for r in m["time_derivative"].values()} == {"central", "forward"}
    assert {(r["method"], r["matvecs"]) for r in m["trace"].values()} == {
        ("hutchinson", 3),
        ("hutch++", 3),
        ("hutchinson", 6),
        ("hutch++", 6),
    }
    for r in m["trace"].values():
        assert r["rel_rmse_mean"] > 0 and r["seconds_median"] > 0 and len(r["points"]) == 4
    assert (tmp_path / "table.md").stat().st_size > 0


#: Committed results folder → the module whose ``table(metrics)`` wrote its table.md.
COMMITTED = {
    "step_cost": "step_cost",
    "step_cost/seed1": "step_cost",
    "step_cost/seed2": "step_cost",
    "estimator_error": "estimator_error",
    "likelihood_cost": "likelihood_cost",
    "likelihood_cost/mixture": "likelihood_cost",
    "likelihood_cost/mnist": "likelihood_cost",
    "likelihood_cost/digits32": "likelihood_cost",
    "likelihood_cost/digits64": "likelihood_cost",
    "likelihood_cost/digits64_torchode": "likelihood_cost",
    "likelihood_cost/mnist4": "likelihood_cost",
    "likelihood_cost/digits64_ve": "likelihood_cost",
    "likelihood_cost/digits64_ve16k": "likelihood_cost",
    "likelihood_cost/fashion8_ve": "likelihood_cost",
    "likelihood_cost/digits64_inner": "likelihood_cost",
    "likelihood_cost/mixture_inner": "likelihood_cost",
    "likelihood_cost/mnist4_inner": "likelihood_cost",
    "likelihood_cost/mnist16": "likelihood_cost",
    "likelihood_cost/mnist16x3": "likelihood_cost",
    "likelihood_cost/digits64x3": "likelihood_cost",
    "likelihood_cost/digits64_ve16k_inner": "likelihood_cost",
    "lever_error": "lever_error",
    "time_steps": "time_steps",
    "bpd_cost": "bpd_cost",
}


@pytest.mark.parametrize("folder", sorted(COMMITTED))
def test_committed_tables_regenerate_byte_for_byte(folder):
    """The committed table.md is what today's code writes from the committed metrics.json."""
    name = COMMITTED[folder]
    module = importlib.import_module(f"scorepde.commands.{name}")
    with open(os.path.join(RESULTS, folder, "metrics.json")) as f:
        metrics = json.load(f)
    if name == "step_cost":  # what --rederive writes: the metrics derived again, then the table
        metrics = module.rederive(os.path.join(RESULTS, folder), metrics["command"])
    with open(os.path.join(RESULTS, folder, "table.md"), encoding="utf-8") as f:
        assert module.table(metrics) == f.read()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help_and_refuses_a_folder_with_results(name, tmp_path, capsys):
    module = _script(name)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0 and "--out" in capsys.readouterr().out
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit) as info:  # before any measuring: a one-line error, exit 2
        module.main(["--quick", "--out", str(tmp_path)])
    assert info.value.code == 2 and "already holds results" in capsys.readouterr().err
    assert (tmp_path / "metrics.json").read_text() == "{}"


@pytest.mark.slow
def test_time_steps_and_pfode_cost_quick(tmp_path):
    """Structure only: the two small scripts run with --quick and write metrics.json."""
    m = _run("time_steps.py", tmp_path / "time_steps")
    assert set(m["results"]) == {"vp"} and (tmp_path / "time_steps" / "phase_sweep.png").stat().st_size > 0
    rows = m["results"]["vp"]["init"]["rows"]
    assert all(e["median"] <= e["max"] for e in rows.values())
    assert (
        importlib.import_module("scorepde.commands.time_steps").table(m)
        == (tmp_path / "time_steps" / "table.md").read_text()
    )
    p = _run("pfode_cost.py", tmp_path / "pfode_cost")
    assert p["digits"]["ms_per_image_per_nfe"] > 0 and p["command"].endswith(
        "--quick --out " + str(tmp_path / "pfode_cost")
    )


def test_likelihood_cost_refuses_a_gpu_it_would_not_time(tmp_path):
    """Its solves are timed in CPU seconds: --device cuda is refused by name, before any work."""
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    with pytest.raises(SystemExit) as info:
        module.main(["--device", "cuda", "--out", str(tmp_path / "o")])
    assert "--device cpu only" in str(info.value) and not (tmp_path / "o").exists()


def test_likelihood_cost_step_ceiling_counts_the_stages():
    """SciPy's step is six evaluations of two forwards + vjp; dopri5's five forward + vjp and
    one drift-only forward (six forward + vjp with every stage full)."""
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    inner, full = module.step_ceiling({"scipy_2fwd_vjp": 30.0, "fwd_vjp": 20.0, "fwd_no_grad": 10.0})
    assert inner == pytest.approx(180 / 110) and full == pytest.approx(180 / 120)


def test_likelihood_cost_draws_average_independent_runs(tmp_path):
    """--draws 2 is the runs at seeds 0 and 2 side by side: errors their mean, NFE and rows their
    sum, each draw measured against its own reference; the table says how many draws."""
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    flags = ["--quick", "--levers", "scipy_rk45,default", "--repeats", "1"]
    runs = {}
    for name, extra in (("both", ["--draws", "2"]), ("first", ["--seed", "0"]), ("second", ["--seed", "2"])):
        module.main([*flags, *extra, "--out", str(tmp_path / name)])
        with open(tmp_path / name / "metrics.json") as f:
            runs[name] = {(r["lever"], r["tol"]): r for r in json.load(f)["cases"]["mixture"]["rows"]}
    assert set(runs["both"]) == set(runs["first"]) and len(runs["both"]) == 4
    for key, row in runs["both"].items():
        one, two = runs["first"][key], runs["second"][key]
        assert (
            row["nfe"] == one["nfe"] + two["nfe"]
            and row["sample_evals"] == one["sample_evals"] + two["sample_evals"]
        )
        for err in ("dataset_error", "image_error"):
            assert row[err] == pytest.approx((one[err] + two[err]) / 2, rel=1e-12, abs=1e-15)
        assert row["max_error"] == max(one["max_error"], two["max_error"])
    assert one["image_error"] != two["image_error"]  # two draws, not one twice
    assert "(8 points × 2 draws, D = 2)" in (tmp_path / "both" / "table.md").read_text()
    with pytest.raises(SystemExit, match="--draws must be at least 1"):
        module.main([*flags, "--draws", "0", "--out", str(tmp_path / "none")])


def test_likelihood_cost_table_names_the_data_folder_of_a_case():
    """An mnist case names the folder it read (Fashion-MNIST runs under the same flag)."""
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    with open(os.path.join(RESULTS, "likelihood_cost", "mnist16", "metrics.json")) as f:
        metrics = json.load(f)
    assert "**mnist** (16 points" in module.table(metrics)
    metrics["cases"]["mnist"]["data"] = "fashion-mnist"
    assert "**mnist** (fashion-mnist: 16 points" in module.table(metrics)


def test_likelihood_cost_refuses_a_checkpoint_without_a_config(tmp_path, capsys):
    """A fine-tuning arm's file (weights, step, record: no config) is refused by name, not a KeyError."""
    ckpt = tmp_path / "arm.final.pt"
    torch.save({"model": {}, "step": 3, "record": {}}, ckpt)
    module = importlib.import_module("scorepde.commands.likelihood_cost")
    with pytest.raises(SystemExit):
        module.main(
            ["--cases", "digits", "--digits", str(ckpt), "--tols", "1e-5", "--out", str(tmp_path / "o")]
        )
    assert "no config" in capsys.readouterr().err
