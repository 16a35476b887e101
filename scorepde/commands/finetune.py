"""The fine-tuning protocol of Table 5 (App. E.1) on small images: train DSM to convergence,
then fine-tune for equal steps with DSM and with FP (``PAPER_SETTINGS["mnist"]``: β = 0.1
on ‖ε‖/D, γ = 0, λ_FP = 1, m = 1, the one-probe estimator, t_eps = 1e-3) at β and 10× either
side, several fine-tuning seeds; test bits/dim at rtol 1e-5 with 5 dequantization repeats.

    python image/finetune.py                                # digits: base curve, then the grid
    python image/finetune.py --dataset mnist --data-dir ../shared/data/mnist-10k --eval-images 500
    python image/finetune.py --report                       # tables and figures from what is done
    python image/finetune.py ... --eval-images 512 --eval-chunk 256   # extends a 256-image evaluation
    python image/finetune.py --sde ve --fp-subbatch 16      # the VE column (base, arms, evaluation all VE)
    python image/finetune.py --from-scratch --sde ve --steps 4500 --betas 0.1 1.0   # Table 1's protocol

--sde builds the base (image/train.py --sde), and every arm and evaluation rebuilds the SDE
from the base's stored config; a base in OUT trained under another SDE is refused.
--from-scratch (Table 1, Sec. 7.2): no base; each run trains --steps steps from the network
its seed draws (the image defaults and --base-args), and DSM and FP of one seed start from
that same network (its ``base_id`` is the init's hash), so FP pairs with DSM within a seed.

Phases, each resumable (one result file per stage or run in OUT/runs/, skipped when present):
  base   image/train.py (a subprocess; DSM, --sde, the image defaults) in stages --base-stages,
         each continued with --resume; after each stage the EMA model's held-out DSM loss
         (the learning curve: pick the budget where it flattens).
  tune   from the EMA weights of the --base-steps stage: fresh Adam and EMA, --steps steps
         of DSM (β = 0) or DSM + R_FP, per seed; the same batches, dequantization and (t, z)
         for every β (seeded per step); checkpoints within a run, SIGTERM-safe. Each run
         names its base by ``base_id`` (a hash of the weights: a base retrained on another
         machine is not bit-equal), and FP pairs with DSM only within one base and seed.
  eval   bits/dim (PF-ODE, Hutchinson, rtol = atol = --rtol, --eval-repeats repeats, the same
         dequantization and probes for every model), held-out DSM loss, r_FP(t) and
         r_DSM(t) (Table 4's times, exact ε) of every model, the base included. With
         --eval-chunk C the test images go in chunks of C, one result file per chunk and
         model; the report pools a model's chunks (bits/dim over all their images) and
         refuses chunks whose held-out DSM or residuals differ (not one model). The final EMA
         weights stay in OUT/ckpt, so a later chunk re-uses them (retrains only if deleted).
Writes OUT/metrics.json (per-seed values, paired FP − DSM differences with 95% t-intervals,
the evaluation's standard error beside them), OUT/bpd_vs_beta.png, OUT/base_curve.png,
OUT/finetune_curves.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from scorepde import plotting
from scorepde import reporting as rp
from scorepde.checkpoints import load_checkpoint, save_checkpoint, weights_id
from scorepde.cli import fail, user_errors
from scorepde.commands import train as train_command
from scorepde.curves import residual_curves
from scorepde.data import load_dataset, to_model_space
from scorepde.distributed import DistInfo, ShardedBatches
from scorepde.flags import add_trust_flag
from scorepde.image_config import (
    SDE_NAMES,
    ImageConfig,
    build_score_model,
    build_sde,
    load_trained,
    model_scaling,
)
from scorepde.image_eval import TABLE4_TIMES, image_bpd, in_chunks
from scorepde.losses import PAPER_SETTINGS, FPObjective, held_out_dsm
from scorepde.runstore import RunStore, parse_shard, run_name, shard_of
from scorepde.stats import mean_se, paired_difference, paired_eval_se, pool_chunks, standard_error
from scorepde.training import Checkpointing, StopRequested, fit, make_ema, make_optimizer, step_seed

PRESETS = {"digits": "mnist", "mnist": "mnist", "fashion-mnist": "fashion-mnist"}
EVAL_SEED = 4242  # dequantization and probes of every evaluation: shared by all models


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _grid_flags(p)
    _eval_and_run_flags(p)
    return p, p.parse_args(argv)


def _grid_flags(p) -> None:
    p.add_argument("--dataset", default="digits", choices=sorted(PRESETS), help="data set (default digits)")
    p.add_argument("--data-dir", help="folder of the data set's IDX files (mnist, fashion-mnist)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default image/results/finetune_<dataset>, with _<sde> for VE and "
        "sub-VP, scratch_<dataset>_<sde> with --from-scratch; relative to the current folder: "
        "run from the repository's root)",
    )
    p.add_argument(
        "--sde",
        default="vp",
        choices=SDE_NAMES,
        help="forward SDE of the base, the arms and the evaluation (default vp)",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="Table 1's protocol: no base; every run trains --steps steps from a fresh network "
        "seeded by its seed (--base-args: its image/train.py flags)",
    )
    p.add_argument(
        "--base-stages",
        type=int,
        nargs="+",
        default=[1000, 2000, 4000, 8000],
        help="DSM base: the cumulative steps after which its held-out DSM loss is measured",
    )
    p.add_argument(
        "--base-steps",
        type=int,
        default=None,
        help="the base stage to fine-tune from (default: the last of --base-stages)",
    )
    p.add_argument(
        "--base-args",
        default="",
        help="extra flags for the base run of image/train.py (scorepde-train), one string",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=2250,
        help="fine-tuning steps, the same for every β (default 2250 ≈ 100 epochs of digits' "
        "1437 images at batch 64, the paper's fine-tuning length in epochs)",
    )
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the base's)")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first fine-tuning seed")
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=None,
        help="FP β in the official units (default: the preset's 0.1, then 0.01 and 1.0)",
    )
    p.add_argument(
        "--fp-subbatch",
        type=int,
        default=None,
        help="samples per step R_FP sees (default: the whole batch, as the official code)",
    )


def _eval_and_run_flags(p) -> None:
    p.add_argument(
        "--eval-images",
        type=int,
        default=0,
        help="test images for bits/dim: 0 = the whole test split, N = the first N (fixed)",
    )
    p.add_argument(
        "--eval-chunk",
        type=int,
        default=0,
        help="evaluate the --eval-images in chunks of N, one result file each (0 = one chunk): "
        "a larger --eval-images then keeps the chunks already done",
    )
    p.add_argument("--eval-repeats", type=int, default=5, help="dequantization repeats (paper: 5)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE rtol = atol (paper: 1e-5)")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument(
        "--heldout-repeats", type=int, default=10, help="draws of (t, z) for the held-out DSM loss"
    )
    p.add_argument("--residual-images", type=int, default=32, help="test images for r_FP(t), r_DSM(t)")
    p.add_argument(
        "--residual-estimator",
        default="hutchinson",
        choices=["exact", "hutchinson"],
        help="ε for r_FP(t): exact costs 3.5x the one-probe Hutchinson on digits and agrees "
        "with it to a few percent (same images and probes for every model)",
    )
    p.add_argument("--ckpt-every", type=int, default=250, help="checkpoint every N fine-tuning steps")
    p.add_argument(
        "--shard",
        default=None,
        help="'i/n': the i-th of n shares of the fine-tuning runs (each β dealt round-robin); "
        "shard 0 also evaluates the base; metrics.json and the figures "
        "are left to --report",
    )
    p.add_argument("--base-only", action="store_true", help="only the base phase (the learning curve)")
    p.add_argument(
        "--report", action="store_true", help="train nothing: tables and figures from what is done"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_trust_flag(p, "a checkpoint in OUT")


class Bench:
    """The data, the shared test tensors and the evaluations every model gets."""

    def __init__(self, args):
        self.args = args
        self.train = load_dataset(args.dataset, "train", args.data_dir)
        self.test = load_dataset(args.dataset, "test", args.data_dir)
        n = len(self.test) if args.eval_images == 0 else min(args.eval_images, len(self.test))
        c = args.eval_chunk or n
        self.chunks = [(a, min(a + c, n)) for a in range(0, n, c)]  # [a, b) of the test split
        self.shape, self.levels = self.train.shape, self.train.levels

    def label(self, chunk) -> str | int:
        """A chunk's name in run keys: N for the first N test images (the whole evaluation
        without chunks, so that chunked and earlier runs share it), 'a-b' for images a..b-1."""
        a, b = chunk
        if len(self.chunks) == 1:
            return self.args.eval_images or "all"
        return b if a == 0 else f"{a}-{b}"

    def missing(self, store, key_of) -> list:
        """The chunks whose run, ``key_of(label)``, is not yet in ``store``."""
        return [c for c in self.chunks if not store.done(**key_of(self.label(c)))]

    def heldout_dsm(self, model, sde, cfg) -> dict:
        """The DSM loss on the test split: ``heldout_repeats`` draws of dequantization and
        (t, z), the same for every model; mean and its standard error."""
        scaling = model_scaling(cfg)
        mean, se = held_out_dsm(
            in_chunks(model),
            sde,
            lambda gen: to_model_space(
                self.test.images, self.levels, scaling, dequantized=True, generator=gen
            )[0],
            self.args.heldout_repeats,
            weighting=cfg.dsm_weighting,
            eps=cfg.t_eps,
            generator=torch.Generator().manual_seed(EVAL_SEED + 1),
        )
        return {"heldout_dsm": mean, "heldout_dsm_se": _finite(se)}

    def evaluate(self, model, sde, cfg, chunk) -> dict:
        """Bits/dim on test images [a, b), held-out DSM loss and r_FP(t), r_DSM(t) of one model.
        The dequantization and probes are seeded per chunk (images 0.. as without chunks)."""
        a = self.args
        t0 = time.time()
        seed = EVAL_SEED if chunk[0] == 0 else step_seed(EVAL_SEED, chunk[0])
        res = image_bpd(
            model,
            sde,
            cfg,
            self.test.images[chunk[0] : chunk[1]],
            self.levels,
            repeats=a.eval_repeats,
            batch_size=a.eval_batch_size,
            rtol=a.rtol,
            atol=a.rtol,
            generator=torch.Generator().manual_seed(seed),
            progress=not a.no_progress,
        )
        t_bpd = time.time() - t0
        gen = torch.Generator().manual_seed(EVAL_SEED + 2)
        x0, _ = to_model_space(
            self.test.images[: a.residual_images],
            self.levels,
            model_scaling(cfg),
            dequantized=True,
            generator=gen,
        )
        curves = residual_curves(
            model, sde, x0, TABLE4_TIMES, estimator=a.residual_estimator, batch_size=16, generator=gen
        )
        return {
            "bpd": res["bpd"],
            "bpd_per_repeat": res["per_repeat"],
            "eval_se": _finite(standard_error(res["per_repeat"])),
            "bpd_per_image": res["per_sample"],
            "nfe": res["nfe"],
            "eval_images": chunk[1] - chunk[0],
            "eval_chunk": list(chunk),
            "weights_id": weights_id(model.state_dict()),
            "eval_repeats": a.eval_repeats,
            "rtol": a.rtol,
            **self.heldout_dsm(model, sde, cfg),
            "residual_curves": curves,
            "residual_estimator": a.residual_estimator,
            "sde": cfg.sde,
            "bpd_s": t_bpd,
            "eval_s": time.time() - t0,
        }


def base_phase(args, bench, store, out) -> None:
    base_dir = os.path.join(out, "base")
    ckpt = os.path.join(base_dir, "checkpoint.pt")
    for steps in sorted(args.base_stages):
        key = base_key(args, steps)
        stage = os.path.join(base_dir, f"stage_{steps}.pt")
        if store.done(**key) and os.path.isfile(stage):
            continue  # (checkpoints are not in git: a fresh checkout retrains the base; retrained on
            # 2026-11-24 its held-out DSM curve came within 0.3% of the committed one, not bit-equal)
        state = load_checkpoint(ckpt, trust=args.trust_checkpoint) if os.path.isfile(ckpt) else None
        have = 0 if state is None else state["step"]
        if state is not None:
            _check_sde(args, state["config"]["sde"], ckpt)
        if have > steps:
            fail(
                f"{ckpt} is at step {have}, past stage {steps}: stages must be run in order; "
                "remove the folder to start the base again"
            )
        t0 = time.time()
        if have < steps:
            _train_base(args, base_dir, steps, resume=have > 0)
        # have == steps: training finished but the stage copy or its evaluation was interrupted
        shutil.copyfile(ckpt, stage)
        cfg, sde, model, bid = load_base(out, bench, steps)
        ev = {**bench.heldout_dsm(model, sde, cfg), "base_id": bid}
        with open(os.path.join(base_dir, "log.jsonl")) as f:
            log = [json.loads(line) for line in f if line.strip()]
        store.save(
            {**ev, "config": cfg.to_dict(), "stage_s": time.time() - t0, "train_loss": _windows(log, 100)},
            **key,
        )
        print(f"base {steps} steps: held-out DSM {ev['heldout_dsm']:.4f}", flush=True)


def _train_base(args, base_dir: str, steps: int, resume: bool) -> None:
    """Continue the DSM base in ``base_dir`` to ``steps`` in a child process (scorepde.commands.train)."""
    cmd = [
        sys.executable,
        "-m",
        "scorepde.commands.train",
        "--dataset",
        args.dataset,
        "--objective",
        "dsm",
        "--steps",
        str(steps),
        "--out",
        base_dir,
        "--eval-images",
        "-1",
        "--ckpt-every",
        "250",
        "--device",
        "cpu",
        "--threads",
        str(args.threads),
        "--sde",
        args.sde,
        *args.base_args.split(),
        *(["--trust-checkpoint"] if args.trust_checkpoint else []),
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    # a fresh checkout has the base's committed config/metrics but no checkpoint: start over
    cmd.append("--resume" if resume else "--overwrite")
    print(f"base: DSM to step {steps} ({' '.join(cmd[1:])})", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        fail(
            f"the base's training (scorepde.commands.train) stopped with code {proc.returncode}; "
            "run this command again to continue",
            proc.returncode,
        )


def load_base(out, bench, base_steps):
    """(config, SDE, model, base_id) of the base stage that fine-tuning starts from: its EMA
    weights and their ``weights_id``. A retrained base is not bit-equal across machines
    (oneDNN kernels differ), so every fine-tuning and evaluation run carries the id and only
    runs from the same base are paired."""
    stage = os.path.join(out, "base", f"stage_{base_steps}.pt")
    cfg, sde, model = load_trained(load_checkpoint(stage, trust=bench.args.trust_checkpoint), bench.shape)
    _check_sde(bench.args, cfg.sde, stage)
    return cfg, sde, model, weights_id(model.state_dict())


def _check_sde(args, sde: str, path: str) -> None:
    """Every arm and evaluation rebuilds the base's SDE: a base of another SDE is refused."""
    if sde != args.sde:
        fail(
            f"{path} was trained under --sde {sde}, this grid is --sde {args.sde}: pass --sde {sde}, "
            "or another --out for a new base"
        )


