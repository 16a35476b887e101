"""Scores by solving the Cauchy problem of the score FPE (Sec. 6.1, Eqs. 20-21).

    ∂t s = ∇x L[s],  (x, t) ∈ Rᴰ × (0, T];      s(x, 0) = s₀(x)              (Eq. 20)

A network is fitted to the PDE alone, physics-informed (Raissi et al. 2019), with no DSM
and no closed-form score at t > 0:

    J = E_t E_{x_t ~ q_t} ‖w(t) ε[s](x_t, t)‖² + λ₀ E_{x_0 ~ q_0} ‖s(x_0, 0) − s₀(x_0)‖²  (Eq. 21)

with ε[s] = ∂t s − ∇x L[s] from ``scorepde.residual`` and the collocation points x_t drawn
from the forward marginals (data pushed through the SDE's kernel).

The weight w(t) is a named choice (``RESIDUAL_WEIGHTINGS``). The paper's plain form is
w = 1. Under VE the terms of ε carry g(t)² ∝ σ(t)² (up to 10⁸ over t for σ_max/σ_min =
5000) times derivatives of a score whose size falls like 1/ŝ(t), ŝ² = a²·data_std² + σ_t²;
plain squared residuals are then dominated by a few times and the rest is never fitted.
``"g2"`` divides by g² (for VE, ε/g² is the residual of the same PDE in the variance
τ = σ_t², ∂τ s = ½∇(div s + ‖s‖²)); ``"scaled"`` further multiplies by ŝ³, the size of
∂τ s, so every t contributes an O(1) relative residual.
"""

from __future__ import annotations

from typing import Callable

import torch

from .checks import check_batch_independent, check_finite
from .fpe import get_estimator, residual_norm_sq
from .sde import SDE
from .typing import Score, renamed_keywords

#: Where ``CauchyObjective`` enforces the initial condition.
INIT_POINTS = ("data", "data+colloc")

#: How ``CauchyObjective`` draws collocation times: t ~ U(0, T), or half of them with
#: log(ŝ(t)/a(t)) uniform (ŝ² = a² data_std² + σ_t²; log ŝ under VE), which spends the
#: points where q_t changes.
TIME_SAMPLINGS = ("uniform", "log_scale")

__all__ = [
    "INIT_POINTS",
    "TIME_SAMPLINGS",
    "sample_collocation_time",
    "RESIDUAL_WEIGHTINGS",
    "residual_weight",
    "cauchy_loss",
    "CauchyObjective",
    "UNBIASED_FROM_DIM",
    "unbiased_square_for",
]


#: From this dimension on, ``unbiased_square_for`` picks the two-draw product (see there).
UNBIASED_FROM_DIM = 32


