"""Pieces the offline/offline-to-online agents (BC, IQL, Cal-QL) share: action scaling, the training view of
a dataset (unit actions, scaled rewards), callbacks, and an episode collector for online fine-tuning.

Conventions used by those agents:
- policies and critics work on actions in [-1, 1]; `to_unit`/`from_unit` map to and from the env's Box bounds;
- observations are normalised by an `ObsNormalizer` whose statistics are frozen from the first dataset seen;
- every random draw goes through the agent's `rng` (numpy) or its seeded `torch.Generator`, so a run
  resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlpt.data.buffers import ReplayBuffer
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError


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


def run_callbacks(callbacks: Sequence[Callable], step: int, metrics: dict[str, Any]) -> bool:
    """Call every callback; return False when one asked to stop."""
    keep_going = True
    for cb in callbacks:
        if cb(step, metrics) is False:
            keep_going = False
    return keep_going


class EpisodeCollector:
    """Steps one env and writes every transition into a `ReplayBuffer` (actions in [-1, 1], scaled rewards).

    Tracks raw episode returns for logging. The env is reset with `seed` the first time.
    """

    def __init__(self, env: gym.Env, buffer: ReplayBuffer, low: np.ndarray, high: np.ndarray,
                 reward_fn: Callable[[float], float], seed: int):
        self.env, self.buffer, self.low, self.high, self.reward_fn = env, buffer, low, high, reward_fn
        self.obs, _ = env.reset(seed=seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.returns: list[float] = []  # returns of episodes finished since the last `pop_returns`
        self.lengths: list[int] = []

    def step(self, unit_action: np.ndarray) -> None:
        env_action = self.low + (np.clip(unit_action, -1, 1) + 1.0) * 0.5 * (self.high - self.low)
        next_obs, reward, terminated, truncated, _ = self.env.step(env_action)
        self.buffer.add(self.obs, unit_action, self.reward_fn(float(reward)), next_obs, terminated, truncated)
        self.episode_return += float(reward)
        self.episode_length += 1
        if terminated or truncated:
            self.returns.append(self.episode_return)
            self.lengths.append(self.episode_length)
            self.episode_return, self.episode_length = 0.0, 0
            next_obs, _ = self.env.reset()
        self.obs = next_obs

    def pop_metrics(self) -> dict[str, float]:
        out = {}
        if self.returns:
            out = {"online/episode_return": float(np.mean(self.returns)),
                   "online/episode_length": float(np.mean(self.lengths)), "online/episodes": len(self.returns)}
        self.returns, self.lengths = [], []
        return out


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    """A torch generator on `device` seeded with `seed` (its state goes into `extra_state`)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def off_policy_learn(agent: Any, env: gym.Env, total_timesteps: int, offline: Dataset | None,
                     mix_ratio: float | None, callbacks: Sequence[Callable]) -> dict[str, Any]:
    """The online loop IQL and Cal-QL share: act with the stochastic policy (uniform random during
    `learning_starts` when there is no offline data), store transitions in the agent's `ReplayBuffer`, and
    run `utd_ratio` updates per env step on batches mixing `mix_ratio` offline data (`MixedBuffer`).

    When the agent samples Monte-Carlo returns (`agent._mc_gamma` is not None, Cal-QL), only finished online
    episodes are sampled, so updates wait for the first one (unless offline data is mixed in)."""
    from rlpt.data.buffers import MixedBuffer

    cfg = agent.config
    gamma = getattr(agent, "_mc_gamma", None)
    data = agent._prepare(offline) if offline is not None else None
    agent._freeze_stats(None)
    if agent.buffer is None:
        agent.buffer = ReplayBuffer(cfg.buffer_size, tuple(agent.observation_space.shape), agent.act_dim,
                                    gamma=cfg.discount)
    agent.buffer.end_episode()  # an episode left open by an earlier call ends here (the env is reset)
    source = MixedBuffer(agent.buffer, data, mix_ratio) if data is not None else agent.buffer
    collector = EpisodeCollector(env, agent.buffer, agent.low, agent.high, agent._transform_reward,
                                 seed=cfg.seed + agent.online_steps)
    metrics: dict[str, Any] = {}
    for _ in range(total_timesteps):
        if data is None and agent.online_steps < cfg.learning_starts:
            unit_action = agent.rng.uniform(-1.0, 1.0, agent.act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                obs_t = torch.as_tensor(np.asarray(collector.obs, np.float32), device=agent.device)[None]
                unit_action = agent._unit_action(obs_t.flatten(1), deterministic=False)[0].cpu().numpy()
        collector.step(unit_action)
        agent.online_steps += 1
        ready = data is not None or (agent.buffer.num_completed if gamma is not None else len(agent.buffer)) > 0
        if agent.online_steps >= cfg.learning_starts and ready:
            for _ in range(cfg.utd_ratio):
                batch = source.sample(cfg.batch_size, rng=agent.rng, device=agent.device, gamma=gamma)
                metrics = agent.update(batch)
        if agent.online_steps % cfg.log_interval == 0:
            metrics = {**metrics, **collector.pop_metrics(), "online/buffer_size": len(agent.buffer)}
            if not run_callbacks(callbacks, agent.online_steps, metrics):
                break
    return metrics


def restore_buffer(state: dict[str, Any] | None, obs_shape: tuple[int, ...], act_dim: int) -> ReplayBuffer | None:
    """Rebuild a `ReplayBuffer` from the `state_dict()` an agent saved in its extra state (None stays None)."""
    if state is None:
        return None
    from rlpt.agents.base import tensor_to_numpy_tree

    buf = tensor_to_numpy_tree(state)
    buffer = ReplayBuffer(int(buf["capacity"]), obs_shape, act_dim, gamma=float(buf["gamma"]))
    buffer.load_state_dict(buf)
    return buffer
