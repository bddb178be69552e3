"""Behaviour cloning: regress the dataset's actions from (normalised) observations.

A deterministic policy minimises the squared error to the dataset action; a Gaussian policy maximises the
log-likelihood of it (`rlpt.nets.policies.PolicyNet`, also IQL's actor: IQL is advantage-weighted BC).

    agent = BCConfig(policy="gaussian").create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=10_000)
    action, _ = agent.predict(obs)
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch
from torch import nn

from rlpt.agents.base import register_agent
from rlpt.agents.core import OfflineAgent, OfflineConfig
from rlpt.errors import ConfigError
from rlpt.nets.optim import adam
from rlpt.nets.policies import PolicyNet


@dataclasses.dataclass
class BCConfig(OfflineConfig):
    """Behaviour cloning (CORL `any_percent_bc` defaults: 2x256 MLP, Adam 3e-4, batch 256)."""

    policy: str = "deterministic"  # "deterministic" (MSE) or "gaussian" (log-likelihood)
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    lr: float = 3e-4


@register_agent("bc")
class BC(OfflineAgent):
    config_class = BCConfig
    config: BCConfig

    def __init__(self, config: BCConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        if config.policy not in ("deterministic", "gaussian"):
            raise ConfigError(f"BCConfig.policy must be 'deterministic' or 'gaussian', got {config.policy!r}")
        self.actor = PolicyNet(self.obs_dim, self.act_dim, config.hidden, config.policy == "gaussian",
                               config.activation).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), lr=config.lr)

    def policy_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.sample(self.obs_norm(obs), deterministic, self.gen)[0]

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        obs = self.obs_norm(batch["observations"].flatten(1))  # (B, obs_dim)
        loss = self.actor.bc_loss(obs, batch["actions"]).mean()
        self.actor_opt.zero_grad()
        loss.backward()
        self.actor_opt.step()
        self.step += 1
        return {"train/bc_loss": loss.item()}

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "actor": self.actor}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt}
