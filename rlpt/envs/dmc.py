"""dm_control suite tasks behind the Gymnasium API (no shimmy).

`DMCEnv("cheetah", "run")` flattens the observation dict into one float32 vector (in the task's
own key order), exposes the action spec as a float32 Box, maps a time step with discount 0 to
`terminated` and the suite's time limit (1000 steps for most tasks) to `truncated`, and renders
rgb_array frames through one cached `dm_control.mujoco.Camera` (several times faster than
`physics.render()`, which builds a new camera and scene on every call).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from rlpt.envs.rendering import setup_offscreen_rendering
from rlpt.errors import EnvSpecError

# Cameras the pixel-based DMC literature (DrQ, Dreamer) renders from; every other domain uses 0.
DEFAULT_CAMERAS = {"quadruped": 2}


def dmc_tasks() -> list[str]:
    """All suite tasks as "domain-task" names (e.g. "cheetah-run", "ball_in_cup-catch")."""
    setup_offscreen_rendering()
    from dm_control import suite

    return [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]


def parse_dmc_name(name: str) -> tuple[str, str]:
    """Split "domain-task" ("walker-walk", "ball_in_cup-catch") and check the suite has it."""
    domain, sep, task = name.partition("-")
    known = dmc_tasks()
    if not sep or name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join('dmc/' + c for c in close)}" if close else ""
        raise EnvSpecError(
            f"unknown dm_control task 'dmc/{name}': expected 'dmc/<domain>-<task>' naming a suite task"
            f" (e.g. dmc/cheetah-run){hint}"
        )
    return domain, task


def _flat_size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


class DMCEnv(gym.Env):
    """A dm_control suite task as a `gymnasium.Env`.

    Args:
        domain, task: suite names, e.g. ("cheetah", "run").
        task_kwargs: passed to `suite.load`, e.g. ``{"time_limit": 10.0}`` (seconds; inf for none).
            ``{"random": seed}`` is also what `reset(seed=...)` reproduces, without a rebuild.
        environment_kwargs: passed to `suite.load` (e.g. ``{"flat_observation": False}``).
        render_mode: None or "rgb_array".
        width, height: size of rendered frames in pixels.
        camera: camera name or index (-1 is the free camera); default 0 (2 for quadruped).
        shadows: render shadows (off by default: they cost ~2-3x render time on CPU).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        task_kwargs: Mapping[str, Any] | None = None,
        environment_kwargs: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 64,
        height: int = 64,
        camera: int | str | None = None,
        shadows: bool = False,
    ):
        setup_offscreen_rendering()  # dm_control picks its GL backend when its render module loads
        from dm_control import suite

        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvSpecError(
                f"dmc/{domain}-{task}: render_mode must be one of {self.metadata['render_modes']} or None,"
                f" got {render_mode!r}"
            )
        if width <= 0 or height <= 0:
            raise EnvSpecError(f"dmc/{domain}-{task}: width and height must be > 0, got {width}x{height}")
        self.domain, self.task_name = domain, task
        self._task_kwargs = dict(task_kwargs or {})
        self._env = suite.load(
            domain, task, task_kwargs=self._task_kwargs, environment_kwargs=dict(environment_kwargs or {})
        )
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.camera_id = self._camera_id(camera)
        # The offscreen framebuffer is sized when the GL context is made (first render): grow it now.
        glob = self._env.physics.model.vis.global_
        glob.offwidth, glob.offheight = max(glob.offwidth, self.width), max(glob.offheight, self.height)
        self.shadows = shadows
        self._camera = None  # built on the first render, then reused

        self.metadata = {**self.metadata, "render_fps": round(1.0 / self._env.control_timestep())}
        step_limit = float(self._env._step_limit)
        self.max_episode_steps = int(step_limit) if math.isfinite(step_limit) else None

        self._obs_keys = list(self._env.observation_spec().keys())
        size = sum(_flat_size(s.shape) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            np.broadcast_to(spec.minimum, spec.shape).astype(np.float32),
            np.broadcast_to(spec.maximum, spec.shape).astype(np.float32),
            spec.shape,
            np.float32,
        )

    @property
    def physics(self):
        """The task's `dm_control.mujoco.Physics`."""
        return self._env.physics

    @property
    def dm_env(self):
        """The wrapped `dm_control.rl.control.Environment`."""
        return self._env

    def _camera_id(self, camera: int | str | None) -> int:
        model = self._env.physics.model
        names = [model.id2name(i, "camera") for i in range(model.ncam)]
        if camera is None:
            default = DEFAULT_CAMERAS.get(self.domain, 0)
            return default if default < model.ncam else -1
        if isinstance(camera, str) and camera in names:
            return names.index(camera)
        if isinstance(camera, int | np.integer) and not isinstance(camera, bool) and -1 <= camera < model.ncam:
            return int(camera)
        raise EnvSpecError(
            f"dmc/{self.domain}-{self.task_name}: unknown camera {camera!r}; expected one of {names}"
            f" or an index in [-1, {model.ncam - 1}] (-1 is the free camera)"
        )

    def _flatten(self, observation: Mapping[str, Any]) -> np.ndarray:
        return np.concatenate(
            [np.asarray(observation[k], dtype=np.float32).reshape(-1) for k in self._obs_keys]
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Same stream as suite.load(..., task_kwargs={"random": seed}), without rebuilding physics.
            self._env.task.random.seed(seed % 2**32)
        time_step = self._env.reset()
        return self._flatten(time_step.observation), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise EnvSpecError(
                f"dmc/{self.domain}-{self.task_name}: action shape must be {self.action_space.shape},"
                f" got {action.shape}"
            )
        time_step = self._env.step(action)
        last = time_step.last()
        # dm_control ends every episode with last(); discount 0 marks a true terminal state,
        # discount 1 the time limit.
        terminated = bool(last and time_step.discount == 0.0)
        truncated = bool(last and not terminated)
        reward = float(time_step.reward or 0.0)
        return self._flatten(time_step.observation), reward, terminated, truncated, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._camera is None:
            import mujoco
            from dm_control import _render
            from dm_control.mujoco import Camera

            if _render.BACKEND == "glfw" and not os.environ.get("DISPLAY"):
                raise EnvSpecError(
                    "dm_control chose the GLFW renderer (it was imported before rlpt set MUJOCO_GL) and"
                    " there is no DISPLAY: import rlpt.envs before dm_control, or set MUJOCO_GL=egl"
                )

            self._camera = Camera(self.physics, self.height, self.width, self.camera_id)
            self._camera.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.shadows)
        gl = self.physics.contexts.gl
        with gl.make_current() as ctx:
            # dm_control skips eglMakeCurrent when it believes its context is still current, but
            # other renderers in this process (Gymnasium MuJoCo, mujoco.Renderer) switch contexts
            # behind its back: make it current for real before drawing.
            ctx.call(gl._platform_make_current)
            frame = self._camera.render()
        return frame.copy()  # the camera reuses its buffer; (H, W, 3) uint8

    def close(self):
        if self._camera is not None:
            self._camera._scene.free()
            self._camera = None
        if self._env is not None:
            self._env.physics.free()
            self._env = None
