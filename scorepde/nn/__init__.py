"""Networks for scores: a U-Net, a toy MLP, their noise-label embeddings, and the
preconditioners ``ScoreModel`` and ``ToyScore``, which turn a network into a score ``s(x, t)``."""

from .diffusers import from_diffusers
from .edm import from_denoiser
from .embedding import EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLPScore
from .precond import CONDITIONS, TIME_SCALE, ScoreModel, ToyScore
from .unet import UNet

__all__ = [
    "UNet",
    "MLPScore",
    "ScoreModel",
    "ToyScore",
    "CONDITIONS",
    "TIME_SCALE",
    "EMBEDDINGS",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "from_diffusers",
    "from_denoiser",
]
