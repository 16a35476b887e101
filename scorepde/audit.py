"""Audit a score model: how far is it from the score FPE, and where in t?

    python -m scorepde.audit --model package.module:factory --data digits --out runs/audit
    python -m scorepde.audit --model runs/image/checkpoint.pt --quick

``--model``: a Python factory returning ``(score, sde)`` (e.g. ``scorepde.from_diffusers(unet,
scheduler)``), or a checkpoint written by image/train.py. On held-out data x_0 pushed to each
t of a log grid (x_t = a(t) x_0 + σ_t z), it reports, each as mean ± standard error over
the samples (the error includes the estimator's own noise):

  r_fp    sqrt E‖ε[s](x_t, t)‖²       the score-FPE residual (Eq. 9; Sec. 3.1, Fig. 1)
  r_dsm   sqrt E‖s + z/σ_t‖²          the DSM-like residual (Sec. 3.1, Fig. 1)
  curl    sqrt E‖J − Jᵀ‖_F²           antisymmetry of J = ∂s/∂x (Sec. 6.2)
  abs_L   E|L[s](x_t, t)|             the right-hand side of Eq. 7

Root mean squares, not the paper's mean norms: ‖ε‖² and ‖J − Jᵀ‖² have unbiased cheap
estimators (``residual_norm_sq``, Hutchinson), ‖ε‖ has none; E‖·‖ ≤ sqrt E‖·‖². The
standard error of a root is the delta method's, se(m)/(2 sqrt m). Writes metrics.json and
audit.png (the curves over t, log axes) to --out. All math is in scorepde.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .autodiff import explained
from .curl import antisymmetry
from .curves import dsm_like, perturb_at
from .fpe import ESTIMATORS, get_estimator, residual_norm_sq
from .sde import SDE
from .stats import standard_error

__all__ = ["audit", "load_model", "main"]

QUANTITIES = {"r_fp": "r_FP (score FPE)", "r_dsm": "r_DSM-like", "curl": "curl ‖J − Jᵀ‖_F",
              "abs_L": "|L[s]|"}


def _mean_se(values: List[torch.Tensor]) -> Dict[str, float]:
    v = torch.cat(values).double()
    return {"mean": v.mean().item(), "se": standard_error(v)}


def _root(ms: Dict[str, float]) -> Dict[str, float]:
    """sqrt of a mean square with the delta-method error; 0 where the estimate is ≤ 0."""
    m = max(ms["mean"], 0.0)
    r = math.sqrt(m)
    return {"mean": r, "se": ms["se"] / (2 * r) if r > 0 else float("nan"),
            "mean_sq": ms["mean"], "mean_sq_se": ms["se"]}


def audit(score: Callable, sde: SDE, x0: torch.Tensor, ts: Sequence[float], *,
          estimator: str = "forward_fd", curl: str = "hutchinson", batch_size: int = 32,
          generator: Optional[torch.Generator] = None, progress: bool = True, **options) -> Dict:
    """The audit's numbers on the grid ``ts`` for held-out ``x0 [N, ...]`` (module docstring).

    ``estimator`` (and ``options``) go to ``scorepde.residual_norm_sq``, with the SDE's
    ``fd_h`` as the steps in t where it has one (``DiscreteVPSDE``); ``curl`` is the
    method of ``scorepde.antisymmetry`` (``"exact"``, ``"hutchinson"``) or ``None`` to skip it.
    Returns ``{"t": [...], name: [{"mean", "se", ...} per t]}``.
    """
    from tqdm.auto import tqdm
    if any(not 0 < t <= sde.T for t in ts):
        raise ValueError(f"every t must lie in (0, {sde.T}], got {list(ts)}")
    chunks = x0.split(batch_size)
    # a DDPM network's clock: finite differences in t need steps of a fraction of one step k
    uses_stencil = get_estimator(estimator, **options).time_stencil is not None
    step = {"h": sde.fd_h} if hasattr(sde, "fd_h") and uses_stencil and "h" not in options else {}
    out = {"t": [float(t) for t in ts], **{k: [] for k in QUANTITIES}}
    bar = tqdm(total=len(ts) * len(chunks), desc="audit", disable=not progress)
    for t in ts:
        parts = {k: [] for k in QUANTITIES}
        for chunk in chunks:
            xt, tt, z = perturb_at(sde, chunk, t, generator)
            sq, L = residual_norm_sq(score, sde, xt, tt, estimator, generator=generator, **step, **options)
            parts["r_fp"].append(sq.detach())
            parts["abs_L"].append(L.detach().abs())
            parts["r_dsm"].append(dsm_like(score, sde, xt, tt, z) ** 2)
            if curl is not None:
                with explained(f"the curl (antisymmetry, {curl!r})"):
                    parts["curl"].append(antisymmetry(score, xt, tt, curl, generator=generator).detach())
            bar.update(1)
        for k in ("r_fp", "r_dsm", "curl"):
            out[k].append(_root(_mean_se(parts[k])) if parts[k] else None)
        out["abs_L"].append(_mean_se(parts["abs_L"]))
    bar.close()
    return out


def load_model(spec: str, device="cpu", *, trust: bool = False):
    """``(score, sde, scaling or None, dataset or None)`` from ``module:factory`` or a checkpoint
    (opened without running code unless ``trust``: ``scorepde.checkpoints``)."""
    if os.path.isfile(spec):
        from .image_config import load_trained, model_scaling
        from .checkpoints import load_checkpoint
        from .data import load_dataset
        state = load_checkpoint(spec, map_location=device, trust=trust)
        config = state.get("config", {})
        shape = load_dataset(config.get("dataset", "digits"), "test", config.get("data_dir")).shape
        cfg, sde, model = load_trained(state, shape, "ema", device)
        return model, sde, model_scaling(cfg), cfg.dataset
    if ":" not in spec:
        raise ValueError(f"--model must be package.module:factory or a checkpoint file, got {spec!r} "
                         "(no such file, and no ':')")
    module_name, name = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load {spec!r}: {err}; run from the folder that holds the module, "
                         "or put it on PYTHONPATH") from None
    if not callable(factory):
        raise ValueError(f"{spec} is a {type(factory).__name__}, not a factory; --model needs a function "
                         "that returns (score, sde)")
    made = factory()
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0]) and isinstance(made[1], SDE)):
        raise ValueError(f"{spec} must return (score, sde), e.g. scorepde.from_diffusers(unet, scheduler); "
                         f"got {type(made).__name__}")
    score, sde = made
    if isinstance(score, torch.nn.Module):
        score = score.to(device).eval()
    return score, sde, None, None


def _load_data(name: str, scaling: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n held-out samples [n, ...]: the test split of a named dataset, or a saved tensor."""
    if os.path.isfile(name):
        from .checkpoints import read_torch_file
        x = (read_torch_file(name, what="tensor file", hint="Save the data as one tensor: torch.save(x, path)")
             if name.endswith(".pt") else torch.from_numpy(np.load(name)))
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"{name} must hold one tensor [N, ...] in the model's space")
        x = x.float()
    else:
        from .data import load_dataset, to_model_space
        test = load_dataset(name, "test")
        x = to_model_space(test.images, test.levels, scaling)[0]
    idx = torch.randperm(x.shape[0], generator=generator)[:n]
    return x[idx]


