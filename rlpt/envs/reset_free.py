"""Reset-free training (RoboFuME §2.6): forward and reset tasks alternate on one physical scene.

`ResetFreeWrapper` sits outside the reward wrapper: when an episode ends (the reward model says success
and ends it, or the task's time limit hits), the next `reset()` switches the env to the other task
(`TaskSpec.reverse`) and keeps the scene (`options={"reset_free": True}`) instead of restoring it. Every
`hard_reset_every` env steps the next reset is a real one, as a human (or the simulator) would do.
From the agent's side every forward or backward attempt is an ordinary episode. With `record_path`,
every transition is kept and written as a D4RL-layout HDF5 (an rlpt Dataset) every `save_every`
episodes and on `close()`, atomically, so a crash loses at most the episodes since the last write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlpt.errors import EnvSpecError


class ResetFreeWrapper(gym.Wrapper):
    """Alternate forward/reset tasks without resetting the scene; hard reset every `hard_reset_every` steps.

    The base env must be an rlpt TabletopEnv (or offer `task`, `set_task(name)` and the `reset_free`
    reset option). `info["reset_free"]` on reset says which task runs and whether the reset was hard.
    Counters: `hard_resets`, `task_switches`, `episodes_by_task`, `successes_by_task` (from info["success"],
    the ground truth when the env reports it; for monitoring only, never for rewards).
    """

    def __init__(self, env: gym.Env, hard_reset_every: int = 1000, record_path: str | os.PathLike | None = None,
                 save_every: int = 10) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not (hasattr(base, "set_task") and hasattr(base, "task")):
            raise EnvSpecError(f"ResetFreeWrapper needs an env with tasks and reverse tasks (rlpt tabletop); "
                               f"got {type(base).__name__}")
        if hard_reset_every < 1:
            raise EnvSpecError(f"ResetFreeWrapper: hard_reset_every must be >= 1; got {hard_reset_every}")
        self.hard_reset_every, self.save_every = int(hard_reset_every), int(save_every)
        self.forward_task = base.task.name
        self.steps_since_hard_reset = 0
        self.hard_resets = self.task_switches = 0
        self.episodes_by_task: dict[str, int] = {}
        self.successes_by_task: dict[str, int] = {}
        self._started = False
        self._episode_success = False
        self.recorder = EpisodeRecorder(record_path, save_every) if record_path is not None else None

    @property
    def task(self) -> str:
        return self.env.unwrapped.task.name

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        base = self.env.unwrapped
        hard = (not self._started) or self.steps_since_hard_reset >= self.hard_reset_every
        if self._started:
            self._end_episode()
        if hard:
            if self._started:
                self.hard_resets += 1
            base.set_task(self.forward_task)
            self.steps_since_hard_reset = 0
            obs, info = self.env.reset(seed=seed, options={k: v for k, v in (options or {}).items()
                                                            if k != "reset_free"})
        else:
            base.set_task(base.task.reverse)
            self.task_switches += 1
            obs, info = self.env.reset(seed=seed, options={**(options or {}), "reset_free": True})
        self._started, self._episode_success = True, False
        if self.recorder is not None:
            self.recorder.begin(obs, self.task)
        info = {**info, "reset_free": {"task": self.task, "hard": bool(hard)}}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps_since_hard_reset += 1
        self._episode_success |= bool(info.get("success", False))
        if self.recorder is not None:
            self.recorder.add(action, reward, terminated, truncated, obs, info)
        return obs, reward, terminated, truncated, info

    def _end_episode(self) -> None:
        task = self.task
        self.episodes_by_task[task] = self.episodes_by_task.get(task, 0) + 1
        self.successes_by_task[task] = self.successes_by_task.get(task, 0) + int(self._episode_success)
        if self.recorder is not None:
            self.recorder.end()

    def stats(self) -> dict[str, float]:
        """reset_free/* metrics: hard resets, task switches, and per-task episode and success counts."""
        m = {"reset_free/hard_resets": float(self.hard_resets), "reset_free/task_switches": float(self.task_switches)}
        for t, n in self.episodes_by_task.items():
            m[f"reset_free/episodes_{t}"] = float(n)
            m[f"reset_free/success_rate_{t}"] = self.successes_by_task.get(t, 0) / max(n, 1)
        return m

    def close(self) -> None:
        if self.recorder is not None:
            if self._started:
                self.recorder.end()
            self.recorder.save()
        super().close()


class EpisodeRecorder:
    """Keeps every transition of an env's episodes and writes them to `path` (D4RL-layout HDF5) every
    `save_every` finished episodes and on `save()`. Rows hold the reward the agent saw; `infos` keep the
    env's own reward (`reward_env`, when a reward wrapper put it there), ground-truth `success`, the
    reward model's validity, and the task index into `metadata["tasks"]`."""

    def __init__(self, path: str | os.PathLike, save_every: int = 10) -> None:
        self.path, self.save_every = Path(path), max(1, int(save_every))
        self.rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                                      "next_observations", "success", "reward_env",
                                                      "reward_model_valid", "task")}
        self.tasks: list[str] = []
        self._obs: Any = None
        self._task_id = 0
        self._open = False
        self.episodes = 0

    def begin(self, obs: Any, task: str) -> None:
        if task not in self.tasks:
            self.tasks.append(task)
        self._obs, self._task_id, self._open = obs, self.tasks.index(task), True

    def add(self, action, reward, terminated, truncated, next_obs, info: dict) -> None:
        if not self._open:
            return
        r = self.rows
        r["observations"].append(np.asarray(self._obs))
        r["actions"].append(np.asarray(action, np.float32))
        r["rewards"].append(float(reward))
        r["terminals"].append(bool(terminated))
        r["timeouts"].append(bool(truncated and not terminated))
        r["next_observations"].append(np.asarray(next_obs))
        r["success"].append(bool(info.get("success", False)))
        r["reward_env"].append(float(info.get("reward_env", reward)))
        rm = info.get("reward_model")
        r["reward_model_valid"].append(bool(rm["valid"]) if isinstance(rm, dict) else True)
        r["task"].append(self._task_id)
        self._obs = next_obs

    def end(self) -> None:
        """Close the current episode (an unfinished one ends as a timeout, as D4RL files mark them)."""
        if not self._open:
            return
        self._open = False
        if self.rows["terminals"] and not (self.rows["terminals"][-1] or self.rows["timeouts"][-1]):
            self.rows["timeouts"][-1] = True
        self.episodes += 1
        if self.episodes % self.save_every == 0:
            self.save()

    def dataset(self):
        """The episodes recorded so far (finished ones and the rows of the current one) as an rlpt Dataset."""
        from rlpt.data.dataset import Dataset

        r = self.rows
        n = len(r["rewards"])
        if n == 0:
            return None
        timeouts = np.asarray(r["timeouts"], bool)
        terminals = np.asarray(r["terminals"], bool)
        if not (terminals[-1] or timeouts[-1]):
            timeouts = timeouts.copy()
            timeouts[-1] = True
        return Dataset(np.stack(r["observations"]).astype(np.float32), np.stack(r["actions"]),
                       np.asarray(r["rewards"], np.float32), terminals, timeouts,
                       next_observations=np.stack(r["next_observations"]).astype(np.float32),
                       infos={"success": np.asarray(r["success"], bool),
                              "reward_env": np.asarray(r["reward_env"], np.float32),
                              "reward_model_valid": np.asarray(r["reward_model_valid"], bool),
                              "task": np.asarray(r["task"], np.int64)},
                       metadata={"source": str(self.path), "tasks": list(self.tasks), "kind": "reset-free online"})

    def save(self) -> Path | None:
        from rlpt.data import save_d4rl

        ds = self.dataset()
        if ds is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return save_d4rl(ds, self.path)
