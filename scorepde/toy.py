"""Toy data sets of the paper's low-dimensional experiments (Sec. 6.1, Sec. 7.1, App. D.1).

``TOY_DATASETS`` maps a name to a builder of ``ToyDataset``: a sampler, the data's exact
log-density where it is known (the Gaussian mixtures as ``scorepde.GaussianMixture``, so
the score and log q_t are closed forms at every t; the checkerboard's uniform density),
and a plotting window.

    "gmm2"          ½N((−5,−5), I) + ½N((5,5), I)                          (Sec. 6.1)
    "gmm1d"         0.3N(−2/7, 0.1/49) + 0.3N(−6/7, 0.1/49) + 0.4N(4/7, 1/49) (Sec. 7.1; 1-D)
    "checkerboard"  uniform on 8 squares of side 2 in [−4, 4]²            (App. D.1, Listing 1)
    "swiss_rolls"   sklearn make_swiss_roll(noise=1.0)[:, [0, 2]] / 4,
                    five copies shifted by (0, 0), (±4.5, ±4.5)            (App. D.1, Listing 2)
    "gmm8"          8 modes on the unit circle, σ = 0.1                    (App. D.1, Listing 3)

The 1-D mixture's formula is garbled in the paper's text; the weights, means and
*variances* above are those of the repository the paper cites for it (Lu et al., 2022,
``mle_score_ode/toy.py``: means (−2, −6, 4)/7, variances (0.1, 0.1, 1)/7²).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .gmm import GaussianMixture

__all__ = ["ToyDataset", "TOY_DATASETS", "toy_dataset", "checkerboard_sample",
           "checkerboard_log_prob", "swiss_rolls_sample"]

Sampler = Callable[[int, Optional[torch.Generator]], torch.Tensor]


@dataclass
class ToyDataset:
    """A named toy distribution.

    ``sample(n, generator)`` returns ``[n, dim]`` float32 draws. ``log_prob(x)`` is the exact
    data log-density ``[B]`` or None where unknown; ``mixture`` is set for Gaussian mixtures.
    ``extent = (lo, hi)`` is a plotting window per axis; ``data_std`` the data's scale
    (a per-coordinate std, used to precondition networks).
    """

    name: str
    dim: int
    sample_fn: Sampler
    extent: Tuple[float, float]
    data_std: float
    log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    mixture: Optional[GaussianMixture] = None

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        return self.sample_fn(int(n), generator)


def _from_mixture(name, gmm: GaussianMixture, extent, data_std) -> ToyDataset:
    return ToyDataset(name, gmm.dim, lambda n, g: gmm.sample(n, generator=g), extent, data_std,
                      log_prob=lambda x: gmm.log_prob(x), mixture=gmm)


def checkerboard_sample(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Listing 1: x1 ~ U[−2, 2), x2 ~ U[0, 1) − 2·Bernoulli(½) + (⌊x1⌋ mod 2), both × 2."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2_ = (torch.rand(n, generator=generator, dtype=torch.float64)
           - torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2)
    x2 = x2_ + torch.remainder(torch.floor(x1), 2)
    return (torch.stack([x1, x2], 1) * 2).float()


def checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log of the checkerboard density: −log 32 on its 8 squares of side 2, −inf elsewhere."""
    u = x.flatten(1) / 2                                     # back to Listing 1's unit squares
    x1, x2 = u[:, 0], u[:, 1]
    inside = (x1 >= -2) & (x1 < 2) & (x2 >= -2) & (x2 < 2)
    # Listing 1: x2 − (⌊x1⌋ mod 2) ∈ [−2, −1) ∪ [0, 1), i.e. ⌊x1⌋ + ⌊x2⌋ is even.
    on_black = torch.remainder(torch.floor(x1) + torch.floor(x2), 2) == 0
    out = torch.full_like(x1, -math.log(32.0))
    return torch.where(inside & on_black, out, torch.full_like(out, -math.inf))


