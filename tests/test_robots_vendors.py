"""Vendor drivers against protocol doubles: dynamixel-sdk against a Protocol 2.0 servo-bus emulator on a pty,
ur_rtde's receive interface against an RTDE server double (its control interface replaced by a fake), and
franky against fakes of its Robot/Gripper (the real franky motion/pose types) or franky-sim when installed.

Run as ``python tests/test_robots_vendors.py rtde-double HOST`` this file serves the RTDE double (it must
live in another process: ur_rtde's constructor holds the GIL while it waits for the server)."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ RTDE double
RTDE_TYPES = {"timestamp": ("DOUBLE", ">d"), "actual_q": ("VECTOR6D", ">6d"), "actual_qd": ("VECTOR6D", ">6d"),
              "actual_TCP_pose": ("VECTOR6D", ">6d")}
RTDE_STATE = {"actual_q": [0.1, -1.2, 1.3, -1.6, -1.5, 0.2], "actual_qd": [0.0, 0.01, 0.0, 0.0, 0.0, -0.01],
              "actual_TCP_pose": [0.3, -0.1, 0.4, np.pi, 0.0, 0.0]}


def serve_rtde(host: str, rate_hz: float = 200.0) -> None:
    """RTDE v2 on host:30004: protocol version, controller version, output recipe, start/pause, data stream.
    Reads commands on stdin: 'freeze' stops the data stream (a stalled controller)."""
    srv = socket.create_server((host, 30004))
    frozen = threading.Event()
    threading.Thread(target=lambda: [frozen.set() for line in sys.stdin if line.strip() == "freeze"],
                     daemon=True).start()
    print("READY", flush=True)

    def recv(c, n):
        b = b""
        while len(b) < n:
            chunk = c.recv(n - len(b))
            if not chunk:
                raise ConnectionError
            b += chunk
        return b

    def send(c, kind, payload=b""):
        c.sendall(struct.pack(">HB", 3 + len(payload), kind) + payload)

    while True:
        c, _ = srv.accept()
        names, streaming, t0 = [], False, time.monotonic()
        c.settimeout(1.0 / rate_hz)
        try:
            while True:
                try:
                    size, kind = struct.unpack(">HB", recv(c, 3))
                    body = recv(c, size - 3)
                    if kind == ord("V"):
                        send(c, kind, b"\x01")
                    elif kind == ord("v"):
                        send(c, kind, struct.pack(">IIII", 5, 15, 0, 0))
                    elif kind == ord("O"):  # ">d frequency" + "name,name,...," (trailing comma)
                        names = [n for n in body[8:].decode().split(",") if n]
                        types = [RTDE_TYPES[n][0] if n in RTDE_TYPES else "NOT_FOUND" for n in names]
                        send(c, kind, b"\x01" + ",".join(types).encode())
                    elif kind in (ord("S"), ord("P")):
                        streaming = kind == ord("S")
                        send(c, kind, b"\x01")
                    else:
                        send(c, kind, b"\x00")
                except TimeoutError:
                    pass
                if streaming and not frozen.is_set():
                    state = {**RTDE_STATE, "timestamp": [time.monotonic() - t0]}
                    send(c, ord("U"), b"\x01" + b"".join(struct.pack(RTDE_TYPES[n][1], *state[n]) for n in names))
        except (ConnectionError, OSError):
            c.close()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "rtde-double":
    serve_rtde(sys.argv[2])
    sys.exit(0)

import pytest  # noqa: E402
import yaml  # noqa: E402

from rlpt.errors import RobotConnectionError, RobotDependencyError, RobotDriverError  # noqa: E402
from rlpt.robots import Command, RobotConfig, make_robot_env  # noqa: E402
from rlpt.robots.drivers.base import EE_DOWN, matrix_from_rpy, quat_xyzw_from_matrix, rpy_from_matrix  # noqa: E402


def config_dict(name: str) -> dict:
    return yaml.safe_load((ROOT / "robot_configs" / name).read_text())


# ------------------------------------------------------------------------------------------ Dynamixel bus
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


CRC = _crc_table()


def crc16(data: bytes) -> int:
    acc = 0
    for b in data:
        acc = ((acc << 8) ^ CRC[((acc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return acc


class DxlBus:
    """Dynamixel Protocol 2.0 bus of X-series servos on a pty: PING, READ, WRITE, SYNC_READ, SYNC_WRITE.
    Present Position moves toward Goal Position (position mode) or at Goal Velocity (velocity mode) while the
    torque is on; the operating mode can only change with the torque off (else an access error)."""

    SPEED = 8000.0  # ticks/s in position mode

    def __init__(self, servos: dict[int, int], start_ticks: dict[int, int] | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.tables: dict[int, bytearray] = {}
        self.stamp: dict[int, float] = {}
        for i, model in servos.items():
            t = bytearray(256)
            t[0:2], t[6], t[7], t[8], t[11] = model.to_bytes(2, "little"), 45, i, 3, 3
            ticks = (start_ticks or {}).get(i, 2048)
            t[116:120] = t[132:136] = ticks.to_bytes(4, "little", signed=True)
            self.tables[i], self.stamp[i] = t, time.monotonic()
        self.writes: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def get(self, i: int, addr: int, n: int = 4) -> int:
        self._physics(i)
        return int.from_bytes(self.tables[i][addr:addr + n], "little", signed=n == 4)

    def set(self, i: int, addr: int, value: int, n: int = 4) -> None:
        self.tables[i][addr:addr + n] = int(value).to_bytes(n, "little", signed=n == 4)

    def _physics(self, i: int) -> None:
        t, now = self.tables[i], time.monotonic()
        dt, self.stamp[i] = now - self.stamp[i], now
        pos = int.from_bytes(t[132:136], "little", signed=True)
        if not t[64]:
            t[128:132] = (0).to_bytes(4, "little")
            return
        if t[11] == 1:
            vel = int.from_bytes(t[104:108], "little", signed=True)
            new = pos + vel * 0.229 / 60 * 4096 * dt
        else:
            goal = int.from_bytes(t[116:120], "little", signed=True)
            new = pos + float(np.clip(goal - pos, -self.SPEED * dt, self.SPEED * dt))
            vel = round((new - pos) / max(dt, 1e-6) * 60 / 4096 / 0.229)
        t[132:136] = int(round(new)).to_bytes(4, "little", signed=True)
        t[128:132] = int(vel).to_bytes(4, "little", signed=True)

    def _status(self, i: int, params: bytes = b"", err: int = 0) -> bytes:
        body = bytes([0x55, err]) + params
        body = body.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")
        pkt = b"\xff\xff\xfd\x00" + bytes([i]) + (len(body) + 2).to_bytes(2, "little") + body
        return pkt + crc16(pkt).to_bytes(2, "little")

    def _handle(self, i: int, inst: int, p: bytes) -> bytes:
        ids = list(self.tables) if i == 0xFE else [i] if i in self.tables else []
        out = b""
        if inst == 0x01:  # PING
            for j in ids:
                out += self._status(j, bytes(self.tables[j][0:2]) + bytes([self.tables[j][6]]))
        elif inst == 0x02 and ids:  # READ
            addr, n = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little")
            self._physics(ids[0])
            out = self._status(ids[0], bytes(self.tables[ids[0]][addr:addr + n]))
        elif inst == 0x03 and ids:  # WRITE
            addr, data = int.from_bytes(p[0:2], "little"), p[2:]
            for j in ids:
                self._physics(j)
                if addr == 11 and self.tables[j][64]:
                    out += self._status(j, err=0x07)  # access error: mode change with torque on
                    continue
                self.tables[j][addr:addr + len(data)] = data
                self.writes.append((j, addr, data))
                if i != 0xFE:
                    out += self._status(j)
        elif inst == 0x82:  # SYNC_READ
            addr, n = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little")
            for j in p[4:]:
                if j in self.tables:
                    self._physics(j)
                    out += self._status(j, bytes(self.tables[j][addr:addr + n]))
        elif inst == 0x83:  # SYNC_WRITE (no reply)
            addr, n = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little")
            for k in range(4, len(p), n + 1):
                j, data = p[k], p[k + 1:k + 1 + n]
                if j in self.tables:
                    self._physics(j)
                    self.tables[j][addr:addr + n] = data
                    self.writes.append((j, addr, data))
        elif ids:
            out = self._status(ids[0], err=0x02)  # instruction error
        return out

    def _loop(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            buf += os.read(self.master, 4096)
            while True:
                k = buf.find(b"\xff\xff\xfd\x00")
                if k < 0 or len(buf) < k + 7:
                    break
                buf = buf[k:]
                total = 7 + int.from_bytes(buf[5:7], "little")
                if len(buf) < total:
                    break
                pkt, buf = buf[:total], buf[total:]
                if crc16(pkt[:-2]) != int.from_bytes(pkt[-2:], "little"):
                    continue
                body = pkt[7:-2].replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")
                reply = self._handle(pkt[4], body[0], body[1:])
                if reply:
                    os.write(self.master, reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        os.close(self.master)
        os.close(self.slave)


def until(pred, timeout: float = 1.0) -> bool:
    """Sync writes get no reply: wait until the emulator has applied them."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