def _plot(result: Dict, path: str, title: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in QUANTITIES.items():
        rows = result[key]
        if not rows or rows[0] is None:
            continue
        y = np.array([r["mean"] for r in rows])
        se = np.nan_to_num(np.array([r["se"] for r in rows]))
        keep = y > 0
        ax.errorbar(np.array(result["t"])[keep], y[keep], yerr=np.minimum(se[keep], 0.999 * y[keep]),
                    label=label, marker=".", capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("root mean square (|L|: mean)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m scorepde.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="package.module:factory returning (score, sde), or an image/train.py checkpoint")
    p.add_argument("--data", help="held-out data: a dataset name (digits, mnist, fashion-mnist, …; its test "
                                  "split) or a .pt/.npy tensor [N, ...] in the model's space "
                                  "(default: a checkpoint's own dataset)")
    p.add_argument("--scaling", default="[-1,1]",
                   help="model space of a named dataset: [-1,1] (diffusers/DDPM, default) or [0,1]; "
                        "a checkpoint uses its own")
    p.add_argument("--out", default="runs/audit", help="output folder for metrics.json and audit.png")
    p.add_argument("--n", type=int, default=64, help="held-out samples (default 64; --quick: 16)")
    p.add_argument("--times", type=int, default=12, help="points of the log grid in t (default 12; --quick: 5)")
    p.add_argument("--t-min", type=float,
                   help="smallest t (default: 10/N, step k = 9, for a DiscreteVPSDE, else 1e-2·T; "
                        "nearer t = 0 the score moves like 1/σ_t)")
    p.add_argument("--estimator", default="forward_fd", choices=sorted(ESTIMATORS),
                   help="estimator of ‖ε‖² (default forward_fd: plain forward passes, any model)")
    p.add_argument("--curl", default="hutchinson", choices=["hutchinson", "exact", "none"],
                   help="‖J − Jᵀ‖_F² by one Hutchinson probe per sample (default), exactly, or not at all")
    p.add_argument("--batch-size", type=int, default=32, help="samples per call of the model")
    p.add_argument("--quick", action="store_true", help="a smoke run: 16 samples, 5 times")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subset, noise and probes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="open a --model checkpoint that needs code to load (one you made yourself with an "
                        "older scorepde); never for a file from someone else")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.times = min(args.n, 16), min(args.times, 5)
    if args.n < 2 or args.times < 1 or args.batch_size < 1:
        p.error("--n must be >= 2 (for a standard error), --times and --batch-size >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    try:
        score, sde, scaling, dataset = load_model(args.model, trust=args.trust_checkpoint)
        data = args.data or dataset
        if data is None:
            raise ValueError("--data is required for a factory model: a dataset name or a tensor file")
        x0 = _load_data(data, scaling or args.scaling, args.n, gen)
        t_min = args.t_min or (float(sde.time(9)) if hasattr(sde, "time") else 1e-2 * sde.T)
        if not 0 < t_min < sde.T:
            raise ValueError(f"--t-min must lie in (0, {sde.T}), got {t_min}")
        ts = np.geomspace(t_min, sde.T, args.times).tolist() if args.times > 1 else [sde.T]
        try:
            with torch.no_grad():
                score(x0[:2], torch.full((2,), ts[0]))
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"the model does not accept the data's shape {tuple(x0.shape[1:])}: "
                             f"{str(err).splitlines()[0]}") from None
        result = audit(score, sde, x0, ts, estimator=args.estimator,
                       curl=None if args.curl == "none" else args.curl, batch_size=args.batch_size,
                       generator=gen, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    metrics = {"model": args.model, "data": data, "n": int(x0.shape[0]), "shape": list(x0.shape[1:]),
               "sde": repr(sde), "estimator": args.estimator, "curl": args.curl, "seed": args.seed,
               "definitions": {k: v for k, v in QUANTITIES.items()}, **result,
               "wall_s": round(time.time() - start, 2), "command": " ".join(sys.argv)}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    _plot(result, os.path.join(args.out, "audit.png"), f"{args.model} on {data} ({args.estimator})")
    for i, t in enumerate(result["t"]):
        cells = [f"{k} {result[k][i]['mean']:.4g} ± {result[k][i]['se']:.2g}"
                 for k in QUANTITIES if result[k][i] is not None]
        print(f"t={t:.4g}  " + "  ".join(cells))
    print(f"wrote {os.path.join(args.out, 'metrics.json')} and audit.png ({metrics['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
