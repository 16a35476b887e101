"""Timing and memory helpers: interleaving order, medians, ratios, peak bytes."""
import time

import pytest
import torch

from scorepde.benchmarking import (interleaved_timings, machine_info, peak_memory, ratios,
                                   summarize)


def test_interleaved_timings_warm_up_then_alternate_direction():
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    times = interleaved_timings(fns, repeats=3, warmup=2)
    assert order == list("AABBCC") + list("ABC") + list("CBA") + list("ABC")
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3, "C": 3}


def test_interleaved_timings_measure_wall_time():
    times = interleaved_timings({"fast": lambda: None, "slow": lambda: time.sleep(0.02)},
                                repeats=3, warmup=0)
    r = ratios(times, "fast")
    assert r["fast"] == 1.0 and r["slow"] > 10
    assert min(times["slow"]) >= 0.02


def test_interleaved_timings_refuse_nonsense():
    with pytest.raises(ValueError, match="repeats"):
        interleaved_timings({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="empty"):
        interleaved_timings({})
    with pytest.raises(ValueError, match="reference"):
        ratios({"a": [1.0]}, "b")


def test_summarize_is_the_median_and_quartiles():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "n": 5}
    assert summarize([2.0])["median"] == 2.0
    with pytest.raises(ValueError):
        summarize([])


def test_cpu_peak_memory_counts_live_tensors_not_total_allocations():
    def fn():
        a = torch.empty(1000, 1000)        # 4 MB
        b = torch.empty(2000, 1000)        # 8 MB, both alive: 12 MB
        del a
        c = torch.empty(500, 1000)         # 2 MB, with b: 10 MB
        return b, c

    peak = peak_memory(fn)
    assert 12e6 <= peak < 12.5e6


def test_peak_memory_refuses_other_devices():
    with pytest.raises(ValueError, match="cpu or cuda"):
        peak_memory(lambda: None, "meta")


def test_machine_info_names_the_cpu():
    info = machine_info()
    assert info["device"] == "cpu" and info["cpu_model"] and info["torch"] == torch.__version__


def test_error_stats_split_bias_and_variance():
    from scorepde.benchmarking import error_stats
    exact = torch.zeros(3, 2)
    draws = torch.tensor([[1.0, 0.0], [3.0, 0.0]])[:, None, :].expand(2, 3, 2)  # mean 2, var 2 in dim 0
    s = error_stats(draws, exact, scale=2.0)
    assert s["bias"] == pytest.approx(3.0 ** 0.5) and s["variance"] == pytest.approx(2.0)  # 4 − 2/2
    assert s["rmse"] == pytest.approx(5.0 ** 0.5) and s["rel_rmse"] == pytest.approx(5.0 ** 0.5 / 2)
    assert error_stats(exact[None], exact, 1.0)["rmse"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        error_stats(draws, exact[:2], 1.0)