WX250S = {1: 1020, 2: 1020, 4: 1020, 6: 1020, 7: 1020, 8: 1060, 9: 1060}  # joints + gripper (no shadows)


def widowx(mode: str = "joint_pos", port: str = "/dev/null", **kw) -> RobotConfig:
    d = config_dict("widowx250_bridge.yaml")
    d["driver"]["port"] = port
    d["control_mode"] = mode
    d.pop("cameras")
    d["policy"]["observation"] = {"state": ["joint_pos", "ee_pos", "ee_rot", "gripper"]}
    if mode != "ee_delta":
        d["policy"].pop("action")
    d.update(kw)
    return RobotConfig.from_dict(d, source="widowx-test")


@pytest.fixture
def dxl():
    pytest.importorskip("dynamixel_sdk")
    bus = DxlBus(WX250S)
    yield bus
    bus.close()


def test_wx250s_kinematics():
    from rlpt.robots.drivers.dynamixel import wx250s_kinematics

    cfg = widowx()
    kin = wx250s_kinematics(cfg.joint_lower, cfg.joint_upper)
    p, R = kin.fk(np.zeros(6))
    np.testing.assert_allclose(p, [0.458325, 0.0, 0.36065], atol=1e-9)  # the PoE home pose M
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    p, R = kin.fk(cfg.home)  # BridgeData's neutral joints put the tool inside the eval workspace
    assert np.all(p > cfg.ee.workspace_lower) and np.all(p < cfg.ee.workspace_upper)
    rng = np.random.default_rng(0)
    if pytest.importorskip("mujoco"):  # same chain as rlpt's tabletop arm (built from the same numbers)
        import mujoco

        from rlpt.envs.tabletop import TabletopEnv

        env = TabletopEnv("reach")
        for q in rng.uniform(-1.0, 1.0, (5, 6)):
            env.data.qpos[env._arm_qadr] = q
            mujoco.mj_kinematics(env.model, env.data)
            p, R = kin.fk(q)
            np.testing.assert_allclose(p, env.data.site_xpos[env._ee_sid], atol=1e-6)
            np.testing.assert_allclose(rpy_from_matrix(R @ EE_DOWN.T), rpy_from_matrix(
                env.data.site_xmat[env._ee_sid].reshape(3, 3) @ EE_DOWN.T), atol=1e-6)
    for _ in range(5):
        q = cfg.home + rng.uniform(-0.3, 0.3, 6)
        pt, Rt = kin.fk(q)
        q_ik = kin.ik(pt, Rt, cfg.home, iters=200)
        p_ik, R_ik = kin.fk(q_ik)
        np.testing.assert_allclose(p_ik, pt, atol=2e-4)
        np.testing.assert_allclose(R_ik, Rt, atol=2e-3)


