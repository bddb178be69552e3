"""Replay stores for online training, in one place:
- `ReplayBuffer`: a fixed-capacity ring of single transitions that knows its episodes (Monte-Carlo returns);
- `MixedBuffer`: batches drawn partly from a `ReplayBuffer`, partly from an offline `Dataset`;
- `SequenceReplay`: steps in Dreamer's layout (each observation stored once), sampled as sequences (ContextWM).
- `RolloutBuffer`: T steps of N worlds for on-policy updates, preallocated as tensors on the device.

The first two `sample` like `Dataset.sample`: a dict of float tensors `observations, actions, rewards,
next_observations, terminals` (plus `mc_returns` when `gamma` is given) on the requested device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError, DatasetShapeError


class ReplayBuffer:
    """Fixed-capacity FIFO of single transitions (numpy arrays, oldest rows overwritten first).

    It tracks the episode being collected. When an episode ends (`terminated` or `truncated`, or
    `end_episode()`), the discounted reward-to-go of each of its rows is computed with `gamma` (no bootstrap
    past the end, as `Dataset.mc_returns`). Rows of the episode still running have no return yet, so
    `sample(..., gamma=...)` draws only from completed episodes, the way Cal-QL adds whole trajectories.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], act_dim: int, gamma: float = 0.99,
                 obs_dtype: Any = np.float32):
        if capacity <= 0:
            raise ConfigError(f"ReplayBuffer: capacity must be positive, got {capacity}")
        self.capacity, self.obs_shape, self.act_dim, self.gamma = int(capacity), tuple(obs_shape), act_dim, gamma
        self.observations = np.zeros((capacity, *obs_shape), obs_dtype)
        self.next_observations = np.zeros((capacity, *obs_shape), obs_dtype)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, np.float32)
        self.mc_returns = np.zeros(capacity, np.float32)
        self.ptr = 0  # next row to write
        self.size = 0  # rows filled
        self.open_len = 0  # rows of the episode still running (the newest `open_len` rows)

    def __len__(self) -> int:
        return self.size

    @property
    def num_completed(self) -> int:
        """Rows whose episode has ended (these carry Monte-Carlo returns)."""
        return self.size - self.open_len

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool = False) -> None:
        """Append one transition; `terminated` stops bootstrapping, either flag ends the episode."""
        action = np.asarray(action, np.float32).reshape(-1)
        if action.shape != (self.act_dim,):
            raise DatasetShapeError(f"ReplayBuffer.add: action has shape {action.shape}; expected ({self.act_dim},)")
        i = self.ptr
        self.observations[i] = obs
        self.next_observations[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminals[i] = float(terminated)
        self.mc_returns[i] = 0.0
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.open_len = min(self.open_len + 1, self.capacity)
        if terminated or truncated:
            self.end_episode()

    def add_batch(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                  terminated: np.ndarray) -> None:
        """Append N transitions at once (one step of N vector-env worlds). Their episodes interleave, so no
        Monte-Carlo returns are computed (`sample(gamma=...)` is for one-env buffers); the rows count as completed."""
        if self.open_len:
            raise ConfigError("ReplayBuffer.add_batch: an episode added row by row is still open; end_episode() first")
        actions = np.asarray(actions, np.float32).reshape(len(rewards), -1)
        if actions.shape[1] != self.act_dim:
            raise DatasetShapeError(f"ReplayBuffer.add_batch: actions have shape {actions.shape}; expected "
                                    f"(N, {self.act_dim})")
        n = len(rewards)
        rows = (self.ptr + np.arange(n)) % self.capacity
        self.observations[rows] = obs
        self.next_observations[rows] = next_obs
        self.actions[rows] = actions
        self.rewards[rows] = rewards
        self.terminals[rows] = np.asarray(terminated, np.float32)
        self.mc_returns[rows] = np.nan
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def end_episode(self) -> None:
        """Close the running episode (e.g. when training stops mid-episode) and fill its MC returns."""
        g = 0.0
        for k in range(1, self.open_len + 1):  # newest row first
            i = (self.ptr - k) % self.capacity
            g = float(self.rewards[i]) + self.gamma * g
            self.mc_returns[i] = g
        self.open_len = 0

    def _rows(self, k: np.ndarray) -> np.ndarray:
        """Ring positions of the k-th oldest rows."""
        oldest = (self.ptr - self.size) % self.capacity
        return (oldest + k) % self.capacity

    def sample(self, batch_size: int, rng: np.random.Generator | None = None, device: str | torch.device = "cpu",
               gamma: float | None = None) -> dict[str, torch.Tensor]:
        rng = rng or np.random.default_rng()
        if gamma is not None:
            if abs(gamma - self.gamma) > 1e-12:
                raise ConfigError(f"ReplayBuffer.sample: gamma={gamma} but the buffer's returns use {self.gamma}")
            n = self.num_completed
        else:
            n = self.size
        if n == 0:
            raise ConfigError("ReplayBuffer.sample: no transitions to sample yet"
                              + (" (no completed episode)" if gamma is not None else ""))
        idx = self._rows(rng.integers(0, n, size=batch_size))
        return self.batch(idx, device=device, with_mc=gamma is not None)

    def batch(self, idx: np.ndarray, device: str | torch.device = "cpu", with_mc: bool = False):
        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x if x.dtype == np.uint8 else x.astype(np.float32, copy=False), device=device)

        out = {"observations": t(self.observations[idx]), "actions": t(self.actions[idx]),
               "rewards": t(self.rewards[idx]), "next_observations": t(self.next_observations[idx]),
               "terminals": t(self.terminals[idx])}
        if with_mc:
            out["mc_returns"] = t(self.mc_returns[idx])
        return out

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Filled rows (oldest first) and counters, as numpy arrays and ints."""
        rows = self._rows(np.arange(self.size))
        return {"capacity": self.capacity, "gamma": self.gamma, "open_len": self.open_len,
                "observations": self.observations[rows], "next_observations": self.next_observations[rows],
                "actions": self.actions[rows], "rewards": self.rewards[rows], "terminals": self.terminals[rows],
                "mc_returns": self.mc_returns[rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = len(state["rewards"])
        if int(state["capacity"]) != self.capacity or n > self.capacity:
            raise ConfigError(f"ReplayBuffer: saved capacity {state['capacity']} (rows {n}) does not match "
                              f"this buffer's capacity {self.capacity}")
        for key in ("observations", "next_observations", "actions", "rewards", "terminals", "mc_returns"):
            getattr(self, key)[:n] = np.asarray(state[key])
        self.size, self.ptr = n, n % self.capacity
        self.open_len, self.gamma = int(state["open_len"]), float(state["gamma"])


class MixedBuffer:
    """Batches drawn from an online `ReplayBuffer` and an offline `Dataset`.

    `mix_ratio` is the fraction of each batch taken from the offline data (Cal-QL/RLPD: 0.5). With
    `mix_ratio=None` every transition of the union is equally likely, which is what appending the online
    data to the offline buffer does (CORL's IQL fine-tuning), without copying the dataset. While the online
    buffer has nothing to give (empty, or no completed episode when MC returns are asked for), the whole
    batch comes from the offline data.
    """

    def __init__(self, online: ReplayBuffer, offline: Dataset, mix_ratio: float | None = 0.5):
        if mix_ratio is not None and not 0.0 <= mix_ratio <= 1.0:
            raise ConfigError(f"MixedBuffer: mix_ratio must be in [0, 1] or None, got {mix_ratio}")
        self.online, self.offline, self.mix_ratio = online, offline, mix_ratio

    def sample(self, batch_size: int, rng: np.random.Generator | None = None, device: str | torch.device = "cpu",
               gamma: float | None = None) -> dict[str, torch.Tensor]:
        rng = rng or np.random.default_rng()
        n_online = self.online.num_completed if gamma is not None else len(self.online)
        if n_online == 0:
            n_off = batch_size
        elif self.mix_ratio is None:
            n_offline_rows = len(self.offline.transition_indices())
            n_off = int(rng.binomial(batch_size, n_offline_rows / (n_offline_rows + n_online)))
        else:
            n_off = int(round(self.mix_ratio * batch_size))
        parts = []
        if n_off > 0:
            parts.append(self.offline.sample(n_off, rng=rng, device=device, gamma=gamma))
        if n_off < batch_size:
            parts.append(self.online.sample(batch_size - n_off, rng=rng, device=device, gamma=gamma))
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class SequenceReplay:
    """Fixed-capacity ring buffer of env steps in Dreamer's layout, sampled as sequences `(B, L, ...)`.

    Row t holds the observation o_t, the action a_{t-1} that led to it, the reward r_t received on arriving
    there, `is_first` (o_t starts an episode; its action and reward are zeros) and `is_terminal` (o_t ends the
    episode for real, not by a time limit). Sampled sequences may cross episode boundaries; the world model resets
    its state wherever `is_first` is set, and the first step of every sampled sequence is flagged `is_first`.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], act_dim: int):
        if capacity <= 0:
            raise ConfigError(f"SequenceReplay: capacity must be positive, got {capacity}")
        self.capacity, self.obs_shape, self.act_dim = int(capacity), tuple(obs_shape), int(act_dim)
        self.obs = np.zeros((self.capacity, *self.obs_shape), np.uint8)  # untouched pages cost no memory
        self.action = np.zeros((self.capacity, self.act_dim), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.is_first = np.zeros(self.capacity, bool)
        self.is_terminal = np.zeros(self.capacity, bool)
        self.ptr = 0  # next row to write
        self.size = 0  # rows filled

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray | None, reward: float, is_first: bool,
            is_terminal: bool = False) -> None:
        """Append one step (`action=None` at an episode start)."""
        obs = np.asarray(obs)
        if obs.shape != self.obs_shape or obs.dtype != np.uint8:
            raise DatasetShapeError(f"SequenceReplay.add: observation must be uint8 {self.obs_shape}, got "
                                    f"{obs.dtype} {obs.shape}")
        i = self.ptr
        self.obs[i] = obs
        self.action[i] = 0.0 if action is None else np.asarray(action, np.float32).reshape(self.act_dim)
        self.reward[i] = reward
        self.is_first[i] = is_first
        self.is_terminal[i] = is_terminal
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _ordered(self, logical: np.ndarray) -> np.ndarray:
        """Physical rows of logical positions (0 = the oldest stored step)."""
        oldest = self.ptr if self.size == self.capacity else 0
        return (oldest + logical) % self.capacity

    def sample(self, batch_size: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`batch_size` random contiguous sequences of `length` steps: obs `(B, L, H, W, 3)` uint8, action
        `(B, L, A)`, reward `(B, L)`, is_first `(B, L)`, is_terminal `(B, L)`."""
        if self.size < length:
            raise ConfigError(f"SequenceReplay: {self.size} stored steps are fewer than the sequence length {length}")
        starts = rng.integers(0, self.size - length + 1, size=batch_size)
        rows = self._ordered(starts[:, None] + np.arange(length)[None])  # (B, L)
        is_first = self.is_first[rows].copy()
        is_first[:, 0] = True  # the model starts every sampled sequence from a fresh state
        action = self.action[rows] * ~is_first[..., None]  # no action leads into a first step
        return {"obs": self.obs[rows], "action": action, "reward": self.reward[rows], "is_first": is_first,
                "is_terminal": self.is_terminal[rows]}

    def state_dict(self) -> dict[str, Any]:
        rows = self._ordered(np.arange(self.size))
        return {"capacity": self.capacity, "obs": self.obs[rows], "action": self.action[rows],
                "reward": self.reward[rows], "is_first": self.is_first[rows], "is_terminal": self.is_terminal[rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = len(state["obs"])
        if n > self.capacity or tuple(state["obs"].shape[1:]) != self.obs_shape:
            raise ConfigError(f"SequenceReplay: saved buffer of {n} x {tuple(state['obs'].shape[1:])} does not fit "
                              f"capacity {self.capacity} x {self.obs_shape}")
        for key in ("obs", "action", "reward", "is_first", "is_terminal"):
            getattr(self, key)[:n] = state[key]
        self.size, self.ptr = n, n % self.capacity


# ====================================================================== intrinsic bonus


class RolloutBuffer:
    """T steps of N worlds for on-policy updates, preallocated on the device: obs/next_obs (T, N, *obs_shape),
    actions (T, N, A), logp/rewards/terminated/done (T, N)."""

    def __init__(self, steps: int, num_envs: int, obs_shape: tuple[int, ...], act_dim: int,
                 device: torch.device, obs_dtype: torch.dtype = torch.float32):
        shape = (steps, num_envs)
        self.obs = torch.zeros((*shape, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((*shape, act_dim), device=device)
        self.logp = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, device=device)
        self.done = torch.zeros(shape, device=device)
        self.steps, self.num_envs = steps, num_envs

    def add(self, t: int, obs: torch.Tensor, action: torch.Tensor, logp: torch.Tensor,
            step: dict[str, torch.Tensor]) -> None:
        self.obs[t], self.actions[t], self.logp[t] = obs, action, logp
        self.next_obs[t], self.rewards[t] = step["next_obs"], step["reward"]
        self.terminated[t], self.done[t] = step["terminated"], step["done"].float()
