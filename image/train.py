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

import torch

from scorepde import distributed as dd
from scorepde.cli import fail, user_errors
from scorepde.data import load_dataset, to_model_space
from scorepde.fpe import ESTIMATORS
from scorepde.imaging import (ImageConfig, auto_eval_images, bpd_standard_error, bpd_summary,
                              build_objective, build_score_model, build_sde, model_scaling,
                              preset_config, run_label, sample_grid, test_bpd)
from scorepde.losses import NORMALIZATIONS, PAPER_SETTINGS, RHS_REDUCTIONS, WEIGHTINGS
from scorepde.plotting import training_curves
from scorepde.training import (InterruptFlag, JsonlLog, NonFiniteLossError,
                               StopRequested, fit, load_checkpoint, make_ema, make_optimizer,
                               restore_training_state, rng_state, save_checkpoint, set_rng_state,
                               training_state)

D = ImageConfig()
#: Config fields a fine-tuned model (--init-from) must share with its source checkpoint.
MODEL_FIELDS = ("dataset", "scaling", "sde", "sigma_min", "sigma_max", "beta_min", "beta_max",
                "channels", "channel_mult", "num_res_blocks", "attention", "heads", "fourier_scale")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"digits (no files), mnist, fashion-mnist, cifar10, imagenet32 (default {D.dataset})")
    g.add_argument("--data-dir", help="the dataset's folder, or the folder holding it (e.g. ../shared/data "
                   "for ../shared/data/fashion-mnist); files are never downloaded; not for digits")
    g.add_argument("--scaling", help="model space: auto ([0,1] for VE, [-1,1] for VP), [0,1] or [-1,1] (default auto)")
    g = p.add_argument_group("SDE")
    g.add_argument("--sde", choices=["ve", "vp", "subvp"], help=f"forward SDE (default {D.sde})")
    g.add_argument("--sigma-min", type=float, help=f"VE σ_min (default {D.sigma_min})")
    g.add_argument("--sigma-max", type=float, help="VE σ_max (default: a·sqrt(D), the data cube's diameter)")
    g.add_argument("--beta-min", type=float, help=f"VP β_min (default {D.beta_min})")
    g.add_argument("--beta-max", type=float, help=f"VP β_max (default {D.beta_max})")
    g = p.add_argument_group("U-Net")
    g.add_argument("--channels", type=int, help=f"width at full resolution (default {D.channels})")
    g.add_argument("--channel-mult", help=f"comma-separated width multipliers, one per level (default {','.join(map(str, D.channel_mult))})")
    g.add_argument("--num-res-blocks", type=int, help=f"residual blocks per level (default {D.num_res_blocks})")
    g.add_argument("--attention", type=int, choices=[0, 1], help="self-attention at the lowest resolution (default 1)")
    g.add_argument("--heads", type=int, help=f"attention heads (default {D.heads})")
    g.add_argument("--dropout", type=float, help=f"dropout (default {D.dropout})")
    g.add_argument("--fourier-scale", type=float, help=f"VE Fourier-feature scale (default {D.fourier_scale})")
    g = p.add_argument_group("objective: J_DSM + β E[λ_FP(t) ‖ε[s]‖^m] + γ E|L[s]|")
    g.add_argument("--objective", choices=["dsm", "fp"], help=f"dsm, or fp: DSM plus the score-FPE regularizer (default {D.objective})")
    g.add_argument("--preset", choices=sorted(PAPER_SETTINGS),
                   help="start the objective's flags from the paper's setting for this data set (scorepde.losses."
                   "PAPER_SETTINGS, in the official code's units; implies --objective fp); flags given "
                   "override it")
    g.add_argument("--beta", type=float, help=f"β (default {D.beta}, the paper's best on MNIST)")
    g.add_argument("--gamma", type=float, help=f"γ (default {D.gamma})")
    g.add_argument("--fp-weighting", choices=sorted(WEIGHTINGS), help=f"λ_FP(t) (default {D.fp_weighting})")
    g.add_argument("--m", type=int, choices=[1, 2], help=f"power of ‖ε‖ (default {D.m})")
    g.add_argument("--estimator", choices=sorted(ESTIMATORS),
                   help=f"residual estimator, from scorepde.ESTIMATORS (default {D.estimator}: App. C's "
                   "stencil + one probe; forward_fd is the library's cheap default, DEFAULT_FP)")
    g.add_argument("--subbatch", type=int, help=f"samples of each batch the regularizer sees (default {D.subbatch}; 0 = all)")
    g.add_argument("--dsm-weighting", choices=sorted(WEIGHTINGS), help=f"λ(t) of DSM (default {D.dsm_weighting})")
    g.add_argument("--normalize", choices=sorted(NORMALIZATIONS),
                   help=f"divide the ε-term by 1 (none) or D^m (dim: the official code's units, those of "
                   f"the paper's β) (default {D.normalize})")
    g.add_argument("--gamma-reduction", dest="rhs_reduction", choices=sorted(RHS_REDUCTIONS),
                   help=f"the γ-term: E|L[s]| (mean_abs) or ‖L[s]‖₂ over the batch (batch_l2: the "
                   f"official code's) (default {D.rhs_reduction})")
    g.add_argument("--t-eps", type=float, help=f"smallest time, for training and likelihood (default {D.t_eps})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help=f"Adam learning rate (default {D.lr})")
    g.add_argument("--warmup", type=int, help=f"linear warmup steps (default {D.warmup})")
    g.add_argument("--grad-clip", type=float, help=f"gradient-norm clip, 0 = off (default {D.grad_clip})")
    g.add_argument("--ema-decay", type=float, help=f"EMA decay (default {D.ema_decay})")
    g.add_argument("--batch-size", type=int, help=f"batch per process (default {D.batch_size})")
    g.add_argument("--steps", type=int, help=f"total optimiser steps (default {D.steps})")
    g.add_argument("--seed", type=int, help=f"seed of weights, batch order and noise (default {D.seed})")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/image", help="output folder (default runs/image)")
    g.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt (its config; --steps may extend)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out (default: refuse to)")
    g.add_argument("--init-from", metavar="CKPT", help="fine-tune: start from CKPT's weights (fresh optimiser/EMA)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="open a --resume/--init-from checkpoint that needs code to load (one you made yourself "
                   "with an older scorepde); never for a file from someone else")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train (default auto: CUDA if torch sees a GPU, else CPU)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="bf16 autocast of the plain forward pass (default auto: bf16 on CUDA, off on CPU)")
    g.add_argument("--threads", type=int, help="torch CPU threads per process (default 1; more helps only big images on idle cores)")
    g.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    g.add_argument("--ckpt-seconds", type=float, default=60.0,
                   help="also checkpoint when this many seconds passed since the last one (default 60; "
                   "0: every step); always at the end and on Ctrl-C")
    g.add_argument("--sample-every", type=int, default=0, help="sample grid every N steps (default 0: only at the end)")
    g.add_argument("--n-samples", type=int, default=64, help="images in a sample grid (default 64; 0: none)")
    g.add_argument("--sample-steps", type=int, default=500, help="Euler–Maruyama steps for samples (default 500)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("final test evaluation (rank 0, EMA weights)")
    g.add_argument("--eval-images", type=int, default=None,
                   help="test images for bits/dim (default: 64 for runs of 1000+ steps, steps/16 from 200 steps, "
                   "none below; 0: all; -1: skip, and run image/eval.py on the checkpoint later)")
    g.add_argument("--eval-repeats", type=int, default=2, help="repeats of dequantization + Hutchinson probe (default 2; image/eval.py: 5)")
    g.add_argument("--eval-rtol", type=float, default=1e-4, help="ODE rtol (and atol) (default 1e-4; image/eval.py uses 1e-5)")
    g.add_argument("--eval-batch-size", type=int, default=128, help="test images per ODE solve (default 128)")
    return p.parse_args(argv)


def make_config(args) -> ImageConfig:
    """The flags given, over the defaults (or over a resumed/fine-tuned checkpoint's config)."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in ImageConfig.__dataclass_fields__}
    if args.preset:
        given = {**preset_config(args.preset), **given}
    if "channel_mult" in given:
        try:
            given["channel_mult"] = tuple(int(c) for c in str(given["channel_mult"]).split(",") if c.strip())
        except ValueError:
            raise ValueError(f"--channel-mult must be comma-separated integers such as 1,2,2, got "
                             f"{given['channel_mult']!r}") from None
    if "attention" in given:
        given["attention"] = bool(given["attention"])
    if given.get("subbatch") == 0:
        given["subbatch"] = None
    if given.get("grad_clip") == 0:
        given["grad_clip"] = None
    return given


#: What a run writes into --out (what --overwrite replaces).
RUN_FILES = ("checkpoint.pt", "config.json", "log.jsonl", "metrics.json", "samples.png",
             "training_curves.png")


def existing_run(out: str) -> list:
    """The files of an earlier run in ``out`` (sample grids included)."""
    if not os.path.isdir(out):
        return []
    return sorted(f for f in os.listdir(out) if f in RUN_FILES or (f.startswith("samples_") and f.endswith(".png")))


def make_run_config(args, given: dict, ckpt_path: str):
    """(config, resumed state or None, fine-tuning source or None) from the flags."""
    state = source = None
    if args.resume and args.init_from:
        raise ValueError("--resume and --init-from exclude each other: --resume continues the run in "
                         "--out, --init-from starts a new one from another run's weights")
    if args.resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"--resume found no checkpoint in {args.out} (looked for {ckpt_path}); "
                                    "pass the --out of an earlier run, or drop --resume to start a new one")
        state = load_checkpoint(ckpt_path, trust=args.trust_checkpoint)
        base = dict(state["config"])
        ignored = {k: v for k, v in given.items() if k != "steps" and base.get(k) != v}
        if ignored:
            print(f"note: --resume keeps the checkpoint's config; ignoring {ignored}", file=sys.stderr)
        cfg = ImageConfig.from_dict({**base, **({"steps": given["steps"]} if "steps" in given else {})})
        if cfg.steps <= int(state["step"]):
            raise ValueError(f"the checkpoint in {args.out} is at step {state['step']} already and "
                             f"--steps is {cfg.steps}: pass --steps above {state['step']} to train further")
    elif args.init_from:
        source = load_checkpoint(args.init_from, trust=args.trust_checkpoint)
        inherited = {k: source["config"][k] for k in MODEL_FIELDS if k in source["config"]}
        clash = {k: v for k, v in given.items() if k in inherited and inherited[k] != v}
        if clash:
            raise ValueError(f"--init-from keeps the source model's {sorted(clash)}; drop those flags")
        cfg = ImageConfig.from_dict({**given, **inherited})
    else:
        cfg = ImageConfig(**given)
    if not args.resume and not args.overwrite and existing_run(args.out):
        raise ValueError(f"{args.out} already holds a run ({', '.join(existing_run(args.out))}); "
                         "pass --resume to continue it, --overwrite to replace it, or another --out")
    limits = [("--ckpt-every", args.ckpt_every, 1), ("--eval-repeats", args.eval_repeats, 1),
              ("--eval-batch-size", args.eval_batch_size, 1), ("--sample-steps", args.sample_steps, 1),
              ("--n-samples", args.n_samples, 0), ("--sample-every", args.sample_every, 0),
              ("--ckpt-seconds", args.ckpt_seconds, 0), ("--threads", args.threads or 1, 1),
              ("--eval-images", -1 if args.eval_images is None else args.eval_images, -1)]
    for flag, value, low in limits:
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.eval_rtol <= 0:
        raise ValueError(f"--eval-rtol must be > 0, got {args.eval_rtol}")
    return cfg, state, source


def main(argv=None) -> int:
    args = parse_args(argv)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    with user_errors():
        given = make_config(args)
        cfg, state, source = make_run_config(args, given, ckpt_path)
        info = dd.setup(args.device)
    # One thread by default: this model's ops are small, and on a shared or busy machine
    # extra threads oversubscribe the cores and slow every op down many times over.
    torch.set_num_threads(args.threads or 1)
    amp = {"auto": torch.bfloat16 if info.device.type == "cuda" else None,
           "bf16": torch.bfloat16, "off": None}[args.amp]
    eval_images = auto_eval_images(cfg.steps) if args.eval_images is None else args.eval_images
    try:
        train = load_dataset(cfg.dataset, "train", cfg.data_dir)
        test = load_dataset(cfg.dataset, "test", cfg.data_dir) if eval_images >= 0 else None
    except (ValueError, FileNotFoundError) as err:
        dd.teardown(info)
        fail(str(err))
    shape, levels, scaling = train.shape, train.levels, model_scaling(cfg)

    torch.manual_seed(cfg.seed)
    sde = build_sde(cfg, shape)
    model = build_score_model(cfg, sde, shape).to(info.device)
    if args.init_from:
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
                print(f"note: the checkpoint holds random states for {len(state.get('rng', []))} "
                      f"process(es), this run has {info.world_size}: the noise is reseeded, "
                      "so the continuation is not bit-identical", file=sys.stderr)
    ddp_objective = dd.wrap(objective, info)

    images = train.images.to(info.device)
    with user_errors():  # a batch larger than this process's share of the data
        order = dd.ShardedBatches(len(train), cfg.batch_size, seed=cfg.seed, info=info, start=start)

    def batches():
        for idx in order:
            yield to_model_space(images[idx.to(info.device)], levels, scaling, dequantized=True,
                                 generator=gen)[0]

    log = None
    if info.is_main:
        if args.overwrite and not args.resume:
            for name in existing_run(args.out):
                os.remove(os.path.join(args.out, name))
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump({**cfg.to_dict(), "world_size": info.world_size, "device": str(info.device),
                       "amp": str(amp), "init_from": args.init_from,
                       "out": os.path.abspath(args.out)}, f, indent=2)
        log = JsonlLog(os.path.join(args.out, "log.jsonl"), start)
        print(f"{cfg.dataset} {tuple(shape)}, {levels} levels, {len(train)} train images; "
              f"{type(sde).__name__}, {cfg.objective.upper()}; "
              f"{sum(p.numel() for p in model.parameters())} parameters; {info.world_size} "
              f"process(es) on {info.device}; steps {start}..{cfg.steps}", flush=True)
        if args.eval_images is None and eval_images < 0:
            print(f"note: no final bits/dim for a {cfg.steps}-step run (a barely trained model's ODE is "
                  "stiff: minutes for a number that means little); pass --eval-images N to have one, "
                  "or run image/eval.py on the checkpoint", file=sys.stderr, flush=True)

    def checkpoint(next_step: int):
        rngs = dd.gather_objects(rng_state(gen), info)
        if info.is_main:
            save_checkpoint(ckpt_path, training_state(next_step, model, opt, sched, ema, rngs,
                                                      cfg.to_dict(), world_size=info.world_size))

    sample_gen = lambda: torch.Generator(info.device).manual_seed(cfg.seed + 12345)
    clock = {"t": time.perf_counter(), "next": start, "saved": time.perf_counter()}

    def on_step(step: int, parts: dict):
        now = time.perf_counter()
        due = now - clock["saved"] >= args.ckpt_seconds  # by time as well as by steps
        rec = dd.mean_across_ranks({**parts, "stop": float(flag.raised is not None),
                                    "due": float(due)}, info)
        stop, due = rec.pop("stop") > 0, rec.pop("due") > 0  # any rank's verdict, on every rank
        clock["next"] = step + 1
        if log is not None:
            log.write({"step": step, **rec, "lr": sched.get_last_lr()[0],
                       "step_time": now - clock["t"]})
        if (step + 1) % args.ckpt_every == 0 or stop or due:
            checkpoint(step + 1)
            clock["saved"] = time.perf_counter()
        if info.is_main and args.sample_every and args.n_samples and (step + 1) % args.sample_every == 0:
            sample_grid(ema.module, sde, cfg, shape, levels, os.path.join(args.out, f"samples_{step + 1:07d}.png"),
                        n=args.n_samples, steps=args.sample_steps, generator=sample_gen(), device=info.device)
        if stop:
            raise StopRequested
        clock["t"] = time.perf_counter()
        return rec  # the progress bar shows what the log holds (the mean over ranks)

    all_finite = None
    if info.distributed:
        all_finite = lambda ok: dd.mean_across_ranks({"ok": float(ok)}, info)["ok"] == 1.0
    t_train, code = time.perf_counter(), 0
    with InterruptFlag() as flag:
        try:
            logs = fit(ddp_objective, opt, batches(), cfg.steps, generator=gen, scheduler=sched,
                       grad_clip=cfg.grad_clip, ema=ema, model=model,
                       progress=info.is_main and not args.no_progress, start=start,
                       on_step=on_step, all_finite=all_finite)
            checkpoint(cfg.steps)
        except StopRequested:
            if info.is_main:
                print(f"\ninterrupted: checkpoint saved at step {clock['next']} in {ckpt_path}; "
                      f"continue with --out {args.out} --resume", file=sys.stderr, flush=True)
            code = 130
        except NonFiniteLossError as err:
            checkpoint(err.step)  # the parameters are still those before the bad step
            if info.is_main:
                print(f"\nerror: training stopped: {err}. The last good state (step {err.step}) is "
                      f"saved in {ckpt_path}", file=sys.stderr, flush=True)
            code = 1
    train_time = time.perf_counter() - t_train
    if log is not None:
        log.close()
    agree = dd.params_agree(model, info)
    if info.distributed and info.is_main:
        print(f"ranks agree on parameters: {agree}", flush=True)
    dd.barrier(info)
    dd.teardown(info)
    if code or not info.is_main:
        return code

    ema_model = ema.module.eval()
    written = ["checkpoint.pt", "config.json", "log.jsonl"]
    records = JsonlLog.read(log.path)
    if records:
        training_curves(records, os.path.join(args.out, "training_curves.png"),
                        title=f"training: {run_label(cfg)}, steps 0..{cfg.steps}")
        written.append("training_curves.png")
    grid = None
    if args.n_samples:
        grid = sample_grid(ema_model, sde, cfg, shape, levels, os.path.join(args.out, "samples.png"),
                           n=args.n_samples, steps=args.sample_steps, generator=sample_gen(),
                           device=info.device)
        written.append("samples.png")
    metrics = {"dataset": cfg.dataset, "sde": cfg.sde, "objective": cfg.objective,
               "steps": cfg.steps, "train_time_s": train_time, "samples": grid,
               "final_loss": logs[-1]["loss"] if logs else None,
               "world_size": info.world_size, "ranks_agree": agree,
               "out": os.path.abspath(args.out), "config": cfg.to_dict()}
    if test is not None:
        n = len(test) if eval_images == 0 else min(eval_images, len(test))
        print(f"final evaluation: bits/dim of {n} test images × {args.eval_repeats} repeat(s) by the "
              f"PF-ODE at rtol {args.eval_rtol:g} (a barely trained model's ODE is stiff and slow; "
              "--eval-images -1 skips this, image/eval.py CKPT runs it later)", flush=True)
        t_eval = time.perf_counter()
        res = test_bpd(ema_model, sde, cfg, test.images[:n], levels, repeats=args.eval_repeats,
                       batch_size=args.eval_batch_size, rtol=args.eval_rtol, atol=args.eval_rtol,
                       generator=torch.Generator(info.device).manual_seed(cfg.seed + 1),
                       progress=not args.no_progress, device=info.device)
        seconds = time.perf_counter() - t_eval
        metrics.update(bpd=res["bpd"], bpd_std=res["bpd_std"],
                       bpd_stderr=bpd_standard_error(res, args.eval_repeats),
                       bpd_per_repeat=res["per_repeat"], nfe=res["nfe"], eval_images=n,
                       eval_repeats=args.eval_repeats, eval_time_s=seconds)
        print(bpd_summary(res, n, args.eval_repeats, seconds), flush=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    written.append("metrics.json")
    print(f"wrote {os.path.abspath(args.out)}: {', '.join(written)}", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    dd.exit_process(code)
