"""Episode recording: keep every transition an env produces and write it as a D4RL-layout HDF5 (an rlpt
`Dataset`), atomically, every few episodes, so a crash loses at most the episodes since the last write.

Used by reset-free training (`rlpt.envs.reset_free.ResetFreeWrapper(recorder=...)`) and by robot runs
(`rlpt.robots.RobotEnv(record_path=...)`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.data.d4rl import save_d4rl
from rlpt.data.dataset import Dataset


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
        ds = self.dataset()
        if ds is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return save_d4rl(ds, self.path)
