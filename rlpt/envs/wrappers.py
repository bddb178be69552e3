"""Observation and control wrappers applied by `make_env`.

Order used by `make_env`: env -> PixelObservation -> ActionRepeat -> FrameStack -> TimeLimit.
All wrappers record their constructor arguments, so `env.spec` stays re-creatable.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.utils import RecordConstructorArgs

from rlpt.errors import EnvSpecError


def disable_shadows(env: gym.Env) -> bool:
    """Switch shadows off on a MuJoCo env's rgb_array renderer; return whether it worked.

    Shadows dominate software (llvmpipe) render time. Creates the renderer's GL context, so
    call it only once rendering is about to happen.
    """
    import mujoco

    base = env.unwrapped
    renderer = getattr(base, "mujoco_renderer", None)  # gymnasium MuJoCo envs
    if renderer is not None:
        viewer = renderer._get_viewer("rgb_array")
        viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        return True
    if hasattr(base, "shadows") and hasattr(base, "physics"):  # rlpt's DMCEnv
        base.shadows = False
        if getattr(base, "_camera", None) is not None:
            base._camera.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        return True
    return False


class MujocoRenderContext(gym.Wrapper, RecordConstructorArgs):
    """Make a Gymnasium MuJoCo env's GL context current around every render and free it cleanly.

    Gymnasium's offscreen viewer makes its context current only once, at creation. With several
    envs in one process (dm_control envs, vector envs, tests) another context is often current,
    and the render draws into the wrong one. Worse, its MjrContext is freed by the garbage
    collector under whichever context is current then, deleting that context's framebuffers:
    later renders of other envs come back blank or frozen. This wrapper renders under the env's
    own context and frees the MjrContext under it on close.
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._freed = False

    def _viewers(self) -> dict:
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        return getattr(renderer, "_viewers", {}) if renderer is not None else {}

    def render(self):
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        if renderer is not None and self.render_mode in ("rgb_array", "depth_array", "rgbd_tuple"):
            renderer._get_viewer(self.render_mode).make_context_current()
        return self.env.render()

    def _free_render_contexts(self) -> None:
        if self._freed:
            return
        self._freed = True
        for viewer in self._viewers().values():
            con = getattr(viewer, "con", None)
            if con is not None and getattr(viewer, "opengl_context", None) is not None:
                viewer.make_context_current()
                con.free()

    def close(self):
        self._free_render_contexts()
        super().close()

    def __del__(self):
        # An env dropped without close() would otherwise free its MjrContext under another env's context.
        try:
            self._free_render_contexts()
        except Exception:
            pass


class PixelObservation(gym.ObservationWrapper, RecordConstructorArgs):
    """Replace observations by the env's rgb_array render: uint8 (H, W, 3).

    The underlying env must have `render_mode="rgb_array"`. Frames of another size are resized
    (area interpolation) to `size`. The replaced state observation is kept in `info["state"]`.

    Args:
        env: env rendering rgb_array frames.
        size: (height, width) of the observation.
        shadows: keep MuJoCo shadows on (off by default: 2-3x faster on CPU).
    """

    def __init__(self, env: gym.Env, size: tuple[int, int] = (64, 64), shadows: bool = False):
        RecordConstructorArgs.__init__(self, size=tuple(size), shadows=shadows)
        gym.ObservationWrapper.__init__(self, env)
        if env.render_mode != "rgb_array":
            raise EnvSpecError(
                f"PixelObservation needs an env with render_mode='rgb_array', got {env.render_mode!r}"
            )
        height, width = (int(v) for v in size)
        if height <= 0 or width <= 0:
            raise EnvSpecError(f"PixelObservation size must be positive (height, width), got {size}")
        self.size = (height, width)
        self.shadows = shadows
        self._configured = False
        self.observation_space = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observation(obs), {**info, "state": obs}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, {**info, "state": obs}

    def observation(self, observation):
        if not self._configured:
            if not self.shadows:
                disable_shadows(self.env)
            self._configured = True
        try:
            frame = self.env.render()
        except gym.error.DependencyNotInstalled as e:
            raise EnvSpecError(f"pixel observations need the env's renderer, which is not installed: {e}") from e
        if frame is None or frame.ndim != 3 or frame.shape[-1] != 3:
            raise EnvSpecError(
                f"PixelObservation expected an (H, W, 3) frame from render(), got "
                f"{None if frame is None else frame.shape}"
            )
        if frame.shape[:2] != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame, dtype=np.uint8)


class Float32Observation(gym.ObservationWrapper, RecordConstructorArgs):
    """Cast float64 Box observations (Gymnasium MuJoCo) to float32, the dtype rlpt stores and trains on."""

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise EnvSpecError(f"Float32Observation needs a Box observation space, got {space}")
        self.observation_space = gym.spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32
        )

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32)


class ActionRepeat(gym.Wrapper, RecordConstructorArgs):
    """Repeat each action `k` times, summing rewards; stop early when the episode ends."""

    def __init__(self, env: gym.Env, k: int):
        RecordConstructorArgs.__init__(self, k=k)
        gym.Wrapper.__init__(self, env)
        if int(k) < 1:
            raise EnvSpecError(f"action_repeat must be >= 1, got {k}")
        self.k = int(k)

    def step(self, action):
        total = 0.0
        for _ in range(self.k):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class FrameStack(gym.ObservationWrapper, RecordConstructorArgs):
    """Stack the last `k` observations; the first observation of an episode fills the stack.

    Flat vectors (D,) are concatenated to (k * D,); anything else (e.g. pixels (H, W, 3)) is
    stacked along a new leading axis to (k, *shape), oldest first.
    """

    def __init__(self, env: gym.Env, k: int):
        RecordConstructorArgs.__init__(self, k=k)
        gym.ObservationWrapper.__init__(self, env)
        if int(k) < 1:
            raise EnvSpecError(f"frame_stack must be >= 1, got {k}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise EnvSpecError(f"FrameStack needs a Box observation space, got {space}")
        self.k = int(k)
        self._flat = len(space.shape) == 1
        self._frames: deque[np.ndarray] = deque(maxlen=self.k)
        self.observation_space = gym.spaces.Box(
            self._combine([space.low] * self.k), self._combine([space.high] * self.k), dtype=space.dtype
        )

    def _combine(self, frames) -> np.ndarray:
        return np.concatenate(frames) if self._flat else np.stack(frames)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames.clear()
        self._frames.extend([obs] * self.k)
        return self._combine(self._frames), info

    def observation(self, observation):
        self._frames.append(observation)
        return self._combine(self._frames)
