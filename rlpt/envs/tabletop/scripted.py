"""Hand-written controllers for every tabletop task (demonstrations: successes and, with noise, failures).

The controllers read the simulator state (object positions), not the observation, so they work in
every ``obs_mode``. They need ``control="ee_delta"``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlpt.envs.tabletop import tasks as T
from rlpt.errors import EnvSpecError

OPEN, CLOSED = 1.0, -1.0
Z_HIGH = 0.08  # travel height of the TCP (m)
Z_GRASP = 0.02  # TCP height that centres the fingers on the block
# Half-extent of the closed gripper's finger pair: along world x (finger width) and y (gap + fingers).
FINGER_EXTENT = np.array([0.012, 0.027])


class ScriptedPolicy:
    """Phase-based controller; restarts its phases whenever the env starts an episode or changes task."""

    def __init__(self, env, noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.env = env.unwrapped
        if getattr(self.env, "control", None) != "ee_delta":
            control = getattr(self.env, "control", None)
            raise EnvSpecError("scripted_policy: needs a TabletopEnv with control='ee_delta'; got "
                               f"{type(self.env).__name__} with control={control!r}")
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._task: str | None = None
        self._last_elapsed = -1
        self.phase = 0
        self._count = 0

    def __call__(self, obs=None) -> np.ndarray:
        env = self.env
        if env._elapsed == 0 or env._elapsed < self._last_elapsed or env.task_name != self._task:
            self._task, self.phase, self._count = env.task_name, 0, 0
        self._last_elapsed = env._elapsed
        family = self._task.removesuffix("-reset").replace("-", "_")
        if family.startswith("drawer"):
            a = self._drawer(+1.0 if family == "drawer_open" else -1.0)
        else:
            a = getattr(self, "_" + family)()
        if self.noise > 0:
            a = a + self.noise * self.rng.normal(size=a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------------------------ helpers
    def _move(self, goal, gripper: float) -> np.ndarray:
        delta = (np.asarray(goal, float) - self.env.ee_pos) / self.env.max_step
        return np.r_[np.clip(delta, -1.0, 1.0), gripper]

    def _approach(self, xy, z_high: float, gripper: float) -> tuple[np.ndarray, bool]:
        """Go to ``xy`` at height ``z_high``, rising first when low and far; returns (action, arrived)."""
        ee = self.env.ee_pos
        far = np.linalg.norm(ee[:2] - xy)
        if ee[2] < z_high - 0.02 and far > 0.02:
            return self._move([ee[0], ee[1], z_high], gripper), False
        return self._move([xy[0], xy[1], z_high], gripper), bool(far < 0.01)

    # -------------------------------------------------------------------------------------- tasks
    def _reach(self) -> np.ndarray:
        return self._move(self.env.target_pos, OPEN)

    def _push(self) -> np.ndarray:
        env = self.env
        if env.task.success(env):
            return self._move(env.ee_pos, CLOSED)
        ee, b, t = env.ee_pos, env.block_pos[:2], env.target_pos[:2]
        u = (t - b) / max(np.linalg.norm(t - b), 1e-6)
        back = T.BLOCK_HALF + float(np.abs(u) @ FINGER_EXTENT)  # TCP offset behind the block centre
        contact = b - u * back
        if self.phase == 2:
            rel = ee[:2] - b
            lateral, along = rel @ np.array([-u[1], u[0]]), rel @ u
            if abs(lateral) > 0.02 or along > -back + 0.015:  # lost the block: re-approach
                self.phase = 0
            else:
                lead = min(0.03, float(np.linalg.norm(t - b)))
                goal = contact + u * lead - 0.5 * lateral * np.array([-u[1], u[0]])
                return self._move([goal[0], goal[1], Z_GRASP], CLOSED)
        pre = b - u * (back + 0.02)
        if self.phase == 0:
            a, arrived = self._approach(pre, Z_HIGH, CLOSED)
            if arrived:
                self.phase = 1
            return a
        # phase 1: descend behind the block
        if ee[2] < Z_GRASP + 0.01:
            self.phase = 2
        return self._move([pre[0], pre[1], Z_GRASP], CLOSED)

    def _pick_place(self) -> np.ndarray:
        env = self.env
        ee, blk, tgt = env.ee_pos, env.block_pos, env.target_pos
        held = blk[2] > T.BLOCK_HALF + 0.01 or (self.phase >= 3 and env.gripper_opening > 0.035)
        if self.phase in (3, 4, 5) and not held and self._count > 3:
            self.phase, self._count = 0, 0  # dropped or missed the block
        self._count += 1
        if self.phase == 0:  # above the block, open
            a, arrived = self._approach(blk[:2], Z_HIGH, OPEN)
            if arrived:
                self.phase = 1
            return a
        if self.phase == 1:  # descend around it
            if ee[2] < Z_GRASP + 0.008:
                self.phase, self._count = 2, 0
            return self._move([blk[0], blk[1], Z_GRASP], OPEN)
        if self.phase == 2:  # close
            if self._count >= 3:
                self.phase, self._count = 3, 0
            return self._move([blk[0], blk[1], Z_GRASP], CLOSED)
        if self.phase == 3:  # lift
            if ee[2] > Z_HIGH - 0.015:
                self.phase = 4
            return self._move([ee[0], ee[1], Z_HIGH + 0.01], CLOSED)
        if self.phase == 4:  # carry
            if np.linalg.norm(ee[:2] - tgt[:2]) < 0.01:
                self.phase = 5
            return self._move([tgt[0], tgt[1], Z_HIGH + 0.01], CLOSED)
        if self.phase == 5:  # lower onto the target
            if ee[2] < Z_GRASP + 0.015:
                self.phase, self._count = 6, 0
            return self._move([tgt[0], tgt[1], Z_GRASP + 0.01], CLOSED)
        if self.phase == 6:  # release
            if self._count >= 2:
                self.phase = 7
            return self._move(ee, OPEN)
        return self._move([ee[0], ee[1], Z_HIGH], OPEN)  # retreat

    def _drawer(self, sign: float) -> np.ndarray:
        """Cage the handle post with the closed fingers, then slide it; sign +1 opens (towards -y)."""
        env = self.env
        if env.task.success(env):
            return self._move(env.ee_pos, CLOSED if self.phase == 3 else OPEN)
        ee, h = env.ee_pos, env.handle_pos
        self._count += 1
        if self.phase == 3:
            if np.linalg.norm(ee[:2] - h[:2]) > 0.03 or ee[2] > h[2] + 0.03:
                self.phase = 0
            else:
                return self._move(h + np.array([0.0, -0.04 * sign, 0.0]), CLOSED)
        if self.phase == 0:
            a, arrived = self._approach(h[:2], h[2] + 0.06, OPEN)
            if arrived:
                self.phase = 1
            return a
        if self.phase == 1:
            if ee[2] < h[2] + 0.01:
                self.phase, self._count = 2, 0
            return self._move(h, OPEN)
        if self._count >= 2:  # phase 2: close around the post
            self.phase = 3
        return self._move(h, CLOSED)


def scripted_policy(env, noise: float = 0.0, rng: np.random.Generator | None = None) -> Callable:
    """A controller ``obs -> action`` for ``env``'s current task (it follows ``env.set_task`` switches).

    ``noise`` adds Gaussian noise (std, in action units) from ``rng`` before clipping to [-1, 1].
    """
    return ScriptedPolicy(env, noise=noise, rng=rng)
