"""A small MLP ``net(x [B, D], c [B]) -> [B, D]`` for toy 1-D/2-D data.

SiLU throughout: the score FPE takes second derivatives in x (div of the score, then its
gradient), which ReLU would make zero almost everywhere. The noise label c is embedded
(``"fourier"`` or ``"sinusoidal"``) and concatenated with x at the input. Used bare, the
MLP is a score s(x, t) with c = t; wrapped in ``ScoreModel`` it gets c = log σ or 999 t.
"""

from __future__ import annotations

import torch
from torch import nn

from .embedding import make_embedding

__all__ = ["MLPScore"]


class MLPScore(nn.Module):
    """[x, emb(c)] → ``depth`` × (Linear, SiLU) of width ``hidden`` → Linear to D
    (or to ``out_dim``)."""

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        embedding: str = "fourier",
        embedding_dim: int = 32,
        fourier_scale: float = 16.0,
        out_dim: int | None = None,
    ):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"need dim, hidden, depth >= 1, got {dim}, {hidden}, {depth}")
        self.dim = dim
        self.embed = make_embedding(embedding, embedding_dim, fourier_scale)
        layers, width = [], dim + embedding_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.out_dim = dim if out_dim is None else int(out_dim)
        self.net = nn.Sequential(*layers, nn.Linear(width, self.out_dim))

    def time_rate(self) -> float:
        """Radians per unit c by which the fastest time feature turns: used bare, c = t, so
        this is the rate in t that finite differences take their step from."""
        return self.embed.max_frequency

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPScore expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        if c.shape != x.shape[:1]:
            raise ValueError(f"c must have shape [B] = [{x.shape[0]}], got {tuple(c.shape)}")
        return self.net(torch.cat([x, self.embed(c)], dim=1))