def scratch_config(args) -> ImageConfig:
    """The config of a from-scratch run: the image defaults, --base-args (image/train.py's
    flags, parsed by it), --dataset, --data-dir and --sde."""
    flags = [*args.base_args.split(), "--dataset", args.dataset, "--sde", args.sde]
    flags += ["--data-dir", args.data_dir] if args.data_dir else []
    return ImageConfig(**train_command.make_config(train_command.parse_args(flags)))


def scratch_model(args, bench, seed: int):
    """(config, SDE, model, init id) of a from-scratch run: the network that ``seed`` draws, the
    same for DSM and every β of that seed; its ``weights_id`` stands where a base's would."""
    cfg = scratch_config(args)
    sde = build_sde(cfg, bench.shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_score_model(cfg, sde, bench.shape)
    return cfg, sde, model, weights_id(model.state_dict())


def start_model(args, bench, out, base_steps, seed: int):
    """(config, SDE, model, id) a run starts from: the base's EMA weights, or (--from-scratch)
    the network its seed draws."""
    return scratch_model(args, bench, seed) if args.from_scratch else load_base(out, bench, base_steps)


def base_id(args, bench, store, out, base_steps) -> str:
    """The base's id, written into its stage record when that record predates ids."""
    *_, bid = load_base(out, bench, base_steps)
    key = base_key(args, base_steps)
    record = store.load(**key) if store.done(**key) else None
    if record is not None and record.get("base_id") != bid:
        store.save({**{k: v for k, v in record.items() if k not in key}, "base_id": bid}, **key)
    return bid


def base_eval(args, bench, store, out, base_steps, bid) -> None:
    """The full evaluation of the base model that fine-tuning starts from, chunk by chunk."""
    todo = bench.missing(store, lambda images: base_eval_key(args, base_steps, bid, images))
    if not todo:
        return
    cfg, sde, model, _ = load_base(out, bench, base_steps)
    for chunk in todo:
        ev = bench.evaluate(model, sde, cfg, chunk)
        store.save(ev, **base_eval_key(args, base_steps, bid, bench.label(chunk)))
        print(
            f"base {base_steps} steps, images {chunk[0]}..{chunk[1] - 1}: {ev['bpd']:.4f} bits/dim "
            f"(eval SE {_fmt_se(ev['eval_se'])})",
            flush=True,
        )


def _windows(log, width):
    """Window means of image/train.py's per-step DSM loss: [(last step, mean)]."""
    return [
        (log[i + width - 1]["step"] + 1, float(np.mean([r["dsm"] for r in log[i : i + width]])))
        for i in range(0, len(log) - width + 1, width)
    ]


def eval_key(args, images) -> dict:
    """What makes two evaluations comparable: images (``Bench.label``), repeats, tolerance (in
    every run's key, so that a later run with other evaluation flags never mixes with these)."""
    return dict(images=images, reps=args.eval_repeats, rtol=args.rtol)


def base_key(args, steps) -> dict:
    return dict(phase="base", data=args.dataset, steps=steps)


def base_eval_key(args, base_steps, bid, images) -> dict:
    return dict(phase="base-eval", data=args.dataset, steps=base_steps, base_id=bid, **eval_key(args, images))


def train_key(args, base_steps, bid, beta, seed) -> dict:
    """One fine-tuning run, whatever it is evaluated on."""
    sub = "all" if (beta == 0 or args.fp_subbatch is None) else args.fp_subbatch
    return dict(
        phase=_phase(args),
        data=args.dataset,
        base=base_steps,
        base_id=bid,
        beta=float(beta),
        seed=seed,
        steps=args.steps,
        sub=sub,
    )


def _phase(args) -> str:
    """The runs' phase: "tune" (from a base) or "scratch" (--from-scratch, Table 1)."""
    return "scratch" if args.from_scratch else "tune"


def tune_key(args, base_steps, bid, beta, seed, images) -> dict:
    return {**train_key(args, base_steps, bid, beta, seed), **eval_key(args, images)}


def tune_todo(args, bench, store, base_steps, bid, beta, seed) -> list:
    """The evaluation chunks that fine-tuning run still lacks."""
    return bench.missing(store, lambda images: tune_key(args, base_steps, bid, beta, seed, images))


def tune_one(args, bench, store, out, base_steps, bid, beta, seed):
    """Fine-tune (or load the kept weights of) one run and evaluate the chunks it lacks."""
    cfg, sde, model, trained = fine_tuned(args, bench, out, base_steps, bid, beta, seed)
    for chunk in tune_todo(args, bench, store, base_steps, bid, beta, seed):
        ev = bench.evaluate(model, sde, cfg, chunk)
        store.save({**ev, **trained}, **tune_key(args, base_steps, bid, beta, seed, bench.label(chunk)))
    return ev


def fine_tuned(args, bench, out, base_steps, bid, beta, seed):
    """(config, SDE, EMA model, training record) of one fine-tuning run: trained (resumably,
    from OUT/ckpt/<run>.pt), or loaded from OUT/ckpt/<run>.final.pt when trained before."""
    name = run_name(**train_key(args, base_steps, bid, beta, seed))
    ckpt, final = (os.path.join(out, "ckpt", name + ext) for ext in (".pt", ".final.pt"))
    cfg, sde, model, have = start_model(args, bench, out, base_steps, seed)
    if have != bid:
        fail(f"the network run {name} starts from changed while the grid ran; run again")
    if os.path.isfile(final):
        try:
            state = load_checkpoint(final, trust=args.trust_checkpoint)
            model.load_state_dict(state["model"])
        except (ValueError, KeyError, RuntimeError) as err:
            fail(f"{final} cannot be loaded ({err}); delete it to fine-tune that run again")
        return cfg, sde, model.eval(), state["record"]
    model.train()
    objective, settings = _objective(args, model, sde, beta)
    lr = args.lr or cfg.lr
    opt, sched = make_optimizer(model.parameters(), lr=lr, warmup=cfg.warmup)
    ema = make_ema(model, cfg.ema_decay)
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    res = fit(
        objective,
        opt,
        _batches(bench, cfg, seed),
        args.steps,
        generator=torch.Generator(),
        seed=seed,
        scheduler=sched,
        ema=ema,
        model=model,
        grad_clip=cfg.grad_clip,
        checkpoint=Checkpointing(ckpt, every=args.ckpt_every, trust=args.trust_checkpoint),
        curve_every=max(1, args.steps // 200),
        progress=not args.no_progress,
        desc=f"tune β={beta:g} seed{seed}",
    )
    trained = {
        "curve": res.curve,
        "resumed_at": res.resumed_at,
        "train_s": res.train_seconds,
        "method": "dsm" if beta == 0 else "fp",
        "lr": lr,
        "batch_size": cfg.batch_size,
        "objective": settings,
    }
    save_checkpoint(final, {"model": ema.module.state_dict(), "step": args.steps, "record": trained})
    os.remove(ckpt)
    return cfg, sde, ema.module.eval(), trained


def _objective(args, model, sde, beta):
    """The fine-tuning loss at ``beta`` (0: DSM alone) in the data set's paper setting, and
    that setting as recorded with the run."""
    preset = PAPER_SETTINGS[PRESETS[args.dataset]]
    if beta == 0:
        objective = FPObjective(model, sde, dsm_weighting=preset["dsm_weighting"], eps=preset["eps"])
    else:
        objective = FPObjective(model, sde, **{**preset, "beta": beta, "subbatch": args.fp_subbatch})
    return objective, {**preset, "beta": beta, "subbatch": args.fp_subbatch}


def _batches(bench, cfg, seed):
    """``batches(start)``: the batches of steps start, start+1, …, each dequantized with a
    generator seeded by the step, so every β of one seed sees the same data."""
    images, scaling = bench.train.images, model_scaling(cfg)

    def batches(start):
        order = ShardedBatches(len(bench.train), cfg.batch_size, seed=seed, info=DistInfo(), start=start)
        deq = torch.Generator()
        for step, idx in enumerate(order, start):
            deq.manual_seed(step_seed(seed + 7919, step))
            yield to_model_space(images[idx], bench.levels, scaling, dequantized=True, generator=deq)[0]

    return batches


def _finished(args, bench, store, base_steps, seeds):
    """({(β, seed, base_id): pooled evaluation}, {base_id: pooled evaluation}) of the models
    whose every evaluation chunk is done (``_pooled``)."""
    runs = store.all()
    labels = [bench.label(c) for c in bench.chunks]

    def pooled(name, keys):  # one run key per chunk; None unless every chunk is done
        done = [store.load(**k) for k in keys if store.done(**k)]
        if done and len(done) < len(keys):
            print(f"({name}: {len(done)} of {len(keys)} evaluation chunks done; left out)", flush=True)
        return _pooled(done, name) if len(done) == len(keys) else None

    models = sorted(
        {
            (r["beta"], r["seed"], r.get("base_id"))
            for r in runs
            if r["phase"] == _phase(args) and r["seed"] in seeds
        },
        key=str,
    )
    tune = {
        (beta, seed, bid): pooled(
            f"β={beta:g} seed {seed}", [tune_key(args, base_steps, bid, beta, seed, lab) for lab in labels]
        )
        for beta, seed, bid in models
    }
    evaluated = sorted({r.get("base_id") for r in runs if r["phase"] == "base-eval"}, key=str)
    evals = {
        bid: pooled(f"base {bid}", [base_eval_key(args, base_steps, bid, lab) for lab in labels])
        for bid in evaluated
    }
    return (
        {k: r for k, r in tune.items() if r is not None},
        {b: r for b, r in evals.items() if r is not None},
    )


def report(args, bench, store, out, base_steps, betas, seeds, figures=True) -> tuple[dict, list]:
    """Tables, metrics and (``figures``) figures from the finished runs. A replicate is
    (seed, base_id): FP and DSM pair only when both fine-tuned the same base with the same
    seed. A model counts once every evaluation chunk of it is done (``_pooled``)."""
    base = sorted(
        (r for r in store.all() if r["phase"] == "base" and r["data"] == args.dataset),
        key=lambda r: r["steps"],
    )
    tune, evals = _finished(args, bench, store, base_steps, seeds)
    metrics = {
        "dataset": args.dataset,
        "sde": args.sde,
        "protocol": _phase(args).replace("tune", "finetune"),
        "base_curve": [{k: r[k] for k in ("steps", "heldout_dsm", "heldout_dsm_se")} for r in base],
        "base_steps": base_steps,
        "finetune_steps": args.steps,
        **_epochs(args, bench, base, base_steps),
        "eval_chunks": bench.chunks,
        "residual_t": list(TABLE4_TIMES),
        "bases": {},
        "betas": {},
    }
    rows = []
    for bid, be in evals.items():
        metrics["bases"][bid] = {
            k: be[k] for k in ("bpd", "eval_se", "heldout_dsm", "residual_curves", "bpd_per_repeat")
        }
        rows.append(
            [
                f"base {bid} ({base_steps} DSM steps)",
                "—",
                f"{be['bpd']:.4f}",
                "—",
                "—",
                f"{be['heldout_dsm']:.4f}",
                f"{np.mean(be['residual_curves']['r_fp']):.3g}",
            ]
        )
    of = lambda beta: {(s, b): r for (bt, s, b), r in tune.items() if bt == beta}  # noqa: E731
    rows += _dsm_rows(metrics, of(0.0))
    for beta in betas:
        if of(beta):
            metrics["betas"][repr(beta)] = _beta(of(beta), of(0.0))
            rows.append(_beta_row(beta, metrics["betas"][repr(beta)]))
    if figures:
        _figures(args, out, base_steps, betas, base, metrics, of)
    return metrics, rows


def _epochs(args, bench, base: list, base_steps: int) -> dict:
    """The budget in epochs of the training split (the paper counts epochs): the runs' steps
    and the base's, at the batch size of the base (or of --from-scratch's config)."""
    if args.from_scratch:
        batch = scratch_config(args).batch_size
    elif base:
        batch = base[-1]["config"]["batch_size"]
    else:
        return {}
    n = len(bench.train)
    return {
        "train_images": n,
        "batch_size": batch,
        "epochs": args.steps * batch / n,
        "base_epochs": base_steps * batch / n,
    }


def _dsm_rows(metrics: dict, dsm: dict) -> list:
    """The DSM summary (``metrics["dsm"]``, and per base when the runs mix bases) and its rows."""
    if not dsm:
        return []

    def dsm_row(label, e):
        return [
            label,
            str(len(e["seeds"])),
            f"{e['bpd']['mean']:.4f}",
            "—",
            "—",
            f"{e['heldout_dsm']:.4f}",
            f"{e['r_fp_mean']:.3g}",
        ]

    metrics["dsm"] = _summary(dsm)
    rows = [dsm_row("DSM", metrics["dsm"])]
    bases = sorted({b for _, b in dsm})
    if len(bases) > 1:  # the pooled row mixes bases; each base's own DSM row beside it
        metrics["dsm_by_base"] = {b: _summary({k: r for k, r in dsm.items() if k[1] == b}) for b in bases}
        rows += [dsm_row(f"  DSM, base {b}", e) for b, e in metrics["dsm_by_base"].items()]
    return rows


def _beta(fp: dict, dsm: dict) -> dict:
    """One β's summary and, over the (seed, base) replicates DSM shares, the paired FP − DSM
    bits/dim with its t-interval and the evaluation's SE of one replicate's difference."""
    e = _summary(fp)
    both = [k for k in fp if k in dsm]
    if both:
        e["paired"] = {
            **paired_difference([fp[k]["bpd"] for k in both], [dsm[k]["bpd"] for k in both]),
            "seeds": [s for s, _ in both],
            "base_ids": [b for _, b in both],
        }
        e["eval_se_diff"] = paired_eval_se(
            {k: fp[k]["bpd_per_image"] for k in both}, {k: dsm[k]["bpd_per_image"] for k in both}, both
        )
    return e


def _beta_row(beta: float, e: dict) -> list:
    pd = e.get("paired")
    ci = rp.fmt_interval(pd, 4, one="") if pd else "—"
    return [
        f"FP β={beta:g}",
        str(len(e["seeds"])),
        f"{e['bpd']['mean']:.4f}",
        ci,
        "—" if not pd else f"{e['eval_se_diff']:.4f}",
        f"{e['heldout_dsm']:.4f}",
        f"{e['r_fp_mean']:.3g}",
    ]


def _figures(args, out, base_steps, betas, base, metrics, of) -> None:
    """bpd_vs_beta.png (paired FP − DSM against β), base_curve.png, finetune_curves.png."""
    rp.paired_figure(
        {
            args.dataset: {
                "FP − DSM": {b: metrics["betas"][repr(b)] for b in betas if repr(b) in metrics["betas"]}
            }
        },
        os.path.join(out, "bpd_vs_beta.png"),
        xlabel="β (official units, ‖ε‖/D)",
        ylabel="bits/dim FP − DSM",
        suptitle=f"{args.sde.upper()}, {_trained(args, base_steps)}; paired, 95% t-interval",
    )
    if base:
        plotting.curves(
            [r["steps"] for r in base],
            {"held-out DSM loss": [r["heldout_dsm"] for r in base]},
            os.path.join(out, "base_curve.png"),
            ylabel="held-out DSM loss (EMA)",
            xlabel="base steps",
            logy=False,
            title=f"{args.dataset}: DSM base",
        )
    dsm = of(0.0)
    if dsm:
        first = min(dsm)  # one replicate's curves: DSM and every β that ran it
        series = {
            f"β={b:g}": [c["dsm"] for c in of(b)[first]["curve"]]
            for b in [0.0] + list(betas)
            if first in of(b)
        }
        steps = [c["step"] for c in dsm[first]["curve"]]
        plotting.curves(
            steps,
            series,
            os.path.join(out, "finetune_curves.png"),
            ylabel="train DSM term (window mean)",
            xlabel="step (from scratch)" if args.from_scratch else "fine-tuning step",
            logy=False,
            title=f"{args.dataset}, {args.sde.upper()}: seed {first[0]}, start {first[1]}",
        )


def _fmt_se(se) -> str:
    """An evaluation SE for a log line ("—" where one repeat gives none)."""
    return "—" if se is None else f"{se:.4f}"


def _finite(value: float):
    """``value``, or None where it is NaN (no estimate: e.g. an SE from one value)."""
    return None if math.isnan(value) else value


def _pooled(chunks: list, name: str) -> dict:
    """One model's evaluation chunks as one evaluation (``stats.pool_chunks``): bits/dim and
    each repeat's mean over all their images, the eval SE from the pooled repeats. The chunks
    must be one model: equal held-out DSM, residual curves and (where recorded) weights id."""
    first = chunks[0]
    if len(chunks) == 1:
        return first
    ids = {r["weights_id"] for r in chunks if "weights_id" in r}  # runs before 2026-12-03 have none
    if len(ids) > 1 or any(
        (r["heldout_dsm"], r["residual_curves"]) != (first["heldout_dsm"], first["residual_curves"])
        for r in chunks
    ):
        fail(
            f"{name}: its evaluation chunks disagree on the held-out DSM loss, residuals or weights, so they "
            "come from different trainings (another machine?); delete that run's chunk files to evaluate it again"
        )
    pool = pool_chunks([r["bpd_per_repeat"] for r in chunks], [r["bpd_per_image"] for r in chunks])
    per_chunk = ("eval_chunk", "nfe", "bpd_s", "eval_s")  # (the first chunk's would mislead)
    return {
        **{k: v for k, v in first.items() if k not in per_chunk},
        "bpd": pool["mean"],
        "bpd_per_image": pool["per_item"],
        "bpd_per_repeat": pool["per_repeat"],
        "eval_images": pool["n_items"],
        "eval_se": _finite(pool["se"]),
    }


def _summary(runs: dict) -> dict:
    rs = list(runs.values())
    return {
        "seeds": [s for s, _ in runs],
        "base_ids": [b for _, b in runs],
        "bpd_per_seed": [r["bpd"] for r in rs],
        "bpd": mean_se([r["bpd"] for r in rs]),
        "eval_se_per_seed": [r["eval_se"] for r in rs],
        "heldout_dsm": float(np.mean([r["heldout_dsm"] for r in rs])),
        "heldout_dsm_per_seed": [r["heldout_dsm"] for r in rs],
        "r_fp": rp.average(rs, "residual_curves", "r_fp"),
        "r_dsm": rp.average(rs, "residual_curves", "r_dsm"),
        "r_fp_mean": float(np.mean([r["residual_curves"]["r_fp"] for r in rs])),
        "train_s": float(np.mean([r["train_s"] for r in rs])),
    }


def _settings(args):
    """(shard, base_steps, bench) from the flags; ``ValueError`` naming a bad one."""
    shard = parse_shard(args.shard)
    if args.steps < 1 or args.seeds < 1 or args.eval_repeats < 1:
        raise ValueError("--steps, --seeds and --eval-repeats must be >= 1")
    if args.eval_images < 0 or args.eval_chunk < 0:
        raise ValueError("--eval-images and --eval-chunk must be >= 0 (0: the whole test split, one chunk)")
    if args.betas and any(b <= 0 for b in args.betas):
        raise ValueError("--betas are the FP runs' β and must be positive; DSM (β = 0) always runs")
    if args.from_scratch:
        if args.base_only or args.base_steps:
            raise ValueError("--from-scratch trains no base: drop --base-only and --base-steps")
        scratch_config(args)  # its --base-args, checked before anything runs
        return shard, 0, Bench(args)
    base_steps = args.base_steps or max(args.base_stages)
    if base_steps not in args.base_stages:
        raise ValueError(f"--base-steps {base_steps} is not one of --base-stages {args.base_stages}")
    return shard, base_steps, Bench(args)


def _starts(args, bench, store, out, base_steps, seeds) -> dict | None:
    """{seed: id of the network its runs start from}: the base (trained first, its stages
    resumed) for every seed, or (--from-scratch) each seed's own init; None for --base-only."""
    if args.from_scratch:
        return {seed: scratch_model(args, bench, seed)[3] for seed in seeds}
    with user_errors():  # a checkpoint in OUT that is unreadable or needs code to load
        base_phase(args, bench, store, out)
        if args.base_only:
            return None
        bid = base_id(args, bench, store, out, base_steps)
    return dict.fromkeys(seeds, bid)


def _grid(args, bench, store, out, base_steps, betas, seeds, shard) -> int:
    """The base, its evaluation (shard 0) and this shard's runs (fine-tuned, or from scratch);
    the exit code."""
    bids = _starts(args, bench, store, out, base_steps, seeds)
    if bids is None:
        return 0
    if shard[0] == 0 and not args.from_scratch:  # one evaluation of the base, not one per shard
        base_eval(args, bench, store, out, base_steps, bids[seeds[0]])
    grid = [(b, s) for i, b in enumerate(betas) for s in seeds for b in ([0.0, b] if i == 0 else [b])]
    grid = list(shard_of(grid, shard, kind=lambda run: run[0]))  # each β split evenly
    todo = [(b, s) for b, s in grid if tune_todo(args, bench, store, base_steps, bids[s], b, s)]
    start = "from scratch" if args.from_scratch else f"fine-tuning from base {base_steps} ({bids[seeds[0]]})"
    print(f"{start}: {len(grid) - len(todo)} of {len(grid)} runs done", flush=True)
    t_grid = time.time()
    for i, (beta, seed) in enumerate(todo):
        try:
            ev = tune_one(args, bench, store, out, base_steps, bids[seed], beta, seed)
        except StopRequested:
            print(
                "\ninterrupted: checkpoint saved; run the same command to continue",
                file=sys.stderr,
                flush=True,
            )
            return 130
        left = (time.time() - t_grid) / (i + 1) * (len(todo) - i - 1)
        a, b = ev["eval_chunk"]
        print(
            f"[{i + 1}/{len(todo)}] β={beta:g} seed {seed}: {ev['bpd']:.4f} bits/dim on images {a}..{b - 1} "
            f"(eval SE {_fmt_se(ev['eval_se'])}); grid ETA {left / 60:.1f} min",
            flush=True,
        )
    return 0


def default_out(args) -> str:
    """image/results/finetune_<dataset> (VP; the folders before --sde), with _<sde> for the
    other SDEs; scratch_<dataset>_<sde> with --from-scratch."""
    if args.from_scratch:
        return os.path.join("image", "results", f"scratch_{args.dataset}_{args.sde}")
    suffix = "" if args.sde == "vp" else f"_{args.sde}"
    return os.path.join("image", "results", f"finetune_{args.dataset}{suffix}")


def _trained(args, base_steps) -> str:
    if args.from_scratch:
        return f"trained {args.steps} steps from scratch"
    return f"fine-tuned {args.steps} steps from the {base_steps}-step DSM base"


def main(argv=None) -> int:
    """``scorepde-finetune`` / ``python image/finetune.py``: 0 when done, 130 when interrupted."""
    p, args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with user_errors():
        shard, base_steps, bench = _settings(args)
    out = args.out or default_out(args)
    store = RunStore(os.path.join(out, "runs"))
    preset_beta = PAPER_SETTINGS[PRESETS[args.dataset]]["beta"]
    # 10 significant digits: 0.1/10 and a typed 0.01 name the same run
    betas = [float(f"{b:.10g}") for b in (args.betas or [preset_beta, preset_beta / 10, preset_beta * 10])]
    seeds = list(range(args.seed, args.seed + args.seeds))
    if not args.report:
        code = _grid(args, bench, store, out, base_steps, betas, seeds, shard)
        if code:
            return code
    # a shard sees its own grid only: the folder's report is left to --report, not overwritten
    write = args.report or args.shard is None
    metrics, rows = report(args, bench, store, out, base_steps, betas, seeds, figures=write)
    # the experiment's flags (--trust-checkpoint only says how to open files, not what ran)
    metrics["config"] = {k: v for k, v in vars(args).items() if k != "trust_checkpoint"}
    if write:
        rp.write_metrics(out, metrics, indent=1)
    print(
        rp.text_table(
            [
                "model",
                "seeds",
                "bits/dim",
                "FP − DSM [95% CI]",
                "eval SE of diff",
                "held-out DSM",
                "mean r_FP",
            ],
            rows,
        )
    )
    print(
        f"({_trained(args, base_steps)}; "
        + (
            f"wrote {out}/metrics.json)"
            if write
            else f"shard {args.shard}: run with --report once every shard is done to write {out}/metrics.json)"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
