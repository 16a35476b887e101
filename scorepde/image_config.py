"""An image run's config and the builders that turn it into an SDE, a score model and an
objective (and, from a checkpoint, the trained model). No math lives here: the pieces come
from ``sde``, ``nn`` and ``losses``; this module only assembles them from one record.

``ImageConfig`` is what ``scorepde-train``'s flags fill in and what a checkpoint stores, so
``scorepde-eval`` rebuilds exactly the trained model from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import SCALINGS
from .fpe import ESTIMATORS
from .losses import DEFAULT_FP, NORMALIZATIONS, PAPER_SETTINGS, RHS_REDUCTIONS, WEIGHTINGS, FPObjective
from .nn import ScoreModel, UNet
from .sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "ImageConfig",
    "SDE_NAMES",
    "OBJECTIVES",
    "build_sde",
    "build_score_model",
    "build_objective",
    "preset_config",
    "model_scaling",
    "load_trained",
    "run_label",
]

SDE_NAMES = ("ve", "vp", "subvp")
OBJECTIVES = ("dsm", "fp")


@dataclass
class ImageConfig:
    """Everything that defines an image run (and nothing about where it runs)."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    scaling: str = "auto"  # "auto": [0,1] for VE, [-1,1] for VP/sub-VP (score_sde's)
    # forward SDE
    sde: str = "vp"
    sigma_min: float = 0.01
    sigma_max: float | None = None  # None: sqrt(D)·a, the diameter of the data's cube
    beta_min: float = 0.1
    beta_max: float = 20.0
    # U-Net
    channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention: bool = True
    heads: int = 1
    dropout: float = 0.0
    fourier_scale: float = 16.0
    # objective J_DSM + β E[λ_FP ‖ε‖^m] + γ E|L[s]| (paper's MNIST setting: γ=0, λ_FP=1, m=1)
    objective: str = "dsm"
    beta: float = 0.1
    gamma: float = 0.0
    fp_weighting: str = "none"
    m: int = 1
    estimator: str = str(DEFAULT_FP["estimator"])  # forward_fd, its step in t from the net's time
    # conditioning; "paper" via --preset or --estimator
    subbatch: int | None = 16
    dsm_weighting: str = "sigma2"
    normalize: str = "none"  # ε-term divided by 1 or D^m (the official code's units)
    rhs_reduction: str = "mean_abs"  # γ-term: E|L| or ‖L‖₂ over the batch (the official code's)
    unbiased: bool = True  # m = 2: product of two independent draws
    preset: str | None = None  # the PAPER_SETTINGS entry the FP flags started from
    t_eps: float = 1e-3
    # optimisation
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float | None = 1.0
    ema_decay: float = 0.995  # short CPU runs; 0.999+ for long ones
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0

    def __post_init__(self):
        self.channel_mult = tuple(int(c) for c in self.channel_mult)
        checks = [
            (self.sde in SDE_NAMES, f"sde must be one of {SDE_NAMES}, got {self.sde!r}"),
            (self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}"),
            (
                self.scaling == "auto" or self.scaling in SCALINGS,
                f"scaling must be 'auto' or one of {sorted(SCALINGS)}, got {self.scaling!r}",
            ),
            (
                self.estimator in ESTIMATORS,
                f"estimator must be one of {sorted(ESTIMATORS)}, got {self.estimator!r}",
            ),
            (self.fp_weighting in WEIGHTINGS, f"fp-weighting must be one of {sorted(WEIGHTINGS)}"),
            (self.dsm_weighting in WEIGHTINGS, f"dsm-weighting must be one of {sorted(WEIGHTINGS)}"),
            (self.m in (1, 2), f"m must be 1 or 2, got {self.m}"),
            (self.normalize in NORMALIZATIONS, f"normalize must be one of {sorted(NORMALIZATIONS)}"),
            (
                self.rhs_reduction in RHS_REDUCTIONS,
                f"gamma-reduction must be one of {sorted(RHS_REDUCTIONS)}",
            ),
            (
                self.preset is None or self.preset in PAPER_SETTINGS,
                f"preset must be one of {sorted(PAPER_SETTINGS)}, got {self.preset!r}",
            ),
            (
                self.beta >= 0 and self.gamma >= 0,
                f"beta and gamma must be >= 0, got {self.beta}, {self.gamma}",
            ),
            (self.subbatch is None or self.subbatch >= 1, f"subbatch must be >= 1, got {self.subbatch}"),
            (self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}"),
            (self.steps >= 1, f"steps must be >= 1 (the total number of optimiser steps), got {self.steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.ema_decay < 1, f"ema-decay must lie in [0, 1), got {self.ema_decay}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (
                self.grad_clip is None or self.grad_clip > 0,
                f"grad-clip must be > 0 (0 = off), got {self.grad_clip}",
            ),
            (0 < self.t_eps < 1, f"t-eps must lie in (0, 1), got {self.t_eps}"),
            (
                self.objective != "fp" or self.dropout == 0,
                "dropout must be 0 with objective fp: "
                "dropout makes the score random, and the FP residual's derivatives combine several calls",
            ),
            (
                self.channels >= 1 and self.num_res_blocks >= 1 and len(self.channel_mult) >= 1,
                "channels and num-res-blocks must be >= 1 and channel-mult non-empty",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def fp_on(self) -> bool:
        """Whether the FP regularizer runs (objective "fp" with β or γ positive)."""
        return self.objective == "fp" and (self.beta > 0 or self.gamma > 0)


def model_scaling(cfg: ImageConfig) -> str:
    """The model space x = a·u + b: the config's, or [0,1] for VE and [-1,1] for VP/sub-VP."""
    if cfg.scaling != "auto":
        return cfg.scaling
    return "[0,1]" if cfg.sde == "ve" else "[-1,1]"


def build_sde(cfg: ImageConfig, shape: Sequence[int]) -> SDE:
    """The forward SDE for images of ``shape`` (C, H, W).

    VE's default σ_max is the diameter of the model space's cube, a·sqrt(D), so that the
    prior covers every pair of data points (Song & Ermon 2020, technique 1).
    """
    if cfg.sde == "ve":
        a = SCALINGS[model_scaling(cfg)][0]
        sigma_max = cfg.sigma_max or a * math.sqrt(int(np.prod(shape)))
        return VESDE(cfg.sigma_min, sigma_max)
    return (VPSDE if cfg.sde == "vp" else SubVPSDE)(cfg.beta_min, cfg.beta_max)


def build_score_model(cfg: ImageConfig, sde: SDE, shape: Sequence[int]) -> ScoreModel:
    """A U-Net sized by the config inside ``ScoreModel``: Fourier features of log σ for VE,
    sinusoidal features of 999 t for VP/sub-VP."""
    embedding = "fourier" if cfg.sde == "ve" else "sinusoidal"
    net = UNet(
        in_channels=int(shape[0]),
        channels=cfg.channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks,
        attention=cfg.attention,
        heads=cfg.heads,
        dropout=cfg.dropout,
        embedding=embedding,
        fourier_scale=cfg.fourier_scale,
    )
    return ScoreModel(net, sde)


def build_objective(
    cfg: ImageConfig, model: torch.nn.Module, sde: SDE, autocast: torch.dtype | None = None
) -> FPObjective:
    """J_DSM (objective "dsm") or J_DSM + R_FP (objective "fp") as one module for DDP;
    ``autocast`` runs the plain DSM forward in that dtype (bf16 on CUDA)."""
    if not cfg.fp_on:
        return FPObjective(model, sde, dsm_weighting=cfg.dsm_weighting, eps=cfg.t_eps, autocast=autocast)
    return FPObjective(
        model,
        sde,
        beta=cfg.beta,
        gamma=cfg.gamma,
        fp_weighting=cfg.fp_weighting,
        m=cfg.m,
        estimator=cfg.estimator,
        dsm_weighting=cfg.dsm_weighting,
        eps=cfg.t_eps,
        subbatch=cfg.subbatch,
        normalize=cfg.normalize,
        rhs_reduction=cfg.rhs_reduction,
        unbiased=cfg.unbiased,
        autocast=autocast,
    )


#: ``FPObjective`` keyword → ``ImageConfig`` field, where the names differ.
_PRESET_FIELDS = {"eps": "t_eps"}


def preset_config(name: str) -> dict:
    """The ``ImageConfig`` fields of the paper's setting ``PAPER_SETTINGS[name]`` (objective "fp")."""
    if name not in PAPER_SETTINGS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PAPER_SETTINGS)}")
    fields = {f.name for f in dataclasses.fields(ImageConfig)}
    mapped = {_PRESET_FIELDS.get(k, k): v for k, v in PAPER_SETTINGS[name].items()}
    unknown = set(mapped) - fields
    if unknown:  # a new preset key this config cannot carry: say so rather than drop it
        raise ValueError(f"preset {name!r} sets {sorted(unknown)}, which image runs do not support")
    return {**mapped, "objective": "fp", "preset": name}


def load_trained(state: dict, shape: Sequence[int], weights: str = "ema", device=None):
    """(config, SDE, score model in eval mode) rebuilt from a checkpoint's ``state``.

    ``weights``: ``"ema"`` (the averaged weights, what is evaluated and sampled) or ``"model"``.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if "config" not in state or "model" not in state:
        raise ValueError("this checkpoint has no config or model; was it written by image/train.py?")
    cfg = ImageConfig.from_dict(state["config"])
    sde = build_sde(cfg, shape)
    model = build_score_model(cfg, sde, shape)
    if weights == "ema" and "ema" in state:
        ema = {k[len("module.") :]: v for k, v in state["ema"].items() if k.startswith("module.")}
        model.load_state_dict(ema)
    else:
        model.load_state_dict(state["model"])
    return cfg, sde, model.to(device).eval()


def run_label(cfg: ImageConfig) -> str:
    """A short name for a run, for titles: dataset, SDE, objective (with β when FP is on)."""
    fp = f" (β={cfg.beta:g}, {cfg.estimator})" if cfg.fp_on else ""
    return f"{cfg.dataset}, {cfg.sde.upper()}, {cfg.objective.upper()}{fp}"
