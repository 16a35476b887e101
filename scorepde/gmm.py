"""Gaussian mixtures pushed through a linear SDE: exact log q_t and score at every t.

With x_t | x_0 ~ N(a(t) x_0, σ_t² I), the component N(μ_k, Σ_k) becomes
N(a μ_k, a² Σ_k + σ_t² I). Writing Σ_k = U_k diag(λ_k) U_kᵀ (U_k = I for isotropic and
diagonal covariances), C_k(t) = U_k diag(a² λ_k + σ_t²) U_kᵀ, so

    log q_t(x) = logsumexp_k [log w_k + log N(x; a μ_k, C_k)]
    ∇ log q_t(x) = Σ_k r_k(x) C_k⁻¹ (a μ_k − x),              r = softmax of the terms above

Plain tensor algebra, no autograd inside: ``lambda x, t: gmm.score(x, t, sde)`` is itself a
model for ``scorepde.residual`` and works under torch.func in float32 and float64. The cost
per sample is O(K D) for isotropic and diagonal covariances and O(K D²) for full ones (one
rotation into each component's eigenbasis); no per-sample matrix is ever formed.
"""

from __future__ import annotations

import math

import torch

from .sde import SDE

__all__ = ["GaussianMixture", "separated_mixture", "random_rotation"]


class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) in D dimensions: ``means [K, D]``, ``weights [K]`` and one of

    - ``stds [K]`` (or a scalar): isotropic, Σ_k = s_k² I;
    - ``stds [K, D]``: diagonal, Σ_k = diag(s_k²);
    - ``covs [K, D, D]``: full, symmetric positive definite.
    """

    def __init__(self, means, stds=None, weights=None, *, covs=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must be [K, D], got shape {tuple(means.shape)}")
        K, D = means.shape
        weights = (
            torch.full((K,), 1.0 / K, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if weights.shape != (K,) or bool((weights <= 0).any()):
            raise ValueError("weights must be [K] and positive, one per mean")
        if abs(weights.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {weights.sum().item():.6g}; normalise them")
        if (stds is None) == (covs is None):
            raise ValueError(
                "give the covariances one way: stds [K] (isotropic), stds [K, D] "
                "(diagonal) or covs [K, D, D] (full)"
            )
        self.means, self.weights, self.basis = means, weights, None
        if covs is not None:
            self.kind, self.stds = "full", None
            self.variances, self.basis = _eigh(torch.as_tensor(covs, dtype=torch.float64), K, D)
        else:
            stds = torch.as_tensor(stds, dtype=torch.float64)
            self.kind = "diag" if stds.dim() == 2 else "iso"
            shape = (K, D) if self.kind == "diag" else (K,)
            try:
                self.stds = stds.expand(shape).clone()
            except RuntimeError:
                raise ValueError(
                    f"stds must be a scalar, [K] = [{K}] or [K, D] = [{K}, {D}], "
                    f"got shape {tuple(stds.shape)}"
                ) from None
            if bool((self.stds <= 0).any()):
                raise ValueError("stds must be positive")
            self.variances = (self.stds**2).expand(D, K).T if self.kind == "iso" else self.stds**2
        self._cast = {}

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _params(self, like: torch.Tensor):
        """(μ, λ, U, w) in ``like``'s dtype and device, cast once per dtype and device."""
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = tuple(
                None if v is None else v.to(like)
                for v in (self.means, self.variances, self.basis, self.weights)
            )
        return self._cast[key]

    def _terms(self, x, t, sde: SDE | None):
        """Per-component log w_k + log N(x; a μ_k, C_k), and the pieces the score needs."""
        xf = x.flatten(1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} features per sample; this mixture is {self.dim}-D")
        if sde is None:
            a, noise_var = torch.ones_like(xf[:, 0]), torch.zeros_like(xf[:, 0])
        else:
            a, noise_var = sde.marginal(t)[0], sde.marginal_variance(t)
        if self.kind == "iso":
            mu, s2, w = (v.to(x) for v in (self.means, self.stds**2, self.weights))
            var = a[:, None] ** 2 * s2 + noise_var[:, None]  # [B, K]
            diff = xf[:, None, :] - a[:, None, None] * mu  # [B, K, D]
            logn = -0.5 * (diff.pow(2).sum(-1) / var + self.dim * torch.log(2 * math.pi * var))
            return torch.log(w) + logn, diff, var[..., None]
        mu, lam, U, w = self._params(xf)
        diff = xf[:, None, :] - a[:, None, None] * mu  # [B, K, D]
        y = diff if U is None else torch.einsum("bkj,kjd->bkd", diff, U)  # eigen-coordinates
        var = a[:, None, None] ** 2 * lam + noise_var[:, None, None]  # [B, K, D]
        logn = -0.5 * (y.pow(2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(w) + logn, y, var

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | None = None, sde: SDE | None = None):
        """log q_t(x), shape ``[B]``; the data density q_0 when ``sde`` is None."""
        return torch.logsumexp(self._terms(x, t, sde)[0], dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor | None = None, sde: SDE | None = None):
        """∇x log q_t(x), shaped like x."""
        terms, y, var = self._terms(x, t, sde)
        r = torch.softmax(terms, dim=1)
        if self.kind == "iso":  # the isotropic form as it always was, to the last bit
            return (-(r / var[..., 0])[..., None] * y).sum(1).reshape(x.shape)
        z = r[..., None] * y / var
        U = self._params(y)[2]
        back = z if U is None else torch.einsum("bkd,kjd->bkj", z, U)
        return (-back.sum(1)).reshape(x.shape)

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32, device=None
    ) -> torch.Tensor:
        """n draws from the data density q_0, ``[n, D]``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if self.kind == "iso":
            x = self.means[k] + self.stds[k, None] * z
        else:
            z = self.variances[k].sqrt() * z
            x = self.means[k] + (z if self.basis is None else torch.einsum("njd,nd->nj", self.basis[k], z))
        return x.to(dtype=dtype, device=device)

    def coordinate_variances(self) -> torch.Tensor:
        """diag Σ_k, ``[K, D]``: each component's variance along each coordinate."""
        if self.basis is None:
            return self.variances
        return torch.einsum("kjd,kd->kj", self.basis**2, self.variances)

    def coordinate_std(self) -> float:
        """The data's scale: sqrt of the per-coordinate variance of q_0, averaged over
        coordinates, Var_j = Σ_k w_k (μ_kj² + (Σ_k)_jj) − (Σ_k w_k μ_kj)²."""
        w = self.weights[:, None]
        second = (w * (self.means**2 + self.coordinate_variances())).sum(0)
        return float((second - (w * self.means).sum(0) ** 2).mean().sqrt())

    def __repr__(self):
        return f"GaussianMixture(K={len(self.weights)}, D={self.dim}, cov={self.kind!r})"


