"""The price of the FP regularizer: time and peak memory per optimizer step, against DSM.

    python benchmarks/step_cost.py [--out DIR] [--quick] [--device cpu|cuda]

One U-Net, one batch and one data set for every configuration: vanilla DSM, the published
recipe (``estimator="paper"``: 3-point stencil in t, one Gaussian Hutchinson probe by vjp,
double backward, full batch), each of scorepde's estimators on the full batch, and
scorepde's default ``losses.DEFAULT_FP``. (The exact residual, D Jacobian-vector products
per sample, is left out: at D = 784 it is hundreds of times a DSM step.) Steps are interleaved (A B C …, … C B A) after a
warmup and summarised by medians; every ratio comes from the same run. Then a short toy
experiment (2-D Gaussian mixture, exact residual) checks that the default keeps the
regularizer's effect. Writes metrics.json, table.md and step_cost.png to --out.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

import scorepde as sp
from scorepde.benchmarking import interleaved_timings, machine_info, peak_memory, summarize
from scorepde.data import load_dataset, to_model_space
from scorepde.losses import DEFAULT_FP, FPObjective, dsm_loss, sample_time
from scorepde.nn import MLPScore, ScoreModel, UNet
from scorepde.training import fit, make_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, setup_run  # noqa: E402

#: MNIST as shipped beside the repository (see ../shared/data/README.md); --data-dir overrides.
MNIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist-10k")
FP = dict(beta=0.1, fp_weighting="g2", m=2)  # the paper's CIFAR-10 form (Table 6), m = 2

#: name → (FPObjective keyword arguments, description). Plug-in ‖ε̂‖² (one draw) throughout.
CONFIGS = {
    "dsm": (dict(), "vanilla DSM"),
    "paper": (dict(FP, estimator="paper", unbiased=False), "published recipe: fd3 + Gaussian vjp Hutchinson, double backward, full batch"),
    "hutchinson": (dict(FP, estimator="hutchinson", unbiased=False), "exact ∂t (jvp) + Rademacher jvp Hutchinson, reverse ∇L, full batch"),
    "directional": (dict(FP, estimator="directional", unbiased=False), "Eq. 24 by nested forward mode, full batch"),
    "forward_fd": (dict(FP, estimator="forward_fd", unbiased=False), "Eq. 24 by central differences, one batched forward, full batch"),
    "default": (dict(FP, **DEFAULT_FP), f"scorepde default DEFAULT_FP = {DEFAULT_FP}"),
}


def parse_args(argv=None):
    p = base_parser(__doc__, "runs/step_cost", "tiny sizes, for tests (well under a minute)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 32, quick 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    p.add_argument("--effect-steps", type=int, default=None, help="toy training steps per model (default 1500, quick 30)")
    p.add_argument("--data-dir", default=MNIST_DIR,
                   help="folder with MNIST IDX files (default: ../shared/data/mnist-10k); digits if absent")
    return p.parse_args(argv)


def image_batch(quick: bool, batch: int, device, seed: int, mnist_dir: str = MNIST_DIR) -> torch.Tensor:
    """MNIST (28×28) when the files are there, else sklearn's 8×8 digits; quick: digits."""
    name, data_dir = ("mnist", mnist_dir) if not quick and os.path.isdir(mnist_dir) else ("digits", None)
    data = load_dataset(name, "train", data_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:batch]
    x, _ = to_model_space(data.images[idx], data.levels, "[-1,1]", generator=g)
    return x.to(device), name


