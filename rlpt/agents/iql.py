"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022), offline and offline-to-online.

Each gradient step, on a batch (s, a, r, s', d):
1. V(s) regresses an upper expectile of the target twin Q:   L_V = E[|tau - 1(u<0)| u^2],  u = min Q_targ(s,a) - V(s)
2. each Q regresses the one-step backup through V:           L_Q = E[(Q_k(s,a) - (r + gamma (1-d) V(s')))^2]
3. the actor is advantage-weighted BC:                        L_pi = E[min(exp(beta u), 100) * bc_loss(pi, s, a)]
4. Polyak update of the target Q.
No action outside the dataset is ever queried, so V/Q stay in-distribution.

Defaults follow CORL (`algorithms/offline/iql.py`): expectile 0.7, beta 3.0, gamma 0.99, tau 0.005, Adam 3e-4,
batch 256, 2x256 nets, Gaussian actor. Online fine-tuning (`learn`) collects with the stochastic actor, one
update per env step; `mix_ratio=None` samples uniformly over offline + online data (CORL appends online
transitions to the offline buffer), a number takes that fraction of each batch from the offline data.

    agent = IQLConfig(normalize_reward=True).create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=1_000_000)
    agent.learn(env, total_timesteps=1_000_000, offline=dataset, mix_ratio=None)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent
from rlpt.agents.bc import PolicyNet
from rlpt.agents.common import (
    action_bounds,
    from_unit,
    generator_for,
    off_policy_learn,
    restore_buffer,
    return_range_scale,
    run_callbacks,
    training_view,
)
from rlpt.data.buffers import ReplayBuffer
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.nets.critics import IQLCritic
from rlpt.nets.normalizer import ObsNormalizer


@dataclasses.dataclass
class IQLConfig(AgentConfig):
    """IQL hyperparameters (CORL defaults)."""

    expectile: float = 0.7  # tau of the V expectile loss (AntMaze: 0.9)
    temperature: float = 3.0  # beta: advantage weight exp(beta * A) (AntMaze: 10)
    adv_clip: float = 100.0  # upper clip of exp(beta * A)
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target Q
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4  # Q and V
    actor_lr_decay_steps: int | None = None  # cosine-decay the actor lr to 0 over this many gradient steps (CORL: 1e6)
    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)  # actor, Q and V
    actor: str = "gaussian"  # "gaussian" (log-likelihood) or "deterministic" (MSE)
    exploration_noise: float = 0.1  # std of online exploration noise for a deterministic actor
    normalize_obs: bool = True  # statistics frozen from the first dataset seen
    normalize_reward: bool = False  # scale rewards by 1000 / (max - min episode return) (CORL locomotion)
    reward_scale: float = 1.0  # then r * scale + bias (CORL AntMaze: bias -1)
    reward_bias: float = 0.0
    buffer_size: int = 1_000_000  # online replay capacity
    learning_starts: int = 0  # online env steps before updates start (uniform random actions without offline data)
    utd_ratio: int = 1  # gradient updates per online env step
    log_interval: int = 1000  # gradient steps (fit) / env steps (learn) between callback calls


@register_agent("iql")
class IQL(Agent):
    config_class = IQLConfig
    config: IQLConfig

    def __init__(self, config: IQLConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        if config.actor not in ("gaussian", "deterministic"):
            raise ConfigError(f"IQLConfig.actor must be 'gaussian' or 'deterministic', got {config.actor!r}")
        if not 0.0 < config.expectile < 1.0:
            raise ConfigError(f"IQLConfig.expectile must be in (0, 1), got {config.expectile}")
        self.obs_dim, self.act_dim = int(np.prod(observation_space.shape)), int(action_space.shape[0])
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)

        self.obs_norm = ObsNormalizer(tuple(observation_space.shape)).to(self.device)
        self.actor = PolicyNet(self.obs_dim, self.act_dim, config.hidden, config.actor == "gaussian").to(self.device)
        # Q, target Q and V with their optimisers: the one IQL critic implementation (shared with Uni-O4).
        self.critic = IQLCritic(self.obs_dim, self.act_dim, config.hidden, config.hidden, config.critic_lr,
                                config.expectile, config.discount, config.tau).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)

        self.gen = generator_for(self.device, config.seed)  # exploration noise
        self.stats_ready = False  # obs statistics and reward scale frozen?
        self.reward_factor = config.reward_scale  # multiplies raw rewards (normalize_reward folds its scale in)
        self.buffer: ReplayBuffer | None = None  # online transitions
        self._data: tuple[Dataset, Dataset] | None = None

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return from_unit(self._unit_action(obs.flatten(1), deterministic), self.low_t, self.high_t)

    def _unit_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = self.obs_norm(obs)
        if deterministic:
            return self.actor(obs)
        return self.actor.sample(obs, self.gen, noise=self.config.exploration_noise)

    # -------------------------------------------------------------- data
    def _freeze_stats(self, dataset: Dataset | None) -> None:
        if self.stats_ready:
            return
        if dataset is not None:
            if self.config.normalize_obs:
                s = dataset.stats()
                self.obs_norm.set_stats(s["obs_mean"], s["obs_std"])
            if self.config.normalize_reward:
                self.reward_factor = self.config.reward_scale * return_range_scale(dataset)
        elif self.config.normalize_reward:
            raise ConfigError("IQLConfig.normalize_reward needs a dataset: call fit(dataset) or pass offline=")
        self.stats_ready = True

    def _prepare(self, dataset: Dataset) -> Dataset:
        """The training view of `dataset` (unit actions, transformed rewards), cached per dataset."""
        dataset.check_spaces(self.observation_space, self.action_space)
        self._freeze_stats(dataset)
        if self._data is None or self._data[0] is not dataset:
            view = training_view(dataset, self.low, self.high, self.reward_factor, self.config.reward_bias)
            self._data = (dataset, view)
        return self._data[1]

    def _transform_reward(self, r: float) -> float:
        return r * self.reward_factor + self.config.reward_bias

    # -------------------------------------------------------------- one gradient step
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        obs = self.obs_norm(batch["observations"].flatten(1))  # (B, obs_dim)
        next_obs = self.obs_norm(batch["next_observations"].flatten(1))
        actions, rewards, terminals = batch["actions"], batch["rewards"], batch["terminals"]  # (B, A), (B,), (B,)

        # 1.-2. V by expectile regression toward min_k Q_targ(s, a), Q by the backup through V(s'), then 4. the
        # target (IQLCritic.update); adv = min_k Q_targ(s, a) - V(s) before the V step, (B,)
        metrics, adv = self.critic.update(obs, actions, rewards, terminals, next_obs, self.step)

        # 3. actor: advantage-weighted behaviour cloning
        weights = torch.exp(cfg.temperature * adv).clamp(max=cfg.adv_clip)  # (B,)
        actor_loss = (weights * self.actor.bc_loss(obs, actions)).mean()
        if cfg.actor_lr_decay_steps:
            frac = min(self.step / cfg.actor_lr_decay_steps, 1.0)
            for g in self.actor_opt.param_groups:
                g["lr"] = cfg.actor_lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        self.step += 1
        return {**metrics, "train/actor_loss": actor_loss.item(), "train/weight_mean": weights.mean().item()}

    # -------------------------------------------------------------- offline
    def fit(self, dataset: Dataset, n_steps: int, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        data = self._prepare(dataset)
        metrics: dict[str, Any] = {}
        for _ in range(n_steps):
            metrics = self.update(data.sample(self.config.batch_size, rng=self.rng, device=self.device))
            if self.step % self.config.log_interval == 0 and not run_callbacks(callbacks, self.step, metrics):
                break
        return metrics

    # -------------------------------------------------------------- online
    def learn(self, env: gym.Env, total_timesteps: int, offline: Dataset | None = None,
              mix_ratio: float | None = 0.5, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        return off_policy_learn(self, env, total_timesteps, offline, mix_ratio, callbacks)

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "qf": self.critic.q, "qf_target": self.critic.q_target, "vf": self.critic.v,
                "obs_norm": self.obs_norm}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "qf": self.critic.q_opt, "vf": self.critic.v_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"torch_generator": self.gen.get_state(), "stats_ready": self.stats_ready,
                "reward_factor": self.reward_factor,
                "buffer": self.buffer.state_dict() if self.buffer is not None else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "torch_generator" in state:
            self.gen.set_state(state["torch_generator"])
        self.stats_ready = bool(state.get("stats_ready", self.stats_ready))
        self.reward_factor = float(state.get("reward_factor", self.reward_factor))
        if state.get("buffer") is not None:
            self.buffer = restore_buffer(state["buffer"], tuple(self.observation_space.shape), self.act_dim)
