"""Stable-Baselines3 PPO and SAC as rlpt agents: same `learn` / `predict` / `save` / `rlpt.load` path.

    agent = SB3PPOConfig(n_steps=1024).create(env.observation_space, env.action_space)
    agent.learn(env, total_timesteps=100_000, callbacks=[print_cb])
    agent.save("runs/ppo"); agent = rlpt.load("runs/ppo")

Checkpoints are rlpt's own (no pickle): the SB3 policy's weights (actor, critic and, for SAC, the target
critic) go to `model.safetensors`; optimizers, SAC's entropy coefficient and replay buffer, the update count
and numpy's global RNG (SB3 samples minibatches with it) go to `training_state.pt`. SB3's own `.zip`
(which pickles some objects) is never read by rlpt; `export_sb3(path)` writes one for SB3 users, and
`sb3_model` is the wrapped SB3 object for anything else.

SB3 counts env steps itself: `learn(env, n)` runs until `online_steps` has grown by at least `n` (PPO rounds
up to whole rollouts of `n_steps`). Callbacks get `(online_steps, metrics)` every `log_interval` env steps,
with SB3's latest `train/*` values and the mean return of the recent episodes (`online/episode_return`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent, tensor_to_numpy_tree
from rlpt.callbacks import run_callbacks
from rlpt.errors import ConfigError, RlptError


@dataclasses.dataclass
class SB3PPOConfig(AgentConfig):
    """SB3 PPO's main arguments (SB3 defaults); `sb3_kwargs` passes any other PPO keyword through."""

    policy: str = "MlpPolicy"
    learning_rate: float = 3e-4
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (64, 64)  # same hidden sizes for policy and value nets
    sb3_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_interval: int = 1000  # env steps between callback calls


@dataclasses.dataclass
class SB3SACConfig(AgentConfig):
    """SB3 SAC's main arguments (SB3 defaults); `sb3_kwargs` passes any other SAC keyword through."""

    policy: str = "MlpPolicy"
    learning_rate: float = 3e-4
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    train_freq: int = 1
    gradient_steps: int = 1
    ent_coef: str | float = "auto"
    net_arch: tuple[int, ...] = (256, 256)
    sb3_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_interval: int = 1000  # env steps between callback calls


