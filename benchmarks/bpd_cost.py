"""Bits/dim of a whole test split, and how to cut it into solves: the same answer, which is fastest.

    python benchmarks/bpd_cost.py [--out DIR] [--quick] [--points N] [--repeats R]

An adaptive batched ODE solve takes one step size for the whole batch, so its hardest sample
sets every sample's NFE. This runs ``scorepde.evaluate_bpd`` on the same test points, with the
same dequantization noise and probes (same seed), cut four ways: the whole split in one solve,
chunks in the data's order, chunks sorted by difficulty (``order="sorted"``), and one solve
per sample. It reports bits/dim ± standard error, points, repeats, NFE and wall time of each,
and the largest per-sample difference from the one-solve answer. Model: the 8×8 U-Net of
``step_cost.py --quick``, trained briefly by DSM on sklearn's digits (train split); data: the
digits test split (359 images, 17 levels). Writes metrics.json and table.md to --out.
"""
from __future__ import annotations

import json
import os
import sys

import torch
from tqdm.auto import tqdm

from scorepde.benchmarking import machine_info
from scorepde.bpd import evaluate_bpd
from scorepde.data import load_dataset, to_model_space
from scorepde.losses import dsm_loss
from scorepde.training import make_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, setup_run  # noqa: E402
from step_cost import build_unet  # noqa: E402


def parse_args(argv=None):
    p = base_parser(__doc__, "runs/bpd_cost", "tiny sizes, for tests (well under a minute)")
    p.add_argument("--points", type=int, default=None, help="test points (default: the whole split, 359; quick 12)")
    p.add_argument("--repeats", type=int, default=None, help="dequantization/probe repeats (default 2, quick 1)")
    p.add_argument("--chunk", type=int, default=None, help="chunk size of the chunked strategies (default 32, quick 4)")
    p.add_argument("--train-steps", type=int, default=None, help="DSM steps for the U-Net (default 1500, quick 5)")
    p.add_argument("--tol", type=float, default=None, help="rtol = atol (default 1e-5, quick 1e-3)")
    p.add_argument("--no-per-sample", action="store_true", help="skip the one-solve-per-sample strategy (the slowest)")
    return p.parse_args(argv)


def trained_unet(args):
    model = build_unet(True, "cpu", args.seed)
    data = load_dataset("digits", "train")
    x, _ = to_model_space(data.images, data.levels, "[-1,1]", dequantized=True,
                          generator=torch.Generator().manual_seed(args.seed))
    opt, _ = make_optimizer(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(args.seed)
    steps = args.train_steps if args.train_steps is not None else (5 if args.quick else 1500)
    for _ in tqdm(range(steps), desc="DSM-train the U-Net"):
        loss = dsm_loss(model, model.sde, x[torch.randint(0, x.shape[0], (64,), generator=g)], generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def main(argv=None):
    args = parse_args(argv)
    setup_run(args)
    info = machine_info("cpu")
    model = trained_unet(args)
    test = load_dataset("digits", "test")
    n = args.points or (12 if args.quick else test.images.shape[0])
    k = test.images[:n]
    chunk = args.chunk or (4 if args.quick else 32)
    tol = args.tol or (1e-3 if args.quick else 1e-5)
    repeats = args.repeats or (1 if args.quick else 2)
    strategies = {"one_solve": dict(batch_size=None), "chunks": dict(batch_size=chunk),
                  "chunks_sorted": dict(batch_size=chunk, order="sorted")}
    if not args.no_per_sample:
        strategies["per_sample"] = dict(batch_size=1)
    results = {}
    for name, kw in strategies.items():
        out = evaluate_bpd(model, model.sde, k, test.levels, 2.0, -1.0, repeats=repeats, div="hutchinson",
                           generator=torch.Generator().manual_seed(args.seed), progress=True,
                           rtol=tol, atol=tol, **kw)
        results[name] = dict(kw, **{key: out[key] for key in ("bpd", "bpd_stderr", "bpd_std", "points",
                                                              "repeats", "seconds", "nfe", "solves")},
                             per_sample=out["per_sample"])
        print(f"{name}: {out['bpd']:.4f} ± {out['bpd_stderr']:.4f} bits/dim ({out['points']} points, "
              f"{out['repeats']} repeats, {out['seconds']:.1f} s, mean NFE {out['nfe']:.0f})")
    ref = torch.tensor(results["one_solve"]["per_sample"])
    for r in results.values():  # sorted order hands the probes to other samples: its per-sample Δ is probe noise
        r["max_abs_diff_from_one_solve"] = (torch.tensor(r["per_sample"]) - ref).abs().max().item()
        r["bpd_diff_in_stderr"] = abs(r["bpd"] - results["one_solve"]["bpd"]) / results["one_solve"]["bpd_stderr"]
        r["speedup_over_one_solve"] = results["one_solve"]["seconds"] / r["seconds"]
    fastest = min(results, key=lambda name: results[name]["seconds"])
    info["load_average_end"] = list(os.getloadavg())
    metrics = dict(fastest=fastest, strategies=results, tol=tol, chunk=chunk, machine=info,
                   command=" ".join(["python", "benchmarks/bpd_cost.py"] + (sys.argv[1:] if argv is None else list(argv))))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    lines = [f"digits test split, {n} points, {repeats} repeat(s), Hutchinson, rtol = atol = {tol}; "
             f"{info['cpu_model']}, 1 thread, load average {', '.join(f'{v:.2f}' for v in info['load_average'])} "
             "at the start.", "",
             "| strategy | solves | mean NFE | bits/dim | ± stderr | \\|Δ bits/dim\\| / stderr | seconds | "
             "× faster than one solve | max per-sample Δ (bits) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['solves']} | {r['nfe']:.0f} | {r['bpd']:.4f} | {r['bpd_stderr']:.4f} | "
                     f"{r['bpd_diff_in_stderr']:.2f} | {r['seconds']:.1f} | {r['speedup_over_one_solve']:.2f} | {r['max_abs_diff_from_one_solve']:.1e} |")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n\nSame seed for every strategy: the same dequantization noise, "
                "and the same probes except under sorted order, which hands them to other samples.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
