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

import gymnasium as gym
import torch
from torch import nn

from rlpt.agents.base import register_agent
from rlpt.agents.core import OfflineAgent, OffPolicyConfig
from rlpt.errors import ConfigError
from rlpt.nets.critics import IQLCritic
from rlpt.nets.optim import adam
from rlpt.nets.policies import PolicyNet


@dataclasses.dataclass
class IQLConfig(OffPolicyConfig):
    """IQL hyperparameters (CORL defaults); `normalize_reward` scales rewards by 1000 / (max - min episode
    return) as CORL does on locomotion, `reward_bias` -1 is CORL's AntMaze setting."""

    expectile: float = 0.7  # tau of the V expectile loss (AntMaze: 0.9)
    temperature: float = 3.0  # beta: advantage weight exp(beta * A) (AntMaze: 10)
    adv_clip: float = 100.0  # upper clip of exp(beta * A)
    tau: float = 0.005  # Polyak rate of the target Q
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4  # Q and V
    actor_lr_decay_steps: int | None = None  # cosine-decay the actor lr to 0 over this many gradient steps (CORL: 1e6)
    hidden: tuple[int, ...] = (256, 256)  # actor, Q and V
    actor: str = "gaussian"  # "gaussian" (log-likelihood) or "deterministic" (MSE)
    exploration_noise: float = 0.1  # std of online exploration noise for a deterministic actor


@register_agent("iql")
class IQL(OfflineAgent):
    config_class = IQLConfig
    config: IQLConfig
    trains_online = True

    def __init__(self, config: IQLConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        if config.actor not in ("gaussian", "deterministic"):
            raise ConfigError(f"IQLConfig.actor must be 'gaussian' or 'deterministic', got {config.actor!r}")
        if not 0.0 < config.expectile < 1.0:
            raise ConfigError(f"IQLConfig.expectile must be in (0, 1), got {config.expectile}")
        self.actor = PolicyNet(self.obs_dim, self.act_dim, config.hidden, config.actor == "gaussian",
                               exploration_std=config.exploration_noise).to(self.device)
        # Q, target Q and V with their optimisers: the one IQL critic implementation (shared with Uni-O4).
        self.critic = IQLCritic(self.obs_dim, self.act_dim, config.hidden, config.hidden, config.critic_lr,
                                config.expectile, config.discount, config.tau).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr)

    def policy_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.sample(self.obs_norm(obs), deterministic, self.gen)[0]

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

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "actor": self.actor, "qf": self.critic.q, "qf_target": self.critic.q_target,
                "vf": self.critic.v}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "qf": self.critic.q_opt, "vf": self.critic.v_opt}
