"""Bits/dim of a whole test split, and how to cut it into solves: the same answer, which is fastest.

    python benchmarks/bpd_cost.py [--out DIR] [--quick] [--points N] [--repeats R]

An adaptive batched ODE solve takes one step size for the whole batch, so its hardest sample
sets every sample's NFE. This runs ``scorepde.evaluate_bpd`` on the same test points, with the
same dequantization noise and probes (same seed), cut four ways: the whole split in one solve,
chunks in the data's order, chunks sorted by difficulty (``order="sorted"``), and one solve
per sample. It reports bits/dim ± standard error, points, repeats, NFE and wall time of each,
and the largest per-sample difference from the one-solve answer. Model: the 8×8 U-Net of
``benchmarks/step_cost.py --quick``, trained briefly by DSM on sklearn's digits (train
split); data: the digits test split (359 images, 17 levels). Writes metrics.json and
table.md to --out.
"""

from __future__ import annotations

import torch

from scorepde.benchmarking import load_average, machine_info
from scorepde.bpd import evaluate_bpd
from scorepde.commands._bench import benchmark_parser, command_line, setup_run, train_briefly, write_report
from scorepde.commands.step_cost import build_unet
from scorepde.data import load_dataset, to_model_space
from scorepde.reporting import markdown_table


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/bpd_cost", "tiny sizes, for tests (well under a minute)")
    p.add_argument(
        "--points", type=int, default=None, help="test points (default: the whole split, 359; quick 12)"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="dequantization/probe repeats (default 2, quick 1)"
    )
    p.add_argument(
        "--chunk", type=int, default=None, help="chunk size of the chunked strategies (default 32, quick 4)"
    )
    p.add_argument(
        "--train-steps", type=int, default=None, help="DSM steps for the U-Net (default 1500, quick 5)"
    )
    p.add_argument("--tol", type=float, default=None, help="rtol = atol (default 1e-5, quick 1e-3)")
    p.add_argument(
        "--no-per-sample", action="store_true", help="skip the one-solve-per-sample strategy (the slowest)"
    )
    return p.parse_args(argv)


def trained_unet(args):
    """The quick step-cost U-Net after --train-steps DSM steps on the digits train split."""
    model = build_unet(True, "cpu", args.seed)
    data = load_dataset("digits", "train")
    x, _ = to_model_space(
        data.images,
        data.levels,
        "[-1,1]",
        dequantized=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    steps = args.train_steps if args.train_steps is not None else (5 if args.quick else 1500)
    train_briefly(
        model,
        x,
        steps,
        batch=64,
        generator=torch.Generator().manual_seed(args.seed),
        desc="DSM-train the U-Net",
    )
    return model.eval().requires_grad_(False)


def compare(results):
    """Each strategy against the one-solve answer: per-sample Δ, Δ in stderr, speed-up."""
    ref = torch.tensor(results["one_solve"]["per_sample"])
    # sorted order hands the probes to other samples: its per-sample Δ is probe noise
    for r in results.values():
        r["max_abs_diff_from_one_solve"] = (torch.tensor(r["per_sample"]) - ref).abs().max().item()
        r["bpd_diff_in_stderr"] = (
            abs(r["bpd"] - results["one_solve"]["bpd"]) / results["one_solve"]["bpd_stderr"]
        )
        r["speedup_over_one_solve"] = results["one_solve"]["seconds"] / r["seconds"]
    return results


def table(metrics) -> str:
    """table.md from a run's metrics.json."""
    results, info, one = metrics["strategies"], metrics["machine"], metrics["strategies"]["one_solve"]
    lines = [
        f"digits test split, {one['points']} points, {one['repeats']} repeat(s), Hutchinson, rtol = atol = "
        f"{metrics['tol']}; {info['cpu_model']}, 1 thread, load average "
        f"{', '.join(f'{v:.2f}' for v in info['load_average'])} at the start.",
        "",
    ]
    cells = lambda name, r: [
        name,
        r["solves"],
        f"{r['nfe']:.0f}",
        f"{r['bpd']:.4f}",
        f"{r['bpd_stderr']:.4f}",
        f"{r['bpd_diff_in_stderr']:.2f}",
        f"{r['seconds']:.1f}",
        f"{r['speedup_over_one_solve']:.2f}",
        f"{r['max_abs_diff_from_one_solve']:.1e}",
    ]
    lines.append(
        markdown_table(
            [
                "strategy",
                "solves",
                "mean NFE",
                "bits/dim",
                "± stderr",
                "\\|Δ bits/dim\\| / stderr",
                "seconds",
                "× faster than one solve",
                "max per-sample Δ (bits)",
            ],
            (cells(name, r) for name, r in results.items()),
            "lrrrrrrrr",
        )
    )
    return "\n".join(lines) + (
        "\n\nSame seed for every strategy: the same dequantization noise, "
        "and the same probes except under sorted order, which hands them to other samples.\n"
    )


def main(argv=None):
    args = parse_args(argv)
    setup_run(args)
    info = machine_info("cpu")
    model = trained_unet(args)
    test = load_dataset("digits", "test")
    k = test.images[: args.points or (12 if args.quick else test.images.shape[0])]
    chunk = args.chunk or (4 if args.quick else 32)
    tol = args.tol or (1e-3 if args.quick else 1e-5)
    strategies = {
        "one_solve": dict(batch_size=None),
        "chunks": dict(batch_size=chunk),
        "chunks_sorted": dict(batch_size=chunk, order="sorted"),
    }
    if not args.no_per_sample:
        strategies["per_sample"] = dict(batch_size=1)
    results = {}
    for name, kw in strategies.items():
        out = evaluate_bpd(
            model,
            model.sde,
            k,
            test.levels,
            2.0,
            -1.0,
            repeats=args.repeats or (1 if args.quick else 2),
            div="hutchinson",
            generator=torch.Generator().manual_seed(args.seed),
            progress=True,
            rtol=tol,
            atol=tol,
            **kw,
        )
        results[name] = dict(
            kw,
            **{
                key: out[key]
                for key in ("bpd", "bpd_stderr", "bpd_std", "points", "repeats", "seconds", "nfe", "solves")
            },
            per_sample=out["per_sample"],
        )
        print(
            f"{name}: {out['bpd']:.4f} ± {out['bpd_stderr']:.4f} bits/dim ({out['points']} points, "
            f"{out['repeats']} repeats, {out['seconds']:.1f} s, mean NFE {out['nfe']:.0f})"
        )
    info["load_average_end"] = load_average()
    results = compare(results)
    metrics = dict(
        fastest=min(results, key=lambda name: results[name]["seconds"]),
        strategies=results,
        tol=tol,
        chunk=chunk,
        machine=info,
        command=command_line("benchmarks/bpd_cost.py", argv),
    )
    write_report(args.out, metrics, table(metrics))


if __name__ == "__main__":
    main()
