"""`ur` driver: Universal Robots e-Series (UR5e, ...) through ur_rtde (`pip install ur-rtde`, extra ``ur``).

Reads over RTDE (`RTDEReceiveInterface` with an explicit variable list: timestamp, actual_q, actual_qd,
actual_TCP_pose); commands through `RTDEControlInterface`: ``joint_pos`` -> ``servoJ`` (one control period,
lookahead and gain from the options), ``joint_vel`` -> ``speedJ``, ``ee_delta`` -> ``servoL`` to the
previous target pose moved by the delta (base frame; rotation R = Rz Ry Rx applied in the base frame),
kept inside the workspace. `stop()` ends servo/speed mode (``servoStop`` / ``speedStop``); `reset()` runs
``moveJ`` to the config's ``home`` joints. The observation is dated by the controller's own RTDE
timestamp: if the stream stops updating, the observation ages and `RobotEnv` stops the robot. No gripper (RTDE
does not drive one): configs must say ``gripper.enabled: false``.

Observations: joint_pos/vel (6), ee_pos, ee_rot (roll/pitch/yaw relative to the tool pointing down,
R_down = diag(1, -1, -1)).

Options: ``host`` (required), ``frequency`` (RTDE Hz, 500), ``control`` (false: read-only),
``servo_lookahead_time`` (s, 0.1), ``servo_gain`` (300), ``acceleration`` (rad/s^2 or m/s^2, 1.0),
``velocity`` (rad/s or m/s for servo/moveJ, 0.5), ``stop_deceleration`` (2.0).
"""

from __future__ import annotations

import time

import numpy as np

from rlpt.errors import RobotConfigError, RobotConnectionError, RobotDriverError
from rlpt.robots.drivers.base import BaseDriver, Command, RobotObservation, matrix_from_rpy, require, rpy_from_matrix

TOOL_DOWN = np.diag([1.0, -1.0, -1.0])
RECEIVE_VARIABLES = ["timestamp", "actual_q", "actual_qd", "actual_TCP_pose"]


def rotvec_to_matrix(rv) -> np.ndarray:
    rv = np.asarray(rv, float)
    th = float(np.linalg.norm(rv))
    if th < 1e-12:
        return np.eye(3)
    k = rv / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, float)
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    th = float(np.arccos(c))
    if th < 1e-9:
        return np.zeros(3)
    if np.pi - th < 1e-6:  # 180 degrees: axis from the diagonal
        k = np.sqrt(np.maximum((np.diag(R) + 1) / 2, 0.0))
        i = int(np.argmax(k))
        k = R[:, i] + np.eye(3)[i]
        return th * k / np.linalg.norm(k)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(th))
    return th * w


