"""A U-Net ``net(x [B, C, H, W], c [B]) -> [B, C, H, W]`` conditioned on a noise label c.

DDPM++-like: residual blocks (GroupNorm, SiLU, 3×3 convs, the label's embedding added
in between), strided-conv downsampling, nearest upsampling, skip connections, and
optional single-matmul self-attention in the middle, at the lowest resolution only. Every
op is smooth in x and samples never mix (GroupNorm, no BatchNorm), so the network works
under torch.func.jvp/vmap/grad and double backward, as the score FPE needs. What c is
(log σ or 999 t) and how the output becomes a score is ``scorepde.nn.ScoreModel``'s job.

Sizes: ``len(channel_mult)`` resolution levels, so 2^(levels − 1) must divide H and W;
other sizes are zero-padded to the next multiple (centred) and cropped back, so e.g.
28×28 runs with 4 levels as 32×32. Choosing levels that divide (28: at most 3) avoids it.

Dropout > 0 in train mode makes the network random, so its derivatives mix masks:
vmapped ones (exact divergence, several probes) raise torch's vmap randomness error and
``check_batch_independent`` reports coupling. Take residuals in eval mode or with
dropout 0; one-probe estimators with ``validate=False`` do run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import make_embedding

__all__ = ["UNet", "group_norm"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ min(32, channels/4) that divides ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """h + F(h, emb), rescaled by 1/√2: GN → SiLU → conv → +emb → GN → SiLU → dropout → conv."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, by plain matmul and softmax.

    No ``F.scaled_dot_product_attention``: its fused kernels lack forward-mode AD.
    """

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channels ({channels})")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, emb=None):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        w = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(C // self.heads), dim=-1)  # [B, h, HW, HW]
        h = (v @ w.transpose(-1, -2)).reshape(B, C, H, W)
        return (x + self.out(h)) / math.sqrt(2)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """U-Net ``(x [B, C, H, W], c [B]) -> [B, C_out, H, W]``, sized by its arguments.

    ``channels`` is the width at full resolution; level i has ``channels·channel_mult[i]``
    and ``num_res_blocks`` residual blocks; ``attention`` puts self-attention (``heads``
    heads) in the middle block, at the lowest resolution. ``embedding`` embeds c:
    ``"fourier"`` (for c = log σ, VE; frequencies ~ N(0, ``fourier_scale``²)) or
    ``"sinusoidal"`` (for c = 999 t, VP/sub-VP). ``out_channels`` defaults to ``in_channels``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention: bool = True,
        heads: int = 1,
        dropout: float = 0.0,
        embedding: str = "fourier",
        fourier_scale: float = 16.0,
        out_channels: int | None = None,
    ):
        super().__init__()
        if not channel_mult or num_res_blocks < 1 or channels < 1 or in_channels < 1:
            raise ValueError(
                f"need channels, in_channels, num_res_blocks >= 1 and a non-empty "
                f"channel_mult, got {channels}, {in_channels}, {num_res_blocks}, "
                f"{tuple(channel_mult)}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.levels = len(channel_mult)
        emb_dim, features = 4 * channels, max(4, channels + channels % 2)
        self.embed = nn.Sequential(
            make_embedding(embedding, features, fourier_scale),
            nn.Linear(features, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        widths = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        skips, ch = [channels], channels
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, w, emb_dim, dropout))
                ch = w
                skips.append(ch)
            if i < self.levels - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)

        self.middle = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout)]
            + ([SelfAttention(ch, heads)] if attention else [])
            + [ResBlock(ch, ch, emb_dim, dropout)]
        )

        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), w, emb_dim, dropout))
                ch = w
            if i > 0:
                self.up.append(Upsample(ch))
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"UNet expects images [B, C, H, W], got {tuple(x.shape)}; use MLPScore for flat data"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet was built for {self.in_channels} channel(s), got x of shape "
                f"{tuple(x.shape)}; build it with in_channels={x.shape[1]}"
            )
        if c.shape != x.shape[:1]:
            raise ValueError(f"the noise label must have shape [B] = [{x.shape[0]}], got {tuple(c.shape)}")
        H, W = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = -H % m, -W % m
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

        emb = self.embed(c)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        for block in self.middle:
            h = block(h, emb)
        for block in self.up:  # each residual block takes the matching skip from the way down
            if isinstance(block, ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = block(h, emb)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., ph // 2 : ph // 2 + H, pw // 2 : pw // 2 + W]