def build_unet(quick: bool, device, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = UNet(1, channels=8 if quick else 16, channel_mult=(1, 2) if quick else (1, 2, 2),
               num_res_blocks=1, attention=True, embedding="sinusoidal")
    return ScoreModel(net, sp.VPSDE()).to(device)


def step_fn(objective, optimizer, x0, seed):
    def step():
        loss, _ = objective(x0, torch.Generator(device=x0.device).manual_seed(seed))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def time_steps(args, device):
    batch = args.batch or (8 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 5)
    model = build_unet(args.quick, device, args.seed)
    x0, data_name = image_batch(args.quick, batch, device, args.seed, args.data_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the model stays the same
    objectives = {name: FPObjective(model, model.sde, **kw) for name, (kw, _) in CONFIGS.items()}
    fns = {name: step_fn(obj, optimizer, x0, args.seed) for name, obj in objectives.items()}
    times = interleaved_timings(fns, repeats=repeats, warmup=1, device=device, progress=True,
                                desc=f"steps ({device})")
    memory = {}
    for name in CONFIGS:
        memory[name] = peak_memory(fns[name], device)
    dsm = statistics.median(times["dsm"])
    rows = {}
    for name, (kw, desc) in CONFIGS.items():
        med = statistics.median(times[name])
        k = objectives[name].fp_batch_size(batch) if objectives[name].regularized else 0
        rows[name] = dict(description=desc, residual_samples=k, time=summarize(times[name]),
                          ratio_to_dsm=med / dsm,
                          per_sample_seconds=(med - dsm) / k if k else None,
                          peak_bytes=memory[name], memory_ratio_to_dsm=memory[name] / max(memory["dsm"], 1),
                          times=times[name])
    paper_ps = rows["paper"]["per_sample_seconds"]
    for row in rows.values():
        ps = row["per_sample_seconds"]
        row["per_sample_ratio_to_paper"] = ps / paper_ps if ps is not None else None
    setup = dict(data=data_name, image_shape=list(x0.shape[1:]), batch=batch, repeats=repeats, warmup=1,
                 parameters=sum(p.numel() for p in model.parameters()), sde="VPSDE", fp=FP,
                 memory_measure=("torch.cuda.max_memory_allocated above the start" if device.type == "cuda"
                                 else "peak live tensor bytes from torch.profiler allocation records"))
    return rows, setup


def default_effect(args, device):
    """Train an MLP on a 2-D mixture by DSM, DSM + paper recipe, DSM + default; compare the
    exact E‖ε‖² and the held-out DSM loss (each from scorepde)."""
    steps = args.effect_steps or (30 if args.quick else 1500)
    sde = sp.VPSDE()
    gmm = sp.GaussianMixture([[-2.0, -1.0], [3.0, 2.0], [0.5, 4.0]], [0.3, 0.5, 0.4], [0.2, 0.5, 0.3])
    g = torch.Generator().manual_seed(args.seed + 1)
    x_eval = gmm.sample(2000 if not args.quick else 200, generator=g).to(device)
    t_eval = sample_time(x_eval.shape[0], sde, 1e-2, generator=g).to(device)
    xt_eval = sde.perturb(x_eval, t_eval, torch.randn(x_eval.shape, generator=g).to(device))
    runs = {"dsm": dict(), "paper": dict(FP, estimator="paper", unbiased=False),
            "default": dict(FP, **DEFAULT_FP)}
    out = {}
    for name, kw in runs.items():
        torch.manual_seed(args.seed)
        model = MLPScore(2, hidden=64, depth=3).to(device)
        objective = FPObjective(model, sde, **kw)
        opt, sched = make_optimizer(model.parameters(), lr=2e-3, warmup=50)
        gen = torch.Generator().manual_seed(args.seed + 2)

        def batches():
            while True:
                yield gmm.sample(256, generator=gen).to(device)

        start = time.perf_counter()
        fit(objective, opt, batches(), steps, generator=gen, scheduler=sched, desc=f"toy {name}")
        seconds = time.perf_counter() - start
        r_fp = sp.residual_norm_sq(model, sde, xt_eval, t_eval, "exact", validate=False)[0].detach()
        held_out = dsm_loss(model, sde, x_eval, eps=1e-2, generator=torch.Generator().manual_seed(9)).item()
        out[name] = dict(residual_sq_mean=r_fp.mean().item(), residual_sq_median=r_fp.median().item(),
                         heldout_dsm=held_out, train_seconds=seconds, steps=steps, objective=kw)
    return out


def write_table(rows, setup, info, effect, path):
    lines = [f"Device: {info['device_name']} ({info['device']}, {info['torch_threads']} thread(s)); "
             f"data {setup['data']} {setup['image_shape']}, batch {setup['batch']}, U-Net "
             f"{setup['parameters']:,} parameters; medians of {setup['repeats']} interleaved steps.", "",
             "| configuration | residual samples | step (s, median) | × DSM | per residual sample (s) | "
             "per sample × paper | peak memory (MB) | memory × DSM |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        ps = "–" if r["per_sample_seconds"] is None else f"{r['per_sample_seconds']:.4f}"
        pr = "–" if r["per_sample_ratio_to_paper"] is None else f"{r['per_sample_ratio_to_paper']:.2f}"
        lines.append(f"| {name} | {r['residual_samples']} | {r['time']['median']:.3f} | "
                     f"{r['ratio_to_dsm']:.2f} | {ps} | {pr} | {r['peak_bytes'] / 1e6:.1f} | "
                     f"{r['memory_ratio_to_dsm']:.2f} |")
    lines += ["", "Per residual sample = (step − DSM step) / residual samples. Memory: "
              + setup["memory_measure"] + ".", "",
              "Effect on a 2-D Gaussian mixture (MLP, VP SDE, same β, exact residual on held-out x_t):", "",
              "| training | E‖ε‖² (mean) | ‖ε‖² (median) | held-out DSM loss | train time (s) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, e in effect.items():
        lines.append(f"| {name} | {e['residual_sq_mean']:.4g} | {e['residual_sq_median']:.4g} | "
                     f"{e['heldout_dsm']:.4f} | {e['train_seconds']:.1f} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(names, [rows[n]["ratio_to_dsm"] for n in names], color="tab:blue")
    axes[0].axhline(2.0, color="k", ls="--", lw=1, label="goal: 2× DSM")
    axes[0].set_ylabel("step time / DSM step time")
    axes[0].set_yscale("log")
    axes[0].set_title("time per optimizer step")
    axes[0].legend()
    axes[1].bar(names, [rows[n]["memory_ratio_to_dsm"] for n in names], color="tab:orange")
    axes[1].set_ylabel("peak memory / DSM peak memory")
    axes[1].set_yscale("log")
    axes[1].set_title("peak memory per step")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    device = setup_run(args)
    info = machine_info(device)
    rows, setup = time_steps(args, device)
    effect = default_effect(args, device)
    metrics = dict(
        ratio_default_over_dsm=rows["default"]["ratio_to_dsm"],
        ratio_paper_over_dsm=rows["paper"]["ratio_to_dsm"],
        per_sample_ratio_default_over_paper=rows["default"]["per_sample_ratio_to_paper"],
        per_sample_ratio_forward_fd_over_paper=rows["forward_fd"]["per_sample_ratio_to_paper"],
        goals=dict(default_at_most_2x_dsm=rows["default"]["ratio_to_dsm"] <= 2.0,
                   default_per_sample_at_most_half_paper=rows["default"]["per_sample_ratio_to_paper"] <= 0.5,
                   default_reduces_residual_vs_dsm=effect["default"]["residual_sq_mean"] < effect["dsm"]["residual_sq_mean"]),
        table=rows, setup=setup, effect=effect, machine=info, default_fp=DEFAULT_FP,
        command=" ".join(["python", "benchmarks/step_cost.py"] + (sys.argv[1:] if argv is None else list(argv))),
    )
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    write_table(rows, setup, info, effect, os.path.join(args.out, "table.md"))
    plot(rows, os.path.join(args.out, "step_cost.png"))
    print(open(os.path.join(args.out, "table.md")).read())
    print(json.dumps({k: metrics[k] for k in ("ratio_default_over_dsm", "ratio_paper_over_dsm",
                                              "per_sample_ratio_default_over_paper", "goals")}, indent=2))


if __name__ == "__main__":
    main()
