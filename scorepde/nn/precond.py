"""Preconditioning: how a network's output becomes a score (kept apart from the architecture).

    s(x, t) = −net(x, c(t)) / σ̃(t),      σ̃(t) = sqrt(σ_t² + min_std²)

with σ_t the transition kernel's std (``sde.marginal(t)[1]``): the network predicts the
noise z of x_t = a(t) x_0 + σ_t z, whose posterior mean gives ∇ log q_t = −E[z | x_t]/σ_t.
The noise label c(t) is a named choice (``CONDITIONS``): ``"log_sigma"``, c = log σ(t)
for an SDE with a noise level ``sde.sigma(t)`` (VE, NCSN++), or ``"time"``, c = 999 t
(VP/sub-VP, DDPM++'s 1000-step convention). ``min_std`` keeps t = 0 finite: by default
the SDE's ``sigma_floor`` (σ_min for VE and EDM, so for VE σ̃(t) = σ(t) exactly as NCSN++
divides by; 1e-5 for VP).
NCSN++ uses +net/σ for VE: the same family up to the sign of the last layer.

Two preconditionings live here, the only places a network becomes a score:

    ScoreModel   s = −net(x, c(t)) / σ̃(t)                 noise prediction (NCSN++); for DSM
    ToyScore     s = −(x/ŝ − net(x/ŝ, log ŝ)) / ŝ          EDM-style scalings with a Gaussian
                 ŝ(t)² = a(t)² data_std² + σ_t²           skip; for PDE-only fits (Cauchy)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import jvp
from torch.nn.modules.batchnorm import _BatchNorm

from ..derivatives import broadcast_to_batch
from ..sde import SDE

__all__ = ["ScoreModel", "ToyScore", "CONDITIONS", "TIME_SCALE", "embedding_rate"]

#: c = TIME_SCALE·t for time-conditioned networks (DDPM's N = 1000 steps, as score_sde).
TIME_SCALE = 999.0

#: Named noise labels c(t) a network is conditioned on.
CONDITIONS = {
    "log_sigma": lambda sde, t: torch.log(sde.sigma(t)),
    "time": lambda sde, t: TIME_SCALE * t,
}


def embedding_rate(net: nn.Module, label, T: float) -> float | None:
    """How fast ``net``'s time features can turn, in radians per unit t:
    max_k ω_k · max_t |dc/dt| over its embeddings' ``max_frequency`` ω and the label c(t)
    (``label``, a function of t alone). None if the network has no such embedding."""
    omegas = [m.max_frequency for m in net.modules() if hasattr(type(m), "max_frequency")]
    if not omegas:
        return None
    t = torch.linspace(0.0, T, 257, dtype=torch.float64)
    dc = jvp(label, (t,), (torch.ones_like(t),))[1]
    return max(omegas) * float(dc.abs().max())


class ScoreModel(nn.Module):
    """``score(x [B, ...], t [B])`` = −net(x, c(t)) / σ̃(t) for any ``net(x, c) -> like x``.

    ``condition``: a key of ``CONDITIONS`` or ``"auto"`` (``"log_sigma"`` if the SDE has
    ``sigma(t)``, else ``"time"``). Match the network's embedding to it: ``"fourier"`` for
    log σ, ``"sinusoidal"`` for 999 t. Needs an SDE with a closed-form ``marginal``.
    """

    def __init__(self, net: nn.Module, sde: SDE, *, condition: str = "auto", min_std: float | None = None):
        super().__init__()
        if condition == "auto":
            condition = "log_sigma" if callable(getattr(sde, "sigma", None)) else "time"
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose 'auto' or one of {sorted(CONDITIONS)}")
        if condition == "log_sigma" and not callable(getattr(sde, "sigma", None)):
            raise ValueError(
                f"condition 'log_sigma' needs an SDE with a noise level sigma(t); "
                f"{type(sde).__name__} has none, use condition='time'"
            )
        try:
            sde.marginal(torch.zeros(1))
        except NotImplementedError:
            raise ValueError(
                f"ScoreModel divides by the kernel std, but {type(sde).__name__} has no "
                "closed-form marginal(t); pass marginal= to GenericSDE or use the "
                "network as a score directly"
            ) from None
        if min_std is None:
            min_std = float(sde.sigma_floor)
        if min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {min_std}")
        self.net, self.sde, self.condition, self.min_std = net, sde, condition, float(min_std)

    def noise_label(self, t: torch.Tensor) -> torch.Tensor:
        """c(t), shape ``[B]``: what the network is conditioned on."""
        return CONDITIONS[self.condition](self.sde, t)

    def time_rate(self) -> float | None:
        """Radians per unit t by which the network's fastest time feature turns (c = 999 t
        with ω = 1: 999; c = log σ with Fourier scale 16: thousands). Finite differences in
        t take their step from it (``scorepde.derivatives.time_steps``)."""
        return embedding_rate(self.net, self.noise_label, self.sde.T)

    def output_scale(self, t: torch.Tensor) -> torch.Tensor:
        """σ̃(t) = sqrt(σ_t² + min_std²), shape ``[B]``."""
        # marginal_variance, not std²: its t-derivative stays finite at t = 0.
        return torch.sqrt(self.sde.marginal_variance(t) + self.min_std**2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, "
                f"got {tuple(t.shape)}; pass one time per sample"
            )
        for m in self.net.modules():
            if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None):
                raise ValueError(
                    f"{type(m).__name__} uses batch statistics here, which couples "
                    "samples and breaks every per-sample derivative; use GroupNorm, "
                    "or call model.eval() with running statistics"
                )
        out = self.net(x, self.noise_label(t))
        if out.shape != x.shape:
            raise ValueError(
                f"the network returned shape {tuple(out.shape)} for x of shape "
                f"{tuple(x.shape)}; its output must be shaped like x"
            )
        return -out / broadcast_to_batch(self.output_scale(t), out)

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, condition={self.condition!r}, min_std={self.min_std:g}"


_LOG_E_MINUS_1 = math.log(math.e - 1.0)  # softplus(0 + this) = 1


class ToyScore(nn.Module):
    """A preconditioned toy score (EDM-style scalings, Karras et al. 2022):

        s(x, t) = −(x/ŝ − F) / ŝ   (``skip=True``)   or   −F / ŝ   (``skip=False``),
        F = net(x / ŝ(t), log ŝ(t)),                  ŝ(t)² = a(t)² data_std² + σ_t²

    or, with ``gate=True`` (``"scalar"``), s = −(ρ x/ŝ − F)/ŝ, where the net returns D + 1
    outputs (F, g) and ρ = softplus(g + log(e − 1)) > 0 is one scalar per sample (ρ = 1 at
    g = 0); with ``gate="diagonal"`` the net returns 2D outputs and ρ ∈ ℝᴰ, s = −(ρ ⊙ x/ŝ − F)/ŝ.

    with (a(t), σ_t) the SDE's kernel. ŝ is the scale of x_t, so the network sees O(1)
    inputs and returns O(1) outputs at every t, while the score itself falls from
    O(1/data_std) to O(1/σ_max) over t (VE). The network is conditioned on c = log ŝ(t)
    (``condition="log_scale"``), the natural clock of the score FPE: dc/dt = (dŝ²/dt)/(2ŝ²)
    is g²/(2ŝ²) for VE, so ∂t s carries the factor g² that ∇x L[s] carries, and s hardly
    moves in t while σ_t ≪ data_std, as the true score does. ``condition="time"`` feeds
    c = t instead. The skip term makes F = 0 the score of N(0, ŝ² I), which the true score
    approaches as σ_t grows (F is then ŝ⁻¹ times a denoiser); without it a network must
    learn the far field −x/ŝ² itself, which a PDE-only fit (``scorepde.cauchy``) does poorly.
    The gate generalizes the skip: a mixture of isotropic Gaussians N(μ_k, v_k I) has the score
    Σ_k r_k(x)(μ_k − x)/v_k = b(x) − ρ(x) x with a *scalar* ρ = Σ_k r_k/v_k, so with the gate
    the net only has to learn smooth functions of the responsibilities r_k, not a D × D map
    x ↦ −x/v_k per region (which an MLP fits poorly in high D). A mixture of *diagonal*
    Gaussians N(μ_k, diag v_k) has Σ_k r_k (μ_k − x)/v_k = b(x) − ρ(x) ⊙ x with ρ = Σ_k r_k/v_k
    ∈ ℝᴰ: the diagonal gate. Neither is told the covariances, the means or the weights; a
    rotated (full) covariance has no such per-coordinate form, and the diagonal gate is then
    only an approximation.

    Not for DSM: with its σ_t² weighting, ‖σ_t s + z‖² reaches F through σ_t/ŝ(t) → 0 as
    t → 0, so the fine structure of q_0 gets no gradient (measured: DSM fits a Gaussian).
    For DSM use ``scorepde.nn.ScoreModel`` (s = −F/σ_t, gradients O(1) at every t). ``net(x, c)`` is e.g. ``scorepde.nn.MLPScore`` with a smooth embedding
    (Fourier features of scale ~1: the score FPE differentiates in t).
    """

    CONDITIONS = ("log_scale", "time")
    GATES = ("scalar", "diagonal")

    def __init__(
        self,
        net: nn.Module,
        sde,
        data_std: float = 1.0,
        condition: str = "log_scale",
        skip: bool = True,
        gate: bool | str = False,
    ):
        super().__init__()
        if data_std <= 0:
            raise ValueError(f"data_std must be positive, got {data_std}")
        if condition not in self.CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose one of {self.CONDITIONS}")
        self.net, self.sde, self.data_std, self.condition = net, sde, float(data_std), condition
        shape: str | None = "scalar" if gate is True else (gate or None)
        if shape is not None and shape not in self.GATES:
            raise ValueError(
                f"unknown gate {shape!r}; choose False, True (= 'scalar') or one of {self.GATES}"
            )
        self.skip, self.gate = bool(skip), shape
        if self.gate and not self.skip:
            raise ValueError("gate=True scales the skip term: it needs skip=True")

    @staticmethod
    def gate_outputs(dim: int, gate: bool | str | None) -> int:
        """How many outputs the net adds to the D of F for ``gate``: 0, 1 (scalar) or D."""
        return {None: 0, False: 0, True: 1, "scalar": 1, "diagonal": dim}[gate]

    def time_rate(self) -> float | None:
        """As ``ScoreModel.time_rate``, for c = log ŝ(t) or c = t."""
        label = (lambda t: torch.log(self.scale(t))) if self.condition == "log_scale" else (lambda t: t)
        return embedding_rate(self.net, label, self.sde.T)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """ŝ(t) = sqrt(a(t)² data_std² + σ_t²), shape ``[B]``."""
        a, _ = self.sde.marginal(t)
        return torch.sqrt(a**2 * self.data_std**2 + self.sde.marginal_variance(t))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = self.scale(t)
        c = torch.log(scale) if self.condition == "log_scale" else t
        scale = scale.reshape(-1, *([1] * (x.dim() - 1)))
        u = x / scale
        F = self.net(u, c)
        if self.gate:
            D = u.shape[1]
            extra, name = self.gate_outputs(D, self.gate), ("D + 1" if self.gate == "scalar" else "2D")
            if F.shape[1:] != (D + extra,) or u.dim() != 2:
                raise ValueError(
                    f"gate={self.gate!r} needs a net with {name} = {D + extra} outputs for x of "
                    f"shape {tuple(u.shape)}, got {F.shape[1]}; e.g. MLPScore(D, out_dim={D + extra})"
                )
            F, g = F[:, :D], F[:, D:]
            return -(nn.functional.softplus(g + _LOG_E_MINUS_1) * u - F) / scale
        return -(u - F) / scale if self.skip else -F / scale

    def extra_repr(self) -> str:
        return (
            f"data_std={self.data_std:g}, condition={self.condition!r}, skip={self.skip}, gate={self.gate!r}"
        )
