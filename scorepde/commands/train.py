"""Train an image score model with DSM or FP-Diffusion (DSM + the score-FPE regularizer).

    python image/train.py                                  # digits, VP, DSM; prints test bits/dim
    python image/train.py --objective fp                   # + β E‖ε[s]‖ (paper's MNIST form)
    python image/train.py --dataset fashion-mnist --data-dir DIR --sde ve --steps 100000
    python image/train.py --out runs/a --resume --steps 6000          # continue exactly
    python image/train.py --init-from runs/a/checkpoint.pt --objective fp --out runs/b
    torchrun --nproc_per_node 2 image/train.py ...        # DDP (gloo on CPU, NCCL on CUDA)

Writes to --out: checkpoint.pt (atomic, every --ckpt-every steps or --ckpt-seconds seconds),
config.json, log.jsonl, training_curves.png, samples.png, metrics.json; an --out that holds a
run is refused unless --resume or --overwrite. --data-dir is the dataset's folder or its parent.
The script parses flags and calls scorepde; every loss and likelihood lives in the library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel

from scorepde import distributed as dd
from scorepde.checkpoints import load_checkpoint, restore_training_state, set_rng_state
from scorepde.cli import fail, user_errors
from scorepde.data import ImageData, load_dataset, to_model_space
from scorepde.flags import add_device_flag, add_trust_flag
from scorepde.fpe import ESTIMATORS
from scorepde.image_config import (
    ImageConfig,
    build_objective,
    build_score_model,
    build_sde,
    model_scaling,
    preset_config,
    run_label,
)
from scorepde.image_eval import auto_eval_images, bpd_metrics, bpd_of_test_images, sample_grid
from scorepde.losses import NORMALIZATIONS, PAPER_SETTINGS, RHS_REDUCTIONS, WEIGHTINGS
from scorepde.outputs import announce, prepare_out
from scorepde.plotting import training_curves
from scorepde.sde import SDE
from scorepde.training import (
    Checkpointing,
    JsonlLog,
    NonFiniteLossError,
    StopRequested,
    fit,
    make_ema,
    make_optimizer,
)

D = ImageConfig()
#: Config fields a fine-tuned model (--init-from) must share with its source checkpoint.
MODEL_FIELDS = (
    "dataset",
    "scaling",
    "sde",
    "sigma_min",
    "sigma_max",
    "beta_min",
    "beta_max",
    "channels",
    "channel_mult",
    "num_res_blocks",
    "attention",
    "heads",
    "fourier_scale",
)


def _data_and_model_flags(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        help=f"digits (no files), mnist, fashion-mnist, cifar10, imagenet32 (default {D.dataset})",
    )
    g.add_argument(
        "--data-dir",
        help="the dataset's folder, or the folder holding it (e.g. ../shared/data "
        "for ../shared/data/fashion-mnist); files are never downloaded; not for digits",
    )
    g.add_argument(
        "--scaling", help="model space: auto ([0,1] for VE, [-1,1] for VP), [0,1] or [-1,1] (default auto)"
    )
    g = p.add_argument_group("SDE")
    g.add_argument("--sde", choices=["ve", "vp", "subvp"], help=f"forward SDE (default {D.sde})")
    g.add_argument("--sigma-min", type=float, help=f"VE σ_min (default {D.sigma_min})")
    g.add_argument("--sigma-max", type=float, help="VE σ_max (default: a·sqrt(D), the data cube's diameter)")
    g.add_argument("--beta-min", type=float, help=f"VP β_min (default {D.beta_min})")
    g.add_argument("--beta-max", type=float, help=f"VP β_max (default {D.beta_max})")
    g = p.add_argument_group("U-Net")
    g.add_argument("--channels", type=int, help=f"width at full resolution (default {D.channels})")
    g.add_argument(
        "--channel-mult",
        help=f"comma-separated width multipliers, one per level (default {','.join(map(str, D.channel_mult))})",
    )
    g.add_argument(
        "--num-res-blocks", type=int, help=f"residual blocks per level (default {D.num_res_blocks})"
    )
    g.add_argument(
        "--attention", type=int, choices=[0, 1], help="self-attention at the lowest resolution (default 1)"
    )
    g.add_argument("--heads", type=int, help=f"attention heads (default {D.heads})")
    g.add_argument("--dropout", type=float, help=f"dropout (default {D.dropout})")
    g.add_argument(
        "--fourier-scale", type=float, help=f"VE Fourier-feature scale (default {D.fourier_scale})"
    )


def _objective_flags(p) -> None:
    g = p.add_argument_group("objective: J_DSM + β E[λ_FP(t) ‖ε[s]‖^m] + γ E|L[s]|")
    g.add_argument(
        "--objective",
        choices=["dsm", "fp"],
        help=f"dsm, or fp: DSM plus the score-FPE regularizer (default {D.objective})",
    )
    g.add_argument(
        "--preset",
        choices=sorted(PAPER_SETTINGS),
        help="start the objective's flags from the paper's setting for this data set (scorepde.losses."
        "PAPER_SETTINGS, in the official code's units; implies --objective fp); flags given "
        "override it",
    )
    g.add_argument("--beta", type=float, help=f"β (default {D.beta}, the paper's best on MNIST)")
    g.add_argument("--gamma", type=float, help=f"γ (default {D.gamma})")
    g.add_argument("--fp-weighting", choices=sorted(WEIGHTINGS), help=f"λ_FP(t) (default {D.fp_weighting})")
    g.add_argument("--m", type=int, choices=[1, 2], help=f"power of ‖ε‖ (default {D.m})")
    g.add_argument(
        "--estimator",
        choices=sorted(ESTIMATORS),
        help=f"residual estimator, from scorepde.ESTIMATORS (default {D.estimator}, the library's "
        "DEFAULT_FP; paper: App. C's stencil + one probe, as --preset sets it)",
    )
    g.add_argument(
        "--subbatch",
        type=int,
        help=f"samples of each batch the regularizer sees (default {D.subbatch}; 0 = all)",
    )
    g.add_argument(
        "--dsm-weighting", choices=sorted(WEIGHTINGS), help=f"λ(t) of DSM (default {D.dsm_weighting})"
    )
    g.add_argument(
        "--normalize",
        choices=sorted(NORMALIZATIONS),
        help=f"divide the ε-term by 1 (none) or D^m (dim: the official code's units, those of "
        f"the paper's β) (default {D.normalize})",
    )
    g.add_argument(
        "--gamma-reduction",
        dest="rhs_reduction",
        choices=sorted(RHS_REDUCTIONS),
        help=f"the γ-term: E|L[s]| (mean_abs) or ‖L[s]‖₂ over the batch (batch_l2: the "
        f"official code's) (default {D.rhs_reduction})",
    )
    g.add_argument(
        "--t-eps", type=float, help=f"smallest time, for training and likelihood (default {D.t_eps})"
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help=f"Adam learning rate (default {D.lr})")
    g.add_argument("--warmup", type=int, help=f"linear warmup steps (default {D.warmup})")
    g.add_argument("--grad-clip", type=float, help=f"gradient-norm clip, 0 = off (default {D.grad_clip})")
    g.add_argument("--ema-decay", type=float, help=f"EMA decay (default {D.ema_decay})")
    g.add_argument("--batch-size", type=int, help=f"batch per process (default {D.batch_size})")
    g.add_argument("--steps", type=int, help=f"total optimiser steps (default {D.steps})")
    g.add_argument("--seed", type=int, help=f"seed of weights, batch order and noise (default {D.seed})")


def _run_flags(p) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/image", help="output folder (default runs/image)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from OUT/checkpoint.pt (its config; --steps may extend)",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (default: refuse to)"
    )
    g.add_argument(
        "--init-from", metavar="CKPT", help="fine-tune: start from CKPT's weights (fresh optimiser/EMA)"
    )
    add_trust_flag(g, "a --resume/--init-from checkpoint")
    add_device_flag(g, "train")
    g.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "bf16", "off"],
        help="bf16 autocast of the plain forward pass (default auto: bf16 on CUDA, off on CPU)",
    )
    g.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per process (default 1; more helps only big images on idle cores)",
    )
    g.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    g.add_argument(
        "--ckpt-seconds",
        type=float,
        default=60.0,
        help="also checkpoint when this many seconds passed since the last one (default 60; "
        "0: every step); always at the end and on Ctrl-C",
    )
    g.add_argument(
        "--sample-every", type=int, default=0, help="sample grid every N steps (default 0: only at the end)"
    )
    g.add_argument("--n-samples", type=int, default=64, help="images in a sample grid (default 64; 0: none)")
    g.add_argument(
        "--sample-steps", type=int, default=500, help="Euler–Maruyama steps for samples (default 500)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("final test evaluation (rank 0, EMA weights)")
    g.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="test images for bits/dim (default: 64 for runs of 1000+ steps, steps/16 from 200 steps, "
        "none below; 0: all; -1: skip, and run image/eval.py on the checkpoint later)",
    )
    g.add_argument(
        "--eval-repeats",
        type=int,
        default=2,
        help="repeats of dequantization + Hutchinson probe (default 2; image/eval.py: 5)",
    )
    g.add_argument(
        "--eval-rtol",
        type=float,
        default=1e-4,
        help="ODE rtol (and atol) (default 1e-4; image/eval.py uses 1e-5)",
    )
    g.add_argument("--eval-batch-size", type=int, default=128, help="test images per ODE solve (default 128)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_and_model_flags(p)
    _objective_flags(p)
    _run_flags(p)
    return p.parse_args(argv)


def make_config(args) -> dict:
    """The flags given, over the defaults (or over a resumed/fine-tuned checkpoint's config)."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in ImageConfig.__dataclass_fields__}
    if args.preset:
        given = {**preset_config(args.preset), **given}
    if "channel_mult" in given:
        try:
            given["channel_mult"] = tuple(int(c) for c in str(given["channel_mult"]).split(",") if c.strip())
        except ValueError:
            raise ValueError(
                f"--channel-mult must be comma-separated integers such as 1,2,2, got "
                f"{given['channel_mult']!r}"
            ) from None
    if "attention" in given:
        given["attention"] = bool(given["attention"])
    if given.get("subbatch") == 0:
        given["subbatch"] = None
    if given.get("grad_clip") == 0:
        given["grad_clip"] = None
    return given


#: What a run writes into --out (what --overwrite replaces).
RUN_FILES = (
    "checkpoint.pt",
    "config.json",
    "log.jsonl",
    "metrics.json",
    "samples.png",
    "training_curves.png",
)


def existing_run(out: str) -> list:
    """The files of an earlier run in ``out`` (sample grids included)."""
    if not os.path.isdir(out):
        return []
    return sorted(
        f for f in os.listdir(out) if f in RUN_FILES or (f.startswith("samples_") and f.endswith(".png"))
    )


def make_run_config(args, given: dict, ckpt_path: str):
    """(config, resumed state or None, fine-tuning source or None) from the flags."""
    state = source = None
    if args.resume and args.init_from:
        raise ValueError(
            "--resume and --init-from exclude each other: --resume continues the run in "
            "--out, --init-from starts a new one from another run's weights"
        )
    if args.resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(
                f"--resume found no checkpoint in {args.out} (looked for {ckpt_path}); "
                "pass the --out of an earlier run, or drop --resume to start a new one"
            )
        state = load_checkpoint(ckpt_path, trust=args.trust_checkpoint)
        base = dict(state["config"])
        ignored = {k: v for k, v in given.items() if k != "steps" and base.get(k) != v}
        if ignored:
            print(f"note: --resume keeps the checkpoint's config; ignoring {ignored}", file=sys.stderr)
        cfg = ImageConfig.from_dict({**base, **({"steps": given["steps"]} if "steps" in given else {})})
        if cfg.steps <= int(state["step"]):
            raise ValueError(
                f"the checkpoint in {args.out} is at step {state['step']} already and "
                f"--steps is {cfg.steps}: pass --steps above {state['step']} to train further"
            )
    elif args.init_from:
        source = load_checkpoint(args.init_from, trust=args.trust_checkpoint)
        inherited = {k: source["config"][k] for k in MODEL_FIELDS if k in source["config"]}
        clash = {k: v for k, v in given.items() if k in inherited and inherited[k] != v}
        if clash:
            raise ValueError(f"--init-from keeps the source model's {sorted(clash)}; drop those flags")
        cfg = ImageConfig.from_dict({**given, **inherited})
    else:
        cfg = ImageConfig(**given)
    _check_limits(args)
    return cfg, state, source


def _check_limits(args) -> None:
    limits = [
        ("--ckpt-every", args.ckpt_every, 1),
        ("--eval-repeats", args.eval_repeats, 1),
        ("--eval-batch-size", args.eval_batch_size, 1),
        ("--sample-steps", args.sample_steps, 1),
        ("--n-samples", args.n_samples, 0),
        ("--sample-every", args.sample_every, 0),
        ("--ckpt-seconds", args.ckpt_seconds, 0),
        ("--threads", args.threads or 1, 1),
        ("--eval-images", -1 if args.eval_images is None else args.eval_images, -1),
    ]
    for flag, value, low in limits:
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.eval_rtol <= 0:
        raise ValueError(f"--eval-rtol must be > 0, got {args.eval_rtol}")


@dataclass
class _Job:
    """What one training run works with, built once by ``_build``."""

    cfg: ImageConfig
    info: dd.DistInfo
    train: ImageData
    sde: SDE
    model: torch.nn.Module
    objective: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel
    gen: torch.Generator
    start: int
    amp: torch.dtype | None


def _build(cfg: ImageConfig, args, info, train: ImageData, state, source) -> _Job:
    """The SDE, model, objective, optimiser, EMA and noise generator; restored from ``state``
    on --resume, the model's weights from ``source`` on --init-from."""
    amp = {
        "auto": torch.bfloat16 if info.device.type == "cuda" else None,
        "bf16": torch.bfloat16,
        "off": None,
    }[args.amp]
    torch.manual_seed(cfg.seed)
    sde = build_sde(cfg, train.shape)
    model = build_score_model(cfg, sde, train.shape).to(info.device)
    if source is not None:
        model.load_state_dict(source["model"])
    objective = build_objective(cfg, model, sde, autocast=amp)
    opt, sched = make_optimizer(model.parameters(), lr=cfg.lr, warmup=cfg.warmup)
    ema = make_ema(model, cfg.ema_decay)
    gen = torch.Generator(info.device).manual_seed(cfg.seed * 1000 + info.rank)
    start = 0
    if state is not None:
        start = restore_training_state(state, model, opt, sched, ema)
        if len(state.get("rng", [])) == info.world_size:
            set_rng_state(state["rng"][info.rank], gen)
        else:
            gen.manual_seed(cfg.seed * 1000 + info.rank + 7919 * start)
            if info.is_main:
                print(
                    f"note: the checkpoint holds random states for {len(state.get('rng', []))} "
                    f"process(es), this run has {info.world_size}: the noise is reseeded, "
                    "so the continuation is not bit-identical",
                    file=sys.stderr,
                )
    return _Job(cfg, info, train, sde, model, objective, opt, sched, ema, gen, start, amp)


def _batches(job: _Job):
    """The batches of steps start, start+1, …: this rank's share, dequantized with ``job.gen``."""
    images, info, scaling = job.train.images.to(job.info.device), job.info, model_scaling(job.cfg)
    with user_errors():  # a batch larger than this process's share of the data
        order = dd.ShardedBatches(
            len(job.train), job.cfg.batch_size, seed=job.cfg.seed, info=info, start=job.start
        )
    return (
        to_model_space(
            images[idx.to(info.device)], job.train.levels, scaling, dequantized=True, generator=job.gen
        )[0]
        for idx in order
    )


def _open_run(args, job: _Job, eval_images: int) -> JsonlLog:
    """Rank 0: clear a replaced run, write config.json, open the log, say what runs."""
    cfg, info, train = job.cfg, job.info, job.train
    if args.overwrite and not args.resume:
        for name in existing_run(args.out):
            os.remove(os.path.join(args.out, name))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(
            {
                **cfg.to_dict(),
                "world_size": info.world_size,
                "device": str(info.device),
                "amp": str(job.amp),
                "init_from": args.init_from,
                "out": args.out,
            },
            f,
            indent=2,
        )
    print(
        f"{cfg.dataset} {tuple(train.shape)}, {train.levels} levels, {len(train)} train images; "
        f"{type(job.sde).__name__}, {cfg.objective.upper()}; "
        f"{sum(p.numel() for p in job.model.parameters())} parameters; {info.world_size} "
        f"process(es) on {info.device}; steps {job.start}..{cfg.steps}",
        flush=True,
    )
    if args.eval_images is None and eval_images < 0:
        print(
            f"note: no final bits/dim for a {cfg.steps}-step run (a barely trained model's ODE is "
            "stiff: minutes for a number that means little); pass --eval-images N to have one, "
            "or run image/eval.py on the checkpoint",
            file=sys.stderr,
            flush=True,
        )
    return JsonlLog(os.path.join(args.out, "log.jsonl"), job.start)


def _sample(args, job: _Job, name: str) -> str:
    """A grid of the EMA model's samples, OUT/name (the same seed every time)."""
    return sample_grid(
        job.ema.module,
        job.sde,
        job.cfg,
        job.train.shape,
        job.train.levels,
        os.path.join(args.out, name),
        n=args.n_samples,
        steps=args.sample_steps,
        generator=torch.Generator(job.info.device).manual_seed(job.cfg.seed + 12345),
        device=job.info.device,
    )


def _train(args, job: _Job, batches, log: JsonlLog | None):
    """The steps, by ``scorepde.training.fit`` (checkpoints by steps and by time, on Ctrl-C
    and before a non-finite step; DDP's ranks agree on each); (logs, exit code, seconds)."""
    cfg, info = job.cfg, job.info
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    clock = {"t": time.perf_counter(), "next": job.start}

    def on_step(step: int, rec: dict):  # rec: the step's log, averaged over ranks under DDP
        clock["next"] = step + 1
        if log is not None:
            log.write(
                {
                    "step": step,
                    **rec,
                    "lr": job.sched.get_last_lr()[0],
                    "step_time": time.perf_counter() - clock["t"],
                }
            )
        if info.is_main and args.sample_every and args.n_samples and (step + 1) % args.sample_every == 0:
            _sample(args, job, f"samples_{step + 1:07d}.png")
        clock["t"] = time.perf_counter()

    saving = Checkpointing(
        ckpt_path,
        every=args.ckpt_every,
        seconds=args.ckpt_seconds,
        generator=job.gen,
        config=cfg.to_dict(),
        extra={"world_size": info.world_size},
        gather=lambda obj: dd.gather_objects(obj, info),
        rank=info.rank,
        is_main=info.is_main,
        resume=False,
    )
    logs: list = []
    t_train, code = time.perf_counter(), 0
    try:
        logs = fit(
            dd.wrap(job.objective, info),
            job.opt,
            batches,
            cfg.steps,
            generator=job.gen,
            scheduler=job.sched,
            grad_clip=cfg.grad_clip,
            ema=job.ema,
            model=job.model,
            start=job.start,
            checkpoint=saving,
            on_step=on_step,
            across_ranks=(lambda d: dd.mean_across_ranks(d, info)) if info.distributed else None,
            progress=info.is_main and not args.no_progress,
        )
    except StopRequested:
        if info.is_main:
            print(
                f"\ninterrupted: checkpoint saved at step {clock['next']} in {ckpt_path}; "
                f"continue with --out {args.out} --resume",
                file=sys.stderr,
                flush=True,
            )
        code = 130
    except NonFiniteLossError as err:  # fit saved the parameters before the bad step
        if info.is_main:
            print(
                f"\nerror: training stopped: {err}. The last good state (step {err.step}) is "
                f"saved in {ckpt_path}",
                file=sys.stderr,
                flush=True,
            )
        code = 1
    return logs, code, time.perf_counter() - t_train


def _final_bpd(args, job: _Job, test: ImageData, eval_images: int) -> dict:
    """Bits/dim of the EMA model on the first ``eval_images`` test images (0: all):
    ``bpd_stderr`` is the standard error over images, ``eval_se`` over the repeats."""
    n = len(test) if eval_images == 0 else min(eval_images, len(test))
    print(
        f"final evaluation: bits/dim of {n} test images × {args.eval_repeats} repeat(s) by the "
        f"PF-ODE at rtol {args.eval_rtol:g} (a barely trained model's ODE is stiff and slow; "
        "--eval-images -1 skips this, image/eval.py CKPT runs it later)",
        flush=True,
    )
    res, n, seconds = bpd_of_test_images(
        job.ema.module,
        job.sde,
        job.cfg,
        test,
        n,
        rtol=args.eval_rtol,
        repeats=args.eval_repeats,
        batch_size=args.eval_batch_size,
        generator=torch.Generator(job.info.device).manual_seed(job.cfg.seed + 1),
        progress=not args.no_progress,
        device=job.info.device,
    )
    return {**bpd_metrics(res), "eval_images": n, "eval_repeats": args.eval_repeats, "eval_time_s": seconds}


def _finish(args, job: _Job, test, eval_images: int, logs: list, train_time: float, agree: bool) -> None:
    """Rank 0, after training: training curves, samples, the final bits/dim, metrics.json."""
    cfg = job.cfg
    job.ema.module.eval()
    written = ["checkpoint.pt", "config.json", "log.jsonl"]
    records = JsonlLog.read(os.path.join(args.out, "log.jsonl"))
    if records:
        training_curves(
            records,
            os.path.join(args.out, "training_curves.png"),
            title=f"training: {run_label(cfg)}, steps 0..{cfg.steps}",
        )
        written.append("training_curves.png")
    grid = None
    if args.n_samples:
        grid = _sample(args, job, "samples.png")
        written.append("samples.png")
    metrics = {
        "dataset": cfg.dataset,
        "sde": cfg.sde,
        "objective": cfg.objective,
        "steps": cfg.steps,
        "train_time_s": train_time,
        "samples": grid,
        "final_loss": logs[-1]["loss"] if logs else None,
        "world_size": job.info.world_size,
        "ranks_agree": agree,
        "out": args.out,
        "config": cfg.to_dict(),
    }
    if test is not None:
        metrics.update(_final_bpd(args, job, test, eval_images))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    written.append("metrics.json")
    announce(args.out, written)


def main(argv=None) -> int:
    """``scorepde-train`` / ``python image/train.py``: 0 when done, 130 when interrupted
    (checkpoint saved), 1 when a loss went non-finite (the last good state saved)."""
    args = parse_args(argv)
    with user_errors():
        given = make_config(args)
        cfg, state, source = make_run_config(args, given, os.path.join(args.out, "checkpoint.pt"))
        info = dd.setup(args.device)
    # One thread by default: this model's ops are small, and on a shared or busy machine
    # extra threads oversubscribe the cores and slow every op down many times over.
    torch.set_num_threads(args.threads or 1)
    eval_images = auto_eval_images(cfg.steps) if args.eval_images is None else args.eval_images
    try:
        train = load_dataset(cfg.dataset, "train", cfg.data_dir)
        test = load_dataset(cfg.dataset, "test", cfg.data_dir) if eval_images >= 0 else None
        prepare_out(args.out, resume=args.resume, overwrite=args.overwrite)  # refuses a folder with results
    except (ValueError, FileNotFoundError) as err:
        dd.teardown(info)
        fail(str(err))
    job = _build(cfg, args, info, train, state, source)
    batches = _batches(job)
    log = _open_run(args, job, eval_images) if info.is_main else None
    logs, code, train_time = _train(args, job, batches, log)
    if log is not None:
        log.close()
    agree = dd.params_agree(job.model, info)
    if info.distributed and info.is_main:
        print(f"ranks agree on parameters: {agree}", flush=True)
    dd.barrier(info)
    dd.teardown(info)
    if code or not info.is_main:
        return code
    _finish(args, job, test, eval_images, logs, train_time, agree)
    return 0


if __name__ == "__main__":
    dd.exit_process(main())