def test_dynamixel_driver_against_bus_emulator(dxl):
    from rlpt.robots.drivers.dynamixel import DynamixelDriver

    dxl.set(1, 132, 2048 + 512)  # waist at +pi/4
    cfg = widowx(port=dxl.port)
    drv = DynamixelDriver(cfg)
    drv.connect()
    assert all(dxl.get(i, 64, 1) == 1 and dxl.get(i, 11, 1) == 3 for i in WX250S)  # torque on, position mode
    obs = drv.read()
    assert obs.joint_pos[0] == pytest.approx(np.pi / 4) and np.allclose(obs.joint_pos[1:], 0.0)
    p, _ = drv.kin.fk(obs.joint_pos)
    np.testing.assert_allclose(obs.ee_pos, p)
    target = np.array([np.pi / 4, 0.1, -0.1, 0.0, 0.2, 0.0])
    drv.send(Command("joint_pos", target, 0.0))
    assert until(lambda: dxl.get(2, 116) == 2048 + round(0.1 * 4096 / (2 * np.pi)) and dxl.get(9, 116) == 1500)
    time.sleep(0.1)
    obs = drv.read()
    np.testing.assert_allclose(obs.joint_pos, target, atol=2 * np.pi / 4096)
    assert obs.gripper == pytest.approx(0.0, abs=1e-3)
    dxl.set(2, 116, 3000)  # something moves the goal; stop must hold the present position
    drv.stop()
    assert until(lambda: dxl.get(2, 116) < 3000)
    time.sleep(0.05)
    held = dxl.get(2, 132)
    time.sleep(0.05)
    assert dxl.get(2, 132) == held < 2300  # stopped near where it was, far from the stray goal
    drv.disconnect()
    assert not drv.is_connected


