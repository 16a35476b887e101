"""Forward SDEs dx = f(x, t) dt + g(t) dw on t ∈ [0, T].

One abstraction, ``SDE``: drift f, diffusion g, div f, and where a closed form exists the
transition kernel q_0t(x_t | x_0) = N(a(t) x_0, σ_t² I) and the prior. ``LinearSDE``
(f = c(t) x) gets div f and the kernel-based helpers for free, so VE, VP and sub-VP are a
few lines each. Everything takes t of shape ``[B]`` and x of shape ``[B, ...]``.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import torch

from .derivatives import broadcast_to_batch, divergence

__all__ = ["SDE", "LinearSDE", "VESDE", "VPSDE", "SubVPSDE", "GenericSDE", "DiscreteVPSDE", "EDMSDE"]


class SDE(abc.ABC):
    """dx = f(x, t) dt + g(t) dw on [0, T]."""

    T: float = 1.0

    @abc.abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t), shaped like x."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), shape ``[B]``."""

    def drift_divergence(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """div_x f(x, t), shape ``[B]`` (exact, by autograd, unless a subclass knows better)."""
        return divergence(lambda y: self.drift(y, t), x, "exact")

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), σ_t), each ``[B]``: x_t | x_0 ~ N(a(t) x_0, σ_t² I)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form transition kernel")

    def marginal_variance(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t², ``[B]``; subclasses give a form whose t-derivative is finite at t = 0."""
        return self.marginal(t)[1] ** 2

    @property
    def sigma_floor(self) -> float:
        """The noise std below which a score's scale in x stops shrinking: σ̃(t) =
        sqrt(σ_t² + floor²). A noise-predicting score divides by σ̃ (``nn.ScoreModel``), and a
        step in x scales with it (``"forward_fd"``), so both stay finite at t = 0 where σ_t = 0,
        and the step keeps matching the scale on which the score varies. VE and EDM have a
        smallest noise level, ``sigma_min``, which is the floor (for VE, σ̃(t) = σ(t), as
        NCSN++ divides by). VP-type processes have none; 1e-5 is far below any σ_t a model is
        trained at (VP: σ ≈ 1e-3 at t = 1e-5) and is what every trained checkpoint divides by."""
        return 1e-5

    @property
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior p_T ≈ q_T."""
        raise NotImplementedError(f"{type(self).__name__} has no prior; pass prior_std")

    # -- derived -----------------------------------------------------------------------
    def perturb(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a(t) x_0 + σ_t z, a draw from q_0t(· | x_0) for z ~ N(0, I)."""
        a, std = self.marginal(t)
        return broadcast_to_batch(a, x0) * x0 + broadcast_to_batch(std, x0) * noise

    def prior_sample(
        self, shape, *, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """x_T ~ N(0, prior_std² I)."""
        return self.prior_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, prior_std² I) per sample, shape ``[B]``."""
        D = x[0].numel()
        s2 = self.prior_std**2
        return -0.5 * D * math.log(2 * math.pi * s2) - x.flatten(1).pow(2).sum(1) / (2 * s2)


class LinearSDE(SDE):
    """f(x, t) = c(t) x: the kernel is Gaussian, so closed forms exist everywhere."""

    @abc.abstractmethod
    def drift_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """c(t), shape ``[B]``."""

    def drift(self, x, t):
        return broadcast_to_batch(self.drift_coeff(t), x) * x

    def drift_divergence(self, x, t):
        return self.drift_coeff(t) * x[0].numel()


class VESDE(LinearSDE):
    """Variance exploding: f = 0, σ(t) = σ_min (σ_max/σ_min)^t, g² = dσ²/dt.

    The kernel's std is the exact sqrt(σ(t)² − σ_min²), so q_0 is the data itself
    (score_sde uses σ(t), the same process started from data blurred by σ_min).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    @property
    def sigma_floor(self) -> float:
        """σ_min, the smallest noise level (``SDE.sigma_floor``)."""
        return self.sigma_min

    def sigma(self, t):
        """The noise level σ(t) = σ_min (σ_max/σ_min)^t (what a network conditions on)."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal_variance(self, t):
        # σ(t)² − σ_min² = σ_min² expm1(2 t log ratio), accurate near t = 0.
        return self.sigma_min**2 * torch.expm1(2 * t * self._log_ratio)

    def marginal(self, t):
        return torch.ones_like(t), torch.sqrt(self.marginal_variance(t))

    @property
    def prior_std(self):
        return self.sigma_max

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class _VPKernel(LinearSDE):
    """The variance-preserving family: f = −½β(t) x, g² = β(t), and with log ᾱ(t) = −∫₀ᵗ β,
    a(t) = ᾱ^{1/2}, σ_t² = 1 − ᾱ, prior N(0, I). A member gives ``beta`` and ``log_alpha_bar``."""

    @abc.abstractmethod
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t), shape ``[B]``."""

    @abc.abstractmethod
    def log_alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """log ᾱ(t) = −∫₀ᵗ β(s) ds, shape ``[B]``."""

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_variance(self, t):
        return -torch.expm1(self.log_alpha_bar(t))

    def marginal(self, t):
        return torch.exp(0.5 * self.log_alpha_bar(t)), torch.sqrt(self.marginal_variance(t))

    @property
    def prior_std(self):
        return 1.0


class VPSDE(_VPKernel):
    """Variance preserving: f = −½β(t) x, g² = β(t), β(t) = β_min + t(β_max − β_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t):
        """∫₀ᵗ β(s) ds."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t):
        return -self.integrated_beta(t)

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"


class SubVPSDE(VPSDE):
    """sub-VP: f = −½β(t) x, g² = β(t)(1 − exp(−2∫₀ᵗβ)); σ_t = 1 − exp(−∫₀ᵗβ)."""

    def diffusion(self, t):
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t)))

    def marginal_variance(self, t):
        return torch.expm1(-self.integrated_beta(t)) ** 2

    def marginal(self, t):
        return torch.exp(-0.5 * self.integrated_beta(t)), -torch.expm1(-self.integrated_beta(t))


class GenericSDE(SDE):
    """A user's SDE from plain callables ``drift(x, t)`` and ``diffusion(t)``.

    ``drift_divergence(x, t)`` is optional (autograd otherwise); ``marginal(t)`` and
    ``prior_std`` are optional and only needed by what uses them (DSM, sampling, likelihood).
    ``marginal_variance(t)`` = σ_t² is optional too; give it where σ_t has a square root
    that vanishes at t = 0 (e.g. √(1 − e^{−2t})): the square of such a σ_t has no
    t-derivative there (0/0), and ∂t of a score built on it is NaN at t = 0.
    """

    def __init__(
        self,
        drift: Callable,
        diffusion: Callable,
        *,
        drift_divergence: Callable | None = None,
        marginal: Callable | None = None,
        marginal_variance: Callable | None = None,
        prior_std: float | None = None,
        T: float = 1.0,
    ):
        self._drift, self._diffusion = drift, diffusion
        self._div, self._marginal, self._prior_std = drift_divergence, marginal, prior_std
        self._variance = marginal_variance
        self.T = float(T)

    def drift(self, x, t):
        return self._drift(x, t)

    def diffusion(self, t):
        return self._diffusion(t)

    def drift_divergence(self, x, t):
        return self._div(x, t) if self._div is not None else super().drift_divergence(x, t)

    def marginal(self, t):
        return self._marginal(t) if self._marginal is not None else super().marginal(t)

    def marginal_variance(self, t):
        return self._variance(t) if self._variance is not None else super().marginal_variance(t)

    @property
    def prior_std(self):
        return self._prior_std if self._prior_std is not None else super().prior_std


class DiscreteVPSDE(_VPKernel):
    """The VP SDE of a discrete DDPM schedule ᾱ_0 > … > ᾱ_{N−1} (diffusers' ``alphas_cumprod``).

    Time map (one for the SDE and for the network): step k ↔ t_k = (k + 1)/N, so
    k(t) = N t − 1, t = 0 is the clean data (ᾱ = 1) and t = 1 is the last step k = N − 1.
    Between the nodes, y(t) = log ᾱ(t) is the monotone C¹ cubic Hermite interpolant of
    (t_k, log ᾱ_k) with Fritsch–Butland slopes, so at every step a(t_k)² = ᾱ_k and
    σ²(t_k) = 1 − ᾱ_k exactly, and

        f = ½ y'(t) x,   g² = β(t) = −y'(t),   a(t) = e^{y/2},   σ_t² = 1 − e^{y}.

    On [t_{k−1}, t_k] the integral of β is −log(1 − β_k) ≈ β_k: the continuous-time limit
    β(t) ≈ N β_k of score_sde's VPSDE, here matched at every step instead of on average.

    ``fd_h`` = (0.05/N, 0.05/N) are finite-difference steps in t for a network conditioned
    on k: the default 1e-3 is a whole step for N = 1000, over which a sinusoidal embedding's
    fastest feature sin(k) turns by a radian (∂t s off by 21% on a diffusers UNet; tested).
    The score of ``from_diffusers`` says its time rate (N rad per unit t), so ``"forward_fd"``
    and other ``h="auto"`` stencils pick a fitting step by themselves; pass ``h=sde.fd_h`` to
    ``"paper"``, or with a hand-wrapped network.
    """

    def __init__(self, alphas_cumprod):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if ac.numel() < 2 or not bool(torch.isfinite(ac).all()):
            raise ValueError("alphas_cumprod must be a finite 1-D sequence of at least 2 values")
        if not bool(((ac > 0) & (ac < 1)).all()):
            raise ValueError(
                f"alphas_cumprod must lie in (0, 1), got values in [{ac.min().item():.3g}, "
                f"{ac.max().item():.3g}]; a zero terminal SNR (ᾱ = 0, e.g. "
                "rescale_betas_zero_snr=True) has no VP SDE with finite β(t)"
            )
        if not bool((ac[1:] < ac[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease strictly (every beta > 0)")
        self.N = ac.numel()
        y = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(ac)])  # at t_i = i / N
        d = (y[1:] - y[:-1]) * self.N  # secant slopes, < 0
        m = torch.cat([d[:1], 2 * d[:-1] * d[1:] / (d[:-1] + d[1:]), d[-1:]])  # harmonic means
        self._y, self._m = y, m
        self.fd_h = (0.05 / self.N, 0.05 / self.N)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """k(t) = N t − 1, the (fractional) integer step a DDPM network is conditioned on."""
        return self.N * t - 1

    def time(self, k) -> torch.Tensor:
        """t(k) = (k + 1)/N, the inverse of ``timestep``."""
        return (torch.as_tensor(k, dtype=torch.float64) + 1) / self.N

    def _hermite(self, t):
        """(y(t), y'(t)) of the cubic Hermite interpolant of log ᾱ."""
        y, m = self._y.to(t), self._m.to(t)
        u = t * self.N
        i = u.detach().floor().clamp(0, self.N - 1).long()
        s = u - i.to(t)
        y0, y1, m0, m1 = y[i], y[i + 1], m[i] / self.N, m[i + 1] / self.N
        s2, s3 = s * s, s * s * s
        val = (2 * s3 - 3 * s2 + 1) * y0 + (s3 - 2 * s2 + s) * m0 + (3 * s2 - 2 * s3) * y1 + (s3 - s2) * m1
        der = (6 * s2 - 6 * s) * (y0 - y1) + (3 * s2 - 4 * s + 1) * m0 + (3 * s2 - 2 * s) * m1
        return val, der * self.N

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ(t) = a(t)², equal to ``alphas_cumprod[k]`` at t = t_k."""
        return torch.exp(self._hermite(t)[0])

    def beta(self, t):
        """β(t) = −d log ᾱ / dt."""
        return -self._hermite(t)[1]

    def log_alpha_bar(self, t):
        return self._hermite(t)[0]

    def __repr__(self):
        return f"DiscreteVPSDE(N={self.N})"


class EDMSDE(LinearSDE):
    """EDM's process (Karras et al. 2022): x_t = x_0 + t z, i.e. σ(t) = t, f = 0, g² = 2t.

    Time is the noise level itself, so t ∈ [0, T] with T = ``sigma_max`` (EDM: 80).
    ``sigma_min`` (EDM: 0.002) is the smallest level a denoiser was trained on; the
    process itself starts from the data at t = 0.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.T = self.sigma_max

    @property
    def sigma_floor(self) -> float:
        """σ_min, the smallest noise level (``SDE.sigma_floor``)."""
        return self.sigma_min

    def sigma(self, t):
        """The noise level σ(t) = t."""
        return t

    def drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return torch.sqrt(2 * t)

    def marginal_variance(self, t):
        return t * t

    def marginal(self, t):
        return torch.ones_like(t), t

    @property
    def prior_std(self):
        return self.sigma_max

    def __repr__(self):
        return f"EDMSDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
