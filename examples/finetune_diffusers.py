"""Fine-tune a diffusers model with the FP regularizer, and audit it before and after.

    python examples/finetune_diffusers.py                       # a few minutes of CPU
    python examples/finetune_diffusers.py --dsm-steps 40 --fp-steps 20 --out runs/ft   # seconds

A ``UNet2DModel`` and a ``DDPMScheduler`` are built from a config (no download), trained
briefly by denoising score matching on sklearn's 8×8 digits, audited (r_FP(t), the score-FPE
residual of Eq. 9 at each t), fine-tuned with ``FPObjective(score, sde, **PAPER_SETTINGS[...])``
on the score of ``sp.from_diffusers`` (gradients reach the UNet's weights through the score),
audited again, and saved with diffusers' own ``save_pretrained``. Swap the config for
``UNet2DModel.from_pretrained(...)`` and your data for the digits to do the same to your model.
"""

from __future__ import annotations

import argparse

import torch

import scorepde as sp
from scorepde.audit import audit
from scorepde.training import fit


def build(seed: int):
    """A small UNet2DModel (1×8×8, attention in the lower block) and its DDPM scheduler."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    return unet, DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def digits(split: str) -> torch.Tensor:
    """sklearn's digits in [-1, 1], the range DDPM models are trained on."""
    data = sp.load_dataset("digits", split)
    return sp.to_model_space(data.images, data.levels, "[-1,1]")[0]


def train(
    objective: torch.nn.Module, params, x: torch.Tensor, steps: int, lr: float, batch: int, seed: int
) -> float:
    """``steps`` Adam steps of ``objective`` on random batches of ``x`` through scorepde's
    training loop (it stops on a NaN loss or gradient); the last loss."""
    gen = torch.Generator().manual_seed(seed)
    batches = (x[torch.randint(len(x), (batch,), generator=gen)] for _ in iter(int, 1))
    logs = fit(objective, torch.optim.Adam(params, lr=lr), batches, steps, generator=gen, progress=False)
    return logs[-1]["loss"]


def r_fp(score, sde, x: torch.Tensor, ts, seed: int) -> list[float]:
    """r_FP(t) = sqrt E‖ε[s](x_t, t)‖² at each t, from the audit (the same probes each call)."""
    result = audit(
        score, sde, x, ts, curl=None, progress=False, generator=torch.Generator().manual_seed(seed)
    )
    return [row["mean"] for row in result["r_fp"]]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsm-steps", type=int, default=1500, help="DSM training steps of the base")
    p.add_argument("--fp-steps", type=int, default=300, help="FP fine-tuning steps")
    p.add_argument("--preset", default="mnist", choices=sorted(sp.PAPER_SETTINGS), help="the paper's setting")
    p.add_argument("--beta", type=float, default=None, help="override the preset's β (its units)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--audit-images", type=int, default=64, help="held-out images the audit uses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/finetune_diffusers", help="where save_pretrained writes the UNet")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    unet, scheduler = build(args.seed)
    score, sde = sp.from_diffusers(unet, scheduler)  # s(x, t) = −ε̂(x, 999 t)/σ_t, and its DiscreteVPSDE
    train_x, test_x = digits("train"), digits("test")[: args.audit_images]
    ts = [0.02, 0.1, 0.3, 0.6, 0.9]

    dsm = sp.FPObjective(score, sde, eps=1e-3)  # β = γ = 0: plain DSM
    print(
        f"DSM: {args.dsm_steps} steps, last loss {train(dsm, unet.parameters(), train_x, args.dsm_steps, 2e-3, args.batch_size, args.seed):.3f}"
    )
    before = r_fp(score, sde, test_x, ts, args.seed)

    settings = {**sp.PAPER_SETTINGS[args.preset], "h": sde.fd_h}  # steps in t: 1/20 of a DDPM step
    if args.beta is not None:
        settings["beta"] = args.beta
    fp = sp.FPObjective(score, sde, **settings)
    print(
        f"FP ({args.preset}, β = {settings['beta']}): {args.fp_steps} steps, last loss "
        f"{train(fp, unet.parameters(), train_x, args.fp_steps, 5e-4, args.batch_size, args.seed + 1):.3f}"
    )
    after = r_fp(score, sde, test_x, ts, args.seed)

    print("t        r_FP before   r_FP after")
    for t, b, a in zip(ts, before, after):
        print(f"{t:<8g} {b:12.4g} {a:12.4g}")
    unet.save_pretrained(args.out)
    print(f"wrote {args.out} (UNet2DModel.from_pretrained reads it)")
    return {"t": ts, "before": before, "after": after}


if __name__ == "__main__":
    main()
