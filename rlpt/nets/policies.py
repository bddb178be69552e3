"""Gaussian policies with a state-dependent std, as BPPO / Uni-O4 use them, and an ensemble of them.

`GaussianPolicy` maps features (B, in_dim) to a diagonal Normal over actions in [-1, 1]:

    out = tanh(MLP(x))                       # (B, 2A), every entry in (-1, 1)
    mean = out[:, :A]                        # |mean| < 1
    log_std = lo + (hi - lo) * (out[:, A:] + 1) / 2   # in (lo, hi), default (-5, 0)

The distribution is *not* tanh-squashed: samples can leave [-1, 1] and are clipped only when executed
(`clip_action`), while log-probabilities are those of the unclipped sample. This is the original code's
`GaussPolicyMLP`; the same parametrisation is used offline and online, so the std learned offline is the
std PPO starts from (the original's online `soft_clamp` re-squashes log-std, which we deliberately avoid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from rlpt.nets.mlp import MLP

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def orthogonal_init(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Orthogonal weights (given gain) and zero biases on every Linear layer of `module`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
    return module


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian policy; mean and log-std come from one trunk (see the module docstring)."""

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256),
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 0.0):
        super().__init__()
        self.net = orthogonal_init(MLP(in_dim, 2 * act_dim, hidden, activation), gain=1.0)
        self.in_dim, self.act_dim = in_dim, act_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_dim) -> mean (B, A), log_std (B, A)."""
        out = torch.tanh(self.net(x))
        mean, raw = out[..., : self.act_dim], out[..., self.act_dim:]
        log_std = self.log_std_min + (self.log_std_max - self.log_std_min) * (raw + 1.0) / 2.0
        return mean, log_std

    def dist(self, x: torch.Tensor) -> Normal:
        mean, log_std = self(x)
        return Normal(mean, log_std.exp())

    def log_prob(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a|x) summed over action dims: (B,)."""
        return self.dist(x).log_prob(action).sum(-1)

    def entropy(self, x: torch.Tensor) -> torch.Tensor:
        """Entropy summed over action dims: (B,)."""
        return self.dist(x).entropy().sum(-1)

    def sample(self, x: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unclipped action (B, A) and its log-prob (B,); the mean when deterministic."""
        mean, log_std = self(x)
        # log N(action; mean, std) in closed form: no torch.distributions object (and its validation) per call
        const = _HALF_LOG_2PI * mean.shape[-1]
        if deterministic:
            return mean, -log_std.sum(-1) - const
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + log_std.exp() * noise, (-0.5 * noise.pow(2) - log_std).sum(-1) - const

    @staticmethod
    def clip_action(action: torch.Tensor) -> torch.Tensor:
        """What gets executed: the sample clipped to [-1, 1]."""
        return action.clamp(-1.0, 1.0)


class PolicyEnsemble(nn.Module):
    """`n` independently initialised `GaussianPolicy` members over the same input."""

    def __init__(self, n: int, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256),
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 0.0):
        super().__init__()
        self.members = nn.ModuleList(
            GaussianPolicy(in_dim, act_dim, hidden, activation, log_std_min, log_std_max) for _ in range(n))

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> GaussianPolicy:
        return self.members[i]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_dim) -> mean (N, B, A), log_std (N, B, A)."""
        outs = [m(x) for m in self.members]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])

    def log_probs(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi_i(a|x) for every member: (N, B)."""
        mean, log_std = self(x)
        return Normal(mean, log_std.exp()).log_prob(action.unsqueeze(0)).sum(-1)
