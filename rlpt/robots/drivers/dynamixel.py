"""`dynamixel` driver: Interbotix / Trossen WidowX 250 (and other Dynamixel X-series arms) over a U2D2 bus
through dynamixel-sdk (`pip install dynamixel-sdk`, extra ``dynamixel``), Protocol 2.0.

One servo per joint (shadow servos of the shoulder and elbow follow their primaries in firmware and are
not listed), plus an optional gripper servo in position mode. Per step: one `GroupSyncRead` of Present
Velocity + Present Position (addresses 128..135) and one `GroupSyncWrite` of Goal Position (116) or Goal
Velocity (104, ``joint_vel``). ``ee_delta`` uses the wx250s kinematics (product of exponentials, S7 of
the robot facts) with damped-least-squares IK, composing each delta onto the previous target pose as
BridgeData's WidowX stack does (translation in the base frame, rotation R = Rz(yaw) Ry(pitch) Rx(roll)
applied in the base frame, target kept in the workspace); IK targets are also kept within one step
(`RobotConfig.joint_step`) of the measured joints. ``ee_rot`` follows BridgeData (gripper pointing down =
zero). `stop()` holds the present position (position modes) or writes zero velocity.

Ticks <-> radians: rad = sign * (ticks + homing_offset - 2048) * 2 pi / 4096, with ``homing_offset`` and
``drive_mode`` (1: sign = -1; use it only when the servo's own Drive_Mode register does not already
reverse it) per joint from the config's ``calibration_file`` (JSON, LeRobot's MotorCalibration fields:
``{"waist": {"id": 1, "drive_mode": 0, "homing_offset": 0}, ...}``).

Options: ``port`` (required, e.g. /dev/ttyDXL), ``baudrate`` (1000000), ``motor_ids`` (joint name -> servo
ID; default WidowX 250 6DOF: waist 1, shoulder 2, elbow 4, forearm_roll 6, wrist_angle 7, wrist_rotate 8),
``gripper_id`` (9), ``gripper_open_ticks`` / ``gripper_closed_ticks`` (2700 / 1500), ``kinematics``
(``wx250s`` or null), ``disable_torque_on_disconnect`` (false: an arm without torque falls).
"""

from __future__ import annotations

import json
import time

import numpy as np

from rlpt.errors import RobotConfigError, RobotConnectionError, RobotDriverError
from rlpt.robots.drivers.base import (
    EE_DOWN,
    BaseDriver,
    Command,
    RobotObservation,
    gripper_from_unit,
    gripper_to_unit,
    matrix_from_rpy,
    require,
    rpy_from_matrix,
)

# X-series control table (protocol 2.0)
ADDR_OPERATING_MODE, ADDR_TORQUE_ENABLE = 11, 64
ADDR_GOAL_VELOCITY, ADDR_GOAL_POSITION = 104, 116
ADDR_PRESENT_VELOCITY, ADDR_PRESENT_POSITION = 128, 132
MODE_VELOCITY, MODE_POSITION = 1, 3
TICKS_PER_REV = 4096
VELOCITY_UNIT = 0.229 * 2 * np.pi / 60  # rad/s per Goal/Present Velocity unit
WX250S_IDS = {"waist": 1, "shoulder": 2, "elbow": 4, "forearm_roll": 6, "wrist_angle": 7, "wrist_rotate": 8}


# ------------------------------------------------------------------------------------ kinematics
def _skew(w: np.ndarray) -> np.ndarray:
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def _exp_twist(S: np.ndarray, th: float) -> np.ndarray:
    w, v = S[:3], S[3:]
    W = _skew(w)
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + np.sin(th) * W + (1 - np.cos(th)) * W @ W
    T[:3, 3] = (np.eye(3) * th + (1 - np.cos(th)) * W + (th - np.sin(th)) * W @ W) @ v
    return T