class _SpacesOnlyEnv(gym.Env):
    """Carries the spaces SB3 needs to build its networks before a real env is given to `learn`."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        raise RlptError("this SB3 agent has no env yet: pass one to learn(env, ...)")

    def step(self, action):
        raise RlptError("this SB3 agent has no env yet: pass one to learn(env, ...)")


class _RlptCallback(BaseCallback):
    """Calls rlpt callbacks with `(num_timesteps, metrics)` every `log_interval` env steps; False stops SB3."""

    def __init__(self, callbacks: Sequence[Callback], log_interval: int):
        super().__init__()
        self.callbacks, self.log_interval = callbacks, log_interval

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: float(v) for k, v in self.model.logger.name_to_value.items()
                               if k.startswith("train/")}
        episodes = self.model.ep_info_buffer or []
        if episodes:
            out["online/episode_return"] = float(np.mean([ep["r"] for ep in episodes]))
            out["online/episode_length"] = float(np.mean([ep["l"] for ep in episodes]))
        return out

    def _on_step(self) -> bool:
        if self.num_timesteps % self.log_interval == 0:
            return run_callbacks(self.callbacks, self.num_timesteps, self.metrics())
        return True


class SB3Agent(Agent):
    """Common adapter: subclasses build the SB3 model and list its optimizers and extra state."""

    config: SB3PPOConfig | SB3SACConfig
    trains_online = True

    def __init__(self, config, observation_space: gym.Space, action_space: gym.Space, device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        self.sb3_model: BaseAlgorithm = self._build(_SpacesOnlyEnv(observation_space, action_space))
        self._env: gym.Env | None = None

    def _build(self, env: gym.Env) -> BaseAlgorithm:
        raise NotImplementedError

    # -------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        action, _ = self.sb3_model.predict(np.asarray(obs), deterministic=deterministic)  # one obs or a batch
        return np.asarray(action, np.float32)

    # -------------------------------------------------------------- training
    def learn(self, env: gym.Env, total_timesteps: int, offline=None, mix_ratio: float | None = 0.5,
              callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        if offline is not None:
            raise ConfigError(f"{type(self).__name__} trains online only; offline data cannot be mixed in "
                              "(use IQL or Cal-QL for offline-to-online)")
        if env is not self._env:  # a new env: wrap it (Monitor + DummyVecEnv) and reset it seeded
            self.sb3_model.set_env(env)
            self.sb3_model.get_env().seed(self.config.seed + self.online_steps)
            self._env = env
        cb = _RlptCallback(callbacks, self.config.log_interval)
        self.sb3_model.learn(total_timesteps, callback=cb, reset_num_timesteps=False, progress_bar=False)
        self.online_steps = int(self.sb3_model.num_timesteps)
        return cb.metrics()

    def export_sb3(self, path: str) -> None:
        """Write SB3's own `.zip` (loadable with `PPO.load` / `SAC.load`; it pickles some objects)."""
        self.sb3_model.save(path)

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.sb3_model.policy}

    def extra_state(self) -> dict[str, Any]:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        return {"n_updates": int(self.sb3_model._n_updates),
                "np_global_rng": {"keys": keys.astype(np.int64), "pos": int(pos), "has_gauss": int(has_gauss),
                                  "cached_gaussian": float(cached)}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.sb3_model.num_timesteps = self.online_steps
        self.sb3_model._n_updates = int(state.get("n_updates", 0))
        rng = state.get("np_global_rng")
        if rng is not None:
            keys = np.asarray(tensor_to_numpy_tree(rng["keys"])).astype(np.uint32)
            np.random.set_state(("MT19937", keys, rng["pos"], rng["has_gauss"], rng["cached_gaussian"]))


@register_agent("sb3_ppo")
class SB3PPO(SB3Agent):
    config_class = SB3PPOConfig
    config: SB3PPOConfig

    def _build(self, env: gym.Env) -> BaseAlgorithm:
        c = self.config
        kwargs = {"policy_kwargs": {"net_arch": list(c.net_arch)}, **c.sb3_kwargs}
        return PPO(c.policy, env, learning_rate=c.learning_rate, n_steps=c.n_steps, batch_size=c.batch_size,
                   n_epochs=c.n_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda, clip_range=c.clip_range,
                   ent_coef=c.ent_coef, vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm, seed=c.seed,
                   device=self.device, verbose=0, **kwargs)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.sb3_model.policy.optimizer}


@register_agent("sb3_sac")
class SB3SAC(SB3Agent):
    config_class = SB3SACConfig
    config: SB3SACConfig

    def _build(self, env: gym.Env) -> BaseAlgorithm:
        c = self.config
        kwargs = {"policy_kwargs": {"net_arch": list(c.net_arch)}, **c.sb3_kwargs}
        return SAC(c.policy, env, learning_rate=c.learning_rate, buffer_size=c.buffer_size,
                   learning_starts=c.learning_starts, batch_size=c.batch_size, tau=c.tau, gamma=c.gamma,
                   train_freq=c.train_freq, gradient_steps=c.gradient_steps, ent_coef=c.ent_coef, seed=c.seed,
                   device=self.device, verbose=0, **kwargs)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        m = self.sb3_model
        opts = {"actor": m.actor.optimizer, "critic": m.critic.optimizer}
        if m.ent_coef_optimizer is not None:
            opts["ent_coef"] = m.ent_coef_optimizer
        return opts

    def extra_state(self) -> dict[str, Any]:
        m, state = self.sb3_model, super().extra_state()
        if m.log_ent_coef is not None:
            state["log_ent_coef"] = m.log_ent_coef.detach().cpu()
        rb = m.replay_buffer
        n = rb.buffer_size if rb.full else rb.pos
        state["replay_buffer"] = {"pos": int(rb.pos), "full": bool(rb.full),
                                  **{k: getattr(rb, k)[:n] for k in ("observations", "next_observations",
                                                                     "actions", "rewards", "dones", "timeouts")}}
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        m = self.sb3_model
        if "log_ent_coef" in state and m.log_ent_coef is not None:
            with torch.no_grad():
                m.log_ent_coef.copy_(state["log_ent_coef"].to(m.log_ent_coef.device))
        rb_state = state.get("replay_buffer")
        if rb_state is not None:
            rb_state = tensor_to_numpy_tree(rb_state)
            rb = m.replay_buffer
            for k in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                arr = rb_state[k]
                getattr(rb, k)[:len(arr)] = arr
            rb.pos, rb.full = int(rb_state["pos"]), bool(rb_state["full"])
