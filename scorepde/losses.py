"""Training objectives: denoising score matching and the FP regularizer (Sec. 5, Eq. 19).

    J_DSM = E_t E_{x_0, z} [ ½ λ(t) ‖s(x_t, t) + z/σ_t‖² ],        x_t = a(t) x_0 + σ_t z
    R_FP  = β E[ λ_FP(t) ‖ε[s](x_t, t)‖^m ] / N + γ E |L[s](x_t, t)|,     N = 1 or D^m
    J_FP  = J_DSM + R_FP

R_FP is evaluated on the DSM's own perturbed samples (optionally a sub-batch of them).
scorepde's default form is the clean math (``normalize="none"``: N = 1; ``rhs_reduction=
"mean_abs"``: the batch mean of |L|). The paper's β is in the units of its official code
(sony/FP-Diffusion), which divides the ε-term by D^m (``normalize="dim"``) and takes the
batch L2 norm ‖L‖₂ of L for the γ-term (``rhs_reduction="batch_l2"``, growing like √B):

    β_paper · E[λ‖ε‖^m] / D^m  =  β_ours · E[λ‖ε‖^m]   ⇔   β_ours = β_paper / D^m

so the paper's CIFAR-10 β = 0.15 (m = 2, D = 3072) is β = 1.6e-8 in the plain form, and
its MNIST β = 0.1 (m = 1, D = 784) is 1.3e-4. Use the
named presets in ``PAPER_SETTINGS`` rather than converting by hand:
``FPObjective(net, sde, **PAPER_SETTINGS["cifar10"])``.

β = γ = 0 is exactly DSM and computes nothing else. ``DEFAULT_FP`` is scorepde's default way
to evaluate R_FP (``FPObjective(model, sde, beta=..., **DEFAULT_FP)``): the forward-only
directional estimator on an eighth of the batch, which costs well under 2× a DSM step
(``benchmarks/step_cost.py`` measures it; ``benchmarks/RESULTS.md`` has the numbers).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .checks import check_batch_independent, check_finite, check_output
from .derivatives import broadcast_to_batch
from .fpe import get_estimator, residual_norm_sq
from .sde import SDE
from .stats import standard_error
from .typing import Score, renamed_keywords, time_conditioning

__all__ = [
    "WEIGHTINGS",
    "RHS_REDUCTIONS",
    "NORMALIZATIONS",
    "PAPER_SETTINGS",
    "UnknownPresetError",
    "DEFAULT_FP",
    "sample_time",
    "dsm_loss",
    "held_out_dsm",
    "fp_regularizer",
    "FPObjective",
]

#: λ(t) by name: g(t)² (likelihood weighting), σ_t² (score_sde's default), or 1.
WEIGHTINGS: dict[str, Callable[[SDE, torch.Tensor], torch.Tensor]] = {
    "g2": lambda sde, t: sde.diffusion(t) ** 2,
    "sigma2": lambda sde, t: sde.marginal_variance(t),
    "none": lambda sde, t: torch.ones_like(t),
}


#: The default R_FP evaluation: ⟨ε, v⟩ from one batched plain forward of 6 points per sample
#: (``"forward_fd"``, Eq. 24 by central differences), m = 2 with a single draw, on 1/8 of
#: the DSM batch. The single-draw ⟨ε̂, v⟩² over-estimates ‖ε‖² by the probe variance.
DEFAULT_FP = dict(estimator="forward_fd", m=2, unbiased=False, subbatch=0.125)

#: The γ-term's reduction of L[s] over the batch: the mean of |L| (Eq. 19, scorepde's
#: default), or the L2 norm over the batch ‖L‖₂ as the official code computes it.
RHS_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean_abs": lambda L: L.abs().mean(),
    "batch_l2": lambda L: torch.linalg.vector_norm(L),
}

#: The ε-term's normaliser N by name, given (D, m): 1, or D^m as the official code divides.
NORMALIZATIONS: dict[str, Callable[[int, int], float]] = {
    "none": lambda D, m: 1.0,
    "dim": lambda D, m: float(D) ** m,
}


# The paper's settings as FPObjective keyword arguments, in the paper's (official code's) units.
# Sources: Table 6 and Sec. 7.3 / App. D.3 (CIFAR-10, ImageNet32), Sec. 7.2 / App. D.2 and
# Table 1 (MNIST, Fashion-MNIST), Sec. 7.1 / App. D.1 (toys); the official code is
# sony/FP-Diffusion (configs/default_cifar10_configs.py, losses.py, sde_lib.py, diff.py).
# Only the CIFAR-10 training code was released. Everything else is an assumption, and says so.
class UnknownPresetError(KeyError, ValueError):
    """A name that is not one of ``PAPER_SETTINGS`` (a KeyError, and a ValueError like every
    bad input here); its message names the presets there are."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Presets(dict):
    """``PAPER_SETTINGS``: a dict whose unknown names are refused with the known ones."""

    def __missing__(self, name):
        raise UnknownPresetError(f"no paper preset {name!r}; choose one of {sorted(self)}")


