"""RobotEnv and the safety layer: clipping, faults (NaN, stale, driver error, watchdog), recording, sim driver,
and a property test that no command outside the configured limits ever reaches a driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlpt.errors import RobotDriverError, RobotError, RobotSafetyError
from rlpt.robots import Command, RobotConfig, RobotEnv, RobotObservation, clip_command, make_robot_env
from rlpt.robots.drivers.base import BaseDriver

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "robot_configs"


# ------------------------------------------------------------------------------------------ fakes
class RecordingDriver(BaseDriver):
    """A fake robot that integrates commands exactly and records each one with the state it was applied to."""

    name = "recording"

    def __init__(self, config: RobotConfig) -> None:
        super().__init__(config)
        n = len(config.joints)
        self.q = (config.joint_lower + config.joint_upper) / 2 if n else np.zeros(0)
        self.ee = (config.ee.workspace_lower + config.ee.workspace_upper) / 2 if config.ee is not None else np.zeros(3)
        self.rot = np.zeros(3)
        self.grip = config.gripper.upper if config.gripper.enabled else None
        self.commands: list[tuple[Command, dict]] = []
        self.stops = self.resets = 0
        self.connected = False
        self.obs_delay = 0.0  # observations claim to be this old
        self.fail_send: Exception | None = None
        self.fail_read: Exception | None = None

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self) -> None:
        self.connected = True

    def disconnect(self) -> None:
        self.connected = False

    def reset(self, seed=None) -> None:
        self.resets += 1

    def read(self) -> RobotObservation:
        if self.fail_read is not None:
            raise self.fail_read
        return RobotObservation(timestamp=time.monotonic() - self.obs_delay, joint_pos=self.q.copy(),
                                joint_vel=np.zeros_like(self.q), ee_pos=self.ee.copy(), ee_rot=self.rot.copy(),
                                gripper=self.grip, extra={"reward": np.array([1.0])})

    def send(self, command: Command) -> None:
        if self.fail_send is not None:
            raise self.fail_send
        self.commands.append((command, {"q": self.q.copy(), "ee": self.ee.copy(), "grip": self.grip}))
        v = np.asarray(command.values, float)
        if command.mode == "joint_pos":
            self.q = v.copy()
        elif command.mode == "joint_vel":
            self.q = self.q + v * self.config.dt
        else:
            self.ee = self.ee + v[:3]
            if v.size == 6:
                self.rot = self.rot + v[3:]
        if command.gripper is not None:
            self.grip = command.gripper

    def stop(self) -> None:
        self.stops += 1


def joint_cfg(**kw) -> dict:
    d = {"type": "fake", "driver": {"name": "test_robots_env:RecordingDriver"}, "control_mode": "joint_pos",
         "control_rate_hz": 10,
         "joints": [{"name": "a", "lower": -1.0, "upper": 1.0, "max_velocity": 2.0},
                    {"name": "b", "lower": 0.0, "upper": 2.0, "max_velocity": 0.5}],
         "max_relative_target": 0.1, "gripper": {"enabled": True, "lower": 0.0, "upper": 1.0, "max_delta": 0.25},
         "safety": {"watchdog_timeout_s": 2.0, "max_observation_age_s": 0.5}, "max_episode_steps": 20}
    d.update(kw)
    return d


def ee_cfg(**kw) -> dict:
    d = {"type": "fake", "driver": {"name": "test_robots_env:RecordingDriver"}, "control_mode": "ee_delta",
         "control_rate_hz": 5,
         "ee": {"workspace": {"lower": [0.1, -0.2, 0.0], "upper": [0.5, 0.2, 0.3]}, "max_delta": [0.05, 0.05, 0.05],
                "max_linear_velocity": 0.2},
         "safety": {"watchdog_timeout_s": 2.0, "max_observation_age_s": 0.5}}
    d.update(kw)
    return d


def make_env(d: dict, **kw) -> tuple[RobotEnv, RecordingDriver]:
    cfg = RobotConfig.from_dict(d)
    drv = RecordingDriver(cfg)
    return RobotEnv(cfg, driver=drv, realtime=False, **kw), drv


# ------------------------------------------------------------------------------------------ clip_command
def test_clip_command_joint_limits_and_step():
    cfg = RobotConfig.from_dict(joint_cfg())
    obs = RobotObservation(0.0, joint_pos=np.array([0.95, 1.0]))
    out, why = clip_command(cfg, [5.0, 1.03, 0.6], obs, prev_gripper=0.2)
    # joint a: limit 1.0, step 0.1 -> 1.0; joint b: max_velocity 0.5 * 0.1 s = 0.05 per step -> 1.03 stays
    np.testing.assert_allclose(out, [1.0, 1.03, 0.45])
    assert set(why) == {"joint_limits", "gripper"}
    out, why = clip_command(cfg, [0.5, 0.0, 0.2], obs)
    np.testing.assert_allclose(out, [0.85, 0.95, 0.2])
    assert why == ["max_step"]
    with pytest.raises(RobotSafetyError) as e:
        clip_command(cfg, [np.nan, 0.0, 0.0], obs)
    assert e.value.reason == "nan_action"
    with pytest.raises(RobotDriverError, match="joint_pos"):
        clip_command(cfg, [0.0, 0.0, 0.0], RobotObservation(0.0))


def test_clip_command_outside_limits_moves_back_by_one_step():
    cfg = RobotConfig.from_dict(joint_cfg())
    obs = RobotObservation(0.0, joint_pos=np.array([1.5, 1.0]))  # joint a measured beyond its limit
    out, _ = clip_command(cfg, [1.5, 1.0, 1.0], obs)
    assert out[0] == pytest.approx(1.4)  # toward the range, one step


def test_clip_command_ee_workspace_and_velocity():
    cfg = RobotConfig.from_dict(ee_cfg())
    obs = RobotObservation(0.0, ee_pos=np.array([0.48, 0.0, 0.15]))
    out, why = clip_command(cfg, [0.05, 0.0, -0.01], obs)
    np.testing.assert_allclose(out, [0.02, 0.0, -0.01])  # workspace x <= 0.5
    assert why == ["workspace"]
    out, why = clip_command(cfg, [-0.05, 0.05, 0.05], obs)  # per-axis ok, norm 0.087 > 0.2 m/s * 0.2 s
    assert np.linalg.norm(out) == pytest.approx(0.04)
    assert "max_velocity" in why


# ------------------------------------------------------------------------------------------ env basics
def test_env_spaces_step_reports_action_sent():
    env, drv = make_env(joint_cfg())
    assert env.control_rate_hz == 10 and env.config.dt == pytest.approx(0.1)
    assert env.action_space.shape == (3,) and env.observation_space.shape == (3,)  # default: joint_pos + gripper
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs, [0.0, 1.0, 1.0])
    assert info["fault"] is None and drv.connected and drv.resets == 1
    obs, reward, term, trunc, info = env.step([1.0, 2.0, 0.0])
    cmd, state = drv.commands[-1]
    np.testing.assert_allclose(cmd.values, [0.1, 1.05])  # within one step of (0, 1)
    assert cmd.gripper == pytest.approx(0.75)  # gripper max_delta 0.25 from 1.0
    np.testing.assert_allclose(info["action_sent"], [0.1, 1.05, 0.75], rtol=1e-6)
    np.testing.assert_allclose(info["command_sent"], [0.1, 1.05, 0.75])
    assert set(info["clipped"]) >= {"max_step", "gripper"} and info["fault"] is None
    assert reward == 1.0 and not term and not trunc
    env.close()
    assert drv.stops >= 1 and not drv.connected


def test_truncation_stops_robot_and_step_after_end_raises():
    env, drv = make_env(joint_cfg(max_episode_steps=3))
    env.reset()
    for _ in range(3):
        _, _, term, trunc, info = env.step(env.action_space.sample() * 0)
    assert trunc and not term and info["stopped"]
    with pytest.raises(RobotError, match="reset"):
        env.step(np.zeros(3))
    env.close()


def test_out_of_range_actions_are_recorded_as_sent(tmp_path):
    env, drv = make_env(joint_cfg(), record_path=tmp_path / "rec.hdf5")
    env.reset()
    sent = []
    for a in ([1e9, -1e9, 5.0], [-3.0, 7.0, -2.0], [0.0, 1.0, 1.0]):
        _, _, _, _, info = env.step(a)
        assert info["fault"] is None
        sent.append(info["action_sent"])
    env.close()
    ds = _load(tmp_path / "rec.hdf5")
    np.testing.assert_allclose(ds.actions, np.stack(sent))  # the dataset holds what the robot executed
    assert np.all(ds.actions[:, 0] >= -1.0) and np.all(ds.actions[:, 0] <= 1.0)
    assert np.all(np.abs(np.diff(np.r_[[[0.0, 1.0]], ds.actions[:, :2]], axis=0)) <= [0.1 + 1e-6, 0.05 + 1e-6])


def test_policy_mapping_scale_offset():
    d = joint_cfg(policy={"observation": {"state": ["joint_pos"]},
                          "action": {"low": -1, "high": 1, "scale": [0.05, 0.05, 0.5], "offset": [0.0, 1.0, 0.5]}})
    env, drv = make_env(d)
    env.reset()
    _, _, _, _, info = env.step([1.0, -1.0, -1.0])
    cmd, _ = drv.commands[-1]
    np.testing.assert_allclose(cmd.values, [0.05, 0.95])
    assert cmd.gripper == pytest.approx(0.75)  # wanted 0.0, gripper max_delta 0.25 from 1.0
    np.testing.assert_allclose(info["action_sent"], [1.0, -1.0, 0.5], rtol=1e-6)
    env.close()


# ------------------------------------------------------------------------------------------ faults
def _load(path):
    from rlpt.data import load_d4rl

    return load_d4rl(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_action_stops_robot_and_keeps_recording(tmp_path, bad, caplog):
    env, drv = make_env(joint_cfg(), record_path=tmp_path / "rec.hdf5")
    env.reset()
    for _ in range(4):
        env.step(np.zeros(3))
    n_sent, stops = len(drv.commands), drv.stops
    with caplog.at_level(logging.WARNING, logger="rlpt.robots"):
        obs, reward, term, trunc, info = env.step([0.0, bad, 0.5])
    assert len(drv.commands) == n_sent  # nothing reached the driver
    assert drv.stops == stops + 1 and info["stopped"]
    assert trunc and not term and info["fault"] == "nan_action" and "NaN or inf" in info["fault_detail"]
    assert "nan_action" in caplog.text
    ds = _load(tmp_path / "rec.hdf5")  # written at the fault, before close()
    assert len(ds) == 4 and ds.timeouts[-1]
    # stepping again repeats the fault without touching the robot; reset starts a fresh episode
    _, _, _, trunc, info = env.step(np.zeros(3))
    assert trunc and info["fault"] == "nan_action" and len(drv.commands) == n_sent
    env.reset()
    env.step(np.zeros(3))
    assert len(drv.commands) == n_sent + 1
    env.close()
    assert len(_load(tmp_path / "rec.hdf5")) == 5


def test_wrong_shape_action_is_a_fault():
    env, drv = make_env(joint_cfg())
    env.reset()
    _, _, _, trunc, info = env.step(np.zeros(5))
    assert trunc and info["fault"] == "invalid_action" and not drv.commands
    env.reset()
    _, _, _, trunc, info = env.step(["left", 0, 0])
    assert trunc and info["fault"] == "invalid_action" and "not numeric" in info["fault_detail"] and drv.stops == 2
    env.close()


def test_stale_observation_stops_robot():
    env, drv = make_env(joint_cfg())
    env.reset()
    env.step(np.zeros(3))
    drv.obs_delay = 0.8  # the sensor data is 0.8 s old (limit 0.5)
    _, _, _, trunc, info = env.step(np.zeros(3))
    assert trunc and info["fault"] == "stale_observation" and drv.stops == 1
    drv.obs_delay = 0.0
    with pytest.raises(RobotSafetyError, match="stale|old"):  # reset refuses a stale robot too
        drv.obs_delay = 0.8
        env.reset()
    env.close()


def test_slow_policy_makes_observation_stale():
    env, drv = make_env(joint_cfg(safety={"watchdog_timeout_s": 5.0, "max_observation_age_s": 0.15}))
    env.reset()
    time.sleep(0.25)  # "policy inference" longer than the allowed observation age
    _, _, _, trunc, info = env.step(np.zeros(3))
    assert trunc and info["fault"] == "stale_observation" and not drv.commands
    env.close()


@pytest.mark.parametrize("where", ["send", "read"])
def test_driver_error_stops_robot(where, tmp_path):
    env, drv = make_env(joint_cfg(), record_path=tmp_path / "rec.hdf5")
    env.reset()
    env.step(np.zeros(3))
    setattr(drv, f"fail_{where}", RuntimeError("servo 3 overload"))
    _, _, _, trunc, info = env.step(np.zeros(3))
    assert trunc and info["fault"] == "driver_error" and "servo 3 overload" in info["fault_detail"]
    assert drv.stops == 1
    assert len(_load(tmp_path / "rec.hdf5")) == 1
    env.close()


def test_watchdog_thread_stops_a_hung_loop():
    env, drv = make_env(joint_cfg(safety={"watchdog_timeout_s": 0.2, "max_observation_age_s": 5.0}))
    env.reset()
    env.step(np.zeros(3))
    time.sleep(0.45)  # the policy loop hangs; the background watchdog must stop the robot by itself
    assert drv.stops == 1 and env.faults and env.faults[-1]["fault"] == "watchdog_timeout"
    n = len(drv.commands)
    _, _, _, trunc, info = env.step(np.zeros(3))
    assert trunc and info["fault"] == "watchdog_timeout" and len(drv.commands) == n
    env.close()


def test_on_fault_raise_raises_after_stopping(tmp_path):
    env, drv = make_env(joint_cfg(safety={"on_fault": "raise"}), record_path=tmp_path / "r.hdf5")
    env.reset()
    env.step(np.zeros(3))
    with pytest.raises(RobotSafetyError) as e:
        env.step([np.nan, 0, 0])
    assert e.value.reason == "nan_action" and drv.stops == 1
    assert len(_load(tmp_path / "r.hdf5")) == 1
    env.close()


# ------------------------------------------------------------------------------------------ property test
@st.composite
def robot_setups(draw):
    mode = draw(st.sampled_from(["joint_pos", "joint_vel", "ee_delta"]))
    rate = draw(st.floats(1.0, 100.0))
    fin = st.floats(-3.0, 3.0)
    n = draw(st.integers(1, 4))
    joints = []
    for i in range(n):
        lo = draw(fin)
        joints.append({"name": f"j{i}", "lower": lo, "upper": lo + draw(st.floats(0.05, 4.0)),
                       "max_velocity": draw(st.floats(0.05, 5.0))})
    d = {"type": "fuzz", "driver": "test_robots_env:RecordingDriver", "control_mode": mode, "control_rate_hz": rate,
         "joints": joints, "safety": {"watchdog_timeout_s": 60.0, "max_observation_age_s": 60.0}}
    if draw(st.booleans()):
        d["max_relative_target"] = [draw(st.floats(0.001, 1.0)) for _ in range(n)]
    if mode == "ee_delta":
        lo = [draw(fin) for _ in range(3)]
        rot = draw(st.booleans())
        d["ee"] = {"workspace": {"lower": lo, "upper": [v + draw(st.floats(0.01, 2.0)) for v in lo]},
                   "max_delta": [draw(st.floats(0.001, 0.5)) for _ in range(6 if rot else 3)],
                   "max_linear_velocity": draw(st.floats(0.01, 2.0)),
                   "max_angular_velocity": draw(st.floats(0.01, 3.0)),
                   "rotation": rot}
    if draw(st.booleans()):
        glo = draw(fin)
        d["gripper"] = {"enabled": True, "lower": glo, "upper": glo + draw(st.floats(0.1, 2.0)),
                        "max_delta": draw(st.one_of(st.none(), st.floats(0.01, 1.0)))}
    cfg = RobotConfig.from_dict(d)
    dim = cfg.command_dim
    d["policy"] = {"action": {"low": -1e30, "high": 1e30, "scale": [draw(st.sampled_from([1.0, -2.0, 1e-3, 1e6]))
                                                                      for _ in range(dim)],
                              "offset": [draw(st.floats(-10, 10)) for _ in range(dim)]}}
    value = st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([1e300, -1e300, np.nan, np.inf, -np.inf, 0.0]))
    actions = draw(st.lists(st.lists(value, min_size=dim, max_size=dim), min_size=1, max_size=25))
    return d, actions


def _assert_within_limits(cfg: RobotConfig, cmd: Command, state: dict, prev_grip) -> None:
    eps = 1e-9
    v = np.asarray(cmd.values, float)
    assert np.all(np.isfinite(v))
    if cfg.control_mode == "joint_pos":
        assert np.all(v >= cfg.joint_lower - eps) and np.all(v <= cfg.joint_upper + eps)
        assert np.all(np.abs(v - state["q"]) <= cfg.joint_step * (1 + 1e-9) + eps)
    elif cfg.control_mode == "joint_vel":
        assert np.all(np.abs(v) <= np.minimum(cfg.joint_max_velocity, cfg.joint_step / cfg.dt) * (1 + 1e-9) + eps)
        reach = state["q"] + v * cfg.dt
        assert np.all(reach >= cfg.joint_lower - 1e-7) and np.all(reach <= cfg.joint_upper + 1e-7)
    else:
        ee = cfg.ee
        t = v[:3]
        assert np.all(np.abs(v) <= ee.max_delta * (1 + 1e-9) + eps)
        assert np.linalg.norm(t) <= ee.max_linear_velocity * cfg.dt * (1 + 1e-9) + eps
        reach = state["ee"] + t
        assert np.all(reach >= ee.workspace_lower - 1e-7) and np.all(reach <= ee.workspace_upper + 1e-7)
        if ee.rotation:
            assert np.linalg.norm(v[3:]) <= ee.max_angular_velocity * cfg.dt * (1 + 1e-9) + eps
    if cfg.gripper.enabled:
        g = cmd.gripper
        assert g is not None and np.isfinite(g) and cfg.gripper.lower - eps <= g <= cfg.gripper.upper + eps
        if cfg.gripper.max_delta is not None and prev_grip is not None:
            assert abs(g - prev_grip) <= cfg.gripper.max_delta + 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(robot_setups())
def test_no_command_outside_limits_ever_reaches_the_driver(setup):
    d, actions = setup
    env, drv = make_env(d)
    cfg = env.config
    try:
        env.reset()
        finite_steps = 0
        for a in actions:
            _, _, _, trunc, info = env.step(np.asarray(a, float))
            if np.all(np.isfinite(a)):
                finite_steps += 1
                assert info["fault"] is None
            else:
                assert info["fault"] == "nan_action" and trunc
            if trunc:
                env.reset()
        assert len(drv.commands) == finite_steps  # non-finite actions never reach the driver
        prev = cfg.gripper.upper if cfg.gripper.enabled else None
        for cmd, state in drv.commands:
            _assert_within_limits(cfg, cmd, state, prev)
            prev = cmd.gripper
    finally:
        env.close()


# ------------------------------------------------------------------------------------------ sim driver
@pytest.fixture(scope="module")
def tabletop():
    pytest.importorskip("mujoco")
    from rlpt.envs import tabletop

    return tabletop


def test_sim_push_matches_tabletop_and_scripted_policy_succeeds(tabletop, tmp_path):
    env = make_robot_env(CONFIGS / "sim_widowx_tabletop_push.yaml", realtime=False, record_path=tmp_path / "push.hdf5")
    ref = tabletop.TabletopEnv("push")
    obs, _ = env.reset(seed=3)
    ref_obs, _ = ref.reset(seed=3)
    np.testing.assert_allclose(obs, ref_obs, atol=1e-6)  # same observation as the tabletop/push env
    assert env.observation_space.shape == ref.observation_space.shape
    assert env.action_space.shape == ref.action_space.shape
    policy = tabletop.scripted_policy(env.driver.env)
    success = False
    for _ in range(80):
        obs, reward, _, trunc, info = env.step(policy(obs))
        assert info["fault"] is None and np.all(np.abs(info["command_sent"][:3]) <= 0.02 + 1e-12)
        success |= info["success"]
        if trunc:
            break
    assert success and trunc
    env.close()
    ds = _load(tmp_path / "push.hdf5")
    assert len(ds) == 80 and ds.observations.shape == (80, 30) and ds.infos["success"].any()


def test_sim_joint_control_respects_step_and_renders_cameras(tabletop):
    d = __import__("yaml").safe_load((CONFIGS / "sim_widowx_tabletop_reach_joint.yaml").read_text())
    d["cameras"] = {"wrist": {"width": 32, "height": 24, "fps": 10}}
    d["policy"]["observation"]["images"] = {"pixels": "wrist"}
    env = make_robot_env(d, realtime=False)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (24, 32, 3) and obs["pixels"].dtype == np.uint8 and obs["state"].shape == (40,)
    q0 = obs["state"][:6].copy()
    obs, _, _, _, info = env.step(np.r_[q0 + 1.0, 0.0])  # wants +1 rad on every joint
    np.testing.assert_allclose(info["command_sent"][:6], np.clip(q0 + 0.1, env.config.joint_lower,
                                                                  env.config.joint_upper), atol=1e-6)
    assert "max_step" in info["clipped"]
    assert np.all(obs["state"][:6] - q0 > 0.02)  # the arm moved toward the targets
    env.close()


def test_sim_joint_velocity_mode(tabletop):
    env = make_robot_env(CONFIGS / "sim_widowx_tabletop_reach_joint.yaml", control_mode="joint_vel",
                         max_relative_target=None, policy={}, realtime=False)
    env.reset(seed=0)
    q0 = env.last_observation.joint_pos.copy()
    v = np.array([0.5, 0.0, 0.0, 0.0, 0.0, -0.5])
    for _ in range(3):
        _, _, _, _, info = env.step(np.r_[v, 1.0])
        assert info["fault"] is None and not info["clipped"]
    moved = env.last_observation.joint_pos - q0
    assert moved[0] > 0.05 and moved[5] < -0.05 and abs(moved[3]) < 0.02  # 0.5 rad/s for 0.3 s, with lag
    env.close()


def test_sim_robot_env_passes_gymnasium_checker(tabletop):
    import warnings

    from gymnasium.utils.env_checker import check_env

    env = make_robot_env(CONFIGS / "sim_widowx_tabletop_push.yaml", realtime=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    assert not caught, [str(w.message) for w in caught]
    env.close()


def test_realtime_holds_the_control_rate():
    env, drv = make_env(joint_cfg(control_rate_hz=50))
    env.realtime = True
    env.reset()
    t0 = time.monotonic()
    for _ in range(5):
        env.step(np.zeros(3))
    assert time.monotonic() - t0 >= 5 * 0.02 * 0.9
    env.close()


def test_opencv_camera_frames_reach_the_policy(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "cam.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 20, (40, 30))
    for i in range(5):
        w.write(np.full((30, 40, 3), 40 * i, np.uint8))
    w.release()
    d = joint_cfg(cameras={"cam": {"source": "opencv", "index_or_path": path, "width": 40, "height": 30, "fps": 50}},
                  policy={"observation": {"state": ["joint_pos"], "images": {"image": "cam"}, "image_size": [16, 16]}})
    env, _ = make_env(d)
    obs, _ = env.reset()
    assert obs["image"].shape == (16, 16, 3) and obs["state"].shape == (2,)
    obs, *_ = env.step(np.zeros(3))
    assert obs["image"].dtype == np.uint8
    env.close()


# ------------------------------------------------------------------------------------------ any action
class _ExplodingArray:
    def __array__(self, dtype=None, copy=None):
        raise ZeroDivisionError("boom")


def _bad_actions():
    import torch

    return [[10**400, 0, 0], torch.zeros(3, requires_grad=True), _ExplodingArray(), "abc", [1 + 2j, 0, 0],
            [[1.0], [2.0, 3.0]], None, {"a": 1}, object(), [0, "x", 0], np.array(["1", "2", "3"]),
            np.zeros(3, dtype=object), [0.0, 10**400, 0.0]]


def test_any_unconvertible_action_stops_the_robot_at_once():
    env, drv = make_env(joint_cfg())
    for i, bad in enumerate(_bad_actions()):
        env.reset()
        env.step(np.zeros(3))
        n = len(drv.commands)
        _, _, term, trunc, info = env.step(bad)  # never raises
        assert trunc and not term and info["fault"] == "invalid_action", (bad, info)
        assert drv.stops == i + 1 and info["stopped"] and len(drv.commands) == n
        assert not env._armed
    env.close()


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(2**1023, 2**1100) | st.floats() | st.complex_numbers()
    | st.text(max_size=3) | st.binary(max_size=3),
    lambda kids: st.lists(kids, max_size=4), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=_json_like)
def test_property_step_never_raises_and_never_sends_a_bad_command(action):
    env, drv = make_env(joint_cfg())
    env.reset()
    _, _, term, trunc, info = env.step(action)
    if info["fault"] is None:  # it was turned into a finite 3-vector: the command sent is within limits
        cmd, _ = drv.commands[-1]
        assert np.all(np.isfinite(cmd.values)) and drv.stops == 0
    else:
        assert info["fault"] in ("invalid_action", "nan_action") and drv.stops == 1 and not drv.commands
    env.close()
