"""`franka` driver: Franka Panda / FR3 through franky (`pip install franky-control`, extra ``franka``).

franky runs libfranka's 1 kHz loop itself; this driver hands it one asynchronous motion per control step,
each replacing the previous one seamlessly: ``joint_pos`` -> `JointWaypointMotion` to the target,
``joint_vel`` -> `JointVelocityMotion` held for two control periods only (so the arm stops by itself if
commands stop coming), ``ee_delta`` -> an absolute `CartesianMotion` to the previous target pose moved by
the delta (translation in the base frame; rotation R = Rz(yaw) Ry(pitch) Rx(roll) applied in the base
frame), the target kept inside the workspace. The gripper (Franka Hand) moves asynchronously when its
normalised target changes. `stop()` stops all motions; `reset()` moves to the config's ``home`` joints.

Observations: joint_pos/vel (7), ee_pos, ee_rot (roll/pitch/yaw relative to the hand pointing down,
R_down = diag(1, -1, -1)), gripper (width / max width in the config's range).

Options: ``host`` (the robot's FCI address, required), ``relative_dynamics_factor`` (0.1),
``home_dynamics_factor`` (0.1), ``realtime`` (true: require a realtime kernel, as libfranka does),
``gripper_speed`` (m/s, 0.05), ``gripper_max_width`` (m, 0.08).
"""

from __future__ import annotations

import time

import numpy as np

from rlpt.errors import RobotConfigError, RobotConnectionError, RobotDriverError
from rlpt.robots.drivers.base import (
    BaseDriver,
    Command,
    RobotObservation,
    gripper_from_unit,
    gripper_to_unit,
    matrix_from_quat_xyzw,
    matrix_from_rpy,
    quat_xyzw_from_matrix,
    require,
    rpy_from_matrix,
)

HAND_DOWN = np.diag([1.0, -1.0, -1.0])


class FrankaDriver(BaseDriver):
    """Franka Panda / FR3 via franky (see the module docstring)."""

    name = "franka"
    OPTIONS = {"host": None, "relative_dynamics_factor": 0.1, "home_dynamics_factor": 0.1, "realtime": True,
               "gripper_speed": 0.05, "gripper_max_width": 0.08}

    def __init__(self, config) -> None:
        super().__init__(config)
        if not self.options["host"]:
            raise RobotConfigError(f"{config.source}: driver.host: required for the franka driver (the FCI address)")
        if len(config.joints) != 7:
            raise RobotConfigError(f"{config.source}: joints: a Franka arm has 7 joints; got {len(config.joints)}")
        self._robot = None
        self._gripper = None
        self._target: tuple[np.ndarray, np.ndarray] | None = None  # ee target (position, rotation)
        self._grip_cmd: float | None = None

    @property
    def is_connected(self) -> bool:
        return self._robot is not None

    def connect(self) -> None:
        franky = require("franky", "franky-control", "franka", self.name)
        self._franky = franky
        host = str(self.options["host"])
        rt = franky.RealtimeConfig.Enforce if self.options["realtime"] else franky.RealtimeConfig.Ignore
        try:
            robot = franky.Robot(host, realtime_config=rt)
            robot.relative_dynamics_factor = float(self.options["relative_dynamics_factor"])
            robot.recover_from_errors()
            gripper = franky.Gripper(host) if self.config.gripper.enabled else None
        except Exception as e:
            raise RobotConnectionError(f"franka driver: cannot connect to {host}: {type(e).__name__}: {e}") from e
        self._robot, self._gripper = robot, gripper
        self._target, self._grip_cmd = None, None

    def disconnect(self) -> None:
        self._robot = self._gripper = None

    def _r(self):
        if self._robot is None:
            raise RobotConnectionError("franka driver is not connected; call connect() first")
        return self._robot

    def _pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self._r().current_cartesian_state.pose.end_effector_pose
        return np.asarray(pose.translation, float), matrix_from_quat_xyzw(pose.quaternion)

    def read(self) -> RobotObservation:
        r = self._r()
        try:
            js = r.current_joint_state
            p, R = self._pose()
            width = None if self._gripper is None else float(self._gripper.width)
        except Exception as e:
            raise RobotDriverError(f"franka driver: reading the robot state failed: {type(e).__name__}: {e}") from e
        g = None if width is None else gripper_from_unit(self.config, width / float(self.options["gripper_max_width"]))
        return RobotObservation(timestamp=time.monotonic(), joint_pos=np.asarray(js.position, float),
                                joint_vel=np.asarray(js.velocity, float), ee_pos=p,
                                ee_rot=rpy_from_matrix(R @ HAND_DOWN.T), gripper=g)

    def send(self, command: Command) -> None:
        franky, r = self._franky, self._r()
        v = np.asarray(command.values, float)
        if command.mode == "joint_pos":
            motion = franky.JointWaypointMotion([franky.JointWaypoint(v.tolist())])
        elif command.mode == "joint_vel":
            hold_ms = max(1, int(round(2000 * self.config.dt)))
            motion = franky.JointVelocityMotion(v, duration=franky.Duration(hold_ms))
        else:
            ee = self.config.ee
            assert ee is not None
            p, R = self._target if self._target is not None else self._pose()
            p = np.clip(p + v[:3], ee.workspace_lower, ee.workspace_upper)
            if v.size == 6:
                R = matrix_from_rpy(v[3:6]) @ R
            self._target = (p, R)
            motion = franky.CartesianMotion(franky.Affine(p, quat_xyzw_from_matrix(R)))
        try:
            r.move(motion, asynchronous=True)
            if command.gripper is not None and self._gripper is not None and (
                    self._grip_cmd is None or abs(command.gripper - self._grip_cmd) > 1e-3):
                width = gripper_to_unit(self.config, command.gripper) * float(self.options["gripper_max_width"])
                self._gripper.move_async(width, float(self.options["gripper_speed"]))
                self._grip_cmd = command.gripper
        except Exception as e:
            raise RobotDriverError(f"franka driver: motion failed: {type(e).__name__}: {e}") from e

    def stop(self) -> None:
        self._target = None
        if self._robot is not None:
            self._robot.stop()

    def reset(self, seed: int | None = None) -> None:
        self._target = None
        home = self.config.home
        if home is None:
            return
        franky = self._franky
        motion = franky.JointWaypointMotion([franky.JointWaypoint(home.tolist())],
                                            relative_dynamics_factor=float(self.options["home_dynamics_factor"]))
        self._r().move(motion)  # blocking: the episode starts at home
