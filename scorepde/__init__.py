"""scorepde: the score Fokker–Planck equation of diffusion models, in PyTorch.

The currency is a callable ``score(x, t)`` (x: ``[B, ...]``, t: ``[B]``). SDEs define the
forward process; ``fpe_rhs`` and ``residual`` are L[s] and ε[s] of Lai et al. (ICML 2023);
likelihoods, samplers and losses are plain functions of the same callable.
"""

from . import nn
from .autodiff import AutodiffError, math_attention
from .bpd import bits_per_dim, dequantize, evaluate_bpd
from .checks import check_batch_independent, check_inputs
from .curl import antisymmetry, curl
from .curves import residual_curves
from .data import SCALINGS, ImageData, from_model_space, load_dataset, to_model_space
from .derivatives import divergence, jacobian, sample_probes, stencil_points, time_derivative
from .estimators import Estimator, get_estimator
from .fpe import ESTIMATORS, fpe_rhs, projected_residual, projected_residual_fd, residual, residual_norm_sq
from .gmm import GaussianMixture
from .likelihood import log_likelihood, probability_flow_drift
from .losses import DEFAULT_FP, PAPER_SETTINGS, FPObjective, dsm_loss, fp_regularizer
from .nn import MLPScore, ScoreModel, UNet, from_denoiser, from_diffusers
from .sampling import euler_maruyama, predictor_corrector, probability_flow
from .sde import EDMSDE, SDE, VESDE, VPSDE, DiscreteVPSDE, GenericSDE, LinearSDE, SubVPSDE
from .typing import Score, TimeConditioned

__version__ = "0.2.0"

__all__ = [
    "SDE",
    "LinearSDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "GenericSDE",
    "time_derivative",
    "divergence",
    "jacobian",
    "sample_probes",
    "stencil_points",
    "fpe_rhs",
    "residual",
    "projected_residual",
    "projected_residual_fd",
    "residual_norm_sq",
    "ESTIMATORS",
    "Estimator",
    "get_estimator",
    "Score",
    "TimeConditioned",
    "GaussianMixture",
    "curl",
    "antisymmetry",
    "residual_curves",
    "log_likelihood",
    "probability_flow_drift",
    "dequantize",
    "bits_per_dim",
    "evaluate_bpd",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow",
    "dsm_loss",
    "fp_regularizer",
    "FPObjective",
    "DEFAULT_FP",
    "PAPER_SETTINGS",
    "nn",
    "ScoreModel",
    "UNet",
    "MLPScore",
    "ImageData",
    "load_dataset",
    "to_model_space",
    "from_model_space",
    "SCALINGS",
    "check_inputs",
    "check_batch_independent",
    "DiscreteVPSDE",
    "EDMSDE",
    "from_diffusers",
    "from_denoiser",
    "math_attention",
    "AutodiffError",
]