class PoEKinematics:
    """Forward kinematics and damped-least-squares IK from space-frame screw axes S (6, n) and home pose M."""

    def __init__(self, screws: np.ndarray, home: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        self.S, self.M = np.asarray(screws, float), np.asarray(home, float)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)

    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Tool position (3,) and rotation (3, 3) in the base frame."""
        T = np.eye(4)
        for i, th in enumerate(np.asarray(q, float)):
            T = T @ _exp_twist(self.S[:, i], th)
        T = T @ self.M
        return T[:3, 3], T[:3, :3]

    def jacobian(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Geometric Jacobian (6, n) of the tool point: rows (linear velocity, angular velocity)."""
        n = self.S.shape[1]
        Js = np.zeros((6, n))
        T = np.eye(4)
        for i in range(n):
            R, p = T[:3, :3], T[:3, 3]
            w, v = R @ self.S[:3, i], R @ self.S[3:, i]
            Js[:3, i], Js[3:, i] = w, _skew(p) @ w + v
            T = T @ _exp_twist(self.S[:, i], float(q[i]))
        pos, _ = self.fk(q)
        J = np.vstack([Js[3:] - _skew(pos) @ Js[:3], Js[:3]])
        return J, pos

    def ik(self, pos, R, q0, iters: int = 60, damping: float = 0.02, rot_weight: float = 0.3,
           tol: float = 1e-5) -> np.ndarray:
        q = np.array(q0, float)
        for _ in range(iters):
            J, p = self.jacobian(q)
            _, Rq = self.fk(q)
            ep = np.asarray(pos, float) - p
            er = 0.5 * sum(np.cross(Rq[:, i], R[:, i]) for i in range(3))
            if ep @ ep < tol**2 and er @ er < (10 * tol) ** 2:
                break
            Jw = np.vstack([J[:3], rot_weight * J[3:]])
            e = np.r_[ep, rot_weight * er]
            dq = Jw.T @ np.linalg.solve(Jw @ Jw.T + damping**2 * np.eye(6), e)
            q = np.clip(q + dq, self.lower, self.upper)
        return q


def wx250s_kinematics(lower, upper) -> PoEKinematics:
    """WidowX 250 6DOF (wx250s) screw axes and home pose (TCP = ee_gripper_link at q = 0: (0.458325, 0, 0.36065))."""
    S = np.array([[0, 0, 1, 0, 0, 0], [0, 1, 0, -0.11065, 0, 0], [0, 1, 0, -0.36065, 0, 0.04975],
                  [1, 0, 0, 0, 0.36065, 0], [0, 1, 0, -0.36065, 0, 0.29975], [1, 0, 0, 0, 0.36065, 0]], float).T
    M = np.eye(4)
    M[:3, 3] = [0.458325, 0.0, 0.36065]
    return PoEKinematics(S, M, lower, upper)