def test_dynamixel_env_ee_delta_and_home(dxl):
    cfg = widowx(mode="ee_delta", port=dxl.port, control_rate_hz=20,
                 safety={"watchdog_timeout_s": 1.0, "max_observation_age_s": 0.5})
    env = make_robot_env(cfg)  # realtime: the emulated servos need the control period to move
    obs, _ = env.reset()  # moves from the zero pose to home, one joint_step per period
    np.testing.assert_allclose(obs[:6], cfg.home, atol=1e-2)
    ee0 = obs[6:9].copy()
    for _ in range(4):
        obs, _, _, trunc, info = env.step([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
        assert info["fault"] is None and not trunc
    time.sleep(0.1)
    obs = env.driver.read()
    np.testing.assert_allclose(obs.ee_pos - ee0, [0.04, 0.0, 0.0], atol=4e-3)  # IK tracked 4 x 1 cm along x
    assert obs.gripper == pytest.approx(1.0, abs=1e-3)
    env.close()


def test_dynamixel_velocity_mode_and_missing_servo(dxl):
    from rlpt.robots.drivers.dynamixel import VELOCITY_UNIT, DynamixelDriver

    drv = DynamixelDriver(widowx(mode="joint_vel", port=dxl.port, max_relative_target=None))
    drv.connect()
    assert all(dxl.get(i, 11, 1) == 1 for i in (1, 2, 4, 6, 7, 8)) and dxl.get(9, 11, 1) == 3
    drv.send(Command("joint_vel", np.array([0.5, 0, 0, 0, 0, -0.5]), 1.0))
    units = round(0.5 / VELOCITY_UNIT)
    assert until(lambda: dxl.get(1, 104) == units and dxl.get(8, 104) == -units)
    time.sleep(0.1)
    assert drv.read().joint_vel[0] == pytest.approx(0.5, rel=0.05)
    drv.stop()
    assert until(lambda: all(dxl.get(i, 104) == 0 for i in (1, 2, 4, 6, 7, 8)))
    drv.disconnect()
    bus = DxlBus({i: m for i, m in WX250S.items() if i != 9})  # the gripper servo is unplugged
    try:
        with pytest.raises(RobotConnectionError, match="servo 9 does not answer"):
            DynamixelDriver(widowx(port=bus.port)).connect()
    finally:
        bus.close()


def test_dynamixel_calibration_file(tmp_path):
    from rlpt.robots.drivers.dynamixel import DynamixelDriver

    names = widowx().joint_names
    cal = {n: {"id": i, "drive_mode": 0, "homing_offset": 0} for n, i in zip(names, [1, 2, 4, 6, 7, 8], strict=True)}
    cal["elbow"].update(drive_mode=1, homing_offset=100)
    (tmp_path / "cal.json").write_text(__import__("json").dumps(cal))
    drv = DynamixelDriver(widowx(calibration_file=str(tmp_path / "cal.json")))
    q = drv.ticks_to_rad([2048, 2048, 2048, 2048, 2048, 2048])
    assert q[2] == pytest.approx(-100 * 2 * np.pi / 4096) and q[0] == 0.0
    np.testing.assert_array_equal(drv.rad_to_ticks(q), [2048] * 6)
    cal["elbow"]["id"] = 5
    (tmp_path / "cal.json").write_text(__import__("json").dumps(cal))
    with pytest.raises(Exception, match=r"elbow.id: expected servo ID 4"):
        DynamixelDriver(widowx(calibration_file=str(tmp_path / "cal.json")))


# ------------------------------------------------------------------------------------------ UR / RTDE
@pytest.fixture
def rtde_double():
    pytest.importorskip("rtde_receive")
    for _ in range(20):
        host = f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"
        with socket.socket() as s:
            try:
                s.bind((host, 30004))
                break
            except OSError:
                continue
    proc = subprocess.Popen([sys.executable, __file__, "rtde-double", host], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        yield host, proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def ur5e(host: str, **driver) -> RobotConfig:
    d = config_dict("ur5e.yaml")
    d["driver"].update(host=host, **driver)
    return RobotConfig.from_dict(d, source="ur5e-test")


class FakeRTDEControl:
    """Stands in for rtde_control.RTDEControlInterface (its real peer needs URScript and the dashboard)."""

    instances: list = []

    def __init__(self, host: str) -> None:
        self.host, self.calls = host, []
        FakeRTDEControl.instances.append(self)

    def __getattr__(self, name):
        if name in ("servoJ", "speedJ", "servoL", "servoStop", "speedStop", "moveJ", "disconnect"):
            return lambda *a: self.calls.append((name, a)) or True
        raise AttributeError(name)


def test_ur_driver_reads_rtde_double(rtde_double):
    from rlpt.robots.drivers.ur import URDriver

    host, proc = rtde_double
    drv = URDriver(ur5e(host, control=False))
    drv.connect()
    time.sleep(0.05)
    obs = drv.read()
    np.testing.assert_allclose(obs.joint_pos, RTDE_STATE["actual_q"])
    np.testing.assert_allclose(obs.joint_vel, RTDE_STATE["actual_qd"])
    np.testing.assert_allclose(obs.ee_pos, [0.3, -0.1, 0.4])
    np.testing.assert_allclose(obs.ee_rot, 0.0, atol=1e-9)  # TCP rotation vector (pi, 0, 0): pointing down
    assert obs.age() < 0.1
    with pytest.raises(RobotDriverError, match="not connected for control"):
        drv.send(Command("ee_delta", np.zeros(6)))
    proc.stdin.write("freeze\n")
    proc.stdin.flush()
    time.sleep(0.35)
    assert drv.read().age() > 0.25  # the controller's clock stopped: the observation ages (RobotEnv stops)
    drv.disconnect()


def test_ur_driver_commands(rtde_double, monkeypatch):
    import rtde_control

    from rlpt.robots.drivers.ur import URDriver, matrix_to_rotvec, rotvec_to_matrix

    host, _ = rtde_double
    monkeypatch.setattr(rtde_control, "RTDEControlInterface", FakeRTDEControl)
    cfg = ur5e(host)
    env = make_robot_env(cfg, realtime=False)
    env.reset()
    ctrl = FakeRTDEControl.instances[-1]
    assert ctrl.calls[0][0] == "moveJ" and ctrl.calls[0][1][0] == pytest.approx(cfg.home.tolist())
    _, _, _, _, info = env.step([0.05, 0.0, 0.0, 0.0, 0.0, 0.5])  # clipped to 2 cm and 0.1 rad per step
    name, (pose, vel, acc, t, look, gain) = ctrl.calls[-1]
    assert name == "servoL" and t == pytest.approx(0.1) and look == 0.1 and gain == 300
    np.testing.assert_allclose(pose[:3], [0.32, -0.1, 0.4])
    np.testing.assert_allclose(rotvec_to_matrix(pose[3:]), matrix_from_rpy([0, 0, 0.1]) @ rotvec_to_matrix(
        [np.pi, 0, 0]), atol=1e-9)
    assert info["clipped"] == ["action_space"]  # the policy box is the command box here
    env.close()
    assert ("servoStop", (2.0,)) in ctrl.calls
    drv = URDriver(RobotConfig.from_dict({**config_dict("ur5e.yaml"), "control_mode": "joint_pos",
                                          "driver": {"name": "ur", "host": host}, "policy": {}}))
    drv.connect()
    drv.send(Command("joint_pos", np.array(RTDE_STATE["actual_q"])))
    assert FakeRTDEControl.instances[-1].calls[-1][0] == "servoJ"
    drv.disconnect()
    R = matrix_from_rpy([0.3, -0.2, 2.9])
    np.testing.assert_allclose(rotvec_to_matrix(matrix_to_rotvec(R)), R, atol=1e-9)


# ------------------------------------------------------------------------------------------ Franka / franky
class FakeFrankaRobot:
    """Stands in for franky.Robot: state as franky types, motions recorded (the real franky motion objects)."""

    instances: list = []

    def __init__(self, host, realtime_config=None):
        import franky

        self.host, self.realtime_config, self.moves, self.stops = host, realtime_config, [], 0
        self.relative_dynamics_factor = 1.0
        self.q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
        pose = franky.Affine([0.55, 0.0, 0.52], [1.0, 0.0, 0.0, 0.0])  # hand pointing down (x, y, z, w)
        self.current_cartesian_state = type("S", (), {"pose": type("P", (), {"end_effector_pose": pose})()})()
        FakeFrankaRobot.instances.append(self)

    @property
    def current_joint_state(self):
        import franky

        return franky.JointState(self.q, np.zeros(7))

    def recover_from_errors(self):
        return True

    def move(self, motion, asynchronous=False):
        self.moves.append((motion, asynchronous))

    def stop(self):
        self.stops += 1


class FakeGripper:
    def __init__(self, host):
        self.width, self.max_width, self.calls = 0.08, 0.08, []

    def move_async(self, width, speed):
        self.calls.append((width, speed))


@pytest.fixture
def fake_franky(monkeypatch):
    franky = pytest.importorskip("franky")
    monkeypatch.setattr(franky, "Robot", FakeFrankaRobot)
    monkeypatch.setattr(franky, "Gripper", FakeGripper)
    return franky


def franka(name: str, **kw) -> RobotConfig:
    d = config_dict(name)
    d.pop("cameras", None)
    d["policy"]["observation"].pop("images", None)
    d.update(kw)
    return RobotConfig.from_dict(d, source=name)


def test_franka_driver_ee_delta(fake_franky):
    env = make_robot_env(franka("franka_panda.yaml"), realtime=False)
    obs, _ = env.reset()
    robot = FakeFrankaRobot.instances[-1]
    assert robot.host == "172.16.0.2" and robot.realtime_config == fake_franky.RealtimeConfig.Enforce
    assert robot.relative_dynamics_factor == 0.1
    home_motion, asynchronous = robot.moves[0]
    assert not asynchronous and isinstance(home_motion, fake_franky.JointWaypointMotion)
    np.testing.assert_allclose(home_motion.waypoints[0].target.position, env.config.home)
    np.testing.assert_allclose(obs[7:13], [0.55, 0.0, 0.52, 0.0, 0.0, 0.0], atol=1e-9)  # ee_pos, ee_rot
    assert obs[13] == pytest.approx(1.0)  # gripper open (0.08 m)
    env.step([0.01, 0.0, -0.05, 0.0, 0.0, 0.05, 0.5])
    motion, asynchronous = robot.moves[-1]
    assert asynchronous and isinstance(motion, fake_franky.CartesianMotion)
    pose = motion.target.pose.end_effector_pose
    d = np.array([0.01, 0.0, -0.02])  # z clipped to 2 cm per step, then to 0.3 m/s / 15 Hz = 2 cm in norm
    np.testing.assert_allclose(pose.translation, [0.55, 0.0, 0.52] + d * 0.02 / np.linalg.norm(d))
    np.testing.assert_allclose(np.abs(pose.quaternion), np.abs(quat_xyzw_from_matrix(
        matrix_from_rpy([0, 0, 0.05]) @ np.diag([1.0, -1.0, -1.0]))), atol=1e-9)
    assert env.driver._gripper.calls == [(pytest.approx(0.04), 0.05)]
    env.close()
    assert robot.stops >= 1


def test_franka_driver_joint_modes(fake_franky):
    from rlpt.robots.drivers.franka import FrankaDriver

    cfg = franka("franka_fr3.yaml")
    drv = FrankaDriver(cfg)
    drv.connect()
    q = FakeFrankaRobot.instances[-1].q + 0.05
    drv.send(Command("joint_pos", q, 1.0))
    motion, _ = FakeFrankaRobot.instances[-1].moves[-1]
    np.testing.assert_allclose(motion.waypoints[0].target.position, q)
    drv = FrankaDriver(franka("franka_fr3.yaml", control_mode="joint_vel", policy={}))
    drv.connect()
    drv.send(Command("joint_vel", np.full(7, 0.1), None))
    motion, _ = FakeFrankaRobot.instances[-1].moves[-1]
    assert isinstance(motion, fake_franky.JointVelocityMotion)


def test_franka_connection_failure(monkeypatch):
    franky = pytest.importorskip("franky")

    def refuse(host, realtime_config=None):
        raise franky.NetworkException("libfranka: Connection to FCI refused")

    monkeypatch.setattr(franky, "Robot", refuse)
    from rlpt.robots.drivers.franka import FrankaDriver

    with pytest.raises(RobotConnectionError, match="cannot connect to 172.16.0.2.*refused"):
        FrankaDriver(franka("franka_fr3.yaml")).connect()
    monkeypatch.setitem(sys.modules, "franky", None)
    with pytest.raises(RobotDependencyError, match="franky-control"):
        FrankaDriver(franka("franka_fr3.yaml")).connect()


FRANKY_SIM_SERVER = r'''
import signal, socket, sys
import franky_sim.franka_server as fs
from franky_sim import SimulationServer
from franky_sim.mujoco_simulator import MujocoSimulator

def _setup_udp_connection(self, network_udp_port):  # upstream binds 0.0.0.0; stay on loopback
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((self.hostname, 0))
    s.setblocking(False)
    self._FrankaServer__client_udp_port = network_udp_port
    self._FrankaServer__udp_socket = s
    self._FrankaServer__udp_receiver = fs.NonBlockingReceiver(s)
    self._FrankaServer__message_id = 0
fs.FrankaServer._setup_udp_connection = _setup_udp_connection
stop = False
def _sig(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, _sig)
with MujocoSimulator(enable_visualization=False) as sim:
    sim.add_robot()
    with SimulationServer(sim, hostname_candidates=[sys.argv[1]]) as server:
        print("READY", flush=True)
        while not stop:
            server.run_once(realtime=1.0)
'''


FRANKY_SIM_CLIENT = r'''
import subprocess, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from tests.test_robots_vendors import franka
from rlpt.robots import make_robot_env

server = subprocess.Popen([sys.executable, sys.argv[1], "127.0.0.1"], stdout=subprocess.PIPE, text=True)
try:
    assert server.stdout.readline().strip() == "READY"
    slow_ok = {"watchdog_timeout_s": 60.0, "max_observation_age_s": 10.0, "on_fault": "stop"}  # loaded CI machines
    cfg = franka("franka_fr3.yaml", driver={"name": "franka", "host": "127.0.0.1", "realtime": False,
                                            "relative_dynamics_factor": 0.5}, safety=slow_ok)
    env = make_robot_env(cfg, realtime=False)
    obs, _ = env.reset()  # moves home (joint 7 +0.785, as franky-sim starts)
    q0 = obs[:7].copy()
    target = q0 + np.array([0.05, 0, 0, 0, 0, 0, -0.05])
    _, _, _, _, info = env.step(np.r_[target, 1.0])
    assert info["fault"] is None, info
    env.driver._robot.join_motion()
    time.sleep(0.3)
    np.testing.assert_allclose(env.driver.read().joint_pos, target, atol=0.03)
    env.close()
    panda = franka("franka_panda.yaml", home=None, driver={"name": "franka", "host": "127.0.0.1", "realtime": False,
                                                           "relative_dynamics_factor": 0.5}, safety=slow_ok)
    env = make_robot_env(panda, realtime=False)
    obs, _ = env.reset()
    ee0 = obs[7:10].copy()
    assert 0.0 < obs[13] <= 1.0  # the gripper server answers
    _, _, _, _, info = env.step([0.02, 0.0, -0.01, 0.0, 0.0, 0.0, 1.0])
    assert info["fault"] is None, info
    env.driver._robot.join_motion()
    time.sleep(0.3)
    np.testing.assert_allclose(env.driver.read().ee_pos - ee0, [0.02, 0.0, -0.01], atol=5e-3)
    env.close()
    print("FRANKY-SIM OK", flush=True)
finally:
    server.terminate()
    server.wait(timeout=10)
'''


@pytest.mark.slow
def test_franka_driver_against_franky_sim(tmp_path):
    """franky-control drives franky-sim over 127.0.0.1 inside a network namespace of the test's own
    (`unshare -rn`: libfranka binds its UDP state socket on all interfaces; the namespace has only loopback)."""
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (unshare -rn: {probe.stderr.decode().strip()})")
    server = tmp_path / "franky_sim_server.py"
    server.write_text(FRANKY_SIM_SERVER)
    client = tmp_path / "franky_sim_client.py"
    client.write_text(FRANKY_SIM_CLIENT)
    cmd = f"ip link set lo up && exec {sys.executable} {client} {server} {ROOT}"
    res = subprocess.run(["unshare", "-rn", "sh", "-c", cmd], capture_output=True, text=True, timeout=180,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])})
    assert res.returncode == 0 and "FRANKY-SIM OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
