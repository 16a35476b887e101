"""Embeddings of a per-sample noise label c ``[B]`` (log σ or a scaled time) into ``[B, dim]``.

``"fourier"``: Gaussian Fourier features [sin 2πWc, cos 2πWc], W ~ N(0, scale²) fixed
(NCSN++, for c = log σ). ``"sinusoidal"``: the transformer/DDPM position embedding
[sin(c ω_k), cos(c ω_k)], ω_k = 10000^(−k/(dim/2 − 1)) (DDPM++, for c = 999 t).
Each says how fast its fastest feature turns (``max_frequency``, radians per unit of c), so
a finite difference in t can pick its step from it (``ScoreModel.time_rate``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianFourierEmbedding", "SinusoidalEmbedding", "EMBEDDINGS", "make_embedding"]


class GaussianFourierEmbedding(nn.Module):
    """c ↦ [sin 2πWc, cos 2πWc] with fixed random frequencies W ~ N(0, scale²), ``dim/2`` of them."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"the embedding dimension must be even and at least 2, got {dim}")
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    @property
    def max_frequency(self) -> float:
        """How fast the fastest feature turns: radians per unit of c, 2π max|W|."""
        return 2 * math.pi * float(self.W.abs().max())

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * c[:, None] * self.W[None, :].to(c.dtype)
        return torch.cat([proj.sin(), proj.cos()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """c ↦ [sin(c ω_k), cos(c ω_k)], ω_k = max_period^(−k/(dim/2 − 1)), k < dim/2."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the embedding dimension must be even and at least 4, got {dim}")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / (half - 1)))

    @property
    def max_frequency(self) -> float:
        """How fast the fastest feature turns: radians per unit of c, max ω_k (= 1)."""
        return float(self.freqs.abs().max())

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        proj = c[:, None] * self.freqs[None, :].to(c.dtype)
        return torch.cat([proj.sin(), proj.cos()], dim=1)


EMBEDDINGS = {"fourier": GaussianFourierEmbedding, "sinusoidal": SinusoidalEmbedding}


def make_embedding(kind: str, dim: int, fourier_scale: float = 16.0) -> nn.Module:
    """The embedding named ``kind`` (a key of ``EMBEDDINGS``) with output size ``dim``."""
    if kind not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {kind!r}; choose one of {sorted(EMBEDDINGS)}")
    return GaussianFourierEmbedding(dim, fourier_scale) if kind == "fourier" else SinusoidalEmbedding(dim)
