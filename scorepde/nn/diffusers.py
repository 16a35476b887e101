"""diffusers models as scores: a DDPM-family UNet and its scheduler give (score, SDE).

    s(x, t) = −ε̂(x, k(t)) / σ̃_t,     k(t) = N t − 1,   σ̃_t = sqrt(σ_t² + min_std²)

with (a(t), σ_t) the kernel of ``DiscreteVPSDE(scheduler.alphas_cumprod)``, which equals
(sqrt ᾱ_k, sqrt(1 − ᾱ_k)) at t = (k + 1)/N, and ε̂ from the network's output F by its
prediction type (``PREDICTIONS``). diffusers is imported only by the functions that need it.
"""

from __future__ import annotations

import contextlib

import torch

from ..autodiff import math_attention
from ..derivatives import broadcast_to_batch
from ..sde import DiscreteVPSDE

__all__ = ["from_diffusers", "PREDICTIONS"]

#: ε̂ from the network output F, for x = a x_0 + σ ε with a² + σ² = 1 (diffusers'
#: ``prediction_type``; the formulas are those of its DDPMScheduler.step).
PREDICTIONS = {
    "epsilon": lambda F, x, a, sigma: F,
    "v_prediction": lambda F, x, a, sigma: sigma * x + a * F,  # v = a ε − σ x_0
    "sample": lambda F, x, a, sigma: (x - a * F) / sigma,  # F = x̂_0
}


def _config(scheduler, key, default=None):
    config = getattr(scheduler, "config", {})
    return config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)


def _check_unet(unet) -> None:
    """Refuse UNets conditioned on anything but the integer step k."""
    unet_config = getattr(unet, "config", None)
    if unet_config is None:
        return
    get = unet_config.get if hasattr(unet_config, "get") else lambda k, d=None: getattr(unet_config, k, d)
    if get("time_embedding_type", "positional") != "positional":
        raise ValueError(
            f"this UNet embeds time as {get('time_embedding_type')!r}; a DDPM-family "
            "UNet is conditioned on the integer step k (time_embedding_type='positional')"
        )
    if get("num_class_embeds") is not None or get("class_embed_type") is not None:
        raise ValueError(
            "this UNet is class-conditional; wrap it so that it takes (x, timestep) only, "
            "e.g. lambda x, k: unet(x, k, class_labels=labels)"
        )


def from_diffusers(unet, scheduler, *, attention: str | None = "math", min_std: float = 1e-5):
    """``(score, sde)`` for a diffusers ``UNet2DModel`` (or any ``unet(x, timestep)`` whose
    result or its ``.sample`` is the prediction) trained with a DDPM-family ``scheduler``.

    The SDE is ``DiscreteVPSDE(scheduler.alphas_cumprod)``: σ_t and a(t) are the
    scheduler's own at every step, for any beta schedule (``linear``,
    ``squaredcos_cap_v2``, …). The score is s(x, t) = −ε̂(x, N t − 1)/σ̃_t (module
    docstring), with ε̂ from ``prediction_type`` ``epsilon``, ``v_prediction`` or
    ``sample``; a learned-variance output (``variance_type`` ``learned``/``learned_range``,
    2C channels) contributes its first C channels, the ε̂ part. ``min_std`` keeps t = 0
    finite (at k = 0, σ = sqrt β_0, the relative change is below 1e-6).

    ``attention="math"``: during each call of the score the UNet's diffusers attention
    modules use ``scorepde.autodiff.MathAttention`` (the same function, differentiable by
    every estimator) and get their own processors back afterwards; ``None`` leaves them as
    they are (then only ``"forward_fd"`` may work). x may be float64 with a float32 UNet:
    the UNet sees x in its own dtype and the score comes back in x's.
    Refused with a ValueError: schedulers without ``alphas_cumprod`` (flow matching, VE),
    a zero terminal SNR, other prediction types, UNets conditioned on anything but the step.
    """
    if attention not in ("math", None):
        raise ValueError(f"attention must be 'math' or None, got {attention!r}")
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(
            f"{type(scheduler).__name__} has no alphas_cumprod, so it is not a DDPM-family "
            "(discrete VP) scheduler; for an EDM/k-diffusion denoiser use "
            "scorepde.from_denoiser with scorepde.EDMSDE"
        )
    prediction = _config(scheduler, "prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"prediction_type {prediction!r} cannot be converted exactly; "
            f"from_diffusers supports {sorted(PREDICTIONS)}"
        )
    learned = _config(scheduler, "variance_type") in ("learned", "learned_range")
    _check_unet(unet)
    sde = DiscreteVPSDE(alphas_cumprod)
    convert = PREDICTIONS[prediction]
    params = list(unet.parameters()) if isinstance(unet, torch.nn.Module) else []
    net_dtype = params[0].dtype if params else None

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = sde.timestep(t)
        xin = x if net_dtype is None else x.to(net_dtype)
        with math_attention(unet) if attention == "math" else contextlib.nullcontext():
            out = unet(xin, k.to(xin.dtype))
        out = getattr(out, "sample", out)
        if learned and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        if out.shape != x.shape:
            raise ValueError(
                f"the UNet returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; "
                "its prediction must be shaped like x"
            )
        out = out.to(x.dtype)
        a = broadcast_to_batch(sde.marginal(t)[0], x)
        floored = broadcast_to_batch(torch.sqrt(sde.marginal_variance(t) + min_std**2), x)
        return -convert(out, x, a, floored) / floored

    score.sde, score.unet, score.prediction_type = sde, unet, prediction
    # for provenance (the audit's metrics.json); only alphas_cumprod enters the math
    score.scheduler = scheduler
    # The fastest feature of the step embedding, sin(k), turns 1 rad per step: N rad per unit
    # t. Finite differences in t with h="auto" (derivatives.time_steps) take their step from it.
    # diffusers' get_timestep_embedding computes it in float32 whatever x's dtype.
    score.time_rate, score.time_dtype = (lambda: float(sde.N)), torch.float32
    return score, sde
