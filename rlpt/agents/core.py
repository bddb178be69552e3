"""The agent core: one base for rlpt's offline and offline-to-online agents (BC, IQL, Cal-QL; Uni-O4 reuses its
data handling and overrides the loops), in the spirit of SB3's `OffPolicyAlgorithm` and d3rlpy's
`QLearningAlgoBase`.

`OfflineAgent` owns what every such agent needs and nothing algorithm-specific:
- action bounds: policies and critics work on actions in [-1, 1]; `to_unit`/`from_unit` map to and from the
  env's Box bounds;
- observation normalisation (`obs_norm`, statistics frozen from the first dataset seen) and reward
  transformation (`r * reward_factor + reward_bias`; `normalize_reward` folds CORL's locomotion scale into the
  factor);
- dataset preparation (`prepare`: the training view with unit actions and transformed rewards, cached);
- the loops: `fit(dataset, n_steps)` (offline gradient steps) and `learn(env, total_timesteps, offline=...)`
  (online, on one env or a vector env: act with the stochastic policy, store transitions, `utd_ratio` updates per
  env step on batches that mix `mix_ratio` offline data);
- checkpoint extras (its RNG stream, frozen statistics, the online replay buffer) and `obs_norm` in the weights.

An algorithm adds its config fields, its networks and optimizers, and two methods:
`policy_action(obs, deterministic) -> unit actions` and `update(batch) -> metrics`. Every random draw goes
through the agent's `rng` (numpy) or its seeded torch generator `gen`, so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, tensor_to_numpy_tree
from rlpt.agents.rollout import BatchedEnv
from rlpt.callbacks import Callback, run_callbacks
from rlpt.data.buffers import MixedBuffer, ReplayBuffer
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.nets.normalizer import ObsNormalizer


# ============================================================================================== helpers
def to_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env-bounded actions -> [-1, 1] (clipped)."""
    return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


