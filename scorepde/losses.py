"""Training objectives: denoising score matching and the FP regularizer (Sec. 5, Eq. 19).

    J_DSM = E_t E_{x_0, z} [ ½ λ(t) ‖s(x_t, t) + z/σ_t‖² ],        x_t = a(t) x_0 + σ_t z
    R_FP  = β E[ λ_FP(t) ‖ε[s](x_t, t)‖^m ] + γ E |L[s](x_t, t)|
    J_FP  = J_DSM + R_FP

R_FP is evaluated on the DSM's own perturbed samples (optionally a sub-batch of them).
The paper's settings map to the arguments as

    CIFAR-10 (Table 6):   beta=0.15,   gamma=0.01, fp_weighting="g2",   m=2
    toy (Sec. 7.1):       beta=0.0015, gamma=0,    fp_weighting="none", m=1

β = γ = 0 is exactly DSM and computes nothing else. ``DEFAULT_FP`` is scorepde's default way
to evaluate R_FP (``FPObjective(model, sde, beta=..., **DEFAULT_FP)``): the forward-only
directional estimator on an eighth of the batch, which costs well under 2× a DSM step
(``benchmarks/step_cost.py`` measures it; ``benchmarks/RESULTS.md`` has the numbers).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .checks import check_batch_independent, check_finite, check_output
from .derivatives import broadcast_to_batch
from .fpe import ESTIMATORS, residual_norm_sq
from .sde import SDE

__all__ = ["WEIGHTINGS", "DEFAULT_FP", "sample_time", "dsm_loss", "fp_regularizer", "FPObjective"]

#: λ(t) by name: g(t)² (likelihood weighting), σ_t² (score_sde's default), or 1.
WEIGHTINGS: Dict[str, Callable[[SDE, torch.Tensor], torch.Tensor]] = {
    "g2": lambda sde, t: sde.diffusion(t) ** 2,
    "sigma2": lambda sde, t: sde.marginal_variance(t),
    "none": lambda sde, t: torch.ones_like(t),
}


#: The default R_FP evaluation: ⟨ε, v⟩ from one batched plain forward of 6 points per sample
#: (``"forward_fd"``, Eq. 24 by central differences), m = 2 with a single draw, on 1/8 of
#: the DSM batch. The single-draw ⟨ε̂, v⟩² over-estimates ‖ε‖² by the probe variance.
DEFAULT_FP = dict(estimator="forward_fd", m=2, unbiased=False, subbatch=0.125)


def _weighting(name: str, sde: SDE, t: torch.Tensor) -> torch.Tensor:
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; choose one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](sde, t)


def _check_eps(eps: float, sde: SDE) -> None:
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}; it is the smallest time trained on")


def sample_time(n: int, sde: SDE, eps: float = 1e-5, *, generator=None, device=None, dtype=None):
    """t ~ U(eps, T), shape ``[n]``."""
    _check_eps(eps, sde)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return eps + (sde.T - eps) * u


def _perturbed_batch(sde: SDE, x0: torch.Tensor, eps: float, generator):
    """(x_t, t, z): t ~ U(eps, T), z ~ N(0, I), x_t = a(t) x_0 + σ_t z."""
    t = sample_time(x0.shape[0], sde, eps, generator=generator, device=x0.device, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return sde.perturb(x0, t, z), t, z


def _dsm_from_score(s: torch.Tensor, sde: SDE, t: torch.Tensor, z: torch.Tensor, weighting: str):
    check_output(s, z)
    std = broadcast_to_batch(sde.marginal(t)[1], z)
    per_sample = 0.5 * _weighting(weighting, sde, t) * (s + z / std).flatten(1).pow(2).sum(1)
    return check_finite(per_sample.mean(), "the DSM loss")


def dsm_loss(model: Callable, sde: SDE, x0: torch.Tensor, *, weighting: str = "sigma2",
             eps: float = 1e-5, generator: Optional[torch.Generator] = None,
             return_samples: bool = False):
    """J_DSM, a scalar: the batch mean of ½ λ(t) ‖s(x_t, t) + z/σ_t‖² summed over dimensions.

    With ``return_samples`` also returns the perturbed ``(x_t, t)`` it drew.
    """
    xt, t, z = _perturbed_batch(sde, x0, eps, generator)
    loss = _dsm_from_score(model(xt, t), sde, t, z, weighting)
    return (loss, xt, t) if return_samples else loss


class _Piggyback:
    """A score callable whose first call also evaluates (x, t) in the same batched forward.

    Lets R_FP's plain forward carry the DSM batch along: one network call per step instead
    of two. Only for estimators whose model calls are plain forwards (no torch.func
    transform around them), so the extra outputs can leave the call.
    """

    def __init__(self, model: Callable, x: torch.Tensor, t: torch.Tensor):
        self.model, self.x, self.t, self.out = model, x, t, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            return self.model(x, t)
        B = self.x.shape[0]
        out = self.model(torch.cat([self.x, x]), torch.cat([self.t, t]))
        self.out = out[:B]
        return out[B:]


def fp_regularizer(model: Callable, sde: SDE, x: torch.Tensor, t: torch.Tensor, *,
                   beta: float, gamma: float = 0.0, fp_weighting: str = "none", m: int = 1,
                   estimator: str = "exact", unbiased: bool = True,
                   generator: Optional[torch.Generator] = None, validate: bool = False,
                   **options) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """R_FP = β E[λ_FP(t) ‖ε‖^m] + γ E|L[s]| at the points (x, t); returns (R_FP, parts).

    For m = 2 and a stochastic estimator, ``unbiased`` uses ``residual_norm_sq``'s product of
    two independent draws (unbiased for E‖ε‖²). For m = 1 no unbiased estimate of ‖ε‖ exists:
    it is the square root of the single-draw estimate of ‖ε‖², i.e. the plug-in ‖ε̂‖ (biased
    upwards, by Jensen, for an unbiased ε̂) or, for the directional estimators, |⟨ε, v⟩|
    (not ‖⟨ε, v⟩ v‖, which would inflate it by ‖v‖ ≈ √D); exact for deterministic
    estimators. ``options`` go to ``scorepde.residual``.
    """
    if m not in (1, 2):
        raise ValueError(f"m must be 1 or 2, got {m}")
    if beta < 0 or gamma < 0:
        raise ValueError(f"beta and gamma must be non-negative, got {beta}, {gamma}")
    sq, L = residual_norm_sq(model, sde, x, t, estimator, unbiased=unbiased and m == 2,
                             generator=generator, validate=validate, **options)
    # m = 1: sqrt with a floor far below float32 resolution, so its gradient at ε = 0 is 0.
    norm_m = sq if m == 2 else torch.sqrt(sq + torch.finfo(sq.dtype).tiny)
    res = (_weighting(fp_weighting, sde, t) * norm_m).mean()
    rhs = L.abs().mean()
    total = check_finite(beta * res + gamma * rhs, "the FP regularizer")
    return total, {"fp_residual": res.detach(), "fp_rhs": rhs.detach()}


class FPObjective(torch.nn.Module):
    """J_FP = J_DSM + R_FP as a module (model plus regularizer), so DDP can wrap the whole loss.

    DDP must wrap this, not the bare network: forward-mode jvp does not pass through a
    DDP-wrapped module. ``forward(x0, generator)`` returns ``(total, parts)`` with the
    detached parts ``dsm``, ``fp`` and, when the regularizer runs, ``fp_residual``, ``fp_rhs``.
    ``subbatch`` evaluates R_FP on the first ``subbatch`` perturbed samples only: a count
    (an int), or a fraction of the batch (a float in (0, 1], rounded up to at least one).
    ``autocast`` (e.g. ``torch.bfloat16`` on CUDA) runs the plain DSM forward under
    ``torch.autocast`` while R_FP's derivatives stay in the model's precision.
    """

    def __init__(self, model: torch.nn.Module, sde: SDE, *, beta: float = 0.0, gamma: float = 0.0,
                 fp_weighting: str = "none", m: int = 1, estimator: str = "exact",
                 dsm_weighting: str = "sigma2", eps: float = 1e-5,
                 subbatch: Optional[Union[int, float]] = None, unbiased: bool = True,
                 autocast: Optional[torch.dtype] = None, **options):
        super().__init__()
        _check_eps(eps, sde)
        _weighting(dsm_weighting, sde, torch.zeros(1))
        _weighting(fp_weighting, sde, torch.zeros(1))
        if subbatch is not None and not (isinstance(subbatch, int) and subbatch >= 1
                                         or isinstance(subbatch, float) and 0 < subbatch <= 1):
            raise ValueError(f"subbatch must be a positive batch size (int) or a fraction of the "
                             f"batch in (0, 1] (float), got {subbatch!r}")
        self.model, self.sde = model, sde
        self.beta, self.gamma, self.fp_weighting, self.m = float(beta), float(gamma), fp_weighting, m
        self.estimator, self.dsm_weighting, self.eps = estimator, dsm_weighting, eps
        self.subbatch, self.unbiased, self.options = subbatch, unbiased, options
        self.autocast = autocast
        self._independence_checked = False

    @property
    def regularized(self) -> bool:
        return self.beta > 0 or self.gamma > 0

    def fp_batch_size(self, batch: int) -> int:
        """How many of ``batch`` perturbed samples R_FP is evaluated on."""
        if self.subbatch is None:
            return batch
        if isinstance(self.subbatch, float):
            return max(1, math.ceil(self.subbatch * batch))
        return min(self.subbatch, batch)

    @property
    def fused(self) -> bool:
        """Whether R_FP's estimator makes only plain forwards, so DSM can share its forward."""
        return self.regularized and self.autocast is None \
            and ESTIMATORS[self.estimator]["grad"] == "directional_fd" \
            and self.options.get("grad", "directional_fd") == "directional_fd"

    def _plain_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s(x, t) for the DSM term, under autocast if asked."""
        if self.autocast is None:
            return self.model(x, t)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.model(x, t).to(x.dtype)

    def forward(self, x0: torch.Tensor, generator: Optional[torch.Generator] = None):
        xt, t, z = _perturbed_batch(self.sde, x0, self.eps, generator)
        if not self.regularized:
            dsm = _dsm_from_score(self._plain_score(xt, t), self.sde, t, z, self.dsm_weighting)
            return dsm, {"dsm": dsm.detach(), "fp": torch.zeros_like(dsm.detach())}
        k = self.fp_batch_size(x0.shape[0])
        if not self._independence_checked:  # once: per-sample derivatives need it
            check_batch_independent(self.model, xt, t)
            self._independence_checked = True
        score = _Piggyback(self.model, xt, t) if self.fused else self.model
        fp, fp_parts = fp_regularizer(score, self.sde, xt[:k], t[:k], beta=self.beta,
                                      gamma=self.gamma, fp_weighting=self.fp_weighting, m=self.m,
                                      estimator=self.estimator, unbiased=self.unbiased,
                                      generator=generator, **self.options)
        s = score.out if self.fused else self._plain_score(xt, t)
        dsm = _dsm_from_score(s, self.sde, t, z, self.dsm_weighting)
        return dsm + fp, {"dsm": dsm.detach(), "fp": fp.detach(), **fp_parts}
