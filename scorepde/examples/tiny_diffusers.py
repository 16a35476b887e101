"""A tiny diffusers model for trying scorepde's adapters and audit (random weights, no download).

    scorepde-audit --model scorepde.examples.tiny_diffusers:factory --data digits --quick

``factory()`` returns ``(score, sde)``, the contract of ``--model``; yours would load a
pretrained UNet2DModel and its scheduler instead (``UNet2DModel.from_pretrained(...)``).
Part of the package, so it imports from any folder; ``examples/tiny_diffusers.py`` in the
source checkout is the same module.
"""

import torch

import scorepde as sp


def tiny_unet(channels: int = 1, size: int = 8, attention: bool = True, out_channels=None, seed: int = 0):
    """A UNet2DModel of a few thousand parameters, with attention in its lower block."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=4,
        attention_head_dim=8,
    ).eval()  # type: ignore[attr-defined]  # diffusers' stubs omit nn.Module's methods


def factory(
    beta_schedule: str = "linear", prediction_type: str = "epsilon", scheduler: str = "DDPMScheduler"
):
    """(score, sde) of a tiny 1×8×8 DDPM UNet with attention (sklearn digits' shape), with a
    diffusers ``scheduler`` class of the DDPM family (DDPM, DDIM, Euler, LCM, …)."""
    import diffusers

    scheduler = getattr(diffusers, scheduler)(beta_schedule=beta_schedule, prediction_type=prediction_type)
    return sp.from_diffusers(tiny_unet(), scheduler)
