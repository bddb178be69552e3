"""Observation normalization as a module, so it is saved with the weights and exported with the policy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """`(obs - mean) / std`, clipped. Statistics are buffers: frozen, saved and loaded with the model."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.clip = clip

    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> ObsNormalizer:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / self.std).clamp(-self.clip, self.clip)
