"""scorepde.reporting: a grid of run files → summaries, paired comparisons, tables, files."""

import json

import numpy as np
import pytest
from scipy import stats as st

from scorepde import reporting as rp
from scorepde.runstore import RunStore


@pytest.fixture
def grid(tmp_path):
    """Three seeds × β ∈ {0, 0.1} on two data sets and two budgets; FP is 0.1 lower per seed."""
    store = RunStore(str(tmp_path / "runs"))
    for budget in ("small", "big"):
        for data in ("a", "b"):
            for seed in range(3):
                base = 1.0 + seed * 0.5 + (data == "b")
                for beta in (0.0, 0.1):
                    store.save(
                        {"nll": base - 10 * beta * (0.1 + 0.01 * seed), "curve": [seed, 2.0 * seed]},
                        data=data,
                        beta=beta,
                        seed=seed,
                        budget=budget,
                    )
    return store


def test_index_runs_keys_filters_and_refuses_duplicates(grid):
    runs = rp.index_runs(grid.all(), ("data", "beta", "seed"), where={"budget": "small"})
    assert len(runs) == 12 and runs[("a", 0.0, 2)]["nll"] == 2.0
    with pytest.raises(ValueError, match="share"):  # two budgets, same key
        rp.index_runs(grid.all(), ("data", "beta", "seed"))
    with pytest.raises(ValueError, match="no field"):
        rp.index_runs(grid.all(), ("data", "lr"))


def test_seed_summary_and_paired_vs_control(grid):
    runs = rp.index_runs(grid.all(), ("data", "beta", "seed"), where={"budget": "small"})
    of = lambda d, b: {s: r for (dd, bb, s), r in runs.items() if (dd, bb) == (d, b)}  # noqa: E731
    fp, van = of("a", 0.1), of("a", 0.0)
    e = rp.seed_summary(fp, "nll")
    assert e["seeds"] == [0, 1, 2] and e["nll"] == [r["nll"] for r in fp.values()]
    assert e["mean"] == pytest.approx(np.mean(e["nll"])) and e["se"] == pytest.approx(st.sem(e["nll"]))
    pd = rp.paired_vs_control(fp, van, "nll")
    assert pd["seeds"] == [0, 1, 2] and pd["diffs"] == pytest.approx([-0.1, -0.11, -0.12])
    assert pd["excludes_zero"] is True and pd["hi"] < 0
    # pairing uses only the shared seeds, and none shared is None
    assert rp.paired_vs_control(fp, {1: van[1]}, "nll", label="keys")["keys"] == [1]
    assert rp.paired_vs_control(fp, {}, "nll") is None


def test_average_of_numbers_and_curves(grid):
    runs = [r for r in grid.all() if r["budget"] == "big" and r["data"] == "a" and r["beta"] == 0.0]
    assert rp.average(runs, "nll") == pytest.approx(1.5) and isinstance(rp.average(runs, "nll"), float)
    assert rp.average(runs, "curve") == pytest.approx([1.0, 2.0])
    assert rp.average([{"c": {"r": [1, 3]}}, {"c": {"r": [3, 5]}}], "c", "r") == [2.0, 4.0]
    with pytest.raises(ValueError, match="no runs"):
        rp.average([], "nll")


def test_paired_series_skips_levels_without_a_pair():
    s = {
        0.01: {"paired": {"mean": -0.1, "half_width": 0.05}},
        0.1: {},
        1.0: {"paired": {"mean": 0.2, "half_width": None}},
    }
    assert rp.paired_series(s) == ([0.01, 1.0], [-0.1, 0.2], [0.05, None])


def test_markdown_and_text_tables():
    md = rp.markdown_table(["name", "value"], [["x", 1.5], ["y", "—"]], align="lr")
    assert md.splitlines() == ["| name | value |", "| --- | ---: |", "| x | 1.5 |", "| y | — |"]
    assert rp.markdown_section("Runs", ["a"], [[1]]) == "\n**Runs**\n\n| a |\n| --- |\n| 1 |"
    with pytest.raises(ValueError, match="cells"):
        rp.markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align"):
        rp.markdown_table(["a", "b"], [], align="c")
    assert rp.text_table(["a", "bb"], [["long", 1]]).splitlines() == ["a     bb", "----  --", "long  1 "]


def test_number_formats():
    assert rp.fmt(None) == "—" and rp.fmt(1.23456) == "1.235" and rp.fmt(1.0, 0.25, 2) == "1.00 ± 0.25"
    assert rp.fmt_interval(None) == "—"
    assert rp.fmt_interval({"mean": 0.5, "half_width": None}) == "+0.500 (1 seed)"
    pd = {"mean": -0.2, "half_width": 0.1, "lo": -0.3, "hi": -0.1}
    assert rp.fmt_interval(pd, 2) == "-0.20 [-0.30, -0.10]"
    assert rp.fmt_interval(pd, 2, bold=True) == "**-0.20 [-0.30, -0.10]**"
    assert rp.fmt_interval({**pd, "hi": 0.1}, 2, bold=True) == "-0.20 [-0.30, +0.10]"  # spans 0: plain
    assert rp.minus("-0.20 [-0.30, +0.10]") == "−0.20 [−0.30, +0.10]"


def test_write_metrics_is_atomic_json_with_numpy(tmp_path, monkeypatch):
    import torch

    path = rp.write_metrics(
        str(tmp_path), {"a": np.float32(0.5), "n": np.int64(3), "v": np.arange(2), "t": torch.tensor(1.5)}
    )
    assert json.load(open(path)) == {"a": 0.5, "n": 3, "v": [0, 1], "t": 1.5}
    with pytest.raises(TypeError, match="not JSON"):  # a failed write leaves the old file whole
        rp.write_metrics(str(tmp_path), {"bad": object()})
    assert json.load(open(path))["n"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    text = rp.write_text(str(tmp_path), "summary.md", "| a |\n\n")
    assert open(text).read() == "| a |\n"


def test_paired_figure_draws_only_paired_points(tmp_path, grid):
    runs = rp.index_runs(grid.all(), ("data", "beta", "seed"), where={"budget": "small"})
    panels = {}
    for d in ("a", "b"):
        van = {s: r for (dd, bb, s), r in runs.items() if (dd, bb) == (d, 0.0)}
        fp = {s: r for (dd, bb, s), r in runs.items() if (dd, bb) == (d, 0.1)}
        panels[d] = {"FP − vanilla": {0.1: {"paired": rp.paired_vs_control(fp, van, "nll")}, 1.0: {}}}
    path = rp.paired_figure(panels, str(tmp_path / "f.png"), xlabel="β", ylabel="Δ NLL")
    assert path and (tmp_path / "f.png").stat().st_size > 1000
    assert rp.paired_figure({"a": {"x": {0.1: {}}}}, str(tmp_path / "g.png"), xlabel="β", ylabel="y") is None
    assert not (tmp_path / "g.png").exists()
