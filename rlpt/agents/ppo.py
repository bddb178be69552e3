"""PPO (Schulman et al., 2017) on one env or a vector env: the online phase of Uni-O4, and an agent of its own
(`ppo`) that trains from scratch, e.g. on thousands of MJX worlds (`rlpt.envs.make_vec_env(..., backend="mjx")`).

`PPOLearner` is the algorithm on given networks: it collects `rollout_steps` transitions with the stochastic
actor into a `RolloutBuffer` on the device, computes GAE(lambda) per world, and runs `epochs` passes of clipped
surrogate minibatch updates with a clipped value loss, linear learning-rate decay, gradient clipping and an
entropy bonus (Uni-O4's `ppo_finetune` code, which is CleanRL's PPO; Uni-O4 also clips value updates).
Uni-O4 builds one over its handed-off actor and critic; `PPO` builds one over fresh networks.

    agent = PPOConfig(rollout_steps=4096).create(env.single_observation_space, env.single_action_space)
    agent.learn(make_vec_env("mujoco/Hopper-v5", num_envs=64), total_timesteps=1_000_000)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, register_agent
from rlpt.agents.core import action_bounds, from_unit, generator_for
from rlpt.agents.rollout import BatchedEnv, gae
from rlpt.callbacks import Callback, run_callbacks
from rlpt.data.buffers import RolloutBuffer
from rlpt.errors import ConfigError
from rlpt.nets.critics import ValueNet
from rlpt.nets.normalizer import ObsNormalizer
from rlpt.nets.optim import adam
from rlpt.nets.policies import GaussianPolicy


@dataclasses.dataclass
class PPOSettings:
    """The update's hyperparameters (Uni-O4 maps its `online_*` fields onto these)."""

    rollout_steps: int = 2048  # transitions per update (over all worlds)
    minibatch: int = 64
    epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_clip: float | None = None  # clip value updates to +- this around the rollout's values (None: no clip)
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    lr_decay_steps: int = 1_000_000  # env steps over which both learning rates decay linearly to 0
    reward_scale: float = 1.0


