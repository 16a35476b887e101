"""What the audit records beside its numbers: the SDE and its schedule, the model's own clock,
the scheduler and prediction type, the data's range, and the versions that made them."""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from typing import Any

import torch

from ..sde import EDMSDE, SDE, DiscreteVPSDE

__all__ = ["describe_sde", "native_time", "describe_score", "versions", "SCHEDULER_NOTE"]

#: Why DDPM, DDIM, Euler and LCM schedulers of one model audit to the same numbers.
SCHEDULER_NOTE = (
    "the audit sees a diffusers scheduler only through alphas_cumprod, the forward "
    "process the network was trained on; samplers that share it (DDPM, DDIM, Euler, "
    "LCM, …) give identical numbers, since the score FPE does not involve the sampler"
)

_SCHEDULER_KEYS = (
    "num_train_timesteps",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "prediction_type",
    "variance_type",
    "timestep_spacing",
    "rescale_betas_zero_snr",
)


def _plain(v):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (tuple, list)) and all(isinstance(e, (int, float)) for e in v):
        return list(v)
    return None


def describe_sde(sde: SDE) -> dict:
    """The SDE's class, repr and every scalar parameter (schedule included), JSON-ready."""
    params = {k: _plain(v) for k, v in vars(sde).items() if not k.startswith("_")}
    out: dict[str, Any] = {
        "class": type(sde).__name__,
        "repr": repr(sde),
        "T": float(sde.T),
        "params": {k: v for k, v in params.items() if v is not None},
    }
    if isinstance(sde, DiscreteVPSDE):
        k = torch.tensor([0, sde.N - 1])
        first, last = sde.alpha_bar(sde.time(k)).tolist()
        out["params"].update(
            alpha_bar_first=first, alpha_bar_last=last, time_map="t = (k + 1) / N, k the DDPM step"
        )
    return out


def native_time(sde: SDE, ts: Sequence[float]) -> tuple[str, list[float]]:
    """(name, values) of the grid in the model's own clock: the DDPM step k for a discrete VP
    schedule (``from_diffusers``), σ for EDM, else the marginal std σ_t."""
    t = torch.tensor(list(ts), dtype=torch.float64)
    if isinstance(sde, DiscreteVPSDE):
        return "DDPM step k", sde.timestep(t).tolist()
    if isinstance(sde, EDMSDE):
        return "σ", t.tolist()
    return "σ_t", sde.marginal(t)[1].tolist()


def describe_score(score) -> dict:
    """What a score says about itself: prediction type and scheduler (``from_diffusers``)."""
    out = {"prediction_type": getattr(score, "prediction_type", None)}
    scheduler = getattr(score, "scheduler", None)
    if scheduler is not None:
        config = getattr(scheduler, "config", {})
        get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
        out["scheduler"] = {
            "class": type(scheduler).__name__,
            **{k: _plain(get(k)) for k in _SCHEDULER_KEYS if get(k) is not None},
        }
        out["scheduler_note"] = SCHEDULER_NOTE
    unet = getattr(score, "unet", score)
    if isinstance(unet, torch.nn.Module):
        out["network"] = type(unet).__name__
        out["parameters"] = sum(p.numel() for p in unet.parameters())
    return out


def versions() -> dict[str, str]:
    """scorepde, torch (and diffusers, where installed), Python."""
    from .. import __version__

    out = {"scorepde": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import diffusers

        out["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return out