def unbiased_square_for(dim: int) -> bool:
    """The rule for squaring a stochastic residual estimate in D = ``dim`` dimensions: the unbiased
    two-draw product from D ≥ ``UNBIASED_FROM_DIM``, the single-draw plug-in square below.

    The plug-in ‖ε̂‖² adds the estimator's variance to the loss, which grows with D and is largest
    where the responsibilities change; the product costs one more residual (about 1.5× per step).
    Measured (docs/cauchy.md, "Plug-in or unbiased square"; the gated MLP, VE): at D = 2 and 8 and
    0.5 CPU-min each the plug-in square wins (0.092 against 0.365 and 0.197: more steps, a bias that
    does not matter yet); at D = 32 the two tie at 4 CPU-min (0.0588, 0.0572) and the product wins
    with more time (0.0340 at 13.8 CPU-min against 0.0539 at 20).
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    return dim >= UNBIASED_FROM_DIM


def _scale(sde: SDE, t: torch.Tensor, data_std: float) -> torch.Tensor:
    a, _ = sde.marginal(t)
    return torch.sqrt(a**2 * data_std**2 + sde.marginal_variance(t))


#: w(t) multiplying ε[s](x, t), by name; each is ``fn(sde, t, data_std) -> [B]``.
RESIDUAL_WEIGHTINGS: dict[str, Callable[[SDE, torch.Tensor, float], torch.Tensor]] = {
    "none": lambda sde, t, d: torch.ones_like(t),
    "g2": lambda sde, t, d: 1.0 / sde.diffusion(t) ** 2,
    "scaled": lambda sde, t, d: _scale(sde, t, d) ** 3 / sde.diffusion(t) ** 2,
}


def residual_weight(name: str, sde: SDE, t: torch.Tensor, data_std: float = 1.0) -> torch.Tensor:
    """w(t) of the weighting ``name`` (a key of ``RESIDUAL_WEIGHTINGS``), shape ``[B]``."""
    if name not in RESIDUAL_WEIGHTINGS:
        raise ValueError(f"unknown residual weighting {name!r}; choose one of {sorted(RESIDUAL_WEIGHTINGS)}")
    return RESIDUAL_WEIGHTINGS[name](sde, t, float(data_std))


def _log_relative_scale(sde: SDE, t: torch.Tensor, data_std: float) -> torch.Tensor:
    """c(t) = log(ŝ(t)/a(t)) = ½ log(data_std² + σ_t²/a(t)²), increasing in t for every
    linear SDE (σ_t²/a² = ∫₀ᵗ g²/a² ds). It is the log-scale of the equivalent VE process
    x_t/a(t); for VE (a = 1) it is log ŝ(t) itself. log ŝ alone is not monotone under VP
    (constant for data_std = 1, falling for data_std > 1) nor under sub-VP."""
    try:
        a, _ = sde.marginal(t)
    except NotImplementedError:
        raise ValueError(
            f"time sampling 'log_scale' needs the SDE's kernel, but {type(sde).__name__} "
            "has no closed-form marginal(t); use time_sampling='uniform'"
        ) from None
    return 0.5 * torch.log(data_std**2 + sde.marginal_variance(t) / a**2)


def sample_collocation_time(
    n: int,
    sde: SDE,
    sampling: str = "uniform",
    *,
    data_std: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """n collocation times in [0, T], shape ``[n]`` (``sampling`` in ``TIME_SAMPLINGS``).

    ``"log_scale"``: the first half uniform in t, the second uniform in c(t) = log(ŝ(t)/a(t))
    over [c(0), c(T)] (``_log_relative_scale``; log ŝ under VE), mapped back to t by
    interpolating c on a 2049-point grid (c is increasing).
    """
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time sampling {sampling!r}; choose one of {TIME_SAMPLINGS}")
    if data_std <= 0:
        raise ValueError(f"data_std must be positive, got {data_std}")
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    if sampling == "uniform":
        return sde.T * u
    grid = torch.linspace(0.0, sde.T, 2049, dtype=torch.float64)
    # cummax guards the interpolation against round-off wiggles of a flat c.
    c = torch.cummax(_log_relative_scale(sde, grid, float(data_std)), 0).values
    target = c[0] + (c[-1] - c[0]) * u[n // 2 :].to(torch.float64).cpu()
    i = torch.searchsorted(c, target).clamp(1, grid.numel() - 1)
    w = ((target - c[i - 1]) / (c[i] - c[i - 1]).clamp_min(1e-300)).clamp(0.0, 1.0)
    t_c = grid[i - 1] + w * (grid[i] - grid[i - 1])
    return torch.cat([sde.T * u[: n // 2], t_c.to(u)])


@renamed_keywords(model="score")
def cauchy_loss(
    score: Score,
    sde: SDE,
    x_colloc: torch.Tensor,
    t_colloc: torch.Tensor,
    init_score: Callable[[torch.Tensor], torch.Tensor],
    x_init: torch.Tensor,
    *,
    weighting: str = "scaled",
    data_std: float = 1.0,
    init_weight: float = 1.0,
    estimator: str = "exact",
    unbiased: bool = False,
    generator: torch.Generator | None = None,
    validate: bool = False,
    **options,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """J of Eq. (21) at given points; returns (J, parts) with detached ``residual`` and ``init``.

    ``x_colloc [B, ...]``, ``t_colloc [B]``: where the PDE is enforced. ``init_score(x)``:
    the known score s₀ at t = 0, enforced at ``x_init [N, ...]`` (for a mixture,
    ``lambda x: gmm.score(x)``). ‖ε‖² comes from ``scorepde.residual_norm_sq`` with
    ``estimator`` and ``options`` (``"exact"`` is cheap for small D; ``validate`` as there):
    for a stochastic estimator the single-draw plug-in ‖ε̂‖² (``unbiased=False``) is biased
    upwards by the estimator's variance, the product of two independent draws
    (``unbiased=True``, twice the cost) is not. For ``"directional"``/``"forward_fd"`` it is
    ⟨ε̂, v⟩², whose mean is ‖ε‖² (not ‖⟨ε̂, v⟩v‖² = D⟨ε̂, v⟩² for Rademacher v).
    """
    sq, _ = residual_norm_sq(
        score,
        sde,
        x_colloc,
        t_colloc,
        estimator,
        unbiased=unbiased,
        generator=generator,
        validate=validate,
        **options,
    )
    w = residual_weight(weighting, sde, t_colloc, data_std)
    res = (w**2 * sq).mean()
    t0 = torch.zeros(x_init.shape[0], dtype=x_init.dtype, device=x_init.device)
    init = (score(x_init, t0) - init_score(x_init)).flatten(1).pow(2).sum(1).mean()
    total = check_finite(res + init_weight * init, "the Cauchy-problem loss")
    return total, {"residual": res.detach(), "init": init.detach()}


class CauchyObjective(torch.nn.Module):
    """Eq. (21) as an objective for ``scorepde.training.fit``: ``forward(x0, generator)``.

    From a batch of data x_0 it draws t (``time_sampling``) and z ~ N(0, I), enforces the PDE at
    x_t = a(t) x_0 + σ_t z and the initial condition at x_0 (``init_points="data"``) or at
    x_0 and the x_t too (``"data+colloc"``). The second matters: s₀ fixed on the data alone
    leaves the initial score free where q_0 is tiny, and through the PDE (a heat equation
    for q_t) a wrong s₀ there becomes spurious mass at later t. Only the data and
    ``init_score`` are used: no DSM target, no closed-form score at t > 0. ``estimator``,
    ``unbiased`` and ``options`` as in ``cauchy_loss``.
    """

    @renamed_keywords(model="score")
    def __init__(
        self,
        score: torch.nn.Module,
        sde: SDE,
        init_score: Callable[[torch.Tensor], torch.Tensor],
        *,
        weighting: str = "scaled",
        data_std: float = 1.0,
        init_weight: float = 1.0,
        estimator: str = "exact",
        unbiased: bool = False,
        init_points: str = "data+colloc",
        time_sampling: str = "log_scale",
        **options,
    ):
        super().__init__()
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {time_sampling!r}; choose one of {TIME_SAMPLINGS}")
        self.time_sampling = time_sampling
        if init_points not in INIT_POINTS:
            raise ValueError(f"unknown init_points {init_points!r}; choose one of {INIT_POINTS}")
        self.init_points = init_points
        residual_weight(weighting, sde, torch.full((1,), 0.5), data_std)  # fail early on a bad name
        self.model, self.sde, self.init_score = score, sde, init_score
        self.weighting, self.data_std, self.init_weight = weighting, float(data_std), float(init_weight)
        get_estimator(estimator, **{k: v for k, v in options.items() if k != "validate"})  # fail early
        self.estimator, self.unbiased, self.options = estimator, bool(unbiased), options
        self._checked = False

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        t = sample_collocation_time(
            x0.shape[0],
            self.sde,
            self.time_sampling,
            data_std=self.data_std,
            generator=generator,
            device=x0.device,
            dtype=x0.dtype,
        )
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        xt = self.sde.perturb(x0, t, z)
        if not self._checked:
            check_batch_independent(self.model, xt, t)
            self._checked = True
        x_init = x0 if self.init_points == "data" else torch.cat([x0, xt])
        return cauchy_loss(
            self.model,
            self.sde,
            xt,
            t,
            self.init_score,
            x_init,
            weighting=self.weighting,
            data_std=self.data_std,
            init_weight=self.init_weight,
            estimator=self.estimator,
            unbiased=self.unbiased,
            generator=generator,
            **self.options,
        )
