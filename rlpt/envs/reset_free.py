"""Reset-free training (RoboFuME §2.6): forward and reset tasks alternate on one physical scene.

`ResetFreeWrapper` sits outside the reward wrapper: when an episode ends (the reward model says success
and ends it, or the task's time limit hits), the next `reset()` switches the env to the other task
(`TaskSpec.reverse`) and keeps the scene (`options={"reset_free": True}`) instead of restoring it. Every
`hard_reset_every` env steps the next reset is a real one, as a human (or the simulator) would do.
From the agent's side every forward or backward attempt is an ordinary episode. With a `recorder`
(`rlpt.data.record.EpisodeRecorder`, or anything with its `begin`/`add`/`end`/`save` methods), every
transition is kept and written as a D4RL-layout HDF5 every few episodes and on `close()`.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym

from rlpt.errors import EnvSpecError


class EpisodeSink(Protocol):
    """Where a wrapper hands its transitions (`rlpt.data.record.EpisodeRecorder` is the one rlpt ships)."""

    def begin(self, obs: Any, task: str) -> None: ...
    def add(self, action, reward, terminated, truncated, next_obs, info: dict) -> None: ...
    def end(self) -> None: ...
    def save(self) -> Any: ...


class ResetFreeWrapper(gym.Wrapper):
    """Alternate forward/reset tasks without resetting the scene; hard reset every `hard_reset_every` steps.

    The base env must be an rlpt TabletopEnv (or offer `task`, `set_task(name)` and the `reset_free`
    reset option). `info["reset_free"]` on reset says which task runs and whether the reset was hard.
    Counters: `hard_resets`, `task_switches`, `episodes_by_task`, `successes_by_task` (from info["success"],
    the ground truth when the env reports it; for monitoring only, never for rewards).
    """

    def __init__(self, env: gym.Env, hard_reset_every: int = 1000, recorder: EpisodeSink | None = None) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not (hasattr(base, "set_task") and hasattr(base, "task")):
            raise EnvSpecError(f"ResetFreeWrapper needs an env with tasks and reverse tasks (rlpt tabletop); "
                               f"got {type(base).__name__}")
        if hard_reset_every < 1:
            raise EnvSpecError(f"ResetFreeWrapper: hard_reset_every must be >= 1; got {hard_reset_every}")
        self.hard_reset_every = int(hard_reset_every)
        self.forward_task = base.task.name
        self.steps_since_hard_reset = 0
        self.hard_resets = self.task_switches = 0
        self.episodes_by_task: dict[str, int] = {}
        self.successes_by_task: dict[str, int] = {}
        self._started = False
        self._episode_success = False
        self.recorder = recorder

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