class PPOLearner:
    """PPO updates for an actor (any `rlpt.nets.policies.GaussianActor`) and a value net over `features(obs)`."""

    def __init__(self, actor: nn.Module, value: nn.Module, features: Callable[[torch.Tensor], torch.Tensor],
                 settings: PPOSettings, actor_opt: torch.optim.Optimizer, value_opt: torch.optim.Optimizer,
                 low: torch.Tensor, high: torch.Tensor, generator: torch.Generator, rng: np.random.Generator):
        self.actor, self.value, self.features, self.s = actor, value, features, settings
        self.actor_opt, self.value_opt = actor_opt, value_opt
        self.low, self.high, self.gen, self.rng = low, high, generator, rng

    @torch.no_grad()
    def collect(self, envs: BatchedEnv, steps: int) -> RolloutBuffer:
        """`steps` steps of every world with the stochastic actor (unclipped samples are stored; the env gets
        them clipped to its bounds)."""
        obs_dtype = torch.uint8 if envs.obs.dtype == torch.uint8 else torch.float32
        rollout = RolloutBuffer(steps, envs.num_envs, tuple(envs.obs.shape[1:]), int(self.low.shape[0]),
                                envs.device, obs_dtype)
        for t in range(steps):
            obs = envs.obs
            action, logp = self.actor.sample(self.features(obs), generator=self.gen)  # (N, A)
            rollout.add(t, obs, action, logp, envs.step(from_unit(action, self.low, self.high)))
        return rollout

    def _values(self, obs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.value(self.features(obs[i:i + chunk])) for i in range(0, len(obs), chunk)])

    def update(self, rollout: RolloutBuffer, env_steps: int) -> dict[str, float]:
        """Clipped-surrogate epochs over the rollout; learning rates decay with `env_steps` done so far."""
        s = self.s
        frac = max(0.0, 1.0 - env_steps / s.lr_decay_steps)
        for opt, lr in ((self.actor_opt, s.actor_lr), (self.value_opt, s.critic_lr)):
            for g in opt.param_groups:
                g["lr"] = lr * frac
        # GAE(lambda) per world over the (T, N) steps, then every transition as one flat batch
        shape = (rollout.steps, rollout.num_envs)
        values = self._values(rollout.obs.flatten(0, 1)).view(shape)
        next_values = self._values(rollout.next_obs.flatten(0, 1)).view(shape)
        adv = gae(rollout.rewards * s.reward_scale, values, next_values, rollout.terminated, rollout.done, s.gamma,
                  s.gae_lambda)
        returns, values, adv = (adv + values).flatten(), values.flatten(), adv.flatten()
        adv = (adv - adv.mean()) / (adv.std() + 1e-5) if len(adv) > 1 else adv
        obs, actions, old_logp = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1), rollout.logp.flatten()

        n = len(adv)
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("pl", "vl", "ent", "kl", "cf")}
        for _ in range(s.epochs):
            perm = torch.as_tensor(self.rng.permutation(n), device=adv.device)
            for start in range(0, n, s.minibatch):
                mb = perm[start:start + s.minibatch]
                feat = self.features(obs[mb])  # (b, F)
                dist = self.actor.dist(feat.detach())
                logp = dist.log_prob(actions[mb]).sum(-1)
                log_ratio = logp - old_logp[mb]
                ratio = log_ratio.exp()
                a = adv[mb]
                policy_loss = -torch.min(ratio * a, ratio.clamp(1 - s.clip, 1 + s.clip) * a).mean()
                entropy = dist.entropy().sum(-1).mean()
                self.actor_opt.zero_grad()
                (policy_loss - s.entropy_coef * entropy).backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), s.max_grad_norm)
                self.actor_opt.step()

                v = self.value(feat)  # (b,)
                value_loss = (v - returns[mb]).pow(2)
                if s.value_clip is not None:
                    v_clipped = values[mb] + (v - values[mb]).clamp(-s.value_clip, s.value_clip)
                    value_loss = torch.max(value_loss, (v_clipped - returns[mb]).pow(2))
                value_loss = value_loss.mean()
                self.value_opt.zero_grad()
                value_loss.backward()
                nn.utils.clip_grad_norm_(self.value_opt.param_groups[0]["params"], s.max_grad_norm)
                self.value_opt.step()

                with torch.no_grad():  # kept as tensors: one host sync per update, not per minibatch
                    stats["pl"].append(policy_loss.detach())
                    stats["vl"].append(value_loss.detach())
                    stats["ent"].append(entropy.detach())
                    stats["kl"].append(((ratio - 1) - log_ratio).mean())
                    stats["cf"].append(((ratio - 1).abs() > s.clip).float().mean())
        m = {k: float(torch.stack(v).mean()) for k, v in stats.items()}
        return {"online/policy_loss": m["pl"], "online/value_loss": m["vl"], "online/entropy": m["ent"],
                "online/approx_kl": m["kl"], "online/clip_fraction": m["cf"], "online/lr_actor": s.actor_lr * frac}

    def learn(self, envs: BatchedEnv, total_timesteps: int, env_steps: int, callbacks: Sequence[Callback],
              on_steps: Callable[[int], None],
              after_update: Callable[[RolloutBuffer], None] | None = None) -> dict[str, Any]:
        """Collect-and-update until `total_timesteps` more env steps are done; `on_steps(n)` advances the owner's
        counter (`env_steps` is where it stood), `after_update(rollout)` runs after each update."""
        metrics: dict[str, Any] = {}
        done = 0
        while done < total_timesteps:
            t0 = time.perf_counter()
            n = min(self.s.rollout_steps, total_timesteps - done)
            rollout = self.collect(envs, math.ceil(n / envs.num_envs))
            n = rollout.steps * rollout.num_envs
            done, env_steps = done + n, env_steps + n
            on_steps(n)
            metrics = {**self.update(rollout, env_steps), **envs.stats.pop(),
                       "perf/sps": n / max(time.perf_counter() - t0, 1e-9)}
            if after_update is not None:
                after_update(rollout)
            if not run_callbacks(callbacks, env_steps, dict(metrics)):
                break
        return metrics


