"""Reward models: learned or VLM-derived rewards behind one interface (`RewardModel`), used online through
`RewardWrapper` and offline through `relabel`. Backends: `rlpt.rewards.classifier` (rlpt's success classifier),
`rlpt.rewards.http_vlm` (OpenAI-compatible VLM servers), `rlpt.rewards.hf` (local transformers models),
`rlpt.rewards.kagi` (keypoint affordance rewards); `rlpt.rewards.factory` builds any of them from a recipe."""

from rlpt.rewards.base import (
    FAILURE_REASONS,
    CachedRewardModel,
    FallbackCounter,
    RewardModel,
    RewardOutput,
    RewardQuery,
)
from rlpt.rewards.classifier import SuccessClassifierReward, train_success_classifier
from rlpt.rewards.factory import build_reward_model, wrap_with_reward
from rlpt.rewards.wrapper import RewardWrapper, relabel

__all__ = ["FAILURE_REASONS", "CachedRewardModel", "FallbackCounter", "RewardModel", "RewardOutput",
           "RewardQuery", "RewardWrapper", "SuccessClassifierReward", "build_reward_model", "relabel",
           "train_success_classifier", "wrap_with_reward"]
