"""Cost of the PF-ODE likelihood per image: one function evaluation (the score and a one-probe
Hutchinson divergence, what each ODE step of ``scorepde.log_likelihood`` does) of the
image/train.py default U-Net, on digits (8×8) and mnist-10k (28×28), to size test subsets.

    python benchmarks/pfode_cost.py [--data-dir ../shared/data/mnist-10k] [--nfe 800] [--repeats 5]

Prints ms per image per function evaluation and, for --nfe evaluations (a trained digits
model needs ≈ 800 at rtol 1e-5) and --repeats dequantization repeats, seconds per test image;
records the load average beside them. Writes --out/metrics.json.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, setup_run  # noqa: E402

from scorepde.data import load_dataset, to_model_space  # noqa: E402
from scorepde.derivatives import divergence, sample_probes  # noqa: E402
from scorepde.image_config import ImageConfig, build_score_model, build_sde, model_scaling  # noqa: E402


def main(argv=None):
    p = base_parser(__doc__, "benchmarks/results/pfode_cost", "one call per data set instead of 5")
    p.add_argument("--data-dir", default=None,
                   help="mnist-10k's folder (IDX files); without it only digits is measured")
    p.add_argument("--nfe", type=int, default=800, help="function evaluations per solve to scale to")
    p.add_argument("--repeats", type=int, default=5, help="dequantization repeats to scale to (paper: 5)")
    p.add_argument("--batch", type=int, nargs=2, default=[359, 16], metavar=("DIGITS", "MNIST"),
                   help="images per call for digits and mnist-10k")
    args = p.parse_args(argv)
    dev = setup_run(args)
    calls = 1 if args.quick else 5
    out = {"load_before": os.getloadavg()[0], "nfe": args.nfe, "repeats": args.repeats}
    sets = [("digits", None, args.batch[0])] + ([("mnist", args.data_dir, args.batch[1])] if args.data_dir else [])
    for name, ddir, B in sets:
        try:
            test = load_dataset(name, "test", ddir)
        except (FileNotFoundError, ValueError) as err:
            print(f"{name}: skipped ({err})")
            continue
        cfg = ImageConfig(dataset=name)
        sde = build_sde(cfg, test.shape)
        model = build_score_model(cfg, sde, test.shape).to(dev).eval()
        B = min(B, len(test))
        gen = torch.Generator().manual_seed(args.seed)
        x, _ = to_model_space(test.images[:B], test.levels, model_scaling(cfg), dequantized=True, generator=gen)
        x = x.to(dev)
        t = torch.full((B,), 0.5, device=dev)
        probes = sample_probes(x, 1, "rademacher", gen)
        divergence(lambda y: model(y, t), x, "hutchinson", probes=probes)       # warm-up
        t0 = time.perf_counter()
        for _ in range(calls):
            divergence(lambda y: model(y, t), x, "hutchinson", probes=probes)
        per = (time.perf_counter() - t0) / calls / B
        out[name] = {"shape": list(test.shape), "test_images": len(test), "batch": B,
                     "ms_per_image_per_nfe": per * 1e3,
                     "s_per_image_at_nfe_and_repeats": per * args.nfe * args.repeats}
        print(f"{name} {tuple(test.shape)}: {per * 1e3:.2f} ms per image per NFE (batch {B}); "
              f"{per * args.nfe * args.repeats:.0f} s per test image at NFE {args.nfe} × {args.repeats} repeats; "
              f"whole test split ({len(test)}): {per * args.nfe * args.repeats * len(test) / 3600:.2f} h", flush=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"load average {out['load_before']:.1f} → {out['load_after']:.1f} on {os.cpu_count()} cores")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
