"""The one in-memory dataset type: flat transitions with episode boundaries (the D4RL layout)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlpt.errors import DatasetDtypeError, DatasetShapeError, DatasetValueError


@dataclass(frozen=True)
class EpisodeBounds:
    """Half-open row ranges `[starts[i], ends[i])` of each episode; `truncated[i]` when it ended by time limit
    (or by the end of the data) rather than a true terminal."""

    starts: np.ndarray
    ends: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class Dataset:
    """Flat transitions of concatenated episodes.

    Row i holds `observations[i]`, the action taken, the reward received, and whether the episode ended
    there by a true MDP termination (`terminals`) or a time limit (`timeouts`). `next_observations` is
    optional: when absent, the successor of row i is row i+1 within an episode, and rows that end an
    episode by timeout have no successor (they are never sampled as transitions). `images` optionally
    holds uint8 frames `(N, H, W, C)` beside state observations; `infos` holds extra per-row arrays
    (e.g. `qpos`, `success`); `metadata` holds env id, reference scores, source, policy, seed, version.
    """

    observations: np.ndarray  # (N, *obs_shape) float32, or uint8 (N, H, W, C) for image observations
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    next_observations: np.ndarray | None = None  # (N, *obs_shape)
    images: np.ndarray | None = None  # (N, H, W, C) uint8
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cache: dict[Any, Any] = {}
        self._validate()

    # ------------------------------------------------------------------ validation
    @property
    def source(self) -> str:
        return str(self.metadata.get("source", "<in-memory dataset>"))

    def _validate(self) -> None:
        src = self.source
        n = len(self.observations)
        arrays: dict[str, np.ndarray | None] = {
            "observations": self.observations, "actions": self.actions, "rewards": self.rewards,
            "terminals": self.terminals, "timeouts": self.timeouts,
            "next_observations": self.next_observations, "images": self.images,
            **{f"infos/{k}": v for k, v in self.infos.items()},
        }
        for key, arr in arrays.items():
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) and not hasattr(arr, "dtype"):
                raise DatasetDtypeError(f"{src}: key '{key}' must be an array, got {type(arr).__name__}")
            if arr.dtype.kind not in "biuf":
                raise DatasetDtypeError(
                    f"{src}: key '{key}' has dtype {arr.dtype}; expected a numeric or bool dtype")
            if len(arr) != n:
                raise DatasetShapeError(
                    f"{src}: key '{key}' has {len(arr)} rows; expected {n} (the number of observations)")
        if self.actions.ndim != 2:
            raise DatasetShapeError(f"{src}: key 'actions' has shape {self.actions.shape}; expected (N, act_dim)")
        for key in ("rewards", "terminals", "timeouts"):
            arr = getattr(self, key)
            if arr.ndim != 1:
                raise DatasetShapeError(f"{src}: key '{key}' has shape {arr.shape}; expected ({n},)")
        for key in ("terminals", "timeouts"):
            arr = getattr(self, key)
            if arr.dtype != np.bool_:
                if arr.dtype.kind == "f" or (arr.size and not np.isin(arr, (0, 1)).all()):
                    if arr.size and not np.isin(arr, (0, 1)).all():
                        raise DatasetValueError(f"{src}: key '{key}' holds values other than 0/1")
                setattr(self, key, arr.astype(bool))
        if self.next_observations is not None and self.next_observations.shape != self.observations.shape:
            raise DatasetShapeError(
                f"{src}: key 'next_observations' has shape {self.next_observations.shape}; "
                f"expected {self.observations.shape} (same as observations)")
        for key in ("observations", "actions", "rewards", "next_observations"):
            arr = getattr(self, key)
            if arr is not None and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))[0])
                raise DatasetValueError(f"{src}: key '{key}' holds NaN or inf values (first at row {bad})")

    def check_spaces(self, observation_space, action_space) -> None:
        """Raise DatasetShapeError if observations/actions do not fit an env's spaces."""
        obs_shape = tuple(observation_space.shape or ())
        if tuple(self.observations.shape[1:]) != obs_shape:
            raise DatasetShapeError(
                f"{self.source}: observations have shape {self.observations.shape[1:]} per row; "
                f"the env's observation space expects {obs_shape}")
        act_shape = tuple(action_space.shape or ())
        if tuple(self.actions.shape[1:]) != act_shape:
            raise DatasetShapeError(
                f"{self.source}: actions have shape {self.actions.shape[1:]} per row; "
                f"the env's action space expects {act_shape}")

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observations.shape[1:])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_bounds(self) -> EpisodeBounds:
        """Episodes split at terminals|timeouts; a trailing partial episode counts as truncated."""
        if "bounds" not in self._cache:
            done = np.asarray(self.terminals, bool) | np.asarray(self.timeouts, bool)
            ends = np.flatnonzero(done) + 1
            if len(self) and (len(ends) == 0 or ends[-1] != len(self)):
                ends = np.append(ends, len(self))
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            truncated = ~np.asarray(self.terminals, bool)[ends - 1] if len(ends) else np.zeros(0, bool)
            self._cache["bounds"] = EpisodeBounds(starts, ends.astype(np.int64), truncated)
        return self._cache["bounds"]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_bounds())

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one dict of arrays per episode (views, not copies)."""
        b = self.episode_bounds()
        for s, e in zip(b.starts, b.ends, strict=True):
            ep = {"observations": self.observations[s:e], "actions": self.actions[s:e],
                  "rewards": self.rewards[s:e], "terminals": self.terminals[s:e], "timeouts": self.timeouts[s:e]}
            if self.next_observations is not None:
                ep["next_observations"] = self.next_observations[s:e]
            if self.images is not None:
                ep["images"] = self.images[s:e]
            yield ep

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, shape (num_episodes,)."""
        b = self.episode_bounds()
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        return csum[b.ends] - csum[b.starts]

    def mc_returns(self, gamma: float = 0.99) -> np.ndarray:
        """Discounted reward-to-go within each episode (no bootstrap past its end), shape (N,), cached."""
        key = ("mc", float(gamma))
        if key not in self._cache:
            out = np.zeros(len(self), np.float64)
            b = self.episode_bounds()
            rewards = self.rewards.astype(np.float64)
            for s, e in zip(b.starts, b.ends, strict=True):
                g = 0.0
                for i in range(e - 1, s - 1, -1):
                    g = rewards[i] + gamma * g
                    out[i] = g
            self._cache[key] = out.astype(np.float32)
        return self._cache[key]

    def stats(self, eps: float = 1e-3) -> dict[str, np.ndarray]:
        """Observation mean and std (std floored at `eps`), computed once and cached."""
        if "stats" not in self._cache:
            obs = self.observations.reshape(len(self), -1).astype(np.float64)
            mean, std = obs.mean(0), obs.std(0)
            self._cache["stats"] = {"obs_mean": mean.reshape(self.obs_shape).astype(np.float32),
                                    "obs_std": np.maximum(std, eps).reshape(self.obs_shape).astype(np.float32)}
        return self._cache["stats"]

    # ------------------------------------------------------------------ transitions
    def transition_indices(self) -> np.ndarray:
        """Rows usable as (s, a, r, s', done) transitions: all rows when next_observations exist; otherwise
        every row except those ending an episode without a true terminal (their successor is unknown)."""
        if "tidx" not in self._cache:
            if self.next_observations is not None:
                idx = np.arange(len(self))
            else:
                b = self.episode_bounds()
                valid = np.ones(len(self), bool)
                valid[(b.ends - 1)[b.truncated]] = False
                idx = np.flatnonzero(valid)
            self._cache["tidx"] = idx
        return self._cache["tidx"]

    def next_obs(self, idx: np.ndarray) -> np.ndarray:
        """Successor observations for rows `idx` (rows at true terminals return their own observation)."""
        if self.next_observations is not None:
            return self.next_observations[idx]
        nxt = np.minimum(idx + 1, len(self) - 1)
        nxt = np.where(self.terminals[idx], idx, nxt)
        return self.observations[nxt]

    def sample(self, batch_size: int, rng: np.random.Generator | None = None, device: str | torch.device = "cpu",
               gamma: float | None = None) -> dict[str, torch.Tensor]:
        """A uniform batch of transitions as float tensors on `device` (`mc_returns` included when gamma is given)."""
        rng = rng or np.random.default_rng()
        valid = self.transition_indices()
        idx = valid[rng.integers(0, len(valid), size=batch_size)]
        return self.batch(idx, device=device, gamma=gamma)

    def batch(self, idx: np.ndarray, device: str | torch.device = "cpu", gamma: float | None = None):
        def t(x: np.ndarray) -> torch.Tensor:
            x = np.asarray(x)
            return torch.as_tensor(x if x.dtype == np.uint8 else x.astype(np.float32), device=device)

        out = {"observations": t(self.observations[idx]), "actions": t(self.actions[idx]),
               "rewards": t(self.rewards[idx]), "next_observations": t(self.next_obs(idx)),
               "terminals": t(self.terminals[idx].astype(np.float32))}
        if gamma is not None:
            out["mc_returns"] = t(self.mc_returns(gamma)[idx])
        return out

    # ------------------------------------------------------------------ building
    def select(self, rows: np.ndarray) -> Dataset:
        """A new dataset holding `rows` (indices or a bool mask); callers keep episodes whole."""
        rows = np.asarray(rows)
        return Dataset(
            observations=self.observations[rows], actions=self.actions[rows], rewards=self.rewards[rows],
            terminals=self.terminals[rows], timeouts=self.timeouts[rows],
            next_observations=None if self.next_observations is None else self.next_observations[rows],
            images=None if self.images is None else self.images[rows],
            infos={k: v[rows] for k, v in self.infos.items()}, metadata=dict(self.metadata))

    def select_episodes(self, episode_ids: Sequence[int] | np.ndarray) -> Dataset:
        b = self.episode_bounds()
        rows = np.concatenate([np.arange(b.starts[i], b.ends[i]) for i in episode_ids] or [np.zeros(0, int)])
        return self.select(rows)

    @staticmethod
    def concatenate(datasets: Sequence[Dataset], metadata: dict | None = None) -> Dataset:
        """Concatenate datasets row-wise; each input's last episode is closed with a timeout if it was open."""
        if not datasets:
            raise DatasetShapeError("concatenate: expected at least one dataset, got none")
        parts = []
        for d in datasets:
            timeouts = d.timeouts.copy()
            if len(d) and not (d.terminals[-1] or timeouts[-1]):
                timeouts[-1] = True
            parts.append((d, timeouts))
        with_next = all(d.next_observations is not None for d in datasets)
        with_images = all(d.images is not None for d in datasets)
        info_keys = set.intersection(*(set(d.infos) for d in datasets))
        return Dataset(
            observations=np.concatenate([d.observations for d in datasets]),
            actions=np.concatenate([d.actions for d in datasets]),
            rewards=np.concatenate([d.rewards for d in datasets]),
            terminals=np.concatenate([d.terminals for d in datasets]),
            timeouts=np.concatenate([t for _, t in parts]),
            next_observations=np.concatenate([d.next_observations for d in datasets]) if with_next else None,
            images=np.concatenate([d.images for d in datasets]) if with_images else None,
            infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in sorted(info_keys)},
            metadata=dict(metadata if metadata is not None else datasets[0].metadata))

    def content_hash(self) -> str:
        """SHA-256 over the transition arrays (not metadata): identifies the data itself."""
        h = hashlib.sha256()
        for arr in (self.observations, self.actions, self.rewards, self.terminals, self.timeouts):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Sizes and return distribution, for `rlpt data info` and logs."""
        rets = self.episode_returns()
        return {
            "transitions": len(self), "episodes": self.num_episodes,
            "obs_shape": list(self.obs_shape), "act_dim": self.act_dim,
            "terminals": int(self.terminals.sum()), "timeouts": int(self.timeouts.sum()),
            "return_mean": float(rets.mean()) if len(rets) else float("nan"),
            "return_std": float(rets.std()) if len(rets) else float("nan"),
            "return_min": float(rets.min()) if len(rets) else float("nan"),
            "return_max": float(rets.max()) if len(rets) else float("nan"),
            "episode_length_mean": float((self.episode_bounds().ends - self.episode_bounds().starts).mean())
            if len(rets) else float("nan"),
            "has_next_observations": self.next_observations is not None,
            "has_images": self.images is not None,
        }