def check_spaces(agent: Agent, env: gym.Env | gym.vector.VectorEnv) -> None:
    """Raise ConfigError when `env` (or each world of a vector env) does not match the agent's spaces."""
    vector = isinstance(env, gym.vector.VectorEnv)
    act = env.single_action_space if vector else env.action_space
    obs = env.single_observation_space if vector else env.observation_space
    name = type(agent).__name__
    if not isinstance(act, gym.spaces.Box) or act.shape != agent.action_space.shape:
        raise ConfigError(f"{name}.learn: env action space {act} does not match the agent's {agent.action_space}")
    if tuple(obs.shape or ()) != tuple(agent.observation_space.shape or ()):
        raise ConfigError(f"{name}.learn: env observation shape {obs.shape} does not match the agent's "
                          f"{agent.observation_space.shape}")


@dataclasses.dataclass
class PPOConfig(AgentConfig):
    """PPO from scratch (CleanRL MuJoCo defaults; Uni-O4's state-dependent Gaussian policy)."""

    rollout_steps: int = 2048
    minibatch: int = 64
    epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_clip: float | None = None  # values are in raw return units here, so no clipping by default
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    adam_eps: float = 1e-5
    lr_decay_steps: int = 1_000_000
    reward_scale: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    obs_clip: float = 10.0  # observations are normalised by running statistics, then clipped to +- this


@register_agent("ppo")
class PPO(Agent):
    config_class = PPOConfig
    config: PPOConfig
    trains_online = True

    def __init__(self, config: PPOConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(action_space.shape[0])
        self.low, self.high = action_bounds(action_space)
        self.low_t, self.high_t = (torch.as_tensor(x, device=self.device) for x in (self.low, self.high))
        self.obs_norm = ObsNormalizer((obs_dim,), clip=config.obs_clip).to(self.device)
        self.obs_count = 0  # observations behind the running statistics
        self.actor = GaussianPolicy(obs_dim, act_dim, config.hidden, config.activation).to(self.device)
        self.value = ValueNet(obs_dim, config.hidden, config.activation).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr, eps=config.adam_eps)
        self.value_opt = adam(self.value.parameters(), lr=config.critic_lr, eps=config.adam_eps)
        self.gen = generator_for(self.device, config.seed)
        self.learner = PPOLearner(self.actor, self.value, self.features, self._settings(), self.actor_opt,
                                  self.value_opt, self.low_t, self.high_t, self.gen, self.rng)
        self._envs: BatchedEnv | None = None

    def _settings(self) -> PPOSettings:
        return PPOSettings(**{f.name: getattr(self.config, f.name) for f in dataclasses.fields(PPOSettings)})

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs.flatten(1).float())

    @torch.no_grad()
    def _update_obs_stats(self, obs: torch.Tensor) -> None:
        """Running mean/std over every observation collected so far (Chan et al.'s parallel update)."""
        x = obs.flatten(1).float()
        n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        m0, v0, c0 = self.obs_norm.mean, self.obs_norm.std.pow(2), self.obs_count
        total = c0 + n
        delta = mean - m0
        new_mean = m0 + delta * n / total
        new_var = (v0 * c0 + var * n + delta.pow(2) * c0 * n / total) / total
        self.obs_norm.mean.copy_(new_mean)
        self.obs_norm.std.copy_(new_var.sqrt().clamp_min(1e-6))
        self.obs_count = total

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return from_unit(self.actor.sample(self.features(obs), deterministic, self.gen)[0], self.low_t, self.high_t)

    def learn(self, env: gym.Env | gym.vector.VectorEnv, total_timesteps: int, offline=None,
              mix_ratio: float | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        check_spaces(self, env)
        if self._envs is None or self._envs.env is not env:
            self._envs = BatchedEnv(env, self.device, seed=self.config.seed + self.online_steps)

        def on_steps(n: int) -> None:
            self.online_steps += n

        self.learner.s = self._settings()  # the config as it is now
        # observation statistics follow the data but stay fixed from a rollout's collection through its update,
        # so the stored log-probabilities and the update see the same features
        return self.learner.learn(self._envs, total_timesteps, self.online_steps, callbacks, on_steps,
                                  after_update=lambda rollout: self._update_obs_stats(rollout.obs.flatten(0, 1)))

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "value": self.value, "obs_norm": self.obs_norm}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "value": self.value_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"torch_generator": self.gen.get_state(), "obs_count": self.obs_count}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "torch_generator" in state:
            self.gen.set_state(state["torch_generator"])
        self.obs_count = int(state.get("obs_count", 0))
