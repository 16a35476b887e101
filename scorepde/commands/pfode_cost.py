"""Cost of the PF-ODE likelihood per image: one function evaluation (the score and a one-probe
Hutchinson divergence, what each ODE step of ``scorepde.log_likelihood`` does) of the
image/train.py default U-Net, on digits (8×8) and mnist-10k (28×28), to size test subsets.

    python benchmarks/pfode_cost.py [--data-dir ../shared/data/mnist-10k] [--nfe 800] [--repeats 5]

Prints ms per image per function evaluation and, for --nfe evaluations (a trained digits
model needs ≈ 800 at rtol 1e-5) and --repeats dequantization repeats, seconds per test image;
records the load average beside them. Writes --out/metrics.json (default runs/pfode_cost).
"""

import os

import torch

from scorepde.benchmarking import call_seconds, load_average
from scorepde.commands._bench import benchmark_parser, command_line, setup_run, write_report
from scorepde.data import load_dataset, to_model_space
from scorepde.derivatives import divergence, sample_probes
from scorepde.image_config import ImageConfig, build_score_model, build_sde, model_scaling


def parse_args(argv=None):
    p = benchmark_parser(__doc__, "runs/pfode_cost", "one call per data set instead of 5")
    p.add_argument(
        "--data-dir", default=None, help="mnist-10k's folder (IDX files); without it only digits is measured"
    )
    p.add_argument("--nfe", type=int, default=800, help="function evaluations per solve to scale to")
    p.add_argument("--repeats", type=int, default=5, help="dequantization repeats to scale to (paper: 5)")
    p.add_argument(
        "--batch",
        type=int,
        nargs=2,
        default=[359, 16],
        metavar=("DIGITS", "MNIST"),
        help="images per call for digits and mnist-10k",
    )
    return p.parse_args(argv)


def seconds_per_image(name, test, batch, calls, seed, dev):
    """Seconds per image of one evaluation (score + one-probe Hutchinson divergence) of the
    default image U-Net for ``name``, on ``batch`` dequantized test images at t = 0.5."""
    cfg = ImageConfig(dataset=name)
    sde = build_sde(cfg, test.shape)
    model = build_score_model(cfg, sde, test.shape).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    x, _ = to_model_space(
        test.images[:batch], test.levels, model_scaling(cfg), dequantized=True, generator=gen
    )
    x = x.to(dev)
    t = torch.full((batch,), 0.5, device=dev)
    probes = sample_probes(x, 1, "rademacher", gen)
    call = lambda: divergence(lambda y: model(y, t), x, "hutchinson", probes=probes)
    call()  # warm-up
    return sum(call_seconds(call, calls)) / calls / batch


def main(argv=None):
    args = parse_args(argv)
    dev = setup_run(args)
    out = {"load_before": load_average()[0], "nfe": args.nfe, "repeats": args.repeats}
    sets = [("digits", None, args.batch[0])] + (
        [("mnist", args.data_dir, args.batch[1])] if args.data_dir else []
    )
    for name, ddir, B in sets:
        try:
            test = load_dataset(name, "test", ddir)
        except (FileNotFoundError, ValueError) as err:
            print(f"{name}: skipped ({err})")
            continue
        B = min(B, len(test))
        per = seconds_per_image(name, test, B, 1 if args.quick else 5, args.seed, dev)
        out[name] = {
            "shape": list(test.shape),
            "test_images": len(test),
            "batch": B,
            "ms_per_image_per_nfe": per * 1e3,
            "s_per_image_at_nfe_and_repeats": per * args.nfe * args.repeats,
        }
        print(
            f"{name} {tuple(test.shape)}: {per * 1e3:.2f} ms per image per NFE (batch {B}); "
            f"{per * args.nfe * args.repeats:.0f} s per test image at NFE {args.nfe} × {args.repeats} repeats; "
            f"whole test split ({len(test)}): {per * args.nfe * args.repeats * len(test) / 3600:.2f} h",
            flush=True,
        )
    out["load_after"] = load_average()[0]
    out["command"] = command_line("benchmarks/pfode_cost.py", argv)
    print(f"load average {out['load_before']:.1f} → {out['load_after']:.1f} on {os.cpu_count()} cores")
    write_report(args.out, out, indent=1)
    return out


if __name__ == "__main__":
    main()
