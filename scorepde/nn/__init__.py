"""Networks for scores: a U-Net, a toy MLP, their noise-label embeddings, and ``ScoreModel``,
which turns a network ``net(x, c)`` into a score ``s(x, t)`` for a given SDE."""
from .embedding import EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLPScore
from .precond import CONDITIONS, TIME_SCALE, ScoreModel
from .unet import UNet

__all__ = [
    "UNet", "MLPScore", "ScoreModel", "CONDITIONS", "TIME_SCALE",
    "EMBEDDINGS", "GaussianFourierEmbedding", "SinusoidalEmbedding",
]
