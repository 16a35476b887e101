"""Measurement helpers for the benchmark scripts: interleaved timing, peak memory, the machine.

No math lives here. Timings on a shared machine drift, so the runs being compared are
interleaved (A B C, C B A, A B C, … after a warmup of each) and summarised by medians;
a ratio of two medians from the same interleaved run is what the benchmarks report.

Peak memory is the most tensor memory alive at once during a call, above what was alive
when it started: on CUDA from ``torch.cuda.max_memory_allocated``; on CPU from
``torch.profiler``'s allocation records (``profile_memory=True``), summed in time order
at the granularity of single ATen ops (an op's own temporaries are netted inside it).
It counts tensors only, not the Python heap nor the allocator's cached pages.

Also a busy neighbour job (a second condition to time under) and the first calls of a fresh
process. The benchmarks' command-line plumbing is ``scorepde.commands._bench``.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import torch

__all__ = [
    "synchronize",
    "interleaved_timings",
    "summarize",
    "ratios",
    "peak_memory",
    "error_stats",
    "machine_info",
    "device_name",
    "load_average",
    "call_seconds",
    "BusyNeighbour",
]


def synchronize(device: Any = "cpu") -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_timings(
    fns: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: Any = "cpu",
    progress: bool = False,
    desc: str = "timing",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each call in ``fns`` by ``clock`` (wall time by default; ``time.process_time``
    counts this process's CPU only, steadier on a machine shared with other jobs),
    ``repeats`` times each, interleaved.

    Every function first runs ``warmup`` untimed times (allocator, autotuning, lazy init).
    Then round r runs them all in order, alternating direction (A B C, C B A, …) so
    that no function always follows the same neighbour. Returns name → list of seconds.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    names = list(fns)
    if not names:
        raise ValueError("nothing to time: fns is empty")
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds: Iterable[int] = range(repeats)
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=desc, dynamic_ncols=True)
    for r in rounds:
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start = clock()
            fns[name]()
            synchronize(device)
            times[name].append(clock() - start)
    return times


def summarize(samples: Iterable[float]) -> dict[str, float]:
    """Median, quartiles, min and count of a list of measurements."""
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("no samples to summarize")
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "n": len(xs)}


def ratios(times: Mapping[str, Iterable[float]], reference: str) -> dict[str, float]:
    """median(times[name]) / median(times[reference]) for every name."""
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not among {sorted(times)}")
    ref = statistics.median(times[reference])
    return {name: statistics.median(ts) / ref for name, ts in times.items()}


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def peak_memory(fn: Callable[[], Any], device: Any = "cpu") -> int:
    """Peak bytes of tensor memory alive during ``fn()`` above the level at its start.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the running sum of
    ``torch.profiler``'s per-op allocation records (see the module docstring).
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on cpu or cuda, not {device.type}")
    return _cpu_peak_bytes(fn)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def machine_info(device: Any = "cpu") -> dict[str, Any]:
    """What a benchmark ran on: device name, CPU model and cores, threads, versions."""
    return {
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def error_stats(draws: torch.Tensor, exact: torch.Tensor, scale: float) -> dict[str, float]:
    """Bias, variance and RMSE of repeated estimates against the exact value.

    ``draws``: ``[R, P, ...]``, R independent estimates at each of P points; ``exact``:
    ``[P, ...]``. Per point, squared norms are summed over the trailing dimensions, then
    averaged over points: ``bias`` = RMS ‖mean_r draw − exact‖ with the noise of the mean
    (tr Cov / R) taken out (clamped at 0), ``variance`` = mean tr Cov,
    ``rmse`` = RMS ‖draw − exact‖; the ``rel_`` forms divide by ``scale`` (RMSE, bias)
    or ``scale²`` (variance).
    """
    if draws.shape[1:] != exact.shape:
        raise ValueError(f"draws {tuple(draws.shape)} must be [R] + exact's shape {tuple(exact.shape)}")
    d = (draws - exact).double().reshape(draws.shape[0], draws.shape[1], -1)
    var = d.var(0).sum(-1).mean().item() if draws.shape[0] > 1 else 0.0
    bias_sq = max(0.0, d.mean(0).pow(2).sum(-1).mean().item() - var / draws.shape[0])
    mse = d.pow(2).sum(-1).mean().item()
    scale = float(scale)
    return {
        "bias": bias_sq**0.5,
        "variance": var,
        "rmse": mse**0.5,
        "scale": scale,
        "rel_bias": bias_sq**0.5 / scale,
        "rel_variance": var / scale**2,
        "rel_rmse": mse**0.5 / scale,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def call_seconds(fn: Callable[[], Any], calls: int = 1) -> list[float]:
    """Wall seconds of each of ``calls`` consecutive calls of ``fn``, untimed nothing before:
    the first calls of a fresh process or a compiled function, or a plain repeated call."""
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


class BusyNeighbour:
    """A second single-threaded job for the duration of a ``with`` block: a torch matmul loop
    in its own process (the block gets its pid), ended by pid when the block exits."""

    LOOP = (
        "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\nwhile True: a = torch.tanh(a @ a)"
    )

    def __enter__(self) -> int:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.LOOP], env={"OMP_NUM_THREADS": "1", "PATH": ""}
        )
        time.sleep(2.0)  # let it import torch and start spinning
        if self.proc.poll() is not None:
            raise RuntimeError("the busy neighbour job exited at once")
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
