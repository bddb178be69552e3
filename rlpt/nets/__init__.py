"""Network building blocks shared by agents and pretraining (no training logic lives here)."""

from rlpt.nets.mlp import MLP, TanhGaussianActor
from rlpt.nets.normalizer import ObsNormalizer

__all__ = ["MLP", "ObsNormalizer", "TanhGaussianActor"]
