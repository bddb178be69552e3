"""Network building blocks shared by agents and pretraining (no training logic lives here)."""

from rlpt.nets.conv import ContextEncoder, ResNetDecoder, ResNetEncoder, preprocess
from rlpt.nets.mlp import MLP
from rlpt.nets.normalizer import ObsNormalizer
from rlpt.nets.policies import GaussianMLPActor, TanhGaussianActor
from rlpt.nets.rssm import RSSM
from rlpt.nets.worldmodel import VideoWorldModel, WorldModelConfig

__all__ = ["ContextEncoder", "GaussianMLPActor", "MLP", "ObsNormalizer", "RSSM", "ResNetDecoder", "ResNetEncoder",
           "TanhGaussianActor", "VideoWorldModel", "WorldModelConfig", "preprocess"]
