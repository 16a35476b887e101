"""Toy data sets of the paper's low-dimensional experiments (Sec. 6.1, Sec. 7.1, App. D.1).

``TOY_DATASETS`` maps a name to a builder of ``ToyDataset``: a sampler, the data's exact
log-density where it is known (the Gaussian mixtures as ``scorepde.GaussianMixture``, so
the score and log q_t are closed forms at every t; the checkerboard's uniform density),
and a plotting window. ``sigma_max_from_data`` sets a VE SDE's σ_max from a sample
(Song & Ermon 2020, technique 1). ``ToyScore`` is re-exported from ``scorepde.nn.precond``.
``toy_model``, ``toy_batches`` and ``train_toy`` build and train the toy experiments' score
models (an MLP under ``ToyScore`` or ``ScoreModel``) with ``scorepde.training.fit``.

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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .gmm import GaussianMixture
from .nn.mlp import MLPScore
from .nn.precond import ScoreModel, ToyScore  # ToyScore re-exported: it lives with the other preconditionings
from .schedules import Cosine
from .training import fit

__all__ = [
    "ToyDataset",
    "TOY_DATASETS",
    "toy_dataset",
    "checkerboard_sample",
    "checkerboard_log_prob",
    "swiss_rolls_sample",
    "sigma_max_from_data",
    "ToyScore",
    "PARAMS",
    "toy_model",
    "toy_batches",
    "train_toy",
]

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
    extent: tuple[float, float]
    data_std: float
    log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None
    mixture: GaussianMixture | None = None

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        return self.sample_fn(int(n), generator)


def _from_mixture(name, gmm: GaussianMixture, extent, data_std) -> ToyDataset:
    return ToyDataset(
        name,
        gmm.dim,
        lambda n, g: gmm.sample(n, generator=g),
        extent,
        data_std,
        log_prob=lambda x: gmm.log_prob(x),
        mixture=gmm,
    )


def checkerboard_sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Listing 1: x1 ~ U[−2, 2), x2 ~ U[0, 1) − 2·Bernoulli(½) + (⌊x1⌋ mod 2), both × 2."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2_ = (
        torch.rand(n, generator=generator, dtype=torch.float64)
        - torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2
    )
    x2 = x2_ + torch.remainder(torch.floor(x1), 2)
    return (torch.stack([x1, x2], 1) * 2).float()


def checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log of the checkerboard density: −log 32 on its 8 squares of side 2, −inf elsewhere."""
    u = x.flatten(1) / 2  # back to Listing 1's unit squares
    x1, x2 = u[:, 0], u[:, 1]
    inside = (x1 >= -2) & (x1 < 2) & (x2 >= -2) & (x2 < 2)
    # Listing 1: x2 − (⌊x1⌋ mod 2) ∈ [−2, −1) ∪ [0, 1), i.e. ⌊x1⌋ + ⌊x2⌋ is even.
    on_black = torch.remainder(torch.floor(x1) + torch.floor(x2), 2) == 0
    out = torch.full_like(x1, -math.log(32.0))
    return torch.where(inside & on_black, out, torch.full_like(out, -math.inf))


def swiss_rolls_sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Listing 2: make_swiss_roll(noise=1.0)[:, [0, 2]] / 4 in five copies, shifted by
    (0, 0) and (±4.5, ±4.5); ``n`` is rounded up to a multiple of 5 and then cut to n."""
    from sklearn.datasets import make_swiss_roll

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
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
    gmm = GaussianMixture(
        [[-2 / 7], [-6 / 7], [4 / 7]], [math.sqrt(0.1) / 7, math.sqrt(0.1) / 7, 1 / 7], [0.3, 0.3, 0.4]
    )
    return _from_mixture("gmm1d", gmm, (-1.5, 1.5), 0.6)


def _gmm8():
    theta = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = torch.stack([torch.sin(theta), torch.cos(theta)], 1)  # Listing 3: (sin, cos)
    return _from_mixture("gmm8", GaussianMixture(means, 0.1), (-1.6, 1.6), 0.7)


def _checkerboard():
    return ToyDataset(
        "checkerboard", 2, checkerboard_sample, (-4.5, 4.5), 2.3, log_prob=checkerboard_log_prob
    )


def _swiss_rolls():
    return ToyDataset("swiss_rolls", 2, swiss_rolls_sample, (-9.0, 9.0), 4.0)


#: Builders of the toy data sets, by name.
TOY_DATASETS: dict[str, Callable[[], ToyDataset]] = {
    "gmm2": _gmm2,
    "gmm1d": _gmm1d,
    "checkerboard": _checkerboard,
    "swiss_rolls": _swiss_rolls,
    "gmm8": _gmm8,
}


def toy_dataset(name: str) -> ToyDataset:
    """The toy data set called ``name`` (a key of ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]()