def swiss_rolls_sample(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Listing 2: make_swiss_roll(noise=1.0)[:, [0, 2]] / 4 in five copies, shifted by
    (0, 0) and (±4.5, ±4.5); ``n`` is rounded up to a multiple of 5 and then cut to n."""
    from sklearn.datasets import make_swiss_roll

    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    per_copy = -(-n // 5)
    data = torch.from_numpy(make_swiss_roll(n_samples=per_copy, noise=1.0, random_state=seed)[0])
    data = data[:, [0, 2]].float() / 4.0
    r = 4.5
    shifts = torch.tensor([[0.0, 0.0], [-r, -r], [-r, r], [r, -r], [r, r]])
    rolls = torch.cat([data + s for s in shifts], 0)
    perm = torch.randperm(rolls.shape[0], generator=generator)
    return rolls[perm[:n]]


def _gmm2():
    return _from_mixture("gmm2", GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0), (-9.0, 9.0), 5.0)


def _gmm1d():
    gmm = GaussianMixture([[-2 / 7], [-6 / 7], [4 / 7]],
                          [math.sqrt(0.1) / 7, math.sqrt(0.1) / 7, 1 / 7], [0.3, 0.3, 0.4])
    return _from_mixture("gmm1d", gmm, (-1.5, 1.5), 0.6)


def _gmm8():
    theta = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = torch.stack([torch.sin(theta), torch.cos(theta)], 1)        # Listing 3: (sin, cos)
    return _from_mixture("gmm8", GaussianMixture(means, 0.1), (-1.6, 1.6), 0.7)


def _checkerboard():
    return ToyDataset("checkerboard", 2, checkerboard_sample, (-4.5, 4.5), 2.3,
                      log_prob=checkerboard_log_prob)


def _swiss_rolls():
    return ToyDataset("swiss_rolls", 2, swiss_rolls_sample, (-9.0, 9.0), 4.0)


#: Builders of the toy data sets, by name.
TOY_DATASETS: Dict[str, Callable[[], ToyDataset]] = {
    "gmm2": _gmm2, "gmm1d": _gmm1d, "checkerboard": _checkerboard,
    "swiss_rolls": _swiss_rolls, "gmm8": _gmm8,
}


def toy_dataset(name: str) -> ToyDataset:
    """The toy data set called ``name`` (a key of ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]()


class ToyScore(torch.nn.Module):
    """A preconditioned toy score (EDM-style scalings, Karras et al. 2022):

        s(x, t) = −(x/ŝ − F) / ŝ   (``skip=True``)   or   −F / ŝ   (``skip=False``),
        F = net(x / ŝ(t), log ŝ(t)),                  ŝ(t)² = a(t)² data_std² + σ_t²

    with (a(t), σ_t) the SDE's kernel. ŝ is the scale of x_t, so the network sees O(1)
    inputs and returns O(1) outputs at every t, while the score itself falls from
    O(1/data_std) to O(1/σ_max) over t (VE). The network is conditioned on c = log ŝ(t)
    (``condition="log_scale"``), the natural clock of the score FPE: dc/dt = (dŝ²/dt)/(2ŝ²)
    is g²/(2ŝ²) for VE, so ∂t s carries the factor g² that ∇x L[s] carries, and s hardly
    moves in t while σ_t ≪ data_std, as the true score does. ``condition="time"`` feeds
    c = t instead. The skip term makes F = 0 the score of N(0, ŝ² I), which the true score
    approaches as σ_t grows (F is then ŝ⁻¹ times a denoiser); without it a network must
    learn the far field −x/ŝ² itself, which a PDE-only fit (``scorepde.cauchy``) does poorly.

    Not for DSM: with its σ_t² weighting, ‖σ_t s + z‖² reaches F through σ_t/ŝ(t) → 0 as
    t → 0, so the fine structure of q_0 gets no gradient (measured: DSM fits a Gaussian).
    For DSM use ``scorepde.nn.ScoreModel`` (s = −F/σ_t, gradients O(1) at every t). ``net(x, c)`` is e.g. ``scorepde.nn.MLPScore`` with a smooth embedding
    (Fourier features of scale ~1: the score FPE differentiates in t).
    """

    CONDITIONS = ("log_scale", "time")

    def __init__(self, net: torch.nn.Module, sde, data_std: float = 1.0, condition: str = "log_scale",
                 skip: bool = True):
        super().__init__()
        if data_std <= 0:
            raise ValueError(f"data_std must be positive, got {data_std}")
        if condition not in self.CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose one of {self.CONDITIONS}")
        self.net, self.sde, self.data_std, self.condition = net, sde, float(data_std), condition
        self.skip = bool(skip)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """ŝ(t) = sqrt(a(t)² data_std² + σ_t²), shape ``[B]``."""
        a, _ = self.sde.marginal(t)
        return torch.sqrt(a ** 2 * self.data_std ** 2 + self.sde.marginal_variance(t))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = self.scale(t)
        c = torch.log(scale) if self.condition == "log_scale" else t
        scale = scale.reshape(-1, *([1] * (x.dim() - 1)))
        u = x / scale
        F = self.net(u, c)
        return -(u - F) / scale if self.skip else -F / scale

    def extra_repr(self) -> str:
        return f"data_std={self.data_std:g}, condition={self.condition!r}, skip={self.skip}"
