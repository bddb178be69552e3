"""Multi-layer perceptrons and a tanh-squashed Gaussian actor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """`in_dim -> hidden... -> out_dim`, activation between layers, none after the last."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


class TanhGaussianActor(nn.Module):
    """SAC-style actor: a trunk, then mean and log-std heads; actions are tanh(N(mu, std)) in [-1, 1].

    The parameter names match Stable-Baselines3's SAC actor (`latent_pi`, `mu`, `log_std`), so an SB3
    actor's state dict loads directly.
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [obs_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(dims[-1], act_dim)
        self.log_std = nn.Linear(dims[-1], act_dim)
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.latent_pi(obs)
        log_std = self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return self.mu(h), log_std

    def sample(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None):
        """Return (action in [-1, 1], log-prob) for a batch of observations."""
        mu, log_std = self(obs)
        std = log_std.exp()
        if deterministic:
            u = mu
        else:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            u = mu + std * noise
        action = torch.tanh(u)
        normal = torch.distributions.Normal(mu, std)
        log_prob = normal.log_prob(u).sum(-1) - torch.log1p(-action.pow(2) + 1e-6).sum(-1)
        return action, log_prob


class GaussianMLPActor(nn.Module):
    """PPO-style actor: a tanh MLP trunk, a mean head and a state-independent log-std; actions are
    N(mu, std) clipped by the caller. Parameter names match Stable-Baselines3's PPO policy (`policy_net`,
    `action_net`, `log_std`), so an SB3 PPO actor's weights load directly."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [obs_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(dims[-1], act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)

    def sample(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None):
        """Return (unclipped action, log-prob) for a batch of observations."""
        mu = self.action_net(self.policy_net(obs))
        std = self.log_std.exp().expand_as(mu)
        if deterministic:
            action = mu
        else:
            action = mu + std * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return action, torch.distributions.Normal(mu, std).log_prob(action).sum(-1)