# ------------------------------------------------------------------------------------ driver
class DynamixelDriver(BaseDriver):
    """Dynamixel X-series arm on one Protocol 2.0 bus (see the module docstring)."""

    name = "dynamixel"
    OPTIONS = {"port": None, "baudrate": 1_000_000, "motor_ids": None, "gripper_id": 9, "gripper_open_ticks": 2700,
               "gripper_closed_ticks": 1500, "kinematics": "wx250s", "disable_torque_on_disconnect": False}

    def __init__(self, config) -> None:
        super().__init__(config)
        o, src = self.options, config.source
        if not o["port"]:
            raise RobotConfigError(f"{src}: driver.port: required for the dynamixel driver (e.g. /dev/ttyDXL)")
        ids = o["motor_ids"] or {n: WX250S_IDS[n] for n in config.joint_names if n in WX250S_IDS}
        missing = [n for n in config.joint_names if n not in ids]
        if missing or not config.joints:
            raise RobotConfigError(f"{src}: driver.motor_ids: expected a servo ID for every joint; missing {missing}")
        self.ids = [int(ids[n]) for n in config.joint_names]
        self.gripper_id = int(o["gripper_id"]) if config.gripper.enabled else None
        if o["kinematics"] not in ("wx250s", None):
            raise RobotConfigError(f"{src}: driver.kinematics: expected 'wx250s' or null; got {o['kinematics']!r}")
        self.kin = None
        if o["kinematics"] == "wx250s":
            if len(config.joints) != 6:
                raise RobotConfigError(f"{src}: driver.kinematics 'wx250s' needs the 6 wx250s joints; got "
                                       f"{len(config.joints)}")
            self.kin = wx250s_kinematics(config.joint_lower, config.joint_upper)
        if config.control_mode == "ee_delta" and self.kin is None:
            raise RobotConfigError(f"{src}: control_mode 'ee_delta' needs driver.kinematics: wx250s")
        self.offsets = np.zeros(len(self.ids))
        self.signs = np.ones(len(self.ids))
        if config.calibration_file is not None:
            self._load_calibration()
        self._port = self._ph = None
        self._reader = self._writer = None
        self._target: tuple[np.ndarray, np.ndarray] | None = None

    def _load_calibration(self) -> None:
        path = self.config.calibration_file
        assert path is not None
        if not path.is_file():
            raise RobotConfigError(f"{self.config.source}: calibration_file {str(path)!r} does not exist")
        try:
            cal = json.loads(path.read_text())
        except ValueError as e:
            raise RobotConfigError(f"{path}: not valid JSON: {e}") from e
        for i, name in enumerate(self.config.joint_names):
            c = cal.get(name)
            if not isinstance(c, dict):
                raise RobotConfigError(f"{path}: {name}: expected a mapping {{id, drive_mode, homing_offset}}")
            if "id" in c and int(c["id"]) != self.ids[i]:
                raise RobotConfigError(f"{path}: {name}.id: expected servo ID {self.ids[i]} (driver.motor_ids); "
                                       f"got {c['id']}")
            self.offsets[i] = float(c.get("homing_offset", 0))
            self.signs[i] = -1.0 if int(c.get("drive_mode", 0)) == 1 else 1.0

    # ---------------------------------------------------------------- conversions
    def ticks_to_rad(self, ticks) -> np.ndarray:
        return self.signs * (np.asarray(ticks, float) + self.offsets - 2048) * (2 * np.pi / TICKS_PER_REV)

    def rad_to_ticks(self, rad) -> np.ndarray:
        return np.round(np.asarray(rad, float) * self.signs * TICKS_PER_REV / (2 * np.pi) + 2048
                        - self.offsets).astype(np.int64)

    # ---------------------------------------------------------------- bus
    @property
    def is_connected(self) -> bool:
        return self._port is not None

    def _check(self, result: int, error: int, what: str) -> None:
        if result != self._dxl.COMM_SUCCESS:
            raise RobotDriverError(f"dynamixel driver: {what}: {self._ph.getTxRxResult(result)}")
        if error:
            raise RobotDriverError(f"dynamixel driver: {what}: {self._ph.getRxPacketError(error)}")

    def _write1(self, dxl_id: int, addr: int, value: int, what: str) -> None:
        result, error = self._ph.write1ByteTxRx(self._port, dxl_id, addr, value)
        self._check(result, error, f"{what} (servo {dxl_id})")

    def connect(self) -> None:
        dxl = require("dynamixel_sdk", "dynamixel-sdk", "dynamixel", self.name)
        self._dxl = dxl
        port, baud = str(self.options["port"]), int(self.options["baudrate"])
        ph = dxl.PortHandler(port)
        try:
            opened = ph.openPort() and ph.setBaudRate(baud)
        except Exception as e:
            raise RobotConnectionError(f"dynamixel driver: cannot open {port}: {e}") from e
        if not opened:
            raise RobotConnectionError(f"dynamixel driver: cannot open {port} at {baud} baud")
        self._port, self._ph = ph, dxl.PacketHandler(2.0)
        try:
            all_ids = self.ids + ([self.gripper_id] if self.gripper_id is not None else [])
            for i in all_ids:
                _, result, error = self._ph.ping(ph, i)
                if result != dxl.COMM_SUCCESS:
                    raise RobotConnectionError(f"dynamixel driver: servo {i} does not answer on {port}: "
                                               f"{self._ph.getTxRxResult(result)}")
            mode = MODE_VELOCITY if self.config.control_mode == "joint_vel" else MODE_POSITION
            for i in all_ids:  # operating mode can only change with torque off
                self._write1(i, ADDR_TORQUE_ENABLE, 0, "torque off")
                servo_mode = MODE_POSITION if i == self.gripper_id else mode
                self._write1(i, ADDR_OPERATING_MODE, servo_mode, "operating mode")
                # hold still when the torque comes on: goal = present position (or zero velocity)
                if servo_mode == MODE_POSITION:
                    present, result, error = self._ph.read4ByteTxRx(ph, i, ADDR_PRESENT_POSITION)
                    self._check(result, error, f"read present position (servo {i})")
                    result, error = self._ph.write4ByteTxRx(ph, i, ADDR_GOAL_POSITION, present)
                else:
                    result, error = self._ph.write4ByteTxRx(ph, i, ADDR_GOAL_VELOCITY, 0)
                self._check(result, error, f"write goal (servo {i})")
                self._write1(i, ADDR_TORQUE_ENABLE, 1, "torque on")
            self._reader = dxl.GroupSyncRead(ph, self._ph, ADDR_PRESENT_VELOCITY, 8)
            for i in all_ids:
                self._reader.addParam(i)
        except Exception:
            ph.closePort()
            self._port = None
            raise
        self._target = None

    def disconnect(self) -> None:
        if self._port is None:
            return
        try:
            if self.options["disable_torque_on_disconnect"]:
                for i in self.ids + ([self.gripper_id] if self.gripper_id is not None else []):
                    self._ph.write1ByteTxRx(self._port, i, ADDR_TORQUE_ENABLE, 0)
        finally:
            self._port.closePort()
            self._port = None

    def _sync_read(self) -> tuple[dict[int, int], dict[int, int]]:
        if self._port is None:
            raise RobotConnectionError("dynamixel driver is not connected; call connect() first")
        result = self._reader.txRxPacket()
        if result != self._dxl.COMM_SUCCESS:
            raise RobotDriverError(f"dynamixel driver: sync read failed: {self._ph.getTxRxResult(result)}")
        pos, vel = {}, {}
        for i in self._reader.data_dict:
            if not self._reader.isAvailable(i, ADDR_PRESENT_VELOCITY, 8):
                raise RobotDriverError(f"dynamixel driver: no data from servo {i}")
            vel[i] = int(np.int32(np.uint32(self._reader.getData(i, ADDR_PRESENT_VELOCITY, 4))))
            pos[i] = int(np.int32(np.uint32(self._reader.getData(i, ADDR_PRESENT_POSITION, 4))))
        return pos, vel

    def _sync_write(self, addr: int, values: dict[int, int]) -> None:
        w = self._dxl.GroupSyncWrite(self._port, self._ph, addr, 4)
        for i, v in values.items():
            u = int(np.uint32(np.int32(v)))
            w.addParam(i, [u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF, (u >> 24) & 0xFF])
        result = w.txPacket()
        if result != self._dxl.COMM_SUCCESS:
            raise RobotDriverError(f"dynamixel driver: sync write to address {addr} failed: "
                                   f"{self._ph.getTxRxResult(result)}")

    # ---------------------------------------------------------------- protocol
    def _joints(self) -> tuple[np.ndarray, np.ndarray, float | None, float]:
        pos, vel = self._sync_read()
        stamp = time.monotonic()
        q = self.ticks_to_rad([pos[i] for i in self.ids])
        dq = self.signs * np.array([vel[i] for i in self.ids], float) * VELOCITY_UNIT
        g = None
        if self.gripper_id is not None:
            o = self.options
            closed, opened = o["gripper_closed_ticks"], o["gripper_open_ticks"]
            u = (pos[self.gripper_id] - closed) / (opened - closed)
            g = gripper_from_unit(self.config, u)
        return q, dq, g, stamp

    def read(self) -> RobotObservation:
        q, dq, g, stamp = self._joints()
        obs = RobotObservation(timestamp=stamp, joint_pos=q, joint_vel=dq, gripper=g)
        if self.kin is not None:
            p, R = self.kin.fk(q)
            obs.ee_pos, obs.ee_rot = p, rpy_from_matrix(R @ EE_DOWN.T)
        return obs

    def send(self, command: Command) -> None:
        v = np.asarray(command.values, float)
        goals: dict[int, int] = {}
        if command.mode == "joint_vel":
            units = np.round(self.signs * v / VELOCITY_UNIT).astype(np.int64)
            self._sync_write(ADDR_GOAL_VELOCITY, dict(zip(self.ids, units.tolist(), strict=True)))
        else:
            if command.mode == "ee_delta":
                v = self._ik_step(v)
            goals.update(zip(self.ids, self.rad_to_ticks(v).tolist(), strict=True))
        if command.gripper is not None and self.gripper_id is not None:
            o = self.options
            u = gripper_to_unit(self.config, command.gripper)
            goals[self.gripper_id] = int(round(o["gripper_closed_ticks"] + u * (o["gripper_open_ticks"]
                                                                                 - o["gripper_closed_ticks"])))
        if goals:
            self._sync_write(ADDR_GOAL_POSITION, goals)

    def _ik_step(self, delta: np.ndarray) -> np.ndarray:
        assert self.kin is not None and self.config.ee is not None
        ee, cfg = self.config.ee, self.config
        q, _, _, _ = self._joints()
        p, R = self._target if self._target is not None else self.kin.fk(q)
        p = np.clip(p + delta[:3], ee.workspace_lower, ee.workspace_upper)
        if delta.size == 6:
            R = matrix_from_rpy(delta[3:6]) @ R
        self._target = (p, R)
        q_goal = self.kin.ik(p, R, q)
        step = cfg.joint_step
        return np.clip(np.clip(q_goal, cfg.joint_lower, cfg.joint_upper), q - step, q + step)

    def stop(self) -> None:
        self._target = None
        if self._port is None:
            return
        if self.config.control_mode == "joint_vel":
            self._sync_write(ADDR_GOAL_VELOCITY, dict.fromkeys(self.ids, 0))
        else:
            pos, _ = self._sync_read()
            self._sync_write(ADDR_GOAL_POSITION, {i: pos[i] for i in self.ids})

    def reset(self, seed: int | None = None) -> None:
        """Move to the config's ``home`` joints in steps of at most `joint_step` (one per control period)."""
        self._target = None
        home = self.config.home
        if home is None or self.config.control_mode == "joint_vel":
            return
        step = self.config.joint_step
        for _ in range(1000):
            q, _, _, _ = self._joints()
            if np.all(np.abs(home - q) < 1e-2):
                return
            self._sync_write(ADDR_GOAL_POSITION, dict(zip(self.ids, self.rad_to_ticks(
                np.clip(home, q - step, q + step)).tolist(), strict=True)))
            time.sleep(self.config.dt)
        raise RobotDriverError("dynamixel driver: did not reach the home pose")
