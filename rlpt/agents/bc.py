"""Behaviour cloning: regress the dataset's actions from (normalised) observations.

A deterministic policy minimises the squared error to the dataset action; a Gaussian policy maximises the
log-likelihood of it. `PolicyNet` is also IQL's actor (IQL is advantage-weighted BC).

    agent = BCConfig(policy="gaussian").create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=10_000)
    action, _ = agent.predict(obs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent
from rlpt.agents.common import action_bounds, from_unit, generator_for, run_callbacks, training_view
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.nets.mlp import MLP
from rlpt.nets.normalizer import ObsNormalizer


class PolicyNet(nn.Module):
    """MLP policy over [-1, 1] actions: `mean = tanh(MLP(obs))`; the Gaussian variant adds a state-independent
    log-std (CORL's IQL `GaussianPolicy`, not tanh-squashed; samples are clipped to [-1, 1])."""

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), gaussian: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden, activation)
        self.gaussian = gaussian
        if gaussian:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))  # (B, act_dim) in [-1, 1]

    def std(self) -> torch.Tensor:
        return self.log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX).exp()

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,): negative log-likelihood (Gaussian) or summed squared error (deterministic)."""
        mean = self(obs)
        if self.gaussian:
            return -torch.distributions.Normal(mean, self.std()).log_prob(actions).sum(-1)
        return (mean - actions).pow(2).sum(-1)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None, noise: float = 0.0) -> torch.Tensor:
        """Stochastic actions in [-1, 1]; a deterministic policy adds Gaussian noise of std `noise`."""
        mean = self(obs)
        std = self.std() if self.gaussian else torch.full_like(mean, noise)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * eps).clamp(-1.0, 1.0)


@dataclasses.dataclass
class BCConfig(AgentConfig):
    """Behaviour cloning (CORL `any_percent_bc` defaults: 2x256 MLP, Adam 3e-4, batch 256)."""

    policy: str = "deterministic"  # "deterministic" (MSE) or "gaussian" (log-likelihood)
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    lr: float = 3e-4
    batch_size: int = 256
    normalize_obs: bool = True  # statistics frozen from the first dataset passed to `fit`
    log_interval: int = 1000  # gradient steps between callback calls


@register_agent("bc")
class BC(Agent):
    config_class = BCConfig
    config: BCConfig

    def __init__(self, config: BCConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        if config.policy not in ("deterministic", "gaussian"):
            raise ConfigError(f"BCConfig.policy must be 'deterministic' or 'gaussian', got {config.policy!r}")
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(action_space.shape[0])
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)
        self.obs_norm = ObsNormalizer(tuple(observation_space.shape)).to(self.device)
        self.actor = PolicyNet(obs_dim, act_dim, config.hidden, config.policy == "gaussian",
                               config.activation).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.gen = generator_for(self.device, config.seed)
        self.stats_ready = False
        self._data: tuple[Dataset, Dataset] | None = None  # (source, training view)

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = self.obs_norm(obs.flatten(1))
        unit = self.actor(obs) if deterministic else self.actor.sample(obs, self.gen)
        return from_unit(unit, self.low_t, self.high_t)

    # -------------------------------------------------------------- data
    def _prepare(self, dataset: Dataset) -> Dataset:
        dataset.check_spaces(self.observation_space, self.action_space)
        if not self.stats_ready:
            if self.config.normalize_obs:
                s = dataset.stats()
                self.obs_norm.set_stats(s["obs_mean"], s["obs_std"])
            self.stats_ready = True
        if self._data is None or self._data[0] is not dataset:
            self._data = (dataset, training_view(dataset, self.low, self.high, 1.0, 0.0))
        return self._data[1]

    # -------------------------------------------------------------- training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        obs = self.obs_norm(batch["observations"].flatten(1))  # (B, obs_dim)
        loss = self.actor.bc_loss(obs, batch["actions"]).mean()
        self.actor_opt.zero_grad()
        loss.backward()
        self.actor_opt.step()
        self.step += 1
        return {"train/bc_loss": loss.item()}

    def fit(self, dataset: Dataset, n_steps: int, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        data = self._prepare(dataset)
        metrics: dict[str, Any] = {}
        for _ in range(n_steps):
            metrics = self.update(data.sample(self.config.batch_size, rng=self.rng, device=self.device))
            if self.step % self.config.log_interval == 0 and not run_callbacks(callbacks, self.step, metrics):
                break
        return metrics

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "obs_norm": self.obs_norm}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"torch_generator": self.gen.get_state(), "stats_ready": self.stats_ready}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "torch_generator" in state:
            self.gen.set_state(state["torch_generator"])
        self.stats_ready = bool(state.get("stats_ready", self.stats_ready))