_OFFICIAL_CODE = dict(
    normalize="dim",  # sde_lib.PDE(normalize=True): the ε-term is divided by D^m
    rhs_reduction="batch_l2",  # sde_lib.PDE: scalar_res = ‖RHS‖₂ over the batch
    estimator="paper",  # diff.t_finite_diff (h_s, h_d) = (1e-3, 5e-4) and diff.hutch_div:
    # one Gaussian probe, vᵀJ by reverse mode, ∇x L by autograd
    unbiased=False,  # one draw: ‖ε̂‖^m of a single estimate, no product of two draws
)
PAPER_SETTINGS: dict[str, dict] = _Presets(
    {
        # Table 6 / Sec. 7.3: (β, γ, λ_FP, m) = (0.15, 0.01, g², 2); the official CIFAR config
        # (alpha=0.15 on the ε-term, beta=0.01 on the scalar term, fp_wgt_type="ll", m=2,
        # likelihood_weighting=True, reduce_mean=False: DSM = ½ g² ‖s + z/σ‖² summed, batch mean)
        # and the official loss' eps = 1e-5. Checked (outside this repo) by running the official
        # sde_lib/diff/losses beside this preset on small nets, same x_t, t, z and probe, float64:
        # under VE the regularizer, its parameter gradient and the whole loss agree to ≤ 7e-15
        # relative (with the official VE kernel std σ(t) swapped for scorepde's exact
        # sqrt(σ(t)² − σ_min²)); under VP the ε-term agrees to ≤ 1e-14 and the γ-term differs by
        # exactly the div f quirk below. Quirks of the official code, kept or dropped:
        # kept  - the ε-term divided by D^m, ‖L‖₂ over the batch, one-draw estimates, the
        #         3-point stencil in t: they define the units of the published numbers;
        # dropped - VP/sub-VP's RHS without the constant −div f (official RHS = L − ½β(t)D):
        #         a wrong L that the γ-term would drive towards −½β(t)D. Table 6 is VE, where
        #         div f = 0, so the published setting is unaffected;
        # dropped - stencil nodes at or below t = 0 when t < h_s = 1e-3 (the official code
        #         evaluates the net at t < 0; NaN under VP): there scorepde's steps shrink
        #         to t/8 (derivatives.STEP_FRACTION), so no node leaves (0, T];
        # dropped - VESDE.PDE's scalar_fp="both" branch reads an unset self.q (AttributeError);
        #         m is used as the code's other branches do.
        "cifar10": dict(
            beta=0.15, gamma=0.01, fp_weighting="g2", m=2, dsm_weighting="g2", eps=1e-5, **_OFFICIAL_CODE
        ),
        # Sec. 7.3 / App. D.3: the same (0.15, 0.01, g², 2), batch 48, on Lu et al.'s VE model.
        "imagenet32": dict(
            beta=0.15, gamma=0.01, fp_weighting="g2", m=2, dsm_weighting="g2", eps=1e-5, **_OFFICIAL_CODE
        ),
        # Sec. 7.2: (γ, λ_FP, m) = (0, 1, 1), β swept in {0.001, ..., 10}; β = 0.1 is the best in
        # Table 1. App. D.2: trained from scratch with Song's colab setup, start time 1e-3.
        # Assumed (code unreleased): the official code's units (ε-term / D^m) and estimator, and
        # the colab's DSM weighting σ² (the colab sums without the ½, so its FP term weighs half
        # as much relative to DSM as here).
        "mnist": dict(
            beta=0.1, gamma=0.0, fp_weighting="none", m=1, dsm_weighting="sigma2", eps=1e-3, **_OFFICIAL_CODE
        ),
        "fashion-mnist": dict(
            beta=0.1, gamma=0.0, fp_weighting="none", m=1, dsm_weighting="sigma2", eps=1e-3, **_OFFICIAL_CODE
        ),
        # Sec. 7.1: (β, γ, λ_FP, m) = (0.0015, 0, 1, 1) under a VE SDE. Assumed (code
        # unreleased): the official code's units and estimator, σ² DSM weighting (Lu et al.'s toy
        # code it builds on), and start time 1e-3 as App. D.2 states for MNIST (App. D.1's value
        # is illegible in our copy of the paper).
        "toy": dict(
            beta=0.0015,
            gamma=0.0,
            fp_weighting="none",
            m=1,
            dsm_weighting="sigma2",
            eps=1e-3,
            **_OFFICIAL_CODE,
        ),
    }
)


