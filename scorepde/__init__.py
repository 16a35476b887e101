"""scorepde: the score Fokker–Planck equation of diffusion models, in PyTorch.

The currency is a callable ``score(x, t)`` (x: ``[B, ...]``, t: ``[B]``). SDEs define the
forward process; ``fpe_rhs`` and ``residual`` are L[s] and ε[s] of Lai et al. (ICML 2023).
"""
from .checks import check_batch_independent, check_inputs
from .curl import antisymmetry, curl
from .curves import residual_curves
from .derivatives import divergence, jacobian, sample_probes, time_derivative
from .fpe import ESTIMATORS, fpe_rhs, projected_residual, residual, residual_norm_sq
from .gmm import GaussianMixture
from .sde import SDE, GenericSDE, LinearSDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "LinearSDE", "VESDE", "VPSDE", "SubVPSDE", "GenericSDE",
    "time_derivative", "divergence", "jacobian", "sample_probes",
    "fpe_rhs", "residual", "projected_residual", "residual_norm_sq", "ESTIMATORS",
    "GaussianMixture", "curl", "antisymmetry", "residual_curves",
    "check_inputs", "check_batch_independent",
]
