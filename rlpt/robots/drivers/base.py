"""The `RobotDriver` protocol, the observation/command types every driver speaks, and `make_driver`.

A driver moves one robot: `connect()` / `disconnect()`, `read()` an observation stamped with the local
`time.monotonic()` time it was measured, `send(command)` (already clipped to the config's limits by
`RobotEnv` or the remote server), `stop()` (hold still now: stop motions, zero velocities) and
`reset(seed)` (start an episode: the simulator resets its scene, real arms go to the config's ``home``).
Drivers never clip for safety themselves beyond what their hardware needs; the limits live in one place
(`rlpt.robots.env.clip_command`).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rlpt.errors import RobotConfigError, RobotDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from rlpt.robots.config import RobotConfig

DRIVERS = {
    "sim": "rlpt.robots.drivers.sim:SimDriver",
    "remote": "rlpt.robots.drivers.remote:RemoteDriver",
    "franka": "rlpt.robots.drivers.franka:FrankaDriver",
    "ur": "rlpt.robots.drivers.ur:URDriver",
    "dynamixel": "rlpt.robots.drivers.dynamixel:DynamixelDriver",
}


@dataclass
class RobotObservation:
    """One measurement of the robot. `timestamp`: `time.monotonic()` (this process) when it was taken.

    Built-in fields are optional (a driver fills what its robot measures): `joint_pos` (rad), `joint_vel`
    (rad/s), `ee_pos` (m, base frame), `ee_rot` (roll, pitch, yaw of the tool, rad), `gripper` (normalised,
    the config's gripper range). `images`: camera name -> uint8 (H, W, 3). `extra`: driver-specific arrays
    (the sim adds ``task_state``, ``reward`` and ``success``).
    """

    timestamp: float
    joint_pos: np.ndarray | None = None
    joint_vel: np.ndarray | None = None
    ee_pos: np.ndarray | None = None
    ee_rot: np.ndarray | None = None
    gripper: float | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: str) -> np.ndarray | None:
        """A built-in field or an `extra` entry as a flat float array (None when absent)."""
        v = getattr(self, key, None) if key in ("joint_pos", "joint_vel", "ee_pos", "ee_rot", "gripper") else \
            self.extra.get(key)
        return None if v is None else np.asarray(v, float).reshape(-1)

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.timestamp


@dataclass
class Command:
    """A robot command in robot units (see `rlpt.robots.config`): `values` (joint targets, joint velocities
    or end-effector deltas for `mode`) and the normalised `gripper` target (None: gripper untouched)."""

    mode: str
    values: np.ndarray
    gripper: float | None = None

    def vector(self) -> np.ndarray:
        v = np.asarray(self.values, float).reshape(-1)
        return v if self.gripper is None else np.r_[v, self.gripper]

    @classmethod
    def from_vector(cls, config: RobotConfig, vec: np.ndarray) -> Command:
        v = np.asarray(vec, float).reshape(-1)
        n = config.main_dim
        return cls(config.control_mode, v[:n].copy(), float(v[n]) if config.gripper.enabled else None)


@runtime_checkable
class RobotDriver(Protocol):
    """What `RobotEnv` and the remote server need from a driver."""

    config: RobotConfig

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...

    def read(self) -> RobotObservation: ...

    def send(self, command: Command) -> Command | None:
        """Execute `command`; return the command actually executed when the driver changed it (else None)."""
        ...

    def stop(self) -> None: ...

    def reset(self, seed: int | None = None) -> None: ...


class BaseDriver:
    """Shared plumbing: option validation (`OPTIONS` holds the defaults), context manager, no-op reset."""

    name = "base"
    OPTIONS: dict[str, Any] = {}

    def __init__(self, config: RobotConfig) -> None:
        self.config = config
        self.options = self._parse_options(config.driver.options)

    def _parse_options(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.OPTIONS))
        if unknown:
            raise RobotConfigError(f"{self.config.source}: driver: unknown option(s) {unknown} for driver "
                                   f"{self.name!r}; expected any of {sorted(self.OPTIONS)}")
        return {**self.OPTIONS, **given}

    def reset(self, seed: int | None = None) -> None:
        """Real arms stay where they are unless the driver overrides this (see `home`)."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.disconnect()


def require(module: str, package: str, extra: str, driver: str) -> Any:
    """Import a vendor library or raise `RobotDependencyError` naming the pip extra and package."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RobotDependencyError(
            f"the {driver!r} robot driver needs the {package!r} package (Python module {module!r}), which is not "
            f"installed: pip install 'rlpt[{extra}]' (or pip install {package})") from e


def driver_class(name: str) -> type:
    """The class for a driver name (a key of `DRIVERS`) or a ``package.module:Class`` path."""
    target = DRIVERS.get(name, name)
    if ":" not in target:
        raise RobotConfigError(f"unknown robot driver {name!r}; expected one of {sorted(DRIVERS)} or "
                               "'package.module:Class'")
    mod, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        if isinstance(e, RobotDependencyError):
            raise
        raise RobotConfigError(f"robot driver {name!r}: cannot import {target} ({e})") from e


def make_driver(config: RobotConfig) -> RobotDriver:
    """Build (without connecting) the driver the config names, with its options."""
    return driver_class(config.driver.name)(config)


# ------------------------------------------------------------------------------------- rotations
def rpy_from_matrix(R: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) with R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    R = np.asarray(R, float).reshape(3, 3)
    pitch = -np.arcsin(np.clip(R[2, 0], -1.0, 1.0))
    return np.array([np.arctan2(R[2, 1], R[2, 2]), pitch, np.arctan2(R[1, 0], R[0, 0])])


def matrix_from_rpy(rpy) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (BridgeData's rotation-delta convention)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


# Tool pointing straight down = zero rotation (BridgeData's DEFAULT_ROTATION "D"): ee_rot = rpy(R @ D.T).
EE_DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def quat_xyzw_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix."""
    R = np.asarray(R, float)
    w = np.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def matrix_from_quat_xyzw(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def gripper_to_unit(config: RobotConfig, g: float) -> float:
    """Normalised gripper command (config range) -> [0, 1] (0 = closed, 1 = open)."""
    gc = config.gripper
    return float(np.clip((g - gc.lower) / (gc.upper - gc.lower), 0.0, 1.0))


def gripper_from_unit(config: RobotConfig, u: float) -> float:
    """[0, 1] opening -> the config's normalised gripper range."""
    gc = config.gripper
    return float(gc.lower + (gc.upper - gc.lower) * np.clip(u, 0.0, 1.0))
