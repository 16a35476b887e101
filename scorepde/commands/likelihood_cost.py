"""The price of a likelihood, lever by lever: error against a tight reference and time, one curve each.

    python benchmarks/likelihood_cost.py --digits CKPT [--mnist CKPT] [--cases mixture,digits,mnist]
        [--tols 1e-4,3e-5,1e-5] [--levers a,b,...] [--images 16] [--mnist-images 4]
        [--first-image 0] [--compile] [--out DIR]

Every lever is ``scorepde.log_likelihood`` with one thing changed from the plain "rk"
solver (a keyword, the model's memory format, or the batch; see ``LEVERS``), plus score_sde's SciPy loop
(``scorepde.baselines``), all on the same points, the same dequantization and the same
Rademacher probe. Each is solved once per tolerance (five times on the mixture, the median
kept), levers interleaved (A B C, C B A, …), timed in this process's CPU seconds
(``time.process_time``: one thread, so it is the solve's own cost; wall time on the shared
2-core machine swung 4× between identical solves).
Error: bits/dim against the "rk" solver at --ref-tol (cached in --out), as the dataset's
|Δ bits/dim| (the issue's measure) and the mean per-image |Δ|; with --draws K, their mean over
K independent draws of the dequantization and the probe (one solve's error depends on its step
sequence: one draw decides "within the target" by luck), times summed. Target: max(1e-4, 1.5 ×
SciPy's at 1e-5) on each; the speed-up of a lever is SciPy's 1e-5 time over its fastest point
within the target, under the dataset criterion alone and under both (``CRITERIA``).
Image cases: a checkpoint of image/train.py, its first test images, eps = its t_eps; the
mixture: a 2-D three-component GMM (``mixture_case``), exact trace, 64 points.
Also the cost of one evaluation (ms) on the image models (``eval_costs``): forward + vjp,
SciPy's two forwards + vjp, channels-last, no_grad against inference_mode, per image at
several batch sizes and, with --compile, torch.compile with the images after which it pays;
from these, the most a speed-up can be at equal rows (``step_ceiling``).
Writes metrics.json, table.md and work_precision.png to --out.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import os
import statistics
import time

import torch

import scorepde as sp
from scorepde.baselines import scipy_log_likelihood
from scorepde.benchmarking import call_seconds, interleaved_timings, load_average, machine_info
from scorepde.bpd import bpd_solver_defaults
from scorepde.checkpoints import load_checkpoint
from scorepde.cli import user_errors
from scorepde.commands._bench import benchmark_parser, command_line, setup_run, write_report
from scorepde.data import load_dataset
from scorepde.derivatives import sample_probes, value_and_divergence
from scorepde.image_config import load_trained
from scorepde.plotting import work_precision
from scorepde.reporting import markdown_table


#: lever → log_likelihood keywords (None: score_sde's SciPy loop). Each changes one thing.
#: Not keywords: ``_channels_last`` runs a channels-last copy of the model on channels-last
#: input, ``_batch`` cuts the points into solves of that many (the probes of one draw),
#: ``_bpd`` takes evaluate_bpd's defaults (``scorepde.bpd.bpd_solver_defaults``), ``_torchode``
#: integrates the "rk" solver's right-hand side (t clock, float64 state) with torchode's dopri5
#: and per-sample integral controller instead (``torchode_fn``; it needs ``pip install -e ".[levers]"``),
#: ``_full_stages`` evaluates the divergence at every stage, as before the drift-only inner
#: stages (``scorepde.rk.Tableau.inner``; ``every_stage_full``).
def _rk(**change) -> dict:
    """The plain "rk" solve (error on the whole state, clock t) with ``change``."""
    return dict(solver="rk", error_on="state", time="t") | change


LEVERS = {
    "scipy_rk45": None,
    "torchdiffeq_fp32": dict(solver="torchdiffeq"),
    "rk_joint_fp32": _rk(control="joint", state_dtype=None),
    "rk_joint_fp64": _rk(control="joint"),
    "rk_per_sample": _rk(control="per_sample"),
    "rk_error_on_logp": _rk(error_on="logp"),
    "rk_balanced": _rk(error_on="balanced"),
    "rk_tsit5": _rk(method="tsit5"),
    "rk_bosh3": _rk(method="bosh3"),
    "rk_dopri8": _rk(method="dopri8"),
    "rk_log_snr": _rk(time="log_snr"),
    "rk_sigma": _rk(time="sigma"),
    "rk_sigma_logp": _rk(time="sigma", error_on="logp"),
    "rk_sigma_balanced": _rk(time="sigma", error_on="balanced"),
    "rk_sigma_joint": _rk(time="sigma", control="joint"),
    "rk_reverse": _rk(mode="reverse"),
    "rk_forward": _rk(mode="forward"),
    "rk_channels_last": _rk(_channels_last=True),
    "rk_batch16": _rk(_batch=16),
    "default": dict(),
    "default_full_stages": dict(_full_stages=True),
    "bpd_default": dict(_bpd=True),
    "bpd_default_full_stages": dict(_bpd=True, _full_stages=True),
    "torchode_dopri5": dict(_torchode=True),
}
CASES = ("mixture", "digits", "mnist")


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/likelihood_cost", "tiny sizes, for tests")
    p.add_argument("--digits", default=None, help="checkpoint of a digits model (image/train.py)")
    p.add_argument("--mnist", default=None, help="checkpoint of an mnist model (image/train.py)")
    p.add_argument("--data-dir", default="../shared/data/mnist-10k", help="MNIST folder for --mnist")
    p.add_argument("--cases", default="mixture", help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated subset of the levers")
    p.add_argument("--tols", default="1e-4,3e-5,1e-5", help="rtol = atol values (1e-5 is needed: the target)")
    p.add_argument("--ref-tol", type=float, default=1e-8, help="tolerance of the reference solve")
    p.add_argument("--images", type=int, default=16, help="test images, digits")
    p.add_argument("--mnist-images", type=int, default=4, help="test images, mnist")
    p.add_argument(
        "--first-image", type=int, default=0, help="index of the first test image (another sample)"
    )
    p.add_argument(
        "--compile", action="store_true", help="also time a torch.compile'd model (minutes of compile)"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed solves per point (default 5 mixture, 1 images)"
    )
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="independent draws of the points' dequantization (the mixture: of the points) and of the "
        "probe, each with its own reference: errors are their mean, the target's too; times are summed",
    )
    return p.parse_args(argv)


def image_cases(ckpt: str, n: int, seeds: list, data_dir: str | None, first: int = 0) -> list:
    """One case (model, sde, x, eps, div) per seed of ``seeds``: a checkpoint's test images
    first … first + n − 1 dequantized with that seed, in its model space x = 2u − 1 (the
    checkpoint, data and model loaded once, shared by every case)."""
    state = load_checkpoint(ckpt, map_location="cpu")
    dataset = state.get("config", {}).get("dataset", "digits")  # load_trained refuses a state without one
    test = load_dataset(dataset, "test", None if dataset == "digits" else data_dir)
    cfg, sde, model = load_trained(state, test.shape, "ema", "cpu")
    model.requires_grad_(False)
    images = test.images[first : first + n]
    return [
        (model, sde, 2.0 * sp.dequantize(images, test.levels, torch.Generator().manual_seed(seed)) - 1.0,
         cfg.t_eps, "hutchinson")
        for seed in seeds
    ]  # fmt: skip


def mixture_case(n: int, seed: int):
    sde = sp.VPSDE()
    gmm = sp.GaussianMixture([[-2.0, -1.0], [3.0, 2.0], [0.5, 4.0]], [0.3, 0.5, 0.4], [0.2, 0.5, 0.3])
    x = gmm.sample(n, generator=torch.Generator().manual_seed(seed))
    return (lambda y, t: gmm.score(y, t, sde)), sde, x, 1e-5, "exact"


def channels_last(model):
    """A channels-last copy of an image model, called on channels-last input."""
    m = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return lambda y, t: m(y.contiguous(memory_format=torch.channels_last), t)


def torchode_fn(case, tol: float, probes):
    """One solve by torchode (Lienen & Günnemann 2022): dopri5, a step size per sample, every
    sample evaluated at every step until the last is done; the same right-hand side,
    state and probes as the "rk" solver. (log-likelihood float64, NFE, rows evaluated)."""
    import torchode as to  # type: ignore  # untyped, and optional

    from scorepde.likelihood import _rk_rhs
    from scorepde.time_change import time_change

    score, sde, x, eps, div = case
    B, D, T = x.shape[0], x[0].numel(), float(sde.T)
    rhs = _rk_rhs(
        score, sde, x.shape[1:], div, probes, "reverse", time_change(sde, "t", eps, T), x.dtype, eps, T
    )
    idx = torch.arange(B)

    def solve():
        with torch.no_grad():
            term = to.ODETerm(lambda t, y: rhs(t, y, idx))
            solver = to.AutoDiffAdjoint(
                to.Dopri5(term=term), to.IntegralController(atol=tol, rtol=tol, term=term)
            )
            y0 = torch.cat([x.flatten(1), torch.zeros(B, 1, dtype=x.dtype)], 1).double()
            ts = torch.full((B,), eps, dtype=torch.float64), torch.full((B,), T, dtype=torch.float64)
            sol = solver.solve(to.InitialValueProblem(y0=y0, t_start=ts[0], t_end=ts[1]))
            y = sol.ys[:, -1]
            nfe = int(sol.stats["n_f_evals"].max())
        return sde.prior_log_prob(y[:, :D].reshape(x.shape)).double() + y[:, D], nfe, nfe * B

    return solve


def solve_fn(case, lever: str, tol: float, seed: int):
    """A function that solves once: (log-likelihood float64, NFE, rows evaluated)."""
    score, sde, x, eps, div = case
    drawn = sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(seed))  # one draw, every lever
    probes = drawn if div == "hutchinson" else None
    kw = LEVERS[lever]
    if kw is None:

        def scipy():
            ll, nfe = scipy_log_likelihood(score, sde, x, div, drawn[0], eps=eps, rtol=tol, atol=tol)
            return ll.double(), nfe, nfe * x.shape[0]

        return scipy
    if kw.get("_torchode"):
        return torchode_fn(case, tol, probes)
    kw = dict(kw)
    if kw.pop("_bpd", False):
        kw.update({k: v for k, v in bpd_solver_defaults(sde).items() if k not in ("rtol", "atol")})
    if kw.pop("_channels_last", False):
        score = channels_last(score)
    batch = kw.pop("_batch", x.shape[0])
    stages = every_stage_full if kw.pop("_full_stages", False) else contextlib.nullcontext

    def ours():
        lls, nfe, evals = [], 0, 0
        for i in range(0, x.shape[0], batch):
            pr = None if probes is None else probes[:, i : i + batch]
            xb = x[i : i + batch]
            with stages():
                _, st = sp.log_likelihood(
                    score, sde, xb, eps, div, probes=pr, rtol=tol, atol=tol, return_stats=True, **kw
                )
            lls.append(st["prior_logp"].double() + st["delta_logp"].double())
            nfe += st["nfe"]
            evals += st.get("sample_evals", st["nfe"] * xb.shape[0])
        return torch.cat(lls), nfe, evals

    return ours


@contextlib.contextmanager
def every_stage_full():
    """log_likelihood's "rk" solve with the full evaluation (drift and divergence) at every
    stage, the inner ones too: the path the drift-only inner stages replaced, for timing."""
    import scorepde.likelihood as lik

    solve = lik.solve_batched
    lik.solve_batched = lambda *args, f_inner=None, **kw: solve(*args, **kw)
    try:
        yield
    finally:
        lik.solve_batched = solve


def draw_seed(args, draw: int) -> int:
    """The seed of draw ``draw``: its points (dequantization) use it, its probe the next one."""
    return args.seed + 2 * draw


def reference(case, args, name: str, draw: int = 0) -> torch.Tensor:
    """The tight solve every error is measured against, cached in --out (it is the slow part)."""
    path = os.path.join(args.out, f"reference_{name}" + (f"_draw{draw}" if draw else "") + ".pt")
    if os.path.exists(path):
        return torch.load(path)["ll"]
    score, sde, x, eps, div = case
    gen = torch.Generator().manual_seed(draw_seed(args, draw) + 1)
    tol = args.ref_tol
    print(f"{name}: the reference solve at tol {tol:g} (the slow part, once: cached in {path})", flush=True)
    ll, st = sp.log_likelihood(
        score, sde, x, eps, div, generator=gen, rtol=tol, atol=tol, solver="rk", return_stats=True
    )
    ll = st["prior_logp"].double() + st["delta_logp"].double()
    torch.save(dict(ll=ll, nfe=st["nfe"], tol=tol), path)
    return ll


def runs_here(lever: str, case) -> bool:
    """False for channels-last without a model (an nn.Module) and torchode when not installed."""
    kw = LEVERS[lever] or {}
    if kw.get("_channels_last") and not isinstance(case[0], torch.nn.Module):
        return False
    return not (kw.get("_torchode") and importlib.util.find_spec("torchode") is None)


def sweep(draws: list, args, name: str, levers: list, tols: list) -> list:
    """One row per (lever, tol) over the cases of ``draws`` (one per draw of the points and the
    probe): seconds (each draw's median of --repeats interleaved solves, summed), NFE and rows
    evaluated (summed), and the two errors in bits/dim against each draw's reference, averaged
    over the draws (the levers that ``runs_here``)."""
    levers = [v for v in levers if runs_here(v, draws[0])]
    refs = [reference(case, args, name, d) for d, case in enumerate(draws)]
    x = draws[0][2]
    bits = 1.0 / (x[0].numel() * math.log(2))
    rows = []
    for r, tol in enumerate(tols):
        order = levers if r % 2 == 0 else levers[::-1]
        per_draw = []
        for d, case in enumerate(draws):
            answers: dict = {}

            def keep(lever, fn, answers=answers):
                return lambda: answers.__setitem__(lever, fn())

            seed = draw_seed(args, d) + 1
            fns = {lever: keep(lever, solve_fn(case, lever, tol, seed)) for lever in order}
            times = interleaved_timings(
                fns,
                repeats=args.repeats or (5 if name == "mixture" else 1),
                warmup=0,
                progress=True,
                desc=f"{name}, tol {tol:g}" + (f", draw {d + 1} of {len(draws)}" if len(draws) > 1 else ""),
                clock=time.process_time,
            )
            per_draw.append({lever: (answers[lever], times[lever], (answers[lever][0] - refs[d]) * bits)
                             for lever in order})  # fmt: skip
        for lever in order:
            got = [pd[lever] for pd in per_draw]
            errors = [e for _, _, e in got]
            rows.append(dict(lever=lever, tol=tol, seconds=sum(statistics.median(ts) for _, ts, _ in got),
                             times=[t for _, ts, _ in got for t in ts],
                             nfe=sum(a[1] for a, _, _ in got), sample_evals=sum(a[2] for a, _, _ in got),
                             dataset_error=statistics.fmean(e.mean().abs().item() for e in errors),
                             image_error=statistics.fmean(e.abs().mean().item() for e in errors),
                             max_error=max(e.abs().max().item() for e in errors)))  # fmt: skip
        print(f"{name} tol={tol:g} load {load_average()}: " + ", ".join(
            f"{r['lever']} {r['seconds']:.2f} s {r['image_error']:.1e}" for r in rows[-len(order):]), flush=True)  # fmt: skip
    return rows


#: The two accuracy criteria: the issue's |Δ dataset bits/dim|, and with it the mean per-image |Δ|.
CRITERIA = {"dataset": ("dataset_error",), "dataset_and_image": ("dataset_error", "image_error")}


def meets(row, target, keys) -> bool:
    """Whether a row's errors ``keys`` (one criterion of ``CRITERIA``) are within the target."""
    return all(row[k] <= target[k] for k in keys)


def verdict(rows: list) -> dict:
    """Target from SciPy at 1e-5 and, per criterion of ``CRITERIA``, each lever's fastest
    point within it, with its speed-up over SciPy at 1e-5."""
    base = next(r for r in rows if r["lever"] == "scipy_rk45" and r["tol"] == 1e-5)
    target = {k: max(1e-4, 1.5 * base[k]) for k in ("dataset_error", "image_error")}
    best: dict = {c: {} for c in CRITERIA}
    for r in rows:
        for c, keys in CRITERIA.items():
            if meets(r, target, keys) and (
                r["lever"] not in best[c] or r["seconds"] < best[c][r["lever"]]["seconds"]
            ):
                best[c][r["lever"]] = dict(
                    tol=r["tol"], seconds=r["seconds"], speedup=base["seconds"] / r["seconds"]
                )
    return dict(target=target, scipy_seconds=base["seconds"], best=best)


def step_ceiling(ms: dict) -> tuple[float, float]:
    """SciPy RK45's step over dopri5's at equal rows, from one evaluation's ms: six evaluations
    of two forwards and a vjp each, against five forward + vjp and one drift-only forward (the
    inner stage, ``scorepde.rk.Tableau.inner``), and against six forward + vjp (every stage full).
    The most any speed-up can be without fewer rows than SciPy's."""
    scipy = 6 * ms["scipy_2fwd_vjp"]
    return scipy / (5 * ms["fwd_vjp"] + ms["fwd_no_grad"]), scipy / (6 * ms["fwd_vjp"])


def compile_break_even(res) -> float | None:
    """Images after which ``torch.compile`` pays: its compile seconds (two batch sizes; a
    per-sample solve meets many) over the seconds it saves an image (the ms it saves a row
    × the rows a solve at 1e-5 evaluates per image; the first of "default", "rk_sigma",
    "rk_per_sample" measured)."""
    ms = res.get("eval_ms") or {}
    rows = {r["lever"]: r for r in res["rows"] if r["tol"] == 1e-5}
    row = next((rows[k] for k in ("default", "rk_sigma", "rk_per_sample") if k in rows), None)
    if "fwd_vjp_compiled" not in ms or row is None or ms["fwd_vjp"] <= ms["fwd_vjp_compiled"]:
        return None
    # ms an evaluation of the whole batch (res["points"] rows) → seconds a row → seconds an image
    saved = (
        (ms["fwd_vjp"] - ms["fwd_vjp_compiled"]) / 1e3 / res["points"] * row["sample_evals"] / res["points"]
    )
    return (ms["compile_first_call_s"] + ms.get("compile_second_batch_s", 0.0)) / saved


def eval_costs(case, repeats: int = 7, compile_model: bool = False) -> dict:
    """ms per evaluation (this process's CPU, median of ``repeats`` interleaved calls) of the
    drift and divergence on the case's points: today's forward + vjp, SciPy's two forwards +
    vjp, channels-last, a plain forward under ``no_grad`` and under ``inference_mode`` (the
    one graph-free call a solve makes), ms per image at batch 1, 4, 16, 64, 256; with
    ``compile_model`` also a ``torch.compile``'d model (dynamic shapes): its first call at the
    case's batch and at half of it (the compile, seconds) and its ms per evaluation (static
    shapes; a failed compile is printed and skipped)."""
    model, sde, x, eps, div = case
    B = x.shape[0]
    probe = sample_probes(x, 1, "rademacher", torch.Generator().manual_seed(0))
    t = torch.full((B,), 0.5)
    vd = lambda m, y, v: value_and_divergence(lambda z: m(z, t[: y.shape[0]]), y, div, probes=v)

    def scipy_style():
        with torch.no_grad():
            model(x, t)
        return vd(model, x, probe)

    def forward(ctx):
        with ctx():
            return model(x, t)

    cl = channels_last(model)
    fns = {"fwd_vjp": lambda: vd(model, x, probe), "scipy_2fwd_vjp": scipy_style,
           "fwd_vjp_channels_last": lambda: vd(cl, x, probe),
           "fwd_no_grad": lambda: forward(torch.no_grad), "fwd_inference_mode": lambda: forward(torch.inference_mode)}  # fmt: skip
    out: dict = {}
    if compile_model:  # static shapes: dynamic=True failed in inductor on this U-Net (torch 2.13)
        cm = torch.compile(model, dynamic=False)
        try:
            out["compile_first_call_s"] = call_seconds(lambda: vd(cm, x, probe))[0]
            fns["fwd_vjp_compiled"] = lambda: vd(cm, x, probe)
            half = B // 2  # a per-sample solve shrinks the batch: each new size compiles again
            out["compile_second_batch_s"] = call_seconds(lambda: vd(cm, x[:half], probe[:, :half]))[0]
        except Exception as err:  # a compiler failure is a result here, not the end of the run
            print(f"torch.compile failed: {str(err)[:300]}", flush=True)

    def at_batch(b: int):
        xb, pb = x.repeat(-(-b // B), 1, 1, 1)[:b], probe.repeat(1, -(-b // B), 1, 1, 1)[:, :b]
        tb = torch.full((b,), 0.5)
        return lambda: value_and_divergence(lambda z: model(z, tb), xb, div, probes=pb)

    for b in (1, 4, 16, 64, 256):
        fns[f"per_image_batch{b}"] = at_batch(b)
    times = interleaved_timings(fns, repeats=repeats, warmup=1, clock=time.process_time)
    for name, ts in times.items():
        b = int(name.removeprefix("per_image_batch")) if name.startswith("per_image") else 1
        out[name] = 1e3 * statistics.median(ts) / b
    return out


def within(row, target) -> str:
    """Which criteria a row meets: "both", "dataset" (the issue's) or "no"."""
    if meets(row, target, CRITERIA["dataset_and_image"]):
        return "both"
    return "dataset" if meets(row, target, CRITERIA["dataset"]) else "no"


def table(metrics) -> str:
    """table.md: every (lever, tol) row per case, then each lever's best within the target."""
    info = metrics["machine"]
    lines = [f"{info['device_name']}, 1 thread, load average {info['load_average'][0]:.2f} at the start, "
             f"{metrics['load_average_end'][0]:.2f} at the end; errors in bits/dim against the rk solve at "
             f"tol {metrics['ref_tol']:g}.", ""]  # fmt: skip
    for name, res in metrics["cases"].items():
        res = dict(res, verdict=verdict(res["rows"]))  # derived again: older metrics had one criterion
        t = res["verdict"]["target"]
        data = f"{res['data']}: " if res.get("data") else ""  # the folder an mnist case read (Fashion too)
        draws = f" × {res['draws']} draws" if res.get("draws", 1) > 1 else ""
        lines += [f"**{name}** ({data}{res['points']} points{draws}, D = {res['dim']}); target: dataset error ≤ "
                  f"{t['dataset_error']:.2e}, per-image error ≤ {t['image_error']:.2e}.", ""]  # fmt: skip
        lines.append(markdown_table(
            ["lever", "tol", "seconds", "NFE", "rows evaluated", "dataset error", "per-image error", "within target",
             "× faster than SciPy at 1e-5"],
            ([r["lever"], f"{r['tol']:g}", f"{r['seconds']:.2f}", r["nfe"], r["sample_evals"],
              f"{r['dataset_error']:.2e}", f"{r['image_error']:.2e}",
              within(r, t),
              f"{res['verdict']['scipy_seconds'] / r['seconds']:.2f}"] for r in res["rows"]),
            "lrrrrrrlr"))  # fmt: skip
        lines.append("")
        for c, best in res["verdict"]["best"].items():
            lines += [f"Fastest within the target ({c.replace('_and_', ' and ')}): " + ", ".join(
                f"{k} {v['speedup']:.2f}× (tol {v['tol']:g})"
                for k, v in sorted(best.items(), key=lambda kv: -kv[1]["speedup"])), ""]  # fmt: skip
        if res.get("eval_ms"):
            lines += ["Cost of one evaluation (ms; per_image rows: ms per image; *_s: seconds): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in res["eval_ms"].items()), ""]  # fmt: skip
        if {"scipy_2fwd_vjp", "fwd_vjp", "fwd_no_grad"} <= set(res.get("eval_ms") or {}):
            inner, full = step_ceiling(res["eval_ms"])
            lines += [
                f"Per step at equal rows, SciPy's RK45 costs {inner:.2f}× dopri5's ({full:.2f}× with every stage "
                "full): "
                + (
                    f"3× needs {1 - inner / 3:.0%} fewer rows than SciPy's at equal error."
                    if inner < 3
                    else "3× needs no fewer rows than SciPy's."
                ),
                "",
            ]
        pays = compile_break_even(res)
        if pays is not None:
            lines += [
                f"torch.compile pays after {pays:.0f} images (its compile at two batch sizes over the time it "
                "saves an image).",
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


def figure(metrics, levers: list, path: str) -> str:
    """work_precision.png: error against seconds, one curve per lever, a panel per case and
    error measure, the target dashed (seconds summed over the draws where there are several)."""
    panels, targets = {}, {}
    for name, res in metrics["cases"].items():
        for key, label in (("dataset_error", "dataset"), ("image_error", "per image")):
            panels[f"{name}: {label}"] = {lever: [(r["seconds"], r[key]) for r in res["rows"] if r["lever"] == lever]
                                          for lever in levers}  # fmt: skip
            targets[f"{name}: {label}"] = res["verdict"]["target"][key]
    draws = max(res.get("draws", 1) for res in metrics["cases"].values())
    return work_precision(
        panels,
        targets,
        path,
        ylabel="|Δ bits/dim| against the reference",
        xlabel="CPU seconds per solve" if draws == 1 else f"CPU seconds, {draws} draws' solves summed",
    )


def build_cases(args, name: str) -> list:
    """The case ``name``, once per draw (``draw_seed``)."""
    seeds = [draw_seed(args, d) for d in range(args.draws)]
    if name == "mixture":
        return [mixture_case(8 if args.quick else 64, seed) for seed in seeds]
    ckpt = getattr(args, name)
    if not ckpt:
        raise SystemExit(f"error: --cases has {name}: pass its checkpoint with --{name} CKPT")
    n = args.images if name == "digits" else args.mnist_images
    return image_cases(ckpt, 2 if args.quick else n, seeds, args.data_dir, args.first_image)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.tols, args.ref_tol = "1e-3,1e-5", 1e-6
    tols = [float(v) for v in args.tols.split(",")]
    levers = [v for v in args.levers.split(",") if v]
    bad = [v for v in levers if v not in LEVERS] + [c for c in args.cases.split(",") if c not in CASES]
    if args.draws < 1:
        raise SystemExit(f"error: --draws must be at least 1, got {args.draws}")
    if bad or 1e-5 not in tols or "scipy_rk45" not in levers:
        raise SystemExit(
            f"error: unknown lever/case {bad}, or --tols lacks 1e-5, or --levers lacks scipy_rk45"
        )
    if args.device != "cpu":  # a GPU's work would not show in the host's CPU seconds
        raise SystemExit("error: --device cpu only: every solve is timed in this process's CPU seconds")
    setup_run(args)
    info = machine_info("cpu")
    cases = {}
    for name in args.cases.split(","):
        with user_errors():
            draws = build_cases(args, name)
        rows = sweep(draws, args, name, levers, tols)
        case = draws[0]
        cases[name] = dict(points=case[2].shape[0], dim=case[2][0].numel(), rows=rows, verdict=verdict(rows),
                           eval_ms=None if name == "mixture" or args.quick else eval_costs(case, compile_model=args.compile))  # fmt: skip
        if args.draws > 1:
            cases[name]["draws"] = args.draws
        if name == "mnist":  # the case is named by its flag; Fashion-MNIST runs under it too
            cases[name]["data"] = os.path.basename(os.path.normpath(args.data_dir))
    metrics = dict(cases=cases, tols=tols, ref_tol=args.ref_tol, machine=info, load_average_end=load_average(),
                   command=command_line("benchmarks/likelihood_cost.py", argv))  # fmt: skip
    write_report(args.out, metrics, table(metrics))
    figure(metrics, levers, os.path.join(args.out, "work_precision.png"))
    for name, res in cases.items():
        for c, best in res["verdict"]["best"].items():
            print(name, c, {k: round(v["speedup"], 2) for k, v in best.items()})


if __name__ == "__main__":
    main()
