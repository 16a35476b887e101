"""Gaussian mixtures pushed through a linear SDE: exact log q_t and score at every t.

With x_t | x_0 ~ N(a(t) x_0, σ_t² I), the component N(μ_k, s_k² I) becomes
N(a μ_k, (a² s_k² + σ_t²) I), so

    log q_t(x) = logsumexp_k [log w_k + log N(x; a μ_k, v_k I)],   v_k = a² s_k² + σ_t²
    ∇ log q_t(x) = Σ_k r_k(x) (a μ_k − x) / v_k,                  r = softmax of the terms above

Plain tensor algebra, no autograd inside: ``lambda x, t: gmm.score(x, t, sde)`` is itself a
model for ``scorepde.residual`` and works under torch.func in float32 and float64.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .sde import SDE

__all__ = ["GaussianMixture", "separated_mixture"]


class GaussianMixture:
    """Σ_k w_k N(μ_k, s_k² I) in D dimensions: ``means [K, D]``, ``stds [K]``, ``weights [K]``."""

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must be [K, D], got shape {tuple(means.shape)}")
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
        weights = (torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None
                   else torch.as_tensor(weights, dtype=torch.float64))
        if weights.shape != (K,) or bool((weights <= 0).any()) or bool((stds <= 0).any()):
            raise ValueError("weights and stds must be [K] and positive, one per mean")
        if abs(weights.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {weights.sum().item():.6g}; normalise them")
        self.means, self.stds, self.weights = means, stds, weights

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _terms(self, x, t, sde: Optional[SDE]):
        """Per-component log w_k + log N(x; a μ_k, v_k I) and the pieces the score needs."""
        xf = x.flatten(1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} features per sample; this mixture is {self.dim}-D")
        mu, s2, w = (v.to(x) for v in (self.means, self.stds ** 2, self.weights))
        if sde is None:
            a, noise_var = torch.ones_like(xf[:, 0]), torch.zeros_like(xf[:, 0])
        else:
            a, noise_var = sde.marginal(t)[0], sde.marginal_variance(t)
        var = a[:, None] ** 2 * s2 + noise_var[:, None]                     # [B, K]
        diff = xf[:, None, :] - a[:, None, None] * mu                       # [B, K, D]
        logn = -0.5 * (diff.pow(2).sum(-1) / var + self.dim * torch.log(2 * math.pi * var))
        return torch.log(w) + logn, diff, var

    def log_prob(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, sde: Optional[SDE] = None):
        """log q_t(x), shape ``[B]``; the data density q_0 when ``sde`` is None."""
        return torch.logsumexp(self._terms(x, t, sde)[0], dim=1)

    def score(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, sde: Optional[SDE] = None):
        """∇x log q_t(x), shaped like x."""
        terms, diff, var = self._terms(x, t, sde)
        r = torch.softmax(terms, dim=1)
        return (-(r / var)[..., None] * diff).sum(1).reshape(x.shape)

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None,
               dtype=torch.float32, device=None) -> torch.Tensor:
        """n draws from the data density q_0, ``[n, D]``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + self.stds[k, None] * z
        return x.to(dtype=dtype, device=device)

    def coordinate_std(self) -> float:
        """The data's scale: sqrt of the per-coordinate variance of q_0, averaged over
        coordinates, Var_j = Σ_k w_k (μ_kj² + s_k²) − (Σ_k w_k μ_kj)²."""
        w = self.weights[:, None]
        second = (w * (self.means ** 2 + self.stds[:, None] ** 2)).sum(0)
        return float((second - (w * self.means).sum(0) ** 2).mean().sqrt())

    def __repr__(self):
        return f"GaussianMixture(K={len(self.weights)}, D={self.dim})"


def separated_mixture(dim: int, n_components: int = 4, *, offset: float = 3.0,
                      std_range=(0.5, 1.2), seed: int = 0) -> GaussianMixture:
    """K well-separated components in D dimensions with unequal weights and stds.

    Means: K distinct sign vectors in {±offset}ᴰ (drawn with ``seed``), so two means are at
    least 2·offset apart (6 at the default, five of the widest stds). Stds evenly spaced
    over ``std_range``; weights ∝ K, K−1, ..., 1 (0.4, 0.3, 0.2, 0.1 for K = 4).
    """
    if dim < 1 or n_components < 1:
        raise ValueError(f"need dim >= 1 and n_components >= 1, got {dim}, {n_components}")
    if dim < 63 and n_components > 2 ** dim:
        raise ValueError(f"only 2^{dim} = {2 ** dim} distinct sign vectors exist in {dim}-D; "
                         f"ask for at most that many components, not {n_components}")
    gen = torch.Generator().manual_seed(int(seed))
    signs: list = []
    while len(signs) < n_components:
        v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).tolist()
        if v not in signs:
            signs.append(v)
    means = offset * torch.tensor(signs, dtype=torch.float64)
    stds = torch.linspace(std_range[0], std_range[1], n_components, dtype=torch.float64)
    weights = torch.arange(n_components, 0, -1, dtype=torch.float64)
    return GaussianMixture(means, stds, weights / weights.sum())