def sigma_max_from_data(x: torch.Tensor) -> float:
    """σ_max for a VE SDE by Song & Ermon (2020), technique 1: the largest pairwise distance
    max_{i,j} ‖x_i − x_j‖ of the data ``x [N, ...]`` (flattened per sample).

    q_T is then wide enough that the prior N(0, σ_max² I) covers every mode and the reverse
    process can move mass between any two of them, while no training time is wasted at
    noise levels far above the data's scale, where the score is that of a plain Gaussian.
    The maximum of N draws is a lower bound of the support's diameter that grows with N; a
    few thousand draws of a toy set pin it within a few percent. O(N²) memory.
    """
    flat = x.detach().flatten(1).double()
    if flat.shape[0] < 2:
        raise ValueError(f"need at least two samples for a pairwise distance, got {flat.shape[0]}")
    return float(torch.cdist(flat, flat).max())


#: Score parametrizations of the toy models (``toy_model(param=...)``).
PARAMS = ("toy", "score_model")


def toy_model(
    ds: ToyDataset,
    sde,
    *,
    hidden: int,
    depth: int = 3,
    data_std: float | None = None,
    seed: int = 0,
    device="cpu",
    skip: bool = True,
    param: str = "toy",
    fourier_scale: float | None = None,
) -> torch.nn.Module:
    """A toy score model, its weights drawn after ``torch.manual_seed(seed)``.

    ``"toy"``: a ``ToyScore`` over an ``MLPScore`` (Fourier features of log ŝ, scale 1).
    ``"score_model"``: the library's NCSN++-style ``ScoreModel`` (−net/σ_t, Fourier features
    of log σ(t), by default at NCSN++'s scale 16) over the same MLP. ``fourier_scale``
    overrides the embedding's frequency scale for either."""
    if param not in PARAMS:
        raise ValueError(f"unknown param {param!r}; choose one of {PARAMS}")
    torch.manual_seed(seed)
    if param == "score_model":
        net = MLPScore(ds.dim, hidden=hidden, depth=depth, fourier_scale=fourier_scale or 16.0)
        return ScoreModel(net, sde).to(device)
    net = MLPScore(
        ds.dim, hidden=hidden, depth=depth, embedding="fourier", fourier_scale=fourier_scale or 1.0
    )
    return ToyScore(net, sde, data_std=data_std or ds.data_std, skip=skip).to(device)


def toy_batches(
    ds: ToyDataset, batch_size: int, generator: torch.Generator, device="cpu"
) -> Iterator[torch.Tensor]:
    """Endless batches of ``ds``, drawn from ``generator`` (its state is the data order)."""
    while True:
        yield ds.sample(batch_size, generator).to(device)


def train_toy(
    objective,
    model: torch.nn.Module,
    ds: ToyDataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str = "train",
    device="cpu",
    progress: bool = True,
) -> dict:
    """Adam, cosine decay to 5% over ``steps``, gradients clipped at norm 1; one generator
    (seeded ``seed``) draws the batches and the objective's noise. Returns the last step's
    log and the wall time."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    t0 = time.time()
    logs = fit(
        objective,
        torch.optim.Adam(model.parameters(), lr=lr),
        toy_batches(ds, batch_size, gen, device),
        steps,
        generator=gen,
        schedule=Cosine(0.05),
        grad_clip=1.0,
        progress=progress,
        desc=desc,
    )
    return {"last": logs[-1], "seconds": time.time() - t0}