class URDriver(BaseDriver):
    """UR e-Series arms via ur_rtde (see the module docstring)."""

    name = "ur"
    OPTIONS = {"host": None, "frequency": 500.0, "control": True, "servo_lookahead_time": 0.1, "servo_gain": 300,
               "acceleration": 1.0, "velocity": 0.5, "stop_deceleration": 2.0}

    def __init__(self, config) -> None:
        super().__init__(config)
        if not self.options["host"]:
            raise RobotConfigError(f"{config.source}: driver.host: required for the ur driver (the controller address)")
        if config.gripper.enabled:
            raise RobotConfigError(f"{config.source}: gripper.enabled: the ur driver drives no gripper over RTDE; "
                                   "expected false")
        if len(config.joints) != 6:
            raise RobotConfigError(f"{config.source}: joints: a UR arm has 6 joints; got {len(config.joints)}")
        self._recv = None
        self._ctrl = None
        self._target: tuple[np.ndarray, np.ndarray] | None = None
        self._offset = np.inf

    @property
    def is_connected(self) -> bool:
        return self._recv is not None

    def connect(self) -> None:
        rtde_receive = require("rtde_receive", "ur-rtde", "ur", self.name)
        host, o = str(self.options["host"]), self.options
        try:
            self._recv = rtde_receive.RTDEReceiveInterface(host, float(o["frequency"]), list(RECEIVE_VARIABLES))
        except Exception as e:
            raise RobotConnectionError(f"ur driver: RTDE receive connection to {host}:30004 failed: {e}") from e
        if o["control"]:
            rtde_control = require("rtde_control", "ur-rtde", "ur", self.name)
            try:
                self._ctrl = rtde_control.RTDEControlInterface(host)
            except Exception as e:
                self._recv.disconnect()
                self._recv = None
                raise RobotConnectionError(f"ur driver: RTDE control connection to {host} failed: {e}") from e
        self._target, self._offset = None, np.inf

    def disconnect(self) -> None:
        for iface in (self._ctrl, self._recv):
            if iface is not None:
                try:
                    iface.disconnect()
                except Exception:
                    pass
        self._ctrl = self._recv = None

    def _c(self):
        if self._ctrl is None:
            raise RobotDriverError("ur driver: not connected for control (driver.control is false or not connected)")
        return self._ctrl

    def read(self) -> RobotObservation:
        if self._recv is None:
            raise RobotConnectionError("ur driver is not connected; call connect() first")
        r = self._recv
        if not r.isConnected():
            raise RobotConnectionError(f"ur driver: RTDE connection to {self.options['host']} lost")
        stamp = float(r.getTimestamp())
        # Date the sample by the controller's clock: local = robot time + the smallest offset seen so far
        # (clock offset plus the least latency), so a stream that stops updating ages in real time.
        self._offset = min(self._offset, time.monotonic() - stamp)
        tcp = np.asarray(r.getActualTCPPose(), float)
        R = rotvec_to_matrix(tcp[3:6])
        return RobotObservation(timestamp=stamp + self._offset, joint_pos=np.asarray(r.getActualQ(), float),
                                joint_vel=np.asarray(r.getActualQd(), float), ee_pos=tcp[:3],
                                ee_rot=rpy_from_matrix(R @ TOOL_DOWN.T), extra={"robot_time": np.array([stamp])})

    def send(self, command: Command) -> None:
        c, o, dt = self._c(), self.options, self.config.dt
        v = np.asarray(command.values, float)
        look, gain = float(o["servo_lookahead_time"]), float(o["servo_gain"])
        if command.mode == "joint_pos":
            ok = c.servoJ(v.tolist(), float(o["velocity"]), float(o["acceleration"]), dt, look, gain)
        elif command.mode == "joint_vel":
            ok = c.speedJ(v.tolist(), float(o["acceleration"]), 0.0)
        else:
            ee = self.config.ee
            assert ee is not None
            if self._target is None:
                tcp = np.asarray(self._recv.getActualTCPPose(), float)
                self._target = (tcp[:3], rotvec_to_matrix(tcp[3:6]))
            p, R = self._target
            p = np.clip(p + v[:3], ee.workspace_lower, ee.workspace_upper)
            if v.size == 6:
                R = matrix_from_rpy(v[3:6]) @ R
            self._target = (p, R)
            ok = c.servoL(np.r_[p, matrix_to_rotvec(R)].tolist(), float(o["velocity"]), float(o["acceleration"]),
                          dt, look, gain)
        if ok is False:
            raise RobotDriverError(f"ur driver: the controller rejected {command.mode} command {v.tolist()}")

    def stop(self) -> None:
        self._target = None
        if self._ctrl is None:
            return
        a = float(self.options["stop_deceleration"])
        if self.config.control_mode == "joint_vel":
            self._ctrl.speedStop(a)
        else:
            self._ctrl.servoStop(a)

    def reset(self, seed: int | None = None) -> None:
        self._target = None
        if self.config.home is not None:
            o = self.options
            self._c().moveJ(self.config.home.tolist(), float(o["velocity"]), float(o["acceleration"]))
