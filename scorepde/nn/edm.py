"""EDM / k-diffusion denoisers as scores (Karras et al. 2022).

A denoiser D(x̂, σ̂) ≈ E[x_0 | x̂ = x_0 + σ̂ z] gives, by Tweedie's formula, the score of
x̂: (D − x̂)/σ̂². For an SDE with kernel x_t = a(t) x_0 + σ_t z, x̂ = x_t/a and σ̂ = σ_t/a:

    s(x, t) = (a(t) D(x/a(t), σ_t/a(t)) − x) / σ_t²

which is (D(x, t) − x)/t² for ``EDMSDE`` (a = 1, σ_t = t).
"""

from __future__ import annotations

import torch

from ..derivatives import broadcast_to_batch
from ..sde import SDE

__all__ = ["from_denoiser"]


def from_denoiser(denoiser, sde: SDE):
    """``(score, sde)`` for ``denoiser(x [B, ...], sigma [B]) -> x̂_0`` shaped like x.

    ``sde`` must have a closed-form kernel (``marginal``); ``scorepde.EDMSDE()`` is EDM's
    σ(t) = t. The score is defined for σ_t > 0 (t > 0), where the denoiser was trained.
    """
    try:
        sde.marginal(torch.ones(1))
    except NotImplementedError:
        raise ValueError(
            f"from_denoiser needs the kernel (a(t), σ_t), but {type(sde).__name__} has no "
            "closed-form marginal(t); use e.g. scorepde.EDMSDE()"
        ) from None

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sigma = sde.marginal(t)
        out = denoiser(x / broadcast_to_batch(a, x), sigma / a)
        if out.shape != x.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(out.shape)} for x of shape "
                f"{tuple(x.shape)}; it must return x̂_0 shaped like x"
            )
        return (broadcast_to_batch(a, x) * out - x) / broadcast_to_batch(sde.marginal_variance(t), x)

    return score, sde
