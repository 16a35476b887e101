"""training_curves.png: no curve hidden under another, and a smoothed trend over the noise."""

import numpy as np
import pytest

import scorepde.plotting as plotting


def _figure(records, tmp_path, monkeypatch):
    seen = {}

    def keep(fig, path):
        seen["fig"] = fig
        return path

    monkeypatch.setattr(plotting, "_save", keep)
    plotting.training_curves(records, str(tmp_path / "c.png"))
    return seen["fig"]


def _dsm_run(n=200):
    rng = np.random.default_rng(0)
    loss = 1 + np.exp(-np.arange(n) / 50) + 0.3 * rng.random(n)
    return [{"step": i, "loss": float(v), "dsm": float(v), "fp": 0.0, "lr": 1e-3} for i, v in enumerate(loss)]


def test_a_dsm_runs_loss_and_dsm_are_drawn_once_under_a_joint_label(tmp_path, monkeypatch):
    fig = _figure(_dsm_run(), tmp_path, monkeypatch)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert any("loss = dsm" in label for label in labels)
    drawn = [tuple(np.round(line.get_ydata(), 12)) for line in ax.get_lines()]
    assert len(drawn) == len(set(drawn))  # no two lines on top of each other


def test_each_curve_has_a_smoothed_trend(tmp_path, monkeypatch):
    records = _dsm_run()
    fig = _figure(records, tmp_path, monkeypatch)
    smoothed = [line for line in fig.axes[0].get_lines() if "EMA" in line.get_label()]
    assert len(smoothed) == 1
    y = np.asarray(smoothed[0].get_ydata())
    raw = np.array([r["loss"] for r in records])
    assert np.std(np.diff(y)) < 0.2 * np.std(np.diff(raw))  # smoother than the raw per-step values


def test_smooth_is_a_bias_corrected_moving_average():
    assert plotting.smooth([2.0, 2.0, 2.0], 10) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
    y = plotting.smooth([0.0, 1.0, np.nan, 1.0], 1)  # span 1: no smoothing, NaN skipped
    assert y[:2] == pytest.approx([0.0, 1.0]) and y[3] == pytest.approx(1.0)
