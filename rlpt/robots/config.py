"""Typed, validated robot configs (`robot_configs/*.yaml`) and the robot <-> policy mapping.

A config describes one physical (or simulated) robot: which driver talks to it, how it is commanded
(`control_mode`, `control_rate_hz`), its limits, gripper, cameras, calibration file, safety timeouts and
how its observations/commands map onto a policy's observation/action spaces. Field names follow
LeRobot's robot configs where they exist (`type`, `id`, `cameras.<name>.{width,height,fps}`,
`max_relative_target`) so configs port easily. Minimal example::

    type: widowx250
    id: lab_a                       # which physical unit (names the calibration file)
    driver: {name: dynamixel, port: /dev/ttyDXL}   # other keys are the driver's options
    control_mode: joint_pos         # joint_pos | joint_vel | ee_delta
    control_rate_hz: 10
    joints:
      - {name: waist, lower: -3.14, upper: 3.14, max_velocity: 3.14}
    max_relative_target: 0.2        # rad per step (scalar or one per joint)
    gripper: {enabled: true, lower: 0.0, upper: 1.0}   # normalised command, 1 = open
    safety: {watchdog_timeout_s: 0.5, max_observation_age_s: 0.3, on_fault: stop}
    policy:
      observation: {state: [joint_pos, gripper]}
      action: {low: -1, high: 1, scale: 0.1, offset: 0.0}   # command = offset + scale * action

Robot command vector (what drivers receive, in robot units): ``joint_pos`` absolute joint targets (rad),
``joint_vel`` joint velocities (rad/s), ``ee_delta`` end-effector translation deltas (m, base frame) and,
with ``ee.rotation: true``, roll/pitch/yaw deltas (rad) per step; then one normalised gripper value when
the gripper is enabled.

Safety limits (enforced by `clip_command` before anything reaches a driver): joint limits and
`max_relative_target` / `max_velocity / control_rate_hz` per step for joint modes; the workspace box,
`ee.max_delta` and `ee.max_linear_velocity` / `ee.max_angular_velocity` per step for ``ee_delta``;
`gripper.lower/upper` and `gripper.max_delta`.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.config import load_yaml, parse_overrides, set_dotted
from rlpt.errors import RobotConfigError

CONTROL_MODES = ("joint_pos", "joint_vel", "ee_delta")
ON_FAULT = ("stop", "raise")
CAMERA_SOURCES = ("driver", "opencv")
#: Plausibility ranges: values outside them are typos or unit mistakes (ms for s, deg for rad, mm for m), not
#: robots. Rates in Hz, angles in rad (or m for prismatic joints), times in s, distances in m, images in px.
RANGES = {"control_rate_hz": 2000.0, "joint_limit": 100.0, "joint_max_velocity": 50.0, "timeout_s": 60.0,
          "max_episode_steps": 10_000_000, "workspace_m": 10.0, "ee_linear_velocity": 10.0, "image_side": 8192,
          "fps": 1000.0, "state_dim": 100_000}
# Observation fields every driver may fill; their sizes follow the config (n joints, 3, 3, 1).
BUILTIN_FIELDS = ("joint_pos", "joint_vel", "ee_pos", "ee_rot", "gripper")

_TOP_KEYS = {"type", "id", "driver", "control_mode", "control_rate_hz", "joints", "max_relative_target", "ee",
             "gripper", "cameras", "calibration_file", "home", "safety", "policy", "max_episode_steps",
             "description"}


# --------------------------------------------------------------------------------------------- parts
@dataclass(frozen=True, eq=False)
class JointConfig:
    """One actuated joint: position limits (rad) and maximum speed (rad/s)."""

    name: str
    lower: float
    upper: float
    max_velocity: float


@dataclass(frozen=True, eq=False)
class EEConfig:
    """End-effector limits for ``ee_delta`` control: workspace box (m, base frame) and per-step caps."""

    workspace_lower: np.ndarray
    workspace_upper: np.ndarray
    max_delta: np.ndarray  # per step: 3 translations (m) [+ 3 rotations (rad) with rotation=True]
    max_linear_velocity: float  # m/s (norm of the translation)
    max_angular_velocity: float  # rad/s (norm of the rotation)
    rotation: bool  # 6-d deltas (xyz + roll/pitch/yaw) instead of 3-d


@dataclass(frozen=True, eq=False)
class GripperConfig:
    """Normalised gripper command range (BridgeData convention: 1 = open, 0 = closed)."""

    enabled: bool = False
    lower: float = 0.0
    upper: float = 1.0
    max_delta: float | None = None  # largest change per step; None: no cap


@dataclass(frozen=True, eq=False)
class CameraConfig:
    """A camera: resolution, frame rate, pinhole intrinsics K (3, 3) and world->camera extrinsics (4, 4,
    OpenCV axes). ``source: driver`` means the driver's observation carries its frames (the sim renders
    them); ``source: opencv`` reads ``index_or_path`` with OpenCV."""

    name: str
    width: int
    height: int
    fps: float
    source: str = "driver"
    index_or_path: int | str | None = None
    intrinsics: np.ndarray | None = None
    extrinsics: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SafetyConfig:
    """`watchdog_timeout_s`: no command for this long stops the robot. `max_observation_age_s`: an
    observation older than this (when read, or when a command is computed from it) stops the robot.
    `on_fault`: ``stop`` (end the episode, report the reason in info) or ``raise`` (also raise
    `RobotSafetyError` after stopping)."""

    watchdog_timeout_s: float = 1.0
    max_observation_age_s: float = 0.5
    on_fault: str = "stop"


@dataclass(frozen=True, eq=False)
class StateEntry:
    """One piece of the policy's state vector: a robot observation field and its size."""

    key: str
    dim: int


