"""`rlpt deploy`: a saved policy runs on a robot config's env and every step is recorded."""

import json

import numpy as np
import pytest

from rlpt.agents.bc import BCConfig
from rlpt.cli import main
from rlpt.data import load_d4rl
from rlpt.deploy import deploy
from rlpt.envs import make_env
from rlpt.errors import CheckpointError, ConfigError
from rlpt.robots import make_robot_env

ROBOT = "robot_configs/sim_widowx_tabletop_push.yaml"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    env = make_robot_env(ROBOT, realtime=False)
    agent = BCConfig(hidden=(16, 16)).create(env.observation_space, env.action_space, device="cpu")
    env.close()
    return agent.save(tmp_path_factory.mktemp("policy") / "ckpt")


def test_deploy_records_every_step(policy, tmp_path):
    s = deploy(policy, ROBOT, episodes=2, out=tmp_path, max_steps=15, realtime=False, quiet=True)
    assert [e["length"] for e in s["episodes"]] == [15, 15]
    ds = load_d4rl(s["dataset"])
    assert len(ds) == 30 and ds.num_episodes == 2
    env = make_robot_env(ROBOT, realtime=False)
    assert env.action_space.contains(ds.actions[0]) and np.isfinite(ds.observations).all()
    env.close()
    assert json.loads((tmp_path / "summary.json").read_text())["policy"] == str(policy)


def test_deploy_cli_and_errors(policy, tmp_path, capsys):
    assert main(["deploy", "--policy", str(policy), "--robot", ROBOT, "--max-steps", "5", "--no-realtime",
                 "--out", str(tmp_path / "cli")]) == 0
    assert "recorded 5 steps" in capsys.readouterr().out
    hopper = make_env("mujoco/Hopper-v5")
    other = BCConfig(hidden=(8,)).create(hopper.observation_space, hopper.action_space, device="cpu")
    with pytest.raises(ConfigError, match="policy mapping"):
        deploy(other.save(tmp_path / "hopper"), ROBOT, out=tmp_path / "x", realtime=False, quiet=True)
    with pytest.raises(CheckpointError):
        deploy(tmp_path / "missing", ROBOT, realtime=False, quiet=True)
    with pytest.raises(ConfigError, match="episodes"):
        deploy(policy, ROBOT, episodes=0, realtime=False)