def _eigh(covs: torch.Tensor, K: int, D: int):
    """(λ [K, D], U [K, D, D]) with Σ_k = U_k diag(λ_k) U_kᵀ; refuses what is not SPD."""
    if covs.shape != (K, D, D):
        raise ValueError(f"covs must be [K, D, D] = [{K}, {D}, {D}], got shape {tuple(covs.shape)}")
    if not torch.allclose(covs, covs.transpose(1, 2), rtol=1e-10, atol=1e-12):
        raise ValueError("covs must be symmetric; symmetrise them with (C + Cᵀ) / 2")
    lam, U = torch.linalg.eigh(covs)
    if bool((lam <= 0).any()):
        raise ValueError(f"covs must be positive definite; the smallest eigenvalue is {lam.min().item():.3g}")
    return lam, U


def random_rotation(dim: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal D × D matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def separated_mixture(
    dim: int, n_components: int = 4, *, offset: float = 3.0, std_range=None, seed: int = 0, cov: str = "iso"
) -> GaussianMixture:
    """K well-separated components in D dimensions with unequal weights and covariances.

    Means: K distinct sign vectors in {±offset}ᴰ (drawn with ``seed``), so two means are at
    least 2·offset apart. Weights ∝ K, K−1, ..., 1 (0.4, 0.3, 0.2, 0.1 for K = 4). ``cov``:

    - ``"iso"``: stds evenly spaced over ``std_range`` (default (0.5, 1.2)), one per component;
    - ``"diag"``: per-coordinate stds log-spaced over ``std_range`` (default (0.3, 3): a
      variance ratio of 100), in a different random order for each component;
    - ``"full"``: the diagonal ones rotated by an independent random rotation per component.
    """
    if dim < 1 or n_components < 1:
        raise ValueError(f"need dim >= 1 and n_components >= 1, got {dim}, {n_components}")
    if cov not in ("iso", "diag", "full"):
        raise ValueError(f"cov must be 'iso', 'diag' or 'full', got {cov!r}")
    if dim < 63 and n_components > 2**dim:
        raise ValueError(
            f"only 2^{dim} = {2**dim} distinct sign vectors exist in {dim}-D; "
            f"ask for at most that many components, not {n_components}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    signs: list = []
    while len(signs) < n_components:
        v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).tolist()
        if v not in signs:
            signs.append(v)
    means = offset * torch.tensor(signs, dtype=torch.float64)
    weights = torch.arange(n_components, 0, -1, dtype=torch.float64)
    weights = weights / weights.sum()
    if cov == "iso":
        lo, hi = std_range or (0.5, 1.2)
        return GaussianMixture(means, torch.linspace(lo, hi, n_components, dtype=torch.float64), weights)
    lo, hi = std_range or (0.3, 3.0)
    grid = torch.logspace(math.log10(lo), math.log10(hi), dim, dtype=torch.float64)
    stds = torch.stack([grid[torch.randperm(dim, generator=gen)] for _ in range(n_components)])
    if cov == "diag":
        return GaussianMixture(means, stds, weights)
    R = torch.stack([random_rotation(dim, gen) for _ in range(n_components)])
    covs = torch.einsum("kij,kj,klj->kil", R, stds**2, R)
    return GaussianMixture(means, weights=weights, covs=0.5 * (covs + covs.transpose(1, 2)))