def _choice(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]


def _weighting(name: str, sde: SDE, t: torch.Tensor) -> torch.Tensor:
    return _choice(WEIGHTINGS, name, "weighting")(sde, t)


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


@renamed_keywords(model="score")
def dsm_loss(
    score: Score,
    sde: SDE,
    x0: torch.Tensor,
    *,
    weighting: str = "sigma2",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    return_samples: bool = False,
):
    """J_DSM, a scalar: the batch mean of ½ λ(t) ‖s(x_t, t) + z/σ_t‖² summed over dimensions.

    With ``return_samples`` also returns the perturbed ``(x_t, t)`` it drew.
    """
    xt, t, z = _perturbed_batch(sde, x0, eps, generator)
    loss = _dsm_from_score(score(xt, t), sde, t, z, weighting)
    return (loss, xt, t) if return_samples else loss


def held_out_dsm(
    score: Score,
    sde: SDE,
    x0: torch.Tensor | Callable[[torch.Generator | None], torch.Tensor],
    repeats: int,
    *,
    generator: torch.Generator | None = None,
    **dsm_kwargs,
) -> tuple[float, float]:
    """J_DSM on held-out data: the mean of ``repeats`` :func:`dsm_loss` draws of (t, z) from
    ``generator``, and its standard error (NaN for one draw). ``x0`` is the data, or a function
    of the generator that draws it afresh before each repeat's (t, z) (a dequantization)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    with torch.no_grad():
        draws = [
            float(
                dsm_loss(score, sde, x0(generator) if callable(x0) else x0, generator=generator, **dsm_kwargs)
            )
            for _ in range(repeats)
        ]
    return float(np.mean(draws)), standard_error(draws)


class _Piggyback:
    """A score callable whose first call also evaluates (x, t) in the same batched forward.

    Lets R_FP's plain forward carry the DSM batch along: one network call per step instead
    of two. Only for estimators whose model calls are plain forwards (no torch.func
    transform around them), so the extra outputs can leave the call. Calls under no_grad
    (``check_batch_independent``'s probes) pass straight through: a DSM output computed
    without a graph would silently drop the DSM gradient.
    """

    def __init__(self, model: Callable, x: torch.Tensor, t: torch.Tensor):
        self.model, self.x, self.t, self.out = model, x, t, None

    def time_rate(self):
        """The wrapped model's (``TimeConditioned``), so finite differences in t keep its steps."""
        return time_conditioning(self.model)[0]

    @property
    def time_dtype(self):
        return time_conditioning(self.model)[1]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.out is not None or not torch.is_grad_enabled():
            return self.model(x, t)  # a no-grad call (a validation probe) carries nothing
        B = self.x.shape[0]
        out = self.model(torch.cat([self.x, x]), torch.cat([self.t, t]))
        self.out = out[:B]
        return out[B:]


@renamed_keywords(model="score")
def fp_regularizer(
    score: Score,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    beta: float,
    gamma: float = 0.0,
    fp_weighting: str = "none",
    m: int = 1,
    estimator: str = "exact",
    unbiased: bool = True,
    normalize: str = "none",
    rhs_reduction: str = "mean_abs",
    generator: torch.Generator | None = None,
    validate: bool = False,
    **options,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R_FP = β E[λ_FP(t) ‖ε‖^m] / N + γ·reduce(L[s]) at the points (x, t) (Eq. 19);
    returns (R_FP, parts).

    ``normalize``: N = 1 (``"none"``, the plain form) or D^m (``"dim"``, the official code's
    units, in which the paper's β are given: β_plain = β_paper / D^m). ``rhs_reduction``:
    ``"mean_abs"`` (E|L|) or ``"batch_l2"`` (‖L‖₂ over the batch, the official code's).
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
    norm = _choice(NORMALIZATIONS, normalize, "normalize")(x[0].numel(), m)
    reduce_rhs = _choice(RHS_REDUCTIONS, rhs_reduction, "rhs_reduction")
    sq, L = residual_norm_sq(
        score,
        sde,
        x,
        t,
        estimator,
        unbiased=unbiased and m == 2,
        generator=generator,
        validate=validate,
        **options,
    )
    # m = 1: sqrt with a floor far below float32 resolution, so its gradient at ε = 0 is 0.
    norm_m = sq if m == 2 else torch.sqrt(sq + torch.finfo(sq.dtype).tiny)
    res = (_weighting(fp_weighting, sde, t) * norm_m).mean() / norm
    rhs = reduce_rhs(L)
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
    ``dsm_weighting`` is λ(t) of J_DSM (one of ``WEIGHTINGS``; the paper's CIFAR run uses
    ``"g2"``); ``normalize`` and ``rhs_reduction`` as in ``fp_regularizer``. The paper's
    settings are presets: ``FPObjective(net, sde, **PAPER_SETTINGS["cifar10"])``.
    ``every = k`` evaluates R_FP on every k-th call only, weighted by k (calls 0, k, 2k, …):
    the same expected gradient at 1/k of the regularizer's cost. The call count is part of
    the module's ``state_dict``, so a resumed run keeps the phase.
    """

    @renamed_keywords(model="score")
    def __init__(
        self,
        score: torch.nn.Module,
        sde: SDE,
        *,
        beta: float = 0.0,
        gamma: float = 0.0,
        fp_weighting: str = "none",
        m: int = 1,
        estimator: str = "exact",
        dsm_weighting: str = "sigma2",
        eps: float = 1e-5,
        subbatch: int | float | None = None,
        unbiased: bool = True,
        normalize: str = "none",
        rhs_reduction: str = "mean_abs",
        autocast: torch.dtype | None = None,
        every: int = 1,
        **options,
    ):
        super().__init__()
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(
                f"every must be a positive integer (R_FP on every k-th step, weighted by k), got {every!r}"
            )
        _check_eps(eps, sde)
        _weighting(dsm_weighting, sde, torch.zeros(1))
        _weighting(fp_weighting, sde, torch.zeros(1))
        _choice(NORMALIZATIONS, normalize, "normalize")
        _choice(RHS_REDUCTIONS, rhs_reduction, "rhs_reduction")
        if m not in (1, 2):
            raise ValueError(f"m must be 1 or 2, got {m}")
        if subbatch is not None and not (
            isinstance(subbatch, int) and subbatch >= 1 or isinstance(subbatch, float) and 0 < subbatch <= 1
        ):
            raise ValueError(
                f"subbatch must be a positive batch size (int) or a fraction of the "
                f"batch in (0, 1] (float), got {subbatch!r}"
            )
        self.model, self.sde = score, sde
        self.beta, self.gamma, self.fp_weighting, self.m = float(beta), float(gamma), fp_weighting, m
        self.estimator, self.dsm_weighting, self.eps = estimator, dsm_weighting, eps
        self.subbatch, self.unbiased, self.options = subbatch, unbiased, options
        self.normalize, self.rhs_reduction = normalize, rhs_reduction
        self.autocast, self.every, self.calls = autocast, every, 0
        self._independence_checked = False
        # the estimator, built now: a bad name or option fails here, not at the first step
        self._estimator = get_estimator(estimator, **{k: v for k, v in options.items() if k != "validate"})

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = int(state["calls"])

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
        return self.regularized and self.autocast is None and self._estimator.plain_forwards_only

    def _plain_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s(x, t) for the DSM term, under autocast if asked."""
        if self.autocast is None:
            return self.model(x, t)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.model(x, t).to(x.dtype)

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        xt, t, z = _perturbed_batch(self.sde, x0, self.eps, generator)
        skip = self.calls % self.every != 0
        self.calls += 1
        if not self.regularized or skip:
            dsm = _dsm_from_score(self._plain_score(xt, t), self.sde, t, z, self.dsm_weighting)
            return dsm, {"dsm": dsm.detach(), "fp": torch.zeros_like(dsm.detach())}
        k = self.fp_batch_size(x0.shape[0])
        if not self._independence_checked:  # once: per-sample derivatives need it
            check_batch_independent(self.model, xt, t)
            self._independence_checked = True
        score = _Piggyback(self.model, xt, t) if self.fused else self.model
        fp, fp_parts = fp_regularizer(
            score,
            self.sde,
            xt[:k],
            t[:k],
            beta=self.beta,
            gamma=self.gamma,
            fp_weighting=self.fp_weighting,
            m=self.m,
            estimator=self.estimator,
            unbiased=self.unbiased,
            normalize=self.normalize,
            rhs_reduction=self.rhs_reduction,
            generator=generator,
            **self.options,
        )
        s = score.out if self.fused else self._plain_score(xt, t)
        dsm = _dsm_from_score(s, self.sde, t, z, self.dsm_weighting)
        fp = self.every * fp
        return dsm + fp, {"dsm": dsm.detach(), "fp": fp.detach(), **fp_parts}
