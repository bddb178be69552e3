"""`RobotEnv`: a Gymnasium env over a robot driver and a `RobotConfig`, with the safety layer.

Every step: the policy action (in the policy's action space) is checked (finite, right shape), clipped to
the policy box, mapped to a robot command, clipped to the robot's limits by `clip_command` (joint and
workspace limits, max change per step, max velocity, gripper range), sent, and the control period is
waited out before the next observation is read. `info["action_sent"]` is the policy-space action that was
actually executed (what an `EpisodeRecorder` logs), `info["command_sent"]` the robot command and
`info["clipped"]` the limits that changed it (``action_space``, ``joint_limits``, ``workspace``, ``max_step``,
``max_velocity``, ``gripper``).

Faults stop the robot (`driver.stop()`) and end the episode (``truncated=True``, ``info["fault"]`` one of
`FAULT_REASONS`, ``info["fault_detail"]`` says why): a NaN/inf or malformed action, an observation older
than `safety.max_observation_age_s`, a driver error or lost connection, and the watchdog (no command for
`safety.watchdog_timeout_s`, checked by a background thread too, so a hung policy loop still stops the
robot). No exception reaches the caller unless the config says ``safety.on_fault: raise``
(`RobotSafetyError` after stopping). A fault ends the episode as truncated, not terminated: it is no MDP
terminal. Already recorded transitions are written to disk at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlpt.errors import RobotConnectionError, RobotDriverError, RobotError, RobotSafetyError
from rlpt.robots.config import CameraConfig, RobotConfig, load_robot_config
from rlpt.robots.drivers.base import Command, RobotDriver, RobotObservation, make_driver

log = logging.getLogger("rlpt.robots")

FAULT_REASONS = ("nan_action", "invalid_action", "stale_observation", "driver_error", "connection_lost",
                 "watchdog_timeout")
_ENV_KWARGS = ("driver", "record_path", "save_every", "realtime")


# ------------------------------------------------------------------------------------------ actions
def as_finite_vector(value: Any, dim: int, what: str = "action") -> np.ndarray:
    """The one validation path for actions and commands: `value` as a finite float64 vector of `dim` values.

    Anything that is not an array (or array-like) of booleans, integers or floats of that size -- whatever its
    type, and whatever its conversion raises (a number too large for float64, a tensor that requires grad or
    lives on a GPU, a ragged list, strings, complex numbers) -- raises `RobotSafetyError` with reason
    ``invalid_action``; NaN or inf raise it with reason ``nan_action``. A scalar counts as one value.
    """
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"dtype {raw.dtype} is not boolean, integer or float")
        a = raw.astype(np.float64)
    except Exception as e:  # noqa: BLE001 -- any conversion failure is an invalid action, never an escape
        raise RobotSafetyError(f"{what} is not numeric ({type(value).__name__}): {type(e).__name__}: {e}",
                               "invalid_action") from None
    a = a.reshape(-1) if a.ndim <= 1 else a
    if a.shape != (dim,):
        raise RobotSafetyError(f"{what} has shape {raw.shape}; expected ({dim},)", "invalid_action")
    if not np.all(np.isfinite(a)):
        raise RobotSafetyError(f"{what} contains NaN or inf: {a.tolist()}", "nan_action")
    return a


# ------------------------------------------------------------------------------------------- limits
def clip_command(config: RobotConfig, command: np.ndarray, obs: RobotObservation,
                 prev_gripper: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Clip a robot command vector to the config's limits, relative to the measured state `obs`.

    joint_pos: into [lower, upper], then within ``joint_step`` (min(max_relative_target, max_velocity*dt))
    of the measured position. joint_vel: so that one period of motion stays within the joint limits and
    within ``joint_step``, and |v| <= max_velocity. ee_delta: so that ee_pos + delta stays in the workspace,
    |delta_i| <= ee.max_delta_i, |translation| <= max_linear_velocity*dt and |rotation| <=
    max_angular_velocity*dt. Gripper: into [lower, upper] and within max_delta of `prev_gripper`.
    If the measured state is already outside a limit, the command moves back toward it by at most one step.

    Returns (clipped command, names of the limits that changed it). Raises `RobotSafetyError` for a
    non-finite command and `RobotDriverError` when `obs` lacks (or has non-finite) state the limits need.
    """
    c = as_finite_vector(command, config.command_dim, "command")
    out, why = c.copy(), []
    n, dt = config.main_dim, config.dt

    def need(key: str, size: int) -> np.ndarray:
        v = obs.get(key)
        if v is None or v.size != size or not np.all(np.isfinite(v)):
            raise RobotDriverError(f"{config.driver.name} driver: observation field {key!r} is "
                                   f"{'missing' if v is None else v.tolist()}; the limits need {size} finite values")
        return v

    def note(name: str, before: np.ndarray, after: np.ndarray) -> None:
        if not np.array_equal(before, after) and name not in why:
            why.append(name)

    main = out[:n]
    if config.control_mode == "joint_pos":
        q = need("joint_pos", n)
        a = np.clip(main, config.joint_lower, config.joint_upper)
        note("joint_limits", main, a)
        step = config.joint_step
        b = np.clip(a, q - step, q + step)
        note("max_step", a, b)
        main = b
    elif config.control_mode == "joint_vel":
        q = need("joint_pos", n)
        a = np.clip(main, (config.joint_lower - q) / dt, (config.joint_upper - q) / dt)
        note("joint_limits", main, a)
        cap = config.joint_step / dt
        b = np.clip(a, -cap, cap)
        note("max_velocity", a, b)
        main = b
    else:
        ee = config.ee
        assert ee is not None
        p = need("ee_pos", 3)
        t = main[:3]
        reach = p + t
        outside = (reach < ee.workspace_lower) | (reach > ee.workspace_upper)
        a = np.where(outside, np.clip(reach, ee.workspace_lower, ee.workspace_upper) - p, t)
        note("workspace", t, a)
        b = np.clip(a, -ee.max_delta[:3], ee.max_delta[:3])
        note("max_step", a, b)
        norm, vmax = float(np.linalg.norm(b)), ee.max_linear_velocity * dt
        if norm > vmax:
            b = b * (vmax / norm)
            why.append("max_velocity") if "max_velocity" not in why else None
        main = np.r_[b, main[3:]]
        if ee.rotation:
            r = main[3:6]
            rc = np.clip(r, -ee.max_delta[3:], ee.max_delta[3:])
            note("max_step", r, rc)
            norm, wmax = float(np.linalg.norm(rc)), ee.max_angular_velocity * dt
            if norm > wmax:
                rc = rc * (wmax / norm)
                why.append("max_velocity") if "max_velocity" not in why else None
            main = np.r_[main[:3], rc]
    out[:n] = main
    if config.gripper.enabled:
        g0 = out[n]
        g = float(np.clip(g0, config.gripper.lower, config.gripper.upper))
        md = config.gripper.max_delta
        if md is not None and prev_gripper is not None and np.isfinite(prev_gripper):
            g = float(np.clip(g, prev_gripper - md, prev_gripper + md))
        if g != g0:
            why.append("gripper")
        out[n] = g
    return out, why