def from_unit(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[-1, 1] actions -> the env's bounds."""
    return low + (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low)


def action_bounds(action_space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ConfigError(f"action space {action_space} must have finite bounds")
    return low, high


def return_range_scale(dataset: Dataset, target: float = 1000.0) -> float:
    """CORL/IQL locomotion reward normalisation: `target / (max episode return - min episode return)`."""
    rets = dataset.episode_returns()
    spread = float(rets.max() - rets.min()) if len(rets) else 0.0
    if spread <= 0:
        raise ConfigError(f"{dataset.source}: normalize_reward needs episodes with different returns "
                          f"(got {len(rets)} episode(s), return range {spread})")
    return target / spread


def training_view(dataset: Dataset, low: np.ndarray, high: np.ndarray, reward_scale: float,
                  reward_bias: float) -> Dataset:
    """The dataset as the agent trains on it: actions in [-1, 1], rewards `r * scale + bias`.

    Observation arrays are shared, not copied; MC returns of the view use the transformed rewards.
    """
    return Dataset(observations=dataset.observations, actions=to_unit(dataset.actions, low, high),
                   rewards=(dataset.rewards.astype(np.float32) * reward_scale + reward_bias).astype(np.float32),
                   terminals=dataset.terminals, timeouts=dataset.timeouts,
                   next_observations=dataset.next_observations, metadata=dict(dataset.metadata))


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    """A torch generator on `device` seeded with `seed` (its state goes into the checkpoint)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


# ============================================================================================== configs
@dataclasses.dataclass
class OfflineConfig(AgentConfig):
    """Fields every `OfflineAgent` reads."""

    batch_size: int = 256
    normalize_obs: bool = True  # statistics frozen from the first dataset seen
    log_interval: int = 1000  # gradient steps (fit) / env steps (learn) between callback calls


@dataclasses.dataclass
class OffPolicyConfig(OfflineConfig):
    """Fields of agents that also fine-tune online from a replay buffer (IQL, Cal-QL)."""

    discount: float = 0.99
    normalize_reward: bool = False  # scale rewards by 1000 / (max - min episode return) (CORL locomotion)
    reward_scale: float = 1.0  # then r * scale + bias
    reward_bias: float = 0.0
    buffer_size: int = 1_000_000  # online replay capacity
    learning_starts: int = 0  # online env steps before updates start (uniform random actions without offline data)
    utd_ratio: int = 1  # gradient updates per online env step


# ============================================================================================== the base
class OfflineAgent(Agent):
    """Base of the dataset-trained agents (see the module docstring). Subclasses build their networks after
    `super().__init__` and implement `policy_action` and `update`."""

    trains_offline: ClassVar[bool] = True
    trains_online: ClassVar[bool] = False  # True where `update` also serves the online loop (`OffPolicyConfig`)
    config: OfflineConfig

    def __init__(self, config: OfflineConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        self.obs_shape = tuple(observation_space.shape or ())
        self.obs_dim, self.act_dim = int(np.prod(self.obs_shape)), int(action_space.shape[0])
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)
        # uint8 (H, W, 3) observations are images (they go through an encoder; never normalised here)
        self.pixel_obs = np.dtype(observation_space.dtype) == np.uint8 and len(self.obs_shape) == 3
        self.obs_norm = ObsNormalizer(self.obs_shape).to(self.device)  # identity until statistics are frozen
        self.gen = generator_for(self.device, config.seed)  # policy samples, exploration and CQL actions
        self.stats_ready = False  # observation statistics and reward factor frozen?
        self.reward_factor = float(getattr(config, "reward_scale", 1.0))  # multiplies raw rewards
        self.buffer: ReplayBuffer | None = None  # online transitions
        self._data: tuple[Dataset, Dataset] | None = None  # (source, training view)

    # -------------------------------------------------------------- what subclasses implement
    def policy_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions in [-1, 1] (B, A) for a batch of observations (B, obs_dim) (flattened, not normalised)."""
        raise NotImplementedError

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a batch of the training view (unit actions, transformed rewards)."""
        raise NotImplementedError

    @property
    def mc_gamma(self) -> float | None:
        """Discount of the Monte-Carlo returns batches must carry (`batch["mc_returns"]`), or None."""
        return None

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return from_unit(self.policy_action(obs.flatten(1), deterministic), self.low_t, self.high_t)

    # -------------------------------------------------------------- data
    def freeze_stats(self, dataset: Dataset | None) -> None:
        """Freeze observation statistics (and the reward factor) from the first dataset seen."""
        if self.stats_ready:
            return
        cfg = self.config
        if dataset is not None:
            if cfg.normalize_obs and not self.pixel_obs:
                s = dataset.stats()
                self.obs_norm.set_stats(s["obs_mean"], s["obs_std"])
            if getattr(cfg, "normalize_reward", False):
                self.reward_factor = cfg.reward_scale * return_range_scale(dataset)
        elif getattr(cfg, "normalize_reward", False):
            raise ConfigError(f"{type(cfg).__name__}.normalize_reward needs a dataset: call fit(dataset) or pass "
                              "offline=")
        self.stats_ready = True

    def prepare(self, dataset: Dataset) -> Dataset:
        """The training view of `dataset` (unit actions, transformed rewards), cached per dataset."""
        dataset.check_spaces(self.observation_space, self.action_space)
        self.freeze_stats(dataset)
        if self._data is None or self._data[0] is not dataset:
            view = training_view(dataset, self.low, self.high, self.reward_factor, self.reward_bias)
            self._data = (dataset, view)
        return self._data[1]

    @property
    def reward_bias(self) -> float:
        return float(getattr(self.config, "reward_bias", 0.0))

    def transform_reward(self, r: torch.Tensor) -> torch.Tensor:
        """Raw env rewards -> the rewards the agent trains on."""
        return r * self.reward_factor + self.reward_bias

    def new_buffer(self, capacity: int | None = None, gamma: float | None = None) -> ReplayBuffer:
        """An empty online replay buffer (image observations stay uint8); the config's capacity and discount unless
        given (a checkpoint's buffer is rebuilt with its own)."""
        return ReplayBuffer(capacity or self.config.buffer_size, self.obs_shape, self.act_dim,
                            gamma=self.config.discount if gamma is None else gamma,
                            obs_dtype=np.uint8 if self.pixel_obs else np.float32)

    # -------------------------------------------------------------- offline
    def fit(self, dataset: Dataset, n_steps: int, callbacks: Sequence[Callback] = (),
            eval_env: gym.Env | None = None) -> dict[str, Any]:
        data = self.prepare(dataset)
        metrics: dict[str, Any] = {}
        for _ in range(n_steps):
            batch = data.sample(self.config.batch_size, rng=self.rng, device=self.device, gamma=self.mc_gamma)
            metrics = self.update(batch)
            if self.step % self.config.log_interval == 0 and not run_callbacks(callbacks, self.step, metrics):
                break
        return metrics

    # -------------------------------------------------------------- online
    def learn(self, env: gym.Env | gym.vector.VectorEnv, total_timesteps: int, offline: Dataset | None = None,
              mix_ratio: float | None = 0.5, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        """Act with the stochastic policy (uniform random during `learning_starts` when there is no offline data),
        store transitions in the replay buffer, and run `utd_ratio` updates per env step on batches mixing
        `mix_ratio` offline data (`MixedBuffer`; None samples uniformly over offline + online). `env` is one env
        or a vector env of N worlds (`rlpt.envs.make_vec_env`): each step then stores N transitions and runs
        `utd_ratio * N` updates.

        When batches carry Monte-Carlo returns (`mc_gamma`, Cal-QL), only finished online episodes are sampled,
        so updates wait for the first one (unless offline data is mixed in); those returns follow one episode at
        a time, so such agents take a single env."""
        if not self.trains_online:
            raise NotImplementedError(f"{type(self).__name__} does not train online")
        if isinstance(env, gym.vector.VectorEnv) and self.mc_gamma is not None:
            raise ConfigError(f"{type(self).__name__} computes Monte-Carlo returns per episode and trains online on "
                              "one env; got a vector env")
        cfg = self.config
        data = self.prepare(offline) if offline is not None else None
        self.freeze_stats(None)
        if self.buffer is None:
            self.buffer = self.new_buffer()
        self.buffer.end_episode()  # an episode left open by an earlier call ends here (the env is reset)
        source = MixedBuffer(self.buffer, data, mix_ratio) if data is not None else self.buffer
        envs = BatchedEnv(env, self.device, seed=cfg.seed + self.online_steps)
        n = envs.num_envs
        metrics: dict[str, Any] = {}
        for _ in range(math.ceil(total_timesteps / n)):
            obs = envs.obs  # (N, *obs_shape)
            if data is None and self.online_steps < cfg.learning_starts:
                unit = torch.as_tensor(self.rng.uniform(-1.0, 1.0, (n, self.act_dim)), dtype=torch.float32,
                                       device=self.device)
            else:
                with torch.no_grad():
                    unit = self.policy_action(obs.flatten(1), deterministic=False)
            step = envs.step(from_unit(unit, self.low_t, self.high_t))
            rewards = self.transform_reward(step["reward"])
            if n == 1:  # one episode at a time: the buffer tracks it and fills its Monte-Carlo returns
                self.buffer.add(obs[0].cpu().numpy(), unit[0].cpu().numpy(), float(rewards[0]),
                                step["next_obs"][0].cpu().numpy(), bool(step["terminated"][0]), bool(step["done"][0]))
            else:
                self.buffer.add_batch(obs.cpu().numpy(), unit.cpu().numpy(), rewards.cpu().numpy(),
                                      step["next_obs"].cpu().numpy(), step["terminated"].cpu().numpy())
            before, self.online_steps = self.online_steps, self.online_steps + n
            ready = data is not None or (self.buffer.num_completed if self.mc_gamma is not None
                                         else len(self.buffer)) > 0
            if self.online_steps >= cfg.learning_starts and ready:
                for _ in range(cfg.utd_ratio * n):
                    batch = source.sample(cfg.batch_size, rng=self.rng, device=self.device, gamma=self.mc_gamma)
                    metrics = self.update(batch)
            if self.online_steps // cfg.log_interval > before // cfg.log_interval:
                metrics = {**metrics, **envs.stats.pop(), "online/buffer_size": len(self.buffer)}
                if not run_callbacks(callbacks, self.online_steps, metrics):
                    break
        return metrics

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"obs_norm": self.obs_norm}

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
            buf = tensor_to_numpy_tree(state["buffer"])
            self.buffer = self.new_buffer(int(buf["capacity"]), float(buf["gamma"]))
            self.buffer.load_state_dict(buf)
