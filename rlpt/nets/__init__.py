"""Network building blocks shared by agents and pretraining (no training logic lives here)."""

from rlpt.nets.mlp import MLP, GaussianMLPActor, TanhGaussianActor
from rlpt.nets.normalizer import ObsNormalizer

__all__ = ["GaussianMLPActor", "MLP", "ObsNormalizer", "TanhGaussianActor"]
