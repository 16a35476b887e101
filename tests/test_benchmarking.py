"""Timing and memory helpers: interleaving order, medians, ratios, peak bytes; and the benchmark
commands' shared plumbing (scorepde.commands._bench): output folder, device, brief training."""

import time

import pytest
import torch

from scorepde.benchmarking import interleaved_timings, machine_info, peak_memory, ratios, summarize


def test_interleaved_timings_warm_up_then_alternate_direction():
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    times = interleaved_timings(fns, repeats=3, warmup=2)
    assert order == list("AABBCC") + list("ABC") + list("CBA") + list("ABC")
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3, "C": 3}


def test_interleaved_timings_measure_wall_time():
    times = interleaved_timings({"fast": lambda: None, "slow": lambda: time.sleep(0.02)}, repeats=3, warmup=0)
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
        a = torch.empty(1000, 1000)  # 4 MB
        b = torch.empty(2000, 1000)  # 8 MB, both alive: 12 MB
        del a
        c = torch.empty(500, 1000)  # 2 MB, with b: 10 MB
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
    assert s["bias"] == pytest.approx(3.0**0.5) and s["variance"] == pytest.approx(2.0)  # 4 − 2/2
    assert s["rmse"] == pytest.approx(5.0**0.5) and s["rel_rmse"] == pytest.approx(5.0**0.5 / 2)
    assert error_stats(exact[None], exact, 1.0)["rmse"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        error_stats(draws, exact[:2], 1.0)


def test_call_seconds_times_each_call():
    from scorepde.benchmarking import call_seconds

    calls = []
    seconds = call_seconds(lambda: (calls.append(1), time.sleep(0.01)), 3)
    assert len(calls) == 3 and len(seconds) == 3 and min(seconds) >= 0.01


def test_train_briefly_is_the_plain_adam_loop():
    """train_briefly runs through training.fit, and matches, bit for bit, the hand-written
    loop the benchmark scripts had: random batch, DSM loss, Adam step, all from one generator."""
    from scorepde import VPSDE
    from scorepde.commands._bench import train_briefly
    from scorepde.losses import dsm_loss
    from scorepde.nn import MLPScore

    data = torch.randn(40, 2)

    def model():
        torch.manual_seed(0)
        net = MLPScore(2, hidden=16, depth=2)
        net.sde = VPSDE()
        return net

    a, g = model(), torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(a.parameters(), lr=2e-3)
    for _ in range(3):
        loss = dsm_loss(a, a.sde, data[torch.randint(0, 40, (8,), generator=g)], generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    b = train_briefly(model(), data, 3, batch=8, generator=torch.Generator().manual_seed(3), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), model().parameters()))


def test_setup_run_refuses_results_and_missing_cuda(tmp_path, capsys):
    import argparse

    from scorepde.commands._bench import benchmark_parser, setup_run

    parser = benchmark_parser("doc", "runs/x", "quick")
    out = tmp_path / "new" / "folder"
    assert setup_run(parser.parse_args(["--out", str(out)])) == torch.device("cpu") and out.is_dir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit) as info:
        setup_run(parser.parse_args(["--out", str(out)]))
    assert info.value.code == 2 and "already holds results" in capsys.readouterr().err
    setup_run(parser.parse_args(["--out", str(out), "--overwrite"]))  # allowed, nothing deleted
    assert (out / "metrics.json").exists()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            setup_run(argparse.Namespace(device="cuda", threads=1, out=str(tmp_path / "c"), overwrite=False))
        assert (
            "sees no CUDA GPU; use --device cpu" in capsys.readouterr().err and not (tmp_path / "c").exists()
        )
