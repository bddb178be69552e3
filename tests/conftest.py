"""Shared test setup: quiet progress bars, one torch thread (the CI machine has 2 cores), headless GL; and small
pixel envs several test files use (import them with `from conftest import ...`; tests/ is on sys.path)."""

import os

os.environ.setdefault("RLPT_QUIET", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


class DotEnv(gym.Env):
    """A point in [-1, 1]^2 seen as a `size` x `size` uint8 frame: a 3x3 red dot on a blue field. The 2-d action
    (in [-1, 1]) moves it by `speed` per unit; reward -distance to the centre; truncated after `horizon` steps.
    Subclasses change the look by overriding `_obs`."""

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = 30, size: int = 16, speed: float = 0.25):
        self.horizon, self.size, self.speed = horizon, size, speed
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self) -> np.ndarray:
        s = self.size
        img = np.zeros((s, s, 3), np.uint8)
        img[..., 2] = 60
        i, j = np.clip(np.round((self.pos + 1) / 2 * (s - 1)).astype(int), 1, s - 2)
        img[i - 1:i + 2, j - 1:j + 2, 0] = 255
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(-1, 1, 2), 0
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + self.speed * np.clip(action, -1, 1), -1, 1)
        self.t += 1
        return self._obs(), float(-np.linalg.norm(self.pos)), False, self.t >= self.horizon, {}
