"""`sim` driver: rlpt's MuJoCo tabletop (`TabletopEnv`, a WidowX-250-like arm) behind the robot interface.

Each `send` advances the simulation by one TabletopEnv step (0.1 s of simulated time), so configs for it
use ``control_rate_hz: 10``. Commands map onto TabletopEnv's controls: ``ee_delta`` (3-d translation, m)
-> its ``ee_delta`` action scaled by ``max_step``; ``joint_pos`` / ``joint_vel`` -> its ``joint_pos``
action (joint target deltas, at most 0.1 rad per step). The gripper's normalised range maps onto the
fingers (upper = open). Observations: joint_pos/vel of the 6 arm joints, ee_pos, ee_rot (BridgeData
convention, pointing down = 0), gripper, rendered frames of the config's cameras (names among
TabletopEnv's ``front``, ``side``, ``top``, ``wrist``) and extras ``task_state`` (TabletopEnv's 30-d state
observation), ``reward`` and ``success``.

Options: ``task`` (a TabletopEnv task, default ``reach``), ``reward`` (``dense`` | ``sparse``), ``max_step``
(m per step at action 1, default 0.02), ``randomize`` (appearance randomization on reset, default false).
"""

from __future__ import annotations

import time

import numpy as np

from rlpt.errors import RobotConfigError, RobotConnectionError
from rlpt.robots.drivers.base import (
    EE_DOWN,
    BaseDriver,
    Command,
    RobotObservation,
    gripper_from_unit,
    gripper_to_unit,
    rpy_from_matrix,
)

TASK_STATE_DIM = 30  # TabletopEnv.STATE_DIM (kept here so configs validate without importing MuJoCo)
_OPENING = (0.030, 0.074)  # finger gap closed ... open (m)


class SimDriver(BaseDriver):
    """Drives a `TabletopEnv` in this process (see the module docstring)."""

    name = "sim"
    OPTIONS = {"task": "reach", "reward": "dense", "max_step": 0.02, "randomize": False}

    def __init__(self, config) -> None:
        super().__init__(config)
        if config.control_mode == "ee_delta" and config.ee is not None and config.ee.rotation:
            raise RobotConfigError(f"{config.source}: ee.rotation: the sim driver moves the tool pointing down "
                                   "(3-d translation deltas); expected rotation: false")
        if config.joints and len(config.joints) != 6:
            raise RobotConfigError(f"{config.source}: joints: the sim arm has 6 joints (waist, shoulder, elbow, "
                                   f"forearm_roll, wrist_angle, wrist_rotate); got {len(config.joints)}")
        self.env = None
        self.stops = 0
        self._last_info: dict = {}
        self._grip = 1.0

    @property
    def is_connected(self) -> bool:
        return self.env is not None

    def connect(self) -> None:
        from rlpt.envs.tabletop import CAMERAS, TASKS, TabletopEnv

        o, cfg = self.options, self.config
        if o["task"] not in TASKS:
            raise RobotConfigError(f"{cfg.source}: driver.task: expected one of {sorted(TASKS)}; got {o['task']!r}")
        bad = [c for c in cfg.cameras if c not in CAMERAS or cfg.cameras[c].source != "driver"]
        if bad:
            raise RobotConfigError(f"{cfg.source}: cameras: the sim renders only {list(CAMERAS)} "
                                   f"(source: driver); got {bad}")
        try:
            self.env = TabletopEnv(o["task"], control="ee_delta" if cfg.control_mode == "ee_delta" else "joint_pos",
                                   reward=o["reward"], max_episode_steps=10**9, max_step=float(o["max_step"]))
        except Exception as e:
            raise RobotConnectionError(f"sim driver: cannot build TabletopEnv({o['task']!r}): {e}") from e
        self.env.reset(seed=0)

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def _env(self):
        if self.env is None:
            raise RobotConnectionError("sim driver is not connected; call connect() first")
        return self.env

    def reset(self, seed: int | None = None) -> None:
        env = self._env()
        env.reset(seed=seed, options={"randomize": bool(self.options["randomize"])})
        self._last_info = {}
        self._grip = 1.0

    def read(self) -> RobotObservation:
        env = self._env()
        d = env.data
        R = d.site_xmat[env._ee_sid].reshape(3, 3)
        opening = (env.gripper_opening - _OPENING[0]) / (_OPENING[1] - _OPENING[0])
        images = {name: env.render_camera(name, (c.height, c.width)) for name, c in self.config.cameras.items()}
        success = self._last_info["success"] if "success" in self._last_info else env.task.success(env)
        reward = self._last_info.get("reward", 0.0)
        return RobotObservation(
            timestamp=time.monotonic(), joint_pos=d.qpos[env._arm_qadr].copy(), joint_vel=d.qvel[env._arm_dadr].copy(),
            ee_pos=env.ee_pos, ee_rot=rpy_from_matrix(R @ EE_DOWN.T),
            gripper=gripper_from_unit(self.config, opening) if self.config.gripper.enabled else None,
            images=images,
            extra={"task_state": env.state(), "reward": np.array([reward]), "success": np.array([float(success)])})

    def send(self, command: Command) -> None:
        env = self._env()
        if command.gripper is not None:
            self._grip = 2.0 * gripper_to_unit(self.config, command.gripper) - 1.0
        v = np.asarray(command.values, float)
        if command.mode == "ee_delta":
            a = np.r_[v[:3] / env.max_step, self._grip]
        else:
            dt_env = env.substeps * env.model.opt.timestep
            target = v if command.mode == "joint_pos" else env._q_target + v * dt_env
            a = np.r_[(target - env._q_target) / 0.1, self._grip]  # TabletopEnv joint_pos: 0.1 rad per unit
        _, reward, _, _, info = env.step(np.clip(a, -1.0, 1.0))
        self._last_info = {"reward": float(reward), "success": bool(info["success"])}

    def stop(self) -> None:
        """Position-controlled: the arm holds its last targets when no step is taken."""
        self.stops += 1
