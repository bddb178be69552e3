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


def test_trained_policy_over_the_remote_protocol_records_data_that_trains(tmp_path, monkeypatch):
    """Issue acceptance: a policy trained with rlpt runs on the simulated WidowX through the remote protocol on
    127.0.0.1; the dataset it records loads back into rlpt and trains an agent."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from rlpt.collect.generate import make_dataset

    root = Path(__file__).resolve().parent.parent
    demos = make_dataset("tabletop-push-scripted", size=320, seed=0, n_envs=2, quiet=True)
    env = make_robot_env(ROBOT, realtime=False)
    agent = BCConfig(hidden=(32, 32), batch_size=64).create(env.observation_space, env.action_space, device="cpu")
    env.close()
    before = agent.fit(demos, n_steps=150)
    policy = agent.save(tmp_path / "bc")
    token = "remote-acceptance-token"
    monkeypatch.setenv("RLPT_ROBOT_TOKEN", token)
    server = subprocess.Popen([sys.executable, "-m", "rlpt.robots.drivers.remote", str(root / ROBOT), "--port", "0",
                               "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RLPT_ROBOT_TOKEN": token}, cwd=root)
    try:
        line = server.stdout.readline()
        assert line.startswith("LISTENING 127.0.0.1 "), line + server.stderr.read()
        port = int(line.split()[2])
        # generous timeouts: CI machines are slow
        s = deploy(policy, root / "robot_configs" / "remote_sim_widowx_tabletop_push.yaml", episodes=2, max_steps=12,
                   out=tmp_path / "deploy", realtime=False, quiet=True,
                   overrides=[f"driver.port={port}", "driver.timeout_s=10.0", "safety.max_observation_age_s=10.0"])
        assert not s["faults"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    recorded = load_d4rl(s["dataset"])
    assert len(recorded) == 24 and recorded.num_episodes == 2
    student = BCConfig(hidden=(16,), batch_size=16).create(env.observation_space, env.action_space, device="cpu")
    first = student.fit(recorded, n_steps=1)
    last = student.fit(recorded, n_steps=200)
    key = next(k for k in last if "loss" in k)
    assert last[key] < first[key]  # the recorded data trains an agent
    assert "loss" in " ".join(before)