@dataclass(frozen=True, eq=False)
class PolicyConfig:
    """How robot observations/commands map onto the policy's spaces.

    Observation: the concatenation of `state` fields (a Box within `state_low/high`); with `images`
    (policy key -> camera name) a Dict {"state", <image keys>} of uint8 (H, W, 3) frames, resized to
    `image_size` when given. Action: ``command = action_offset + action_scale * action`` for an action in
    the Box [`action_low`, `action_high`].
    """

    state: tuple[StateEntry, ...]
    state_low: np.ndarray
    state_high: np.ndarray
    images: dict[str, str]
    image_size: tuple[int, int] | None
    action_low: np.ndarray
    action_high: np.ndarray
    action_scale: np.ndarray
    action_offset: np.ndarray

    @property
    def state_dim(self) -> int:
        return sum(e.dim for e in self.state)


@dataclass(frozen=True, eq=False)
class DriverConfig:
    """Which driver talks to the robot (``sim``, ``remote``, ``franka``, ``ur``, ``dynamixel`` or a
    ``module:Class`` path) and its options (every other key of the ``driver`` mapping)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, eq=False)
class RobotConfig:
    """A validated robot config. Build with `load_robot_config(path)` or `RobotConfig.from_dict(d)`."""

    type: str
    id: str | None
    driver: DriverConfig
    control_mode: str
    control_rate_hz: float
    joints: tuple[JointConfig, ...]
    max_relative_target: np.ndarray  # per joint, rad per step (inf: no cap beyond max_velocity)
    ee: EEConfig | None
    gripper: GripperConfig
    cameras: dict[str, CameraConfig]
    calibration_file: Path | None
    home: np.ndarray | None
    safety: SafetyConfig
    policy: PolicyConfig
    max_episode_steps: int | None
    description: str
    source: str  # the file (or "<dict>") the config came from, for messages
    raw: dict  # the mapping it was built from (after overrides)

    # ---------------------------------------------------------------- derived
    @property
    def dt(self) -> float:
        """Control period in seconds."""
        return 1.0 / self.control_rate_hz

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def joint_lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints], float)

    @property
    def joint_upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints], float)

    @property
    def joint_max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity for j in self.joints], float)

    @property
    def joint_step(self) -> np.ndarray:
        """Largest joint motion per control step (rad): min(max_relative_target, max_velocity * dt)."""
        return np.minimum(self.max_relative_target, self.joint_max_velocity * self.dt)

    @property
    def main_dim(self) -> int:
        """Size of the command without the gripper."""
        if self.control_mode == "ee_delta":
            assert self.ee is not None
            return 6 if self.ee.rotation else 3
        return len(self.joints)

    @property
    def command_dim(self) -> int:
        """Size of the robot command vector (main part + 1 gripper value when enabled)."""
        return self.main_dim + int(self.gripper.enabled)

    def field_dim(self, key: str) -> int | None:
        """Size of a built-in observation field (None for driver-specific extras)."""
        return {"joint_pos": len(self.joints), "joint_vel": len(self.joints), "ee_pos": 3, "ee_rot": 3,
                "gripper": 1}.get(key)

    # ---------------------------------------------------------------- policy mapping
    def command_from_policy(self, action: np.ndarray) -> np.ndarray:
        """Policy action -> robot command (robot units), before safety clipping."""
        return self.policy.action_offset + self.policy.action_scale * np.asarray(action, float)

    def policy_from_command(self, command: np.ndarray) -> np.ndarray:
        """Robot command -> the policy action that produces it (inverse of `command_from_policy`)."""
        return (np.asarray(command, float) - self.policy.action_offset) / self.policy.action_scale

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any] = (), /, **top_level: Any) -> RobotConfig:
        """A validated copy with overrides set: ``a.b=c`` strings (``"safety.on_fault=raise"``) or a mapping of
        dotted keys (``{"driver.port": 5555}``); keyword arguments set top-level keys (``max_episode_steps=7``)."""
        raw = _overridden(self.raw, overrides, top_level, self.source)
        return RobotConfig.from_dict(raw, source=self.source, base_dir=_base_dir(self.source))

    def summary(self) -> dict[str, Any]:
        """A short, JSON-able description (what `rlpt robot check` prints)."""
        p = self.policy
        return {
            "source": self.source, "type": self.type, "id": self.id, "driver": self.driver.name,
            "control_mode": self.control_mode, "control_rate_hz": self.control_rate_hz,
            "joints": list(self.joint_names), "command_dim": self.command_dim,
            "joint_step_rad": self.joint_step.round(4).tolist() if self.joints else [],
            "workspace": None if self.ee is None else [self.ee.workspace_lower.tolist(),
                                                       self.ee.workspace_upper.tolist()],
            "gripper": self.gripper.enabled,
            "cameras": {c.name: f"{c.width}x{c.height}@{c.fps:g}fps ({c.source})" for c in self.cameras.values()},
            "calibration_file": None if self.calibration_file is None else str(self.calibration_file),
            "watchdog_timeout_s": self.safety.watchdog_timeout_s,
            "max_observation_age_s": self.safety.max_observation_age_s, "on_fault": self.safety.on_fault,
            "policy_observation": {"state": [f"{e.key}({e.dim})" for e in p.state], "images": dict(p.images)},
            "policy_action": {"dim": int(p.action_low.size), "low": p.action_low.tolist(),
                              "high": p.action_high.tolist()},
            "max_episode_steps": self.max_episode_steps,
        }

    # ---------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> RobotConfig:
        """Validate a config mapping; every error names `source`, the key, what was expected and what was found."""
        if not isinstance(data, Mapping):
            raise RobotConfigError(f"{source}: a robot config must be a mapping; got {type(data).__name__}")
        r = _Reader(source)
        r.keys(data, _TOP_KEYS, "")
        raw = copy.deepcopy(dict(data))
        rtype = r.string(r.req(data, "type", ""), "type")
        rid = data.get("id")
        rid = None if rid is None else r.string(rid, "id")

        drv = r.req(data, "driver", "")
        if isinstance(drv, str):
            drv = {"name": drv}
        if not isinstance(drv, Mapping):
            raise r.error("driver", "a mapping with 'name' (sim, remote, franka, ur, dynamixel or module:Class)", drv)
        driver = DriverConfig(r.string(r.req(drv, "name", "driver"), "driver.name"),
                              {k: v for k, v in drv.items() if k != "name"})

        mode = r.choice(r.req(data, "control_mode", ""), CONTROL_MODES, "control_mode")
        rate = r.positive(r.req(data, "control_rate_hz", ""), "control_rate_hz", hi=RANGES["control_rate_hz"])

        joints_raw = data.get("joints") or []
        if not isinstance(joints_raw, list):
            raise r.error("joints", "a list of {name, lower, upper, max_velocity}", joints_raw)
        joints = []
        for i, j in enumerate(joints_raw):
            w = f"joints[{i}]"
            if not isinstance(j, Mapping):
                raise r.error(w, "a mapping {name, lower, upper, max_velocity}", j)
            r.keys(j, {"name", "lower", "upper", "max_velocity"}, w)
            lim = RANGES["joint_limit"]
            jc = JointConfig(r.string(r.req(j, "name", w), f"{w}.name"),
                             r.number(r.req(j, "lower", w), f"{w}.lower", -lim, lim),
                             r.number(r.req(j, "upper", w), f"{w}.upper", -lim, lim),
                             r.positive(r.req(j, "max_velocity", w), f"{w}.max_velocity",
                                        hi=RANGES["joint_max_velocity"]))
            if not jc.lower < jc.upper:
                raise r.error(w, "lower < upper", f"lower={jc.lower}, upper={jc.upper}")
            joints.append(jc)
        names = [j.name for j in joints]
        if len(set(names)) != len(names):
            raise r.error("joints", "unique joint names", names)
        if mode in ("joint_pos", "joint_vel") and not joints:
            raise r.error("joints", f"at least one joint for control_mode {mode!r}", joints_raw)

        n = len(joints)
        mrt = data.get("max_relative_target")
        mrt_vec = np.full(n, np.inf) if mrt is None else r.vector(mrt, n, "max_relative_target", positive=True,
                                                                  hi=RANGES["joint_limit"])

        ee = None
        if data.get("ee") is not None:
            ee = _parse_ee(r, data["ee"])
        if mode == "ee_delta" and ee is None:
            raise r.error("ee", "an 'ee' section (workspace, max_delta, velocities) for control_mode 'ee_delta'", None)

        g = data.get("gripper") or {}
        if not isinstance(g, Mapping):
            raise r.error("gripper", "a mapping {enabled, lower, upper, max_delta}", g)
        r.keys(g, {"enabled", "lower", "upper", "max_delta"}, "gripper")
        gripper = GripperConfig(r.boolean(g.get("enabled", bool(g)), "gripper.enabled"),
                                r.number(g.get("lower", 0.0), "gripper.lower"),
                                r.number(g.get("upper", 1.0), "gripper.upper"),
                                None if g.get("max_delta") is None else r.positive(g["max_delta"], "gripper.max_delta"))
        if not gripper.lower < gripper.upper:
            raise r.error("gripper", "lower < upper", f"lower={gripper.lower}, upper={gripper.upper}")

        cams_raw = data.get("cameras") or {}
        if not isinstance(cams_raw, Mapping):
            raise r.error("cameras", "a mapping camera name -> {width, height, fps, ...}", cams_raw)
        cameras = {str(k): _parse_camera(r, str(k), v) for k, v in cams_raw.items()}

        calib = data.get("calibration_file")
        calibration = None
        if calib is not None:
            calibration = Path(os.path.expanduser(r.string(calib, "calibration_file")))
            if not calibration.is_absolute() and base_dir is not None:
                calibration = base_dir / calibration

        home = None
        if data.get("home") is not None:
            home = r.vector(data["home"], n, "home")
            if np.any(home < [j.lower for j in joints]) or np.any(home > [j.upper for j in joints]):
                raise r.error("home", "joint positions within the joint limits", home.tolist())

        s = data.get("safety") or {}
        if not isinstance(s, Mapping):
            raise r.error("safety", "a mapping {watchdog_timeout_s, max_observation_age_s, on_fault}", s)
        r.keys(s, {"watchdog_timeout_s", "max_observation_age_s", "on_fault"}, "safety")
        safety = SafetyConfig(
            r.positive(s.get("watchdog_timeout_s", max(1.0, 3.0 / rate)), "safety.watchdog_timeout_s",
                       hi=RANGES["timeout_s"]),
            r.positive(s.get("max_observation_age_s", max(0.5, 2.0 / rate)), "safety.max_observation_age_s",
                       hi=RANGES["timeout_s"]),
            r.choice(s.get("on_fault", "stop"), ON_FAULT, "safety.on_fault"))
        if safety.watchdog_timeout_s <= 1.0 / rate:
            raise r.error("safety.watchdog_timeout_s", f"more than one control period ({1.0 / rate:g} s at "
                          f"control_rate_hz {rate:g})", safety.watchdog_timeout_s)

        mes = data.get("max_episode_steps")
        if mes is not None:
            mes = r.integer(mes, "max_episode_steps", 1, RANGES["max_episode_steps"])

        partial = dict(type=rtype, id=rid, driver=driver, control_mode=mode, control_rate_hz=rate,
                       joints=tuple(joints), max_relative_target=mrt_vec, ee=ee, gripper=gripper, cameras=cameras,
                       calibration_file=calibration, home=home, safety=safety, max_episode_steps=mes,
                       description=str(data.get("description") or ""), source=source, raw=raw)
        # The policy section needs the command layout, so parse it against a config without one.
        tmp = cls(policy=None, **partial)  # type: ignore[arg-type]
        policy = _parse_policy(r, data.get("policy") or {}, tmp)
        return cls(policy=policy, **partial)


def load_robot_config(path: str | os.PathLike, overrides: Iterable[str] | Mapping[str, Any] | None = None
                      ) -> RobotConfig:
    """Read and validate a robot config YAML file (relative paths inside it resolve against its folder).

    `overrides`: set before validation, as ``a.b=c`` strings (``["driver.task=reach", "control_rate_hz=20"]``, the
    CLI's syntax) or a mapping of dotted keys (``{"driver.task": "reach"}``).
    """
    p = Path(path)
    if not p.is_file():
        near = ""
        if p.parent.is_dir():
            close = difflib.get_close_matches(p.name, [q.name for q in p.parent.glob("*.yaml")], n=3)
            near = f"; close matches: {', '.join(close)}" if close else ""
        raise RobotConfigError(f"{p}: robot config file not found{near}")
    data = load_yaml(p, RobotConfigError)
    if not isinstance(data, dict):
        raise RobotConfigError(f"{p}: a robot config must be a YAML mapping; got {type(data).__name__}")
    return RobotConfig.from_dict(_overridden(data, overrides or (), {}, str(p)), source=str(p), base_dir=p.parent)


# --------------------------------------------------------------------------------------------- helpers
def _base_dir(source: str) -> Path | None:
    p = Path(source)
    return p.parent if p.suffix in (".yaml", ".yml") else None


def _overridden(data: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any], top_level: Mapping[str, Any],
                source: str) -> dict[str, Any]:
    """A copy of `data` with `a.b=c` overrides (`rlpt.config.parse_overrides`) and top-level keyword values set."""
    for key in top_level:
        if "." in key or "__" in key:
            raise RobotConfigError(f"{source}: override {key!r}: keyword overrides set top-level keys; give dotted "
                                   f"keys as 'a.b=c' strings or a mapping, e.g. {{{key.replace('__', '.')!r}: ...}}")
    items = {**parse_overrides(overrides, f"{source}: override", RobotConfigError), **top_level}
    out = copy.deepcopy(dict(data))
    if isinstance(out.get("driver"), str) and any(k.startswith("driver.") for k in items):
        out["driver"] = {"name": out["driver"]}  # the "driver: sim" shorthand, opened up for driver options
    for key, value in items.items():
        set_dotted(out, key, value, f"{source}: override", RobotConfigError)
    return out


def _finite(v: Any, allow_inf: bool = False) -> float | None:
    """`v` as a float when it is a (non-bool) int or float, or a string that reads as one, that float64 holds and
    is finite (or +-inf when `allow_inf`); else None. Integers beyond float64's range are None, not an OverflowError."""
    if isinstance(v, str):  # YAML reads `2e-1` as a string; a number written as text is unambiguous
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        x = float(v)
    except OverflowError:
        return None
    if np.isnan(x) or (np.isinf(x) and not allow_inf):
        return None
    return x


def _short(v: Any, limit: int = 80) -> Any:
    """A value for an error message: itself, or its repr cut to `limit` characters."""
    r = repr(v)
    return v if len(r) <= limit else f"{r[:limit]}... ({len(r)} characters)"


class _Reader:
    """Validation helpers whose errors name the file, the key, the expectation and the value found."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, expected: str, got: Any) -> RobotConfigError:
        return RobotConfigError(f"{self.source}: {key or '<top level>'}: expected {expected}; got {got!r}")

    def keys(self, d: Mapping, allowed: set[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                name = f"{where}.{k}" if where else str(k)
                raise RobotConfigError(f"{self.source}: {name}: unknown key{hint}; expected one of {sorted(allowed)}")

    def req(self, d: Mapping, key: str, where: str) -> Any:
        if key not in d or d[key] is None:
            name = f"{where}.{key}" if where else key
            raise RobotConfigError(f"{self.source}: {name}: required key is missing")
        return d[key]

    def string(self, v: Any, key: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.error(key, "a non-empty string", v)
        return v

    def boolean(self, v: Any, key: str) -> bool:
        if not isinstance(v, bool):
            raise self.error(key, "true or false", v)
        return v

    def number(self, v: Any, key: str, lo: float | None = None, hi: float | None = None) -> float:
        """A finite number, within [lo, hi] when given (plausibility ranges: see `RANGES`)."""
        x = _finite(v)
        if x is None:
            raise self.error(key, "a finite number", _short(v))
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise self.error(key, f"a number in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else
                             f"a number >= {lo:g}" if lo is not None else f"a number <= {hi:g}", _short(v))
        return x

    def positive(self, v: Any, key: str, hi: float | None = None) -> float:
        x = self.number(v, key)
        if x <= 0 or (hi is not None and x > hi):
            raise self.error(key, "a number > 0" if hi is None else f"a number in (0, {hi:g}]", _short(v))
        return x

    def integer(self, v: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(v, str) and v.strip().lstrip("+-").isdigit():  # "7" is unambiguous
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.error(key, f"an integer in [{lo}, {hi}]", _short(v))
        return int(v)

    def choice(self, v: Any, choices: tuple[str, ...], key: str) -> str:
        if v not in choices:
            raise self.error(key, f"one of {list(choices)}", v)
        return v

    def vector(self, v: Any, n: int, key: str, positive: bool = False, allow_inf: bool = False,
               hi: float | None = None) -> np.ndarray:
        """A scalar (broadcast) or a list of n numbers."""
        vals = [v] * n if not isinstance(v, list | tuple) else list(v)
        if len(vals) != n:
            raise self.error(key, f"a number or a list of {n} numbers", v)
        out = []
        for x in vals:
            f = _finite(x, allow_inf)
            if f is None:
                raise self.error(key, f"{'a number' if n == 1 else f'{n} finite numbers'}", _short(v))
            if positive and f <= 0:
                raise self.error(key, "numbers > 0", _short(v))
            if hi is not None and abs(f) > hi:
                raise self.error(key, f"numbers within +-{hi:g}", _short(v))
            out.append(f)
        return np.asarray(out, float)

    def matrix(self, v: Any, shape: tuple[int, int], key: str) -> np.ndarray:
        try:
            m = np.asarray(v, float)
        except (TypeError, ValueError):
            m = np.zeros(0)
        if m.shape != shape or not np.all(np.isfinite(m)):
            raise self.error(key, f"a {shape[0]}x{shape[1]} matrix of finite numbers", v)
        return m


def _parse_ee(r: _Reader, e: Any) -> EEConfig:
    if not isinstance(e, Mapping):
        raise r.error("ee", "a mapping {workspace, max_delta, max_linear_velocity, ...}", e)
    r.keys(e, {"workspace", "max_delta", "max_linear_velocity", "max_angular_velocity", "rotation"}, "ee")
    ws = r.req(e, "workspace", "ee")
    if not isinstance(ws, Mapping):
        raise r.error("ee.workspace", "a mapping {lower: [x, y, z], upper: [x, y, z]} (m, base frame)", ws)
    r.keys(ws, {"lower", "upper"}, "ee.workspace")
    lo = r.vector(r.req(ws, "lower", "ee.workspace"), 3, "ee.workspace.lower", hi=RANGES["workspace_m"])
    hi = r.vector(r.req(ws, "upper", "ee.workspace"), 3, "ee.workspace.upper", hi=RANGES["workspace_m"])
    if np.any(lo >= hi):
        raise r.error("ee.workspace", "lower < upper on every axis", {"lower": lo.tolist(), "upper": hi.tolist()})
    rotation = r.boolean(e.get("rotation", False), "ee.rotation")
    md = r.vector(r.req(e, "max_delta", "ee"), 6 if rotation else 3, "ee.max_delta", positive=True,
                  hi=RANGES["workspace_m"])
    return EEConfig(lo, hi, md, r.positive(r.req(e, "max_linear_velocity", "ee"), "ee.max_linear_velocity",
                                           hi=RANGES["ee_linear_velocity"]),
                    r.positive(e.get("max_angular_velocity", np.pi), "ee.max_angular_velocity",
                               hi=RANGES["joint_max_velocity"]), rotation)


def _parse_camera(r: _Reader, name: str, c: Any) -> CameraConfig:
    w = f"cameras.{name}"
    if not isinstance(c, Mapping):
        raise r.error(w, "a mapping {width, height, fps, intrinsics, extrinsics, source}", c)
    r.keys(c, {"width", "height", "fps", "intrinsics", "extrinsics", "source", "index_or_path", "type"}, w)
    width = r.positive(r.req(c, "width", w), f"{w}.width", hi=RANGES["image_side"])
    height = r.positive(r.req(c, "height", w), f"{w}.height", hi=RANGES["image_side"])
    if width != int(width) or height != int(height):
        raise r.error(w, "integer width and height", (width, height))
    source = r.choice(c.get("source", c.get("type", "driver")), CAMERA_SOURCES, f"{w}.source")
    iop = c.get("index_or_path")
    if source == "opencv" and (iop is None or isinstance(iop, bool) or not isinstance(iop, int | str)):
        raise r.error(f"{w}.index_or_path", "a camera index or a device/video path for source 'opencv'", iop)
    K = c.get("intrinsics")
    if isinstance(K, Mapping):  # {fx, fy, cx, cy}
        r.keys(K, {"fx", "fy", "cx", "cy"}, f"{w}.intrinsics")
        fx, fy, cx, cy = (r.number(r.req(K, k, f"{w}.intrinsics"), f"{w}.intrinsics.{k}")
                          for k in ("fx", "fy", "cx", "cy"))
        K = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    E = c.get("extrinsics")
    return CameraConfig(name, int(width), int(height), r.positive(r.req(c, "fps", w), f"{w}.fps", hi=RANGES["fps"]),
                        source, iop,
                        None if K is None else r.matrix(K, (3, 3), f"{w}.intrinsics"),
                        None if E is None else r.matrix(E, (4, 4), f"{w}.extrinsics"))


def _parse_policy(r: _Reader, p: Any, cfg: RobotConfig) -> PolicyConfig:
    if not isinstance(p, Mapping):
        raise r.error("policy", "a mapping {observation, action}", p)
    r.keys(p, {"observation", "action"}, "policy")
    o = p.get("observation") or {}
    if not isinstance(o, Mapping):
        raise r.error("policy.observation", "a mapping {state, state_low, state_high, images, image_size}", o)
    r.keys(o, {"state", "state_low", "state_high", "images", "image_size"}, "policy.observation")
    default_state: list[Any] = ["joint_pos"] if cfg.joints else []
    default_state += ["ee_pos"] if cfg.ee is not None else []
    default_state += ["gripper"] if cfg.gripper.enabled else []
    entries = []
    for i, s in enumerate(o.get("state", default_state) or []):
        w = f"policy.observation.state[{i}]"
        if isinstance(s, str):
            dim = cfg.field_dim(s)
            if dim is None:
                raise r.error(w, f"one of {list(BUILTIN_FIELDS)} or {{key: <driver field>, dim: <size>}}", s)
            entries.append(StateEntry(s, dim))
        elif isinstance(s, Mapping):
            r.keys(s, {"key", "dim"}, w)
            key = r.string(r.req(s, "key", w), f"{w}.key")
            dim = r.positive(r.req(s, "dim", w), f"{w}.dim", hi=RANGES["state_dim"])
            if dim != int(dim) or (cfg.field_dim(key) not in (None, int(dim))):
                raise r.error(f"{w}.dim", f"an integer size (built-in {key!r} has {cfg.field_dim(key)})", s["dim"])
            entries.append(StateEntry(key, int(dim)))
        else:
            raise r.error(w, "a field name or {key, dim}", s)
    sd = sum(e.dim for e in entries)
    images = o.get("images") or {}
    if not isinstance(images, Mapping):
        raise r.error("policy.observation.images", "a mapping policy key -> camera name", images)
    for k, cam in images.items():
        if cam not in cfg.cameras:
            raise r.error(f"policy.observation.images.{k}", f"a camera of 'cameras' ({sorted(cfg.cameras)})", cam)
        if k == "state":
            raise r.error("policy.observation.images", "image keys other than 'state'", k)
    if not entries and not images:
        raise r.error("policy.observation", "at least one state field or image", dict(o))
    size = o.get("image_size")
    if size is not None:
        size_v = r.vector(size, 2, "policy.observation.image_size", positive=True, hi=RANGES["image_side"])
        size = (int(size_v[0]), int(size_v[1]))

    a = p.get("action") or {}
    if not isinstance(a, Mapping):
        raise r.error("policy.action", "a mapping {low, high, scale, offset}", a)
    r.keys(a, {"low", "high", "scale", "offset"}, "policy.action")
    n = cfg.command_dim
    lo_def, hi_def = _command_bounds(cfg)
    low = r.vector(a.get("low", lo_def.tolist()), n, "policy.action.low")
    high = r.vector(a.get("high", hi_def.tolist()), n, "policy.action.high")
    if np.any(low >= high):
        raise r.error("policy.action", "low < high for every action dimension",
                      {"low": low.tolist(), "high": high.tolist()})
    scale = r.vector(a.get("scale", 1.0), n, "policy.action.scale")
    if np.any(scale == 0):
        raise r.error("policy.action.scale", "non-zero numbers (the mapping must be invertible)", a.get("scale"))
    offset = r.vector(a.get("offset", 0.0), n, "policy.action.offset")
    return PolicyConfig(tuple(entries), r.vector(o.get("state_low", -np.inf), sd, "policy.observation.state_low",
                                                 allow_inf=True),
                        r.vector(o.get("state_high", np.inf), sd, "policy.observation.state_high", allow_inf=True),
                        {str(k): str(v) for k, v in images.items()}, size, low, high, scale, offset)


def _command_bounds(cfg: RobotConfig) -> tuple[np.ndarray, np.ndarray]:
    """The widest command each dimension can ever take (the default policy action box)."""
    if cfg.control_mode == "joint_pos":
        lo, hi = cfg.joint_lower, cfg.joint_upper
    elif cfg.control_mode == "joint_vel":
        hi = cfg.joint_max_velocity
        lo = -hi
    else:
        assert cfg.ee is not None
        hi = cfg.ee.max_delta
        lo = -hi
    if cfg.gripper.enabled:
        lo, hi = np.r_[lo, cfg.gripper.lower], np.r_[hi, cfg.gripper.upper]
    return np.asarray(lo, float), np.asarray(hi, float)