# ------------------------------------------------------------------------------------------ cameras
class OpenCVCamera:
    """Reads an OpenCV camera (device index, device path or video file) in a background thread at the
    configured fps; `read()` returns the latest RGB frame and its `time.monotonic()` timestamp. A video
    file loops (handy for tests and replays)."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self._cap: Any = None
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self, timeout_s: float = 2.0) -> None:
        import cv2

        c = self.config
        self._cap = cv2.VideoCapture(c.index_or_path)
        if not self._cap.isOpened():
            raise RobotConnectionError(f"camera {c.name!r}: OpenCV cannot open {c.index_or_path!r}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        self._cap.set(cv2.CAP_PROP_FPS, c.fps)
        self._is_file = isinstance(c.index_or_path, str) and Path(c.index_or_path).is_file()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"camera-{c.name}", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout_s
        while self._frame is None and time.monotonic() < end:
            time.sleep(0.005)
        if self._frame is None:
            self.close()
            raise RobotConnectionError(f"camera {c.name!r}: no frame from {c.index_or_path!r} within {timeout_s} s")

    def _loop(self) -> None:
        import cv2

        period = 1.0 / self.config.fps
        nxt = time.monotonic()
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if not ok:
                if self._is_file:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                else:
                    time.sleep(0.01)
                continue
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if rgb.shape[:2] != (self.config.height, self.config.width):
                rgb = cv2.resize(rgb, (self.config.width, self.config.height), interpolation=cv2.INTER_AREA)
            with self._lock:
                self._frame, self._stamp = rgb, time.monotonic()
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()

    @property
    def is_connected(self) -> bool:
        return self._frame is not None

    def read(self) -> tuple[np.ndarray, float]:
        with self._lock:
            if self._frame is None:
                raise RobotDriverError(f"camera {self.config.name!r} has no frame (not connected?)")
            return self._frame, self._stamp

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._frame = None


# --------------------------------------------------------------------------------------------- env
class RobotEnv(gym.Env):
    """A Gymnasium env over a robot. Spaces are the policy's (see `PolicyConfig`).

    Args:
        config: a `RobotConfig` (see `load_robot_config`).
        driver: a driver instance to use instead of building the config's (tests, custom setups).
        record_path: write every transition (policy-space actions actually sent) to this D4RL-layout HDF5
            file with `rlpt.envs.reset_free.EpisodeRecorder`; saved every `save_every` episodes, on every
            fault and on `close()`. Image observations are not recorded (the state vector is).
        realtime: hold `config.control_rate_hz` by sleeping until the next control tick (turn off for
            simulators in tests).

    `reset()` connects the driver when needed (also after a lost connection) and raises `RobotError`
    when it cannot (or when the first observation is stale): there is no episode to end yet.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: RobotConfig, driver: RobotDriver | None = None,
                 record_path: str | os.PathLike | None = None, save_every: int = 1, realtime: bool = True) -> None:
        self.config = config
        self.driver = driver if driver is not None else make_driver(config)
        self.realtime = bool(realtime)
        p = config.policy
        self.action_space = spaces.Box(p.action_low.astype(np.float32), p.action_high.astype(np.float32),
                                       dtype=np.float32)
        state = spaces.Box(p.state_low.astype(np.float32), p.state_high.astype(np.float32), dtype=np.float32)
        if p.images:
            parts: dict[str, spaces.Space] = {"state": state} if p.state else {}
            for key, cam in p.images.items():
                c = config.cameras[cam]
                h, w = p.image_size or (c.height, c.width)
                parts[key] = spaces.Box(0, 255, (h, w, 3), np.uint8)
            self.observation_space = spaces.Dict(parts)
        else:
            self.observation_space = state
        self.cameras = {n: OpenCVCamera(c) for n, c in config.cameras.items() if c.source == "opencv"}
        self.recorder = None
        if record_path is not None:
            from rlpt.data.record import EpisodeRecorder

            self.recorder = EpisodeRecorder(record_path, save_every)
        self._lock = threading.RLock()
        self._obs: RobotObservation | None = None
        self._policy_obs: Any = None
        self._fault: dict[str, Any] | None = None
        self._armed = False
        self._last_command = 0.0
        self._last_gripper: float | None = None
        self._tick = 0.0
        self._elapsed = 0
        self._episode_open = False
        self._closed = False
        self._watchdog: threading.Thread | None = None
        self._wake = threading.Event()
        self.faults: list[dict[str, Any]] = []  # every fault of this env's lifetime, for inspection

    # ----------------------------------------------------------------- properties
    @property
    def control_rate_hz(self) -> float:
        return self.config.control_rate_hz

    @property
    def max_episode_steps(self) -> int | None:
        return self.config.max_episode_steps

    @property
    def last_observation(self) -> RobotObservation | None:
        """The latest raw robot observation (all fields, images and extras; `.age()` says how old it is)."""
        return self._obs

    # ----------------------------------------------------------------- connection
    def _connect(self) -> None:
        if not self.driver.is_connected:
            self.driver.connect()
        for cam in self.cameras.values():
            if not cam.is_connected:
                cam.connect()
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watchdog_loop, name="rlpt-robot-watchdog", daemon=True)
            self._watchdog.start()

    def _watchdog_loop(self) -> None:
        timeout = self.config.safety.watchdog_timeout_s
        while not self._closed:
            self._wake.wait(min(0.05, timeout / 4))
            if self._closed:
                return
            if self._armed and time.monotonic() - self._last_command > timeout:
                with self._lock:  # re-check under the lock: a step may have just sent a command
                    if self._armed and time.monotonic() - self._last_command > timeout:
                        self._fault_stop("watchdog_timeout", f"no command for more than {timeout} s "
                                                             "(safety.watchdog_timeout_s)")

    # ----------------------------------------------------------------- observations
    def _read(self) -> RobotObservation:
        obs = self.driver.read()
        for name, cam in self.cameras.items():
            frame, stamp = cam.read()
            obs.images[name] = frame
            obs.timestamp = min(obs.timestamp, stamp)
        return obs

    def _policy_observation(self, obs: RobotObservation) -> Any:
        p = self.config.policy
        parts = []
        for e in p.state:
            v = obs.get(e.key)
            if v is None or v.size != e.dim:
                raise RobotDriverError(
                    f"{self.config.source}: policy.observation.state needs {e.key!r} ({e.dim} values) but the "
                    f"{self.config.driver.name!r} driver's observation has "
                    f"{'no such field' if v is None else f'{v.size} values'}")
            parts.append(v)
        state = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if not p.images:
            return state
        out: dict[str, Any] = {"state": state} if p.state else {}
        for key, cam in p.images.items():
            img = obs.images.get(cam)
            if img is None:
                raise RobotDriverError(f"{self.config.source}: policy.observation.images.{key} needs camera {cam!r} "
                                       f"but the observation has only {sorted(obs.images)}")
            want = self.observation_space[key].shape[:2]
            if img.shape[:2] != want:
                import cv2

                img = cv2.resize(np.ascontiguousarray(img), (want[1], want[0]), interpolation=cv2.INTER_AREA)
            out[key] = np.asarray(img, np.uint8)
        return out

    def _record_obs(self, policy_obs: Any) -> np.ndarray:
        return policy_obs["state"] if isinstance(policy_obs, dict) else policy_obs

    def _check_age(self, obs: RobotObservation, when: str) -> None:
        age = obs.age()
        limit = self.config.safety.max_observation_age_s
        if age > limit:
            raise RobotSafetyError(f"observation {when} is {age:.3f} s old (safety.max_observation_age_s = {limit})",
                                   "stale_observation")

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._closed:
            raise RobotError("RobotEnv is closed")
        with self._lock:
            self._end_episode(stop=False)
            self._fault = None
            try:
                self._connect()
                self.driver.reset(seed)
                obs = self._read()
                self._check_age(obs, "after reset")
                policy_obs = self._policy_observation(obs)
            except RobotError:
                self._safe_stop()
                raise
            except Exception as e:  # a vendor library's own exception
                self._safe_stop()
                raise RobotDriverError(f"{self.config.driver.name} driver failed during reset: "
                                       f"{type(e).__name__}: {e}") from e
            self._obs, self._policy_obs = obs, policy_obs
            self._last_gripper = obs.gripper
            self._elapsed = 0
            now = time.monotonic()
            self._last_command, self._tick = now, now + self.config.dt
            self._armed, self._episode_open = True, True
            if self.recorder is not None:
                self.recorder.begin(self._record_obs(policy_obs), self.config.type)
        return policy_obs, {"fault": None}

    def step(self, action):
        if not self._episode_open and self._fault is None:
            raise RobotError("RobotEnv.step called before reset() (or after the episode ended); call reset()")
        if self._fault is not None:  # the episode already ended by a fault: never send anything
            return self._fault_result()
        cfg = self.config
        try:
            a = as_finite_vector(action, self.action_space.shape[0], "action")
        except RobotSafetyError as e:
            return self._trip(e.reason, str(e))
        with self._lock:
            if self._fault is not None:  # the watchdog fired while the policy was thinking
                return self._fault_result()
            timeout = cfg.safety.watchdog_timeout_s
            if time.monotonic() - self._last_command > timeout:
                return self._trip("watchdog_timeout", f"no command for more than {timeout} s "
                                                       "(safety.watchdog_timeout_s)")
            try:
                assert self._obs is not None
                self._check_age(self._obs, "the command is computed from")
                boxed = np.clip(a, cfg.policy.action_low, cfg.policy.action_high)
                sent, clipped = clip_command(cfg, cfg.command_from_policy(boxed), self._obs, self._last_gripper)
                if not np.array_equal(boxed, a):
                    clipped.insert(0, "action_space")
                if clipped:
                    log.debug("robot %s: command clipped by %s: wanted %s, sent %s", cfg.type, clipped,
                              cfg.command_from_policy(boxed).tolist(), sent.tolist())
                executed = self.driver.send(Command.from_vector(cfg, sent))
            except Exception as e:
                return self._fault_from(e)
            self._last_command = time.monotonic()
            if executed is not None:
                sent = executed.vector()
            if cfg.gripper.enabled:
                self._last_gripper = float(sent[-1])
        if self.realtime:
            delay = self._tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            self._tick += cfg.dt
            if self._tick < now:  # more than a period behind: re-synchronise instead of rushing
                self._tick = now + cfg.dt
        with self._lock:
            if self._fault is not None:
                return self._fault_result()
            try:
                obs = self._read()
                self._check_age(obs, "just read")
                policy_obs = self._policy_observation(obs)
            except Exception as e:
                return self._fault_from(e)
            self._obs, self._policy_obs = obs, policy_obs
            self._elapsed += 1
            reward = float(np.asarray(obs.extra["reward"]).reshape(-1)[0]) if "reward" in obs.extra else 0.0
            truncated = cfg.max_episode_steps is not None and self._elapsed >= cfg.max_episode_steps
            info: dict[str, Any] = {
                "action_sent": cfg.policy_from_command(sent).astype(np.float32), "command_sent": sent,
                "clipped": clipped, "fault": None, "stopped": False,
            }
            if "success" in obs.extra:
                info["success"] = info["is_success"] = bool(np.asarray(obs.extra["success"]).reshape(-1)[0])
            if self.recorder is not None:
                self.recorder.add(info["action_sent"], reward, False, truncated, self._record_obs(policy_obs), info)
            if truncated:
                info["stopped"] = self._end_episode(stop=True)
        return policy_obs, reward, False, bool(truncated), info

    # ----------------------------------------------------------------- faults
    def _fault_from(self, e: BaseException):
        if isinstance(e, RobotSafetyError):
            return self._trip(e.reason, str(e))
        if isinstance(e, RobotConnectionError | ConnectionError | TimeoutError | OSError):
            return self._trip("connection_lost", f"{type(e).__name__}: {e}")
        return self._trip("driver_error", f"{type(e).__name__}: {e}")

    def _safe_stop(self) -> tuple[bool, str | None]:
        try:
            self.driver.stop()
            return True, None
        except Exception as e:  # a dead link cannot stop the robot; its own watchdog must
            return False, f"{type(e).__name__}: {e}"

    def _fault_stop(self, reason: str, detail: str) -> None:
        """Stop the robot, end the episode and remember why (called with the lock held)."""
        stopped, err = self._safe_stop()
        self._armed = False
        self._fault = {"fault": reason, "fault_detail": detail, "stopped": stopped, "stop_error": err,
                       "step": self._elapsed}
        self.faults.append(dict(self._fault))
        log.warning("robot %s stopped (%s): %s%s", self.config.id or self.config.type, reason, detail,
                    "" if stopped else f"; driver.stop() failed: {err}")
        if self.recorder is not None and self._episode_open:
            self.recorder.end()
            self.recorder.save()  # nothing recorded is lost, whatever happens next
        self._episode_open = False

    def _trip(self, reason: str, detail: str):
        with self._lock:
            if self._fault is None:
                self._fault_stop(reason, detail)
        return self._fault_result()

    def _fault_result(self):
        assert self._fault is not None
        info = {**self._fault, "action_sent": None, "command_sent": None, "clipped": []}
        if self.config.safety.on_fault == "raise":
            raise RobotSafetyError(f"robot stopped ({info['fault']}): {info['fault_detail']}", info["fault"])
        return self._policy_obs, 0.0, False, True, info

    def _end_episode(self, stop: bool) -> bool:
        """Close the current episode (hold the robot still when `stop`); returns whether stop() succeeded."""
        stopped = False
        if stop and self._episode_open:
            stopped, _ = self._safe_stop()
        self._armed = False
        if self._episode_open and self.recorder is not None:
            self.recorder.end()
        self._episode_open = False
        return stopped

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._wake.set()
            try:
                if self.driver.is_connected:
                    self._safe_stop()
                    self.driver.disconnect()
            except Exception as e:
                log.warning("robot %s: disconnect failed: %s", self.config.type, e)
            for cam in self.cameras.values():
                cam.close()
            self._end_episode(stop=False)
            if self.recorder is not None:
                self.recorder.save()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)


def make_robot_env(config_or_path: RobotConfig | str | os.PathLike | Mapping[str, Any],
                   overrides: Iterable[str] | Mapping[str, Any] = (), **kwargs: Any) -> RobotEnv:
    """Build a `RobotEnv` from a config (object, YAML path or mapping).

    `overrides`: config overrides as ``a.b=c`` strings (``["safety.on_fault=raise", "driver.task=reach"]``) or a
    mapping of dotted keys. `kwargs`: `RobotEnv` arguments (``driver``, ``record_path``, ``save_every``,
    ``realtime``) and top-level config keys (``control_rate_hz=20``).
    """
    env_kwargs = {k: kwargs.pop(k) for k in _ENV_KWARGS if k in kwargs}
    if isinstance(config_or_path, RobotConfig):
        cfg = config_or_path.with_overrides(overrides, **kwargs) if overrides or kwargs else config_or_path
    elif isinstance(config_or_path, Mapping):
        cfg = RobotConfig.from_dict(config_or_path).with_overrides(overrides, **kwargs)
    else:
        cfg = load_robot_config(config_or_path, overrides)
        cfg = cfg.with_overrides(**kwargs) if kwargs else cfg
    return RobotEnv(cfg, **env_kwargs)
