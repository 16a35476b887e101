"""A score with the structure of a Gaussian mixture's, nothing about the mixture given.

Any mixture of Gaussians Σ_k w_k N(μ_k, Σ_k), pushed through a linear SDE with scalar noise
(kernel a(t), σ_t), has at every t the score

    s(x, t) = ∇x log Σ_k exp ℓ_k(x, t) = Σ_k r_k(x, t) P_k(t) (a μ_k − x),   r = softmax(ℓ),
    ℓ_k = −½ (x − a μ_k)ᵀ P_k (x − a μ_k) + ½ log det P_k + log w_k,
    P_k(t) = (a² Σ_k + σ_t² I)⁻¹ = U_k diag(1/(a² v_k + σ_t²)) U_kᵀ       (Σ_k = U_k diag(v_k) U_kᵀ):

each component keeps its eigenvectors in t. ``MixtureScore`` assumes exactly this structure and
learns every piece of it; it is told no covariance, mean or weight, nor the number of components:
J components (8 by default), each with a rotation U_j = exp(S_j − S_jᵀ) (learned, ``basis="full"``;
the identity at the start) or U_j = I (``basis="none"``: diagonal precisions), and free functions
of the noise level c = log ŝ(t) (ŝ as in ``ToyScore``) for the rest. In the units u = x/ŝ:

    ℓ_j = −½ Σ_d λ_jd ((U_jᵀ (u − ν_j))_d)² + ½ Σ_d log λ_jd + β_j,      s = Σ_j r_j U_j (λ_j ⊙ U_jᵀ (ν_j − u)) / ŝ
    λ_jd = ŝ²/(a² κ_jd(c) + σ_t²),   ν_j = a m_j(c)/ŝ,   (log κ_j, m_j, β_j)(c) = base_j + γ·MLP(c)_j

(``kernel=False``: λ = exp(MLP output) directly). A true mixture is the case κ_j = v_j, m_j = μ_j,
β_j = log w_j constant in c and U_j = its eigenvectors, so the start (the MLP's last layer at zero)
is a mixture carried by the SDE's kernel, and the PDE's part is to keep κ, m, β from drifting
in c while the initial score fixes their values. γ = ``time_gain`` (0.1) damps the MLP's share
of Adam's steps. Means start on data samples (``init_means``, k-means++ seeding).

Costs O(J D²) per sample and O(J D³) per call (the rotations) for ``basis="full"``, O(J D)
for ``"none"``; no per-sample D × D matrix is formed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sde import SDE
from .embedding import make_embedding
from .precond import embedding_rate

__all__ = ["MixtureScore"]


class MixtureScore(nn.Module):
    """``score(x [B, D], t [B])`` with a Gaussian mixture's structure (module docstring).

    ``dim``: D. ``components``: J. ``basis``: ``"full"`` (a learned rotation per component) or
    ``"none"`` (diagonal precisions). ``hidden``: the width of the MLP of c. ``kernel``: λ through
    the SDE's kernel (above) or free. ``correction``: an optional net(u, c) → ℝᴰ added to the
    mixture part, outside its structure (its last ``nn.Linear`` starts at zero). ``mean_init``: the
    std of the random starting means (``init_means`` replaces them by data samples). ``time_head``:
    the MLP of c moves every (log κ_jd, m_jd, β_j) (``"coordinate"``) or, per component, shifts
    log κ_j, scales m_j and shifts β_j (``"component"``: O(J) outputs instead of O(J D), for large D).
    """

    BASES = ("full", "none")
    TIME_HEADS = ("coordinate", "component")

    def __init__(
        self,
        dim: int,
        sde: SDE,
        *,
        components: int = 8,
        basis: str = "full",
        data_std: float = 1.0,
        hidden: int = 64,
        correction: nn.Module | None = None,
        mean_init: float = 1.0,
        fourier_scale: float = 1.0,
        kernel: bool = True,
        time_gain: float = 0.1,
        time_head: str = "coordinate",
    ):
        super().__init__()
        if dim < 1 or components < 1 or hidden < 1:
            raise ValueError(f"need dim, components, hidden >= 1, got {dim}, {components}, {hidden}")
        if basis not in self.BASES:
            raise ValueError(f"unknown basis {basis!r}; choose one of {self.BASES}")
        if data_std <= 0:
            raise ValueError(f"data_std must be positive, got {data_std}")
        self.dim, self.components, self.basis = int(dim), int(components), basis
        self.sde, self.data_std, self.kernel = sde, float(data_std), bool(kernel)
        self.embed = make_embedding("fourier", 32, fourier_scale)
        if time_head not in self.TIME_HEADS:
            raise ValueError(f"unknown time_head {time_head!r}; choose one of {self.TIME_HEADS}")
        self.time_head = time_head
        n_out = components * (2 * dim + 1 if time_head == "coordinate" else 3)
        last = nn.Linear(hidden, n_out, bias=False)
        nn.init.zeros_(last.weight)
        self.time_net = nn.Sequential(
            nn.Linear(32, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last
        )
        self.time_gain = float(time_gain)
        # The constant part of (log κ or log λ, m, β): κ = 1, m random (breaks the components'
        # symmetry; ``init_means`` puts them on the data), β = 0.
        base = torch.zeros(components, 2 * dim + 1)
        base[:, dim : 2 * dim] = mean_init * torch.randn(components, dim)
        self.base = nn.Parameter(base)
        # U_j = exp(S_j − S_jᵀ): a rotation, the identity at the start (S = 0).
        self.skew = nn.Parameter(torch.zeros(components, dim, dim)) if basis == "full" else None
        self.correction = correction
        if correction is not None:
            linears = [m for m in correction.modules() if isinstance(m, nn.Linear)]
            if linears:
                nn.init.zeros_(linears[-1].weight)
                nn.init.zeros_(linears[-1].bias)

    @torch.no_grad()
    def init_means(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start the means m_j at J of the data samples ``x0 [N, D]`` (N ≥ J), picked by k-means++
        seeding (each next one drawn with probability ∝ its squared distance to those picked), so
        every well-separated cluster gets a component. The data are what the Cauchy fit trains on."""
        if x0.dim() != 2 or x0.shape[1] != self.dim or x0.shape[0] < self.components:
            raise ValueError(
                f"init_means needs [N, {self.dim}] samples with N >= J = {self.components}, "
                f"got {tuple(x0.shape)}"
            )
        x = x0.detach().double().cpu()
        picked = [int(torch.randint(x.shape[0], (1,), generator=generator))]
        d2 = (x - x[picked[0]]).pow(2).sum(1)
        for _ in range(self.components - 1):
            picked.append(int(torch.multinomial(d2 / d2.sum(), 1, generator=generator)))
            d2 = torch.minimum(d2, (x - x[picked[-1]]).pow(2).sum(1))
        self.base[:, self.dim : 2 * self.dim] = x[picked].to(self.base)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """ŝ(t) = sqrt(a(t)² data_std² + σ_t²), shape ``[B]``."""
        a, _ = self.sde.marginal(t)
        return torch.sqrt(a**2 * self.data_std**2 + self.sde.marginal_variance(t))

    def time_rate(self) -> float | None:
        """Radians per unit t of the fastest time feature (of c = log ŝ), as ``ToyScore``'s."""
        return embedding_rate(self, lambda t: torch.log(self.scale(t)), self.sde.T)

    def _pieces(self, t: torch.Tensor):
        """ŝ [B], c [B], λ [B, J, D] > 0, ν [B, J, D], β [B, J] at the times t [B]."""
        a, _ = self.sde.marginal(t)
        scale = self.scale(t)
        c = torch.log(scale)
        head, D = self.time_gain * self.time_net(self.embed(c)), self.dim
        if self.time_head == "coordinate":
            out = self.base + head.reshape(-1, *self.base.shape)
            log_kappa, m, beta = out[..., :D], out[..., D : 2 * D], out[..., -1]
        else:  # one (log κ shift, mean factor, β shift) per component: O(J) outputs, not O(J D)
            h = head.reshape(-1, self.components, 3)
            log_kappa = self.base[:, :D] + h[..., :1]
            m, beta = self.base[:, D : 2 * D] * (1 + h[..., 1:2]), self.base[:, -1] + h[..., 2]
        if self.kernel:  # λ = ŝ²/(a² κ + σ_t²): constant outputs are a mixture carried by the SDE's kernel
            var = self.sde.marginal_variance(t)[:, None, None]
            lam = (scale**2)[:, None, None] / ((a**2)[:, None, None] * torch.exp(log_kappa) + var)
        else:
            lam = torch.exp(log_kappa)
        nu = (a / scale)[:, None, None] * m  # ν = a(t) m_j(c) / ŝ(t)
        return scale, c, lam, nu, beta

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MixtureScore expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        if t.shape != x.shape[:1]:
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
        scale, c, lam, nu, beta = self._pieces(t)
        u = x / scale[:, None]
        diff = nu - u[:, None, :]  # [B, J, D]
        U = None if self.skew is None else torch.linalg.matrix_exp(self.skew - self.skew.transpose(1, 2))
        y = diff if U is None else torch.einsum("bjd,jde->bje", diff, U)  # U_jᵀ (ν_j − u)
        logits = -0.5 * (lam * y**2).sum(-1) + 0.5 * torch.log(lam).sum(-1) + beta
        r = torch.softmax(logits, dim=1)  # [B, J]
        g = r[..., None] * lam * y
        drift = g.sum(1) if U is None else torch.einsum("bje,jde->bd", g, U)
        if self.correction is not None:
            drift = drift + self.correction(u, c)
        return drift / scale[:, None]

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, components={self.components}, basis={self.basis!r}, data_std={self.data_std:g}"
        )
