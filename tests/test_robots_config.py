"""Robot configs: every shipped config validates, errors name the file/key/expectation, overrides, the
policy mapping, driver loading (optional vendor imports) and `rlpt robot check`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlpt.cli import main
from rlpt.errors import ConfigError, RobotConfigError, RobotDependencyError
from rlpt.robots import RobotConfig, load_robot_config, make_driver
from rlpt.robots.drivers.base import driver_class, require

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "robot_configs").glob("*.yaml"))


def base() -> dict:
    return yaml.safe_load((ROOT / "robot_configs" / "sim_widowx_tabletop_push.yaml").read_text())


def write(tmp_path, d: dict, name: str = "robot.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def test_shipped_configs_validate():
    names = {p.stem for p in CONFIGS}
    assert {"widowx250_bridge", "franka_panda", "franka_fr3", "ur5e", "sim_widowx_tabletop_push"} <= names
    for p in CONFIGS:
        cfg = load_robot_config(p)
        assert cfg.control_rate_hz > 0 and cfg.policy.action_low.size == cfg.command_dim
        assert cfg.safety.watchdog_timeout_s > cfg.dt
        s = cfg.summary()
        assert s["source"] == str(p) and s["control_mode"] in ("joint_pos", "joint_vel", "ee_delta")


def test_widowx_bridge_conventions():
    cfg = load_robot_config(ROOT / "robot_configs" / "widowx250_bridge.yaml")
    assert cfg.control_rate_hz == 5 and cfg.control_mode == "ee_delta" and cfg.ee.rotation
    np.testing.assert_allclose(cfg.policy.action_low, [-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0])
    np.testing.assert_allclose(cfg.policy.action_high, [0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0])
    assert [e.key for e in cfg.policy.state] == ["ee_pos", "ee_rot", "gripper"] and cfg.policy.state_dim == 7
    assert cfg.policy.images == {"image_0": "blue"} and cfg.policy.image_size == (256, 256)
    assert cfg.joint_names[0] == "waist" and cfg.joints[1].lower == pytest.approx(-1.88496)


def test_sim_camera_matches_tabletop():
    pytest.importorskip("mujoco")
    from rlpt.envs.tabletop import TabletopEnv

    cfg = load_robot_config(ROOT / "robot_configs" / "sim_widowx_tabletop_push.yaml")
    cam = cfg.cameras["front"]
    env = TabletopEnv("push")
    env.reset(seed=0)
    np.testing.assert_allclose(cam.intrinsics, env.camera_intrinsics("front", (cam.height, cam.width)), atol=1e-5)
    np.testing.assert_allclose(cam.extrinsics, env.camera_extrinsics("front"), atol=1e-5)


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda d: d.update(control_mode="torque"), "control_mode", "one of ['joint_pos', 'joint_vel', 'ee_delta']"),
    (lambda d: d.update(contrl_rate_hz=5), "contrl_rate_hz", "did you mean 'control_rate_hz'"),
    (lambda d: d.pop("control_rate_hz"), "control_rate_hz", "required key is missing"),
    (lambda d: d.update(control_rate_hz=-1), "control_rate_hz", "a number in (0, 2000]"),
    (lambda d: d["joints"][1].update(lower=3.0), "joints[1]", "lower < upper"),
    (lambda d: d["joints"][0].update(max_velocity="fast"), "joints[0].max_velocity", "a finite number"),
    (lambda d: d["ee"]["workspace"].update(lower=[0.1, 0.2]), "ee.workspace.lower", "a list of 3 numbers"),
    (lambda d: d["ee"].update(max_delta=[0.02] * 6), "ee.max_delta", "a list of 3 numbers"),
    (lambda d: d.pop("ee"), "ee", "for control_mode 'ee_delta'"),
    (lambda d: d["policy"]["action"].update(scale=[1, 1, 1]), "policy.action.scale", "a list of 4 numbers"),
    (lambda d: d["policy"]["action"].update(scale=0), "policy.action.scale", "non-zero"),
    (lambda d: d["policy"]["observation"].update(state=["elbow"]), "policy.observation.state[0]", "joint_pos"),
    (lambda d: d["policy"]["observation"].update(images={"pixels": "wrist"}), "policy.observation.images.pixels",
     "a camera of 'cameras'"),
    (lambda d: d["cameras"]["front"].update(intrinsics=[[1, 0], [0, 1]]), "cameras.front.intrinsics", "3x3 matrix"),
    (lambda d: d["cameras"]["front"].update(source="usb"), "cameras.front.source", "one of ['driver', 'opencv']"),
    (lambda d: d["safety"].update(watchdog_timeout_s=0.05), "safety.watchdog_timeout_s", "more than one control"),
    (lambda d: d["safety"].update(on_fault="ignore"), "safety.on_fault", "['stop', 'raise']"),
    (lambda d: d.update(home=[0.0] * 5), "home", "a list of 6 numbers"),
    (lambda d: d.update(gripper={"enabled": True, "lower": 1.0, "upper": 0.0}), "gripper", "lower < upper"),
])
def test_errors_name_file_key_and_expectation(tmp_path, mutate, key, expected):
    d = base()
    mutate(d)
    p = write(tmp_path, d)
    with pytest.raises(RobotConfigError) as e:
        load_robot_config(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and expected in msg, msg
    assert isinstance(e.value, ConfigError)


def test_file_errors(tmp_path):
    write(tmp_path, base(), "sim_push.yaml")
    with pytest.raises(RobotConfigError, match="not found; close matches: sim_push.yaml"):
        load_robot_config(tmp_path / "sim_psh.yaml")
    (tmp_path / "bad.yaml").write_text("type: [unclosed\n")
    with pytest.raises(RobotConfigError, match="not valid YAML"):
        load_robot_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(RobotConfigError, match="must be a YAML mapping"):
        load_robot_config(tmp_path / "list.yaml")


def test_overrides_and_relative_calibration_path(tmp_path):
    d = base()
    d["calibration_file"] = "calib/unit.json"
    p = write(tmp_path, d)
    cfg = load_robot_config(p, {"control_rate_hz": 20, "driver.task": "reach"})
    assert cfg.control_rate_hz == 20 and cfg.driver.options["task"] == "reach"
    assert cfg.calibration_file == tmp_path / "calib" / "unit.json"
    cfg2 = cfg.with_overrides(["safety.on_fault=raise"], max_episode_steps=7)
    assert cfg2.safety.on_fault == "raise" and cfg2.max_episode_steps == 7 and cfg.safety.on_fault == "stop"
    with pytest.raises(RobotConfigError, match="safety.on_fault"):
        cfg.with_overrides({"safety.on_fault": "later"})


def test_policy_mapping_is_invertible():
    cfg = RobotConfig.from_dict(base())
    a = np.array([0.5, -1.0, 0.25, -1.0])
    c = cfg.command_from_policy(a)
    np.testing.assert_allclose(c, [0.01, -0.02, 0.005, 0.0])
    np.testing.assert_allclose(cfg.policy_from_command(c), a)


def test_defaults_when_policy_section_is_missing():
    d = base()
    d.pop("policy")
    cfg = RobotConfig.from_dict(d)
    assert [e.key for e in cfg.policy.state] == ["joint_pos", "ee_pos", "gripper"]
    np.testing.assert_allclose(cfg.policy.action_high, [0.02, 0.02, 0.02, 1.0])  # the command bounds
    np.testing.assert_allclose(cfg.policy.action_scale, 1.0)


def test_driver_loading_and_optional_imports(monkeypatch):
    with pytest.raises(RobotDependencyError) as e:
        require("rlpt_no_such_vendor_module", "vendor-sdk", "vendor", "vendor")
    assert "pip install 'rlpt[vendor]'" in str(e.value) and "vendor-sdk" in str(e.value)
    with pytest.raises(RobotConfigError, match="unknown robot driver 'kuka'"):
        driver_class("kuka")
    cfg = load_robot_config(ROOT / "robot_configs" / "franka_panda.yaml")
    drv = make_driver(cfg)  # building a driver does not import the vendor library or touch the robot
    assert not drv.is_connected
    monkeypatch.setitem(sys.modules, "franky", None)  # as if franky-control were not installed
    with pytest.raises(RobotDependencyError, match=r"rlpt\[franka\].*franky-control"):
        drv.connect()
    with pytest.raises(RobotConfigError, match="unknown option.*'hots'"):
        make_driver(cfg.with_overrides(["driver.hots=10.0.0.1"]))
    with pytest.raises(RobotConfigError, match="driver.host: required"):
        make_driver(cfg.with_overrides(["driver.host=null"]))


def test_cli_robot_check(capsys, tmp_path):
    p = ROOT / "robot_configs" / "widowx250_bridge.yaml"
    assert main(["robot", "check", str(p)]) == 0
    out = capsys.readouterr().out
    assert '"control_mode": "ee_delta"' in out and "OK:" in out and "widowx250" in out
    d = base()
    d["control_mode"] = "teleport"
    assert main(["robot", "check", str(write(tmp_path, d))]) == 2
    err = capsys.readouterr().err
    assert "control_mode" in err and "teleport" in err


def test_cli_robot_check_connect(capsys):
    pytest.importorskip("mujoco")
    p = ROOT / "robot_configs" / "sim_widowx_tabletop_push.yaml"
    assert main(["robot", "check", str(p), "--connect"]) == 0
    out = capsys.readouterr().out
    assert '"connect"' in out and '"task_state"' in out and "read one observation" in out


# ------------------------------------------------------------------------------------------ hostile files
_BOMB = "".join(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9 if p else ["x"] * 9) + "]\n"
                for p, c in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh", strict=True))


@pytest.mark.parametrize("content, expected", [
    (_BOMB.encode(), "alias bomb"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
    (b"type: sim\x00\ncontrol_mode: ee_delta\n", "NUL byte"),
    (b"type: x\ncontrol_rate_hz: 1" + b"0" * 5000 + b"\n", "unreadable value"),
    (b"a: " + b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (b"a: &a [*a]\n", "recursive alias"),
    (b"type: x\n" + b"# padding\n" * 500_000, "bytes; expected a config of at most"),
])
def test_hostile_yaml_files_fail_fast_with_one_line(tmp_path, capsys, content, expected):
    import time

    p = tmp_path / "robot.yaml"
    p.write_bytes(content)
    t0 = time.monotonic()
    with pytest.raises(RobotConfigError, match=expected) as e:
        load_robot_config(p)
    assert time.monotonic() - t0 < 2.0 and str(p) in str(e.value) and "\n" not in str(e.value)
    assert main(["robot", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpt: error:") and "Traceback" not in err


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda d: d.update(control_rate_hz=1e9), "control_rate_hz", "a number in (0, 2000]"),
    (lambda d: d.update(control_rate_hz=10**400), "control_rate_hz", "a finite number"),
    (lambda d: d.update(max_episode_steps=80.5), "max_episode_steps", "an integer in [1, 10000000]"),
    (lambda d: d.update(max_episode_steps=True), "max_episode_steps", "an integer"),
    (lambda d: d["ee"]["workspace"].update(upper=[10**400, 0.2, 0.3]), "ee.workspace.upper", "3 finite numbers"),
    (lambda d: d["ee"]["workspace"].update(upper=[0.5, 0.2, 300.0]), "ee.workspace.upper", "within +-10"),
    (lambda d: d["ee"].update(max_linear_velocity=500.0), "ee.max_linear_velocity", "(0, 10]"),
    (lambda d: d["safety"].update(watchdog_timeout_s=600), "safety.watchdog_timeout_s", "(0, 60]"),
    (lambda d: d["cameras"]["front"].update(width=10**6), "cameras.front.width", "(0, 8192]"),
    (lambda d: d["cameras"]["front"].update(fps=1e6), "cameras.front.fps", "(0, 1000]"),
    (lambda d: d["policy"]["action"].update(scale=[10**400, 1, 1, 1]), "policy.action.scale", "finite numbers"),
])
def test_implausible_values_are_refused_naming_the_key(tmp_path, mutate, key, expected):
    d = base()
    mutate(d)
    p = write(tmp_path, d)
    with pytest.raises(RobotConfigError) as e:
        load_robot_config(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and expected in msg, msg
    assert len(msg) < 400


def test_misspelt_driver_option_fails_robot_check_without_connecting(tmp_path, capsys):
    d = base()
    d["driver"]["tsak"] = "push"  # the sim driver takes 'task'
    assert main(["robot", "check", str(write(tmp_path, d))]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['tsak']" in err and "Traceback" not in err


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(2**1023, 2**1100) | st.floats()
            | st.text(max_size=5))
_values = st.recursive(_scalars, lambda k: st.lists(k, max_size=4) | st.dictionaries(st.text(max_size=5), k,
                                                                                     max_size=3), max_leaves=8)
_KEYS = ["control_rate_hz", "max_episode_steps", "joints", "ee", "gripper", "cameras", "safety", "policy", "home",
         "max_relative_target", "driver", "type", "id", "control_mode", "calibration_file"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(_KEYS), sub=st.sampled_from([None, "workspace", "fps", "lower", "max_delta", "front",
                                                         "watchdog_timeout_s", "action", "observation"]),
       value=_values)
def test_property_any_value_anywhere_validates_or_is_a_robot_config_error(key, sub, value):
    d = base()
    if sub is not None and isinstance(d.get(key), dict):
        d[key][sub] = value
    else:
        d[key] = value
    try:
        cfg = RobotConfig.from_dict(d, source="prop.yaml")
    except RobotConfigError as e:
        assert "prop.yaml" in str(e)
    else:
        assert 0 < cfg.control_rate_hz <= 2000 and np.isfinite(cfg.dt)
