"""The config system (`rlpt.config`): typed validation, the one override syntax, the dotted setter, the YAML loader,
and each config family (agent, recipe, robot, pretraining, search space) failing clearly on a wrong type."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydantic
import pytest
import yaml

import rlpt.agents  # noqa: F401  (registers agents)
import rlpt.agents.rllib  # noqa: F401  (registers rllib_ppo / rllib_sac; imports no Ray)
from rlpt.agents.base import agent_class, known_agents
from rlpt.agents.iql import IQLConfig
from rlpt.cli import build_parser, main
from rlpt.config import (
    MAX_CONFIG_BYTES,
    apply_overrides,
    flag_overrides,
    load_yaml,
    parse_overrides,
    set_dotted,
    validate,
)
from rlpt.errors import ConfigError, RobotConfigError
from rlpt.nets.worldmodel import WorldModelConfig
from rlpt.pretrain.vptr import ICVFConfig
from rlpt.robots import load_robot_config
from rlpt.train import load_recipe
from rlpt.tune import parse_space

ROOT = Path(__file__).resolve().parents[1]
ROBOT = ROOT / "robot_configs" / "sim_widowx_tabletop_push.yaml"


@dataclasses.dataclass
class Inner:
    width: int = 1
    scale: float = 1.0


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner = dataclasses.field(default_factory=Inner)
    layers: list[Inner] = dataclasses.field(default_factory=list)
    sizes: tuple[int, ...] = (8,)
    maybe: Inner | None = None


class Model(pydantic.BaseModel):
    rate: float
    steps: int = 10


def expect(match: str, fn, *args, error=ConfigError, **kwargs) -> str:
    with pytest.raises(error) as e:
        fn(*args, **kwargs)
    assert match in str(e.value), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- validate
def test_unambiguous_values_are_converted():
    cfg = IQLConfig.from_dict({"actor_lr": "2e-5", "hidden": ["256", 256], "batch_size": "64", "discount": 1})
    assert cfg.actor_lr == 2e-5 and isinstance(cfg.actor_lr, float)
    assert cfg.hidden == (256, 256) and cfg.batch_size == 64 and isinstance(cfg.discount, float)
    out = validate(Outer, {"name": "x", "inner": {"width": "3"}, "layers": [{"scale": "0.5"}], "sizes": [1, "2"],
                           "maybe": {"width": 2}}, "o.yaml")
    assert out.inner == Inner(3, 1.0) and out.layers == [Inner(1, 0.5)] and out.sizes == (1, 2)
    assert out.maybe == Inner(2, 1.0)
    assert validate(Model, {"rate": "1e-3"}, "m.yaml") == Model(rate=1e-3)


def test_wrong_types_name_source_key_expected_and_given():
    msg = expect("src.yaml: hidden: expected tuple[int, ...]; got 'abc'", IQLConfig.from_dict, {"hidden": "abc"},
                 source="src.yaml")
    assert "Traceback" not in msg
    expect("src.yaml: actor_lr: expected float; got 'abc'", IQLConfig.from_dict, {"actor_lr": "abc"}, "src.yaml")
    expect("batch_size: expected int; got 2.5", IQLConfig.from_dict, {"batch_size": 2.5})
    expect("actor_lr_decay_steps: expected int | None; got 'x'", IQLConfig.from_dict, {"actor_lr_decay_steps": "x"})
    expect("o.yaml: inner.width: expected int; got 'wide'", validate, Outer, {"name": "x", "inner": {"width": "wide"}},
           "o.yaml")
    expect("o.yaml: layers[1].scale: expected float; got []", validate, Outer,
           {"name": "x", "layers": [{}, {"scale": []}]}, "o.yaml")
    expect("o.yaml: sizes[0]: expected int; got 'a'", validate, Outer, {"name": "x", "sizes": ["a"]}, "o.yaml")
    expect("o.yaml: name: required key is missing (expected str)", validate, Outer, {}, "o.yaml")
    expect("m.yaml: rate: expected float; got 'fast'", validate, Model, {"rate": "fast"}, "m.yaml")
    expect("cfg: expected a mapping of Inner's fields", validate, Inner, [1, 2], "cfg")
    # several problems are reported together, each with its key
    msg = expect("3 invalid values in IQLConfig", IQLConfig.from_dict,
                 {"actor_lr": "abc", "hidden": 3, "batch_size": 2.5}, "s")
    assert all(k in msg for k in ("actor_lr: expected float", "hidden: expected tuple", "batch_size: expected int"))
    # a prefix makes the key path the user's (`config.` inside a recipe)
    expect("r.yaml: config.hidden[1]: expected int; got 'x'", validate, IQLConfig, {"hidden": [1, "x"]}, "r.yaml",
           prefix="config.")


def test_unknown_keys_are_rejected_with_the_valid_ones():
    msg = expect("src.yaml: unknown key(s) ['actr_lr'] for IQLConfig; valid keys:", IQLConfig.from_dict,
                 {"actr_lr": 1e-4}, "src.yaml")
    assert "'actor_lr'" in msg
    expect("o.yaml: inner: unknown key(s) ['depth'] for Inner; valid keys: ['scale', 'width']", validate, Outer,
           {"name": "x", "inner": {"depth": 2}}, "o.yaml")
    expect("unknown key(s) ['stepz'] for Model", validate, Model, {"rate": 1, "stepz": 3}, "m.yaml")


def test_every_agent_config_round_trips_through_its_dict():
    for name in known_agents():
        cls = agent_class(name)
        cfg = cls.config_class.from_dict({})
        again = cls.config_class.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())), source=name)
        assert again == cfg, name


# ----------------------------------------------------------------------------- overrides and the dotted setter
def test_set_dotted_on_nested_dicts_and_lists():
    data = {"a": {"b": 1}, "lst": [{"x": 1}, 5], "none": None}
    set_dotted(data, "a.c.d", 2)
    set_dotted(data, "lst.0.x", 3)
    set_dotted(data, "lst.1", 6)
    set_dotted(data, "none.k", "v")  # a null section becomes a mapping
    assert data == {"a": {"b": 1, "c": {"d": 2}}, "lst": [{"x": 3}, 6], "none": {"k": "v"}}
    expect("a.b is a value (1), not a section", set_dotted, data, "a.b.c", 0)
    expect("expected an index in [0, 1], got '2'", set_dotted, data, "lst.2", 0)
    expect("expected an index in [0, 1], got 'x'", set_dotted, data, "lst.x", 0)
    expect("bad key 'a..b'", set_dotted, data, "a..b", 0)
    expect("bad key ''", set_dotted, data, "", 0)
    expect("o: s.t: s is a value (1), not a section", set_dotted, {"s": 1}, "s.t", 0, "o", RobotConfigError,
           error=RobotConfigError)  # the caller's error class


def test_override_syntax():
    parsed = parse_overrides(["seed=1", "config.hidden=[64, 64]", "config.actor_lr=2e-5", "pretrained=",
                              "x.y=null", "name=a=b", "flag=true"])
    assert parsed == {"seed": 1, "config.hidden": [64, 64], "config.actor_lr": "2e-5", "pretrained": None,
                      "x.y": None, "name": "a=b", "flag": True}
    expect("override 'seed' must look like key=value", parse_overrides, ["seed"])
    expect("bad key '.seed'", parse_overrides, [".seed=1"])
    expect("not valid YAML", parse_overrides, ["hidden=[1,"])
    assert parse_overrides({"driver.port": 5}) == {"driver.port": 5}
    base = {"config": {"hidden": [8]}, "seed": 0}
    out = apply_overrides(base, ["config.hidden=[16]", "config.lr=1e-3"], "r.yaml")
    assert out == {"config": {"hidden": [16], "lr": "1e-3"}, "seed": 0} and base["config"]["hidden"] == [8]
    expect("r.yaml: seed.x: seed is a value (0), not a section", apply_overrides, base, ["seed.x=1"], "r.yaml")


def test_load_yaml_is_bounded_and_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a: {b: [1, 2]}\n")
    assert load_yaml(p) == {"a": {"b": [1, 2]}}
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    expect(f"{big}: {MAX_CONFIG_BYTES + 1} bytes", load_yaml, big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    expect(f"{binary}: expected UTF-8 text", load_yaml, binary)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    expect(f"{bad}: not valid YAML", load_yaml, bad)
    expect("not valid YAML", load_yaml, bad, RobotConfigError, error=RobotConfigError)


# ----------------------------------------------------------------------------- config families
def write_recipe(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"agent": "iql", "env": "mujoco/Hopper-v5", "config": {"hidden": [8]}, **extra}))
    return path


def test_recipes_are_typed(tmp_path):
    path = write_recipe(tmp_path)
    r = load_recipe(str(path), ["eval_interval=200", "mix_ratio=1", "offline_steps=auto"])
    assert r.eval_interval == 200 and r.mix_ratio == 1.0 and isinstance(r.mix_ratio, float)
    assert r.offline_steps == "auto"
    expect(f"{path}: eval_interval: expected int; got 'often'", load_recipe, str(path), ["eval_interval=often"])
    expect("offline_steps: expected int | 'auto'; got 'lots'", load_recipe, str(path), ["offline_steps=lots"])
    expect("agent.hidden: agent is a value ('iql'), not a section", load_recipe, str(path), ["agent.hidden=[4]"])
    recipe = load_recipe(str(path), ["config.actor_lr=abc"])  # the recipe itself is fine, its agent config is not
    expect(f"{path}: config.actor_lr: expected float; got 'abc'", recipe.check_agent_config, str(path))
    expect("agent: unknown agent 'iqll'", load_recipe(str(path), ["agent=iqll"]).check_agent_config, "r")


def test_robot_configs_are_typed():
    cfg = load_robot_config(ROBOT, ["control_rate_hz=20", "safety.on_fault=raise"])
    assert cfg.control_rate_hz == 20 and cfg.safety.on_fault == "raise"
    assert load_robot_config(ROBOT, {"control_rate_hz": "2.5e1"}).control_rate_hz == 25.0  # a number as text
    expect(f"{ROBOT}: control_rate_hz: expected a finite number; got 'fast'", load_robot_config, ROBOT,
           ["control_rate_hz=fast"], error=RobotConfigError)
    expect("max_episode_steps: expected an integer", load_robot_config, ROBOT, ["max_episode_steps=2.5"],
           error=RobotConfigError)
    # the range checks stay: a period in ms instead of s is refused
    expect("safety.watchdog_timeout_s: expected a number in (0, 60]", load_robot_config, ROBOT,
           ["safety.watchdog_timeout_s=500"], error=RobotConfigError)
    expect("give dotted keys as 'a.b=c' strings or a mapping", cfg.with_overrides, error=RobotConfigError,
           safety__on_fault="stop")


def test_pretraining_configs_are_typed():
    assert WorldModelConfig.preset("tiny", lr="1e-3", batch_size="8").batch_size == 8
    assert ICVFConfig.preset("tiny", hidden=["16", 16]).hidden == (16, 16)
    expect("preset 'tiny': lr: expected float; got 'x'", WorldModelConfig.preset, "tiny", lr="x")
    expect("vptr.json: hidden[0]: expected int; got 'a'", ICVFConfig.from_dict, {"hidden": ["a"]}, "vptr.json")
    expect("vptr.json: unknown key(s) ['hiden']", ICVFConfig.from_dict, {"hiden": [1]}, "vptr.json")
    msg = expect("expectile must be in (0, 1)", ICVFConfig.from_dict, {"expectile": 2.0}, "vptr.json")
    assert msg.count("vptr.json") == 1  # the class's own range checks keep working, named once


def test_search_space_values_are_typed():
    recipe = {"agent": "iql", "env": "mujoco/Hopper-v5"}
    expect("config.batch_size: expected int; got 'big'", parse_space,
           {"config.batch_size": {"type": "choice", "values": [64, "big"]}}, "s.yaml", recipe)
    expect("config.batch_size: expected int; got 0.5", parse_space,
           {"config.batch_size": {"type": "uniform", "low": 0.5, "high": 4}}, "s.yaml", recipe)
    expect("eval_interval: expected int; got 'x'", parse_space,
           {"eval_interval": {"type": "grid", "values": ["x"]}}, "s.yaml", recipe)


# ----------------------------------------------------------------------------- CLI
def test_cli_prints_config_errors_without_a_traceback(tmp_path, capsys):
    path = write_recipe(tmp_path)
    assert main(["train", str(path), "config.actor_lr=abc", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: config.actor_lr: expected float; got 'abc'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # it failed before anything ran
    assert main(["train", str(path), "agent.actor_lr=abc"]) == 2
    assert "agent is a value ('iql'), not a section" in capsys.readouterr().err
    assert main(["robot", "check", str(ROBOT), "control_rate_hz=fast"]) == 2
    assert "control_rate_hz: expected a finite number; got 'fast'" in capsys.readouterr().err
    assert main(["robot", "check", str(ROBOT), "control_rate_hz=20"]) == 0
    assert "at 20 Hz" in capsys.readouterr().out
    for args, msg in ((["--lr", "abc"], "lr: expected float; got 'abc'"),
                      (["expectile=abc"], "expectile: expected float; got 'abc'"),
                      (["--batch-size", "2.5"], "batch_size: expected int; got 2.5")):
        assert main(["pretrain", "vptr", "--videos", str(tmp_path / "none"), *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err


def test_pretrain_flags_are_generated_from_config_fields():
    args = build_parser(["pretrain"]).parse_args(["pretrain", "vptr", "--videos", "v", "tau=0.01", "--out", "o",
                                                  "--batch-size", "8", "--layer-norm"])
    assert flag_overrides(args, ("batch_size", "layer_norm", "lr")) == ["batch_size=8", "layer_norm=true"]
    parser = build_parser(["pretrain"])
    for cmd, cls in (("vptr", ICVFConfig), ("contextwm", WorldModelConfig)):
        sub = parser._subparsers._group_actions[0].choices["pretrain"]._subparsers._group_actions[0].choices[cmd]
        flags = {a.dest[4:]: a for a in sub._actions if a.dest.startswith("cfg_")}
        assert flags, cmd
        hints = {f.name for f in dataclasses.fields(cls)}
        assert set(flags) <= hints, cmd  # every such flag is a config field
