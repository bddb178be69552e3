"""Core pieces: Dataset invariants, run folders and metrics, agent checkpoints, seeding."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpt.agents.base import Agent, AgentConfig, load, register_agent
from rlpt.data import Dataset
from rlpt.errors import CheckpointError, ConfigError, DatasetShapeError, DatasetValueError
from rlpt.nets import MLP
from rlpt.runs import MetricsLogger, RunDir, read_metrics
from rlpt.utils import merge_nested, set_seed


def small_dataset(n=10):
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[2] = True
    timeouts[5] = True
    return Dataset(np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.zeros((n, 2), np.float32),
                   np.ones(n, np.float32), terminals, timeouts)


def test_episode_bounds_returns_and_mc_returns():
    ds = small_dataset()
    b = ds.episode_bounds()
    assert b.starts.tolist() == [0, 3, 6] and b.ends.tolist() == [3, 6, 10]
    assert b.truncated.tolist() == [False, True, True]
    assert ds.episode_returns().tolist() == [3.0, 3.0, 4.0]
    mc = ds.mc_returns(0.5)
    np.testing.assert_allclose(mc[:3], [1.75, 1.5, 1.0])  # 1 + .5 + .25 at the first row
    np.testing.assert_allclose(mc[6:], [1.875, 1.75, 1.5, 1.0])


def test_transitions_skip_rows_without_successor():
    ds = small_dataset()
    idx = ds.transition_indices()
    assert 5 not in idx and 9 not in idx and 2 in idx  # timeouts and the open end have no s'
    np.testing.assert_array_equal(ds.next_obs(np.array([0, 2])), ds.observations[[1, 2]])
    batch = ds.sample(64, rng=np.random.default_rng(0))
    assert batch["observations"].shape == (64, 3) and batch["terminals"].dtype == torch.float32


def test_dataset_rejects_bad_input():
    ds = small_dataset()
    with pytest.raises(DatasetShapeError, match="rewards"):
        Dataset(ds.observations, ds.actions, ds.rewards[:-1], ds.terminals, ds.timeouts)
    obs = ds.observations.copy()
    obs[4, 1] = np.nan
    with pytest.raises(DatasetValueError, match="row 4"):
        Dataset(obs, ds.actions, ds.rewards, ds.terminals, ds.timeouts)
    with pytest.raises(DatasetShapeError, match="observation space"):
        ds.check_spaces(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,)))


def test_concatenate_closes_open_episodes():
    ds = small_dataset()
    both = Dataset.concatenate([ds, ds])
    assert len(both) == 20 and both.num_episodes == 6
    assert both.timeouts[9]


def test_metrics_logger_and_resume_truncation(tmp_path):
    run = RunDir.create(tmp_path, "recipe", "env", 0)
    run.write_config({"a": 1})
    log = MetricsLogger(run, tensorboard=False)
    for step in range(5):
        log.log(step * 10, {"train/loss": float(step)})
    log.log(50, {"eval/return": 3.0})
    log.close()
    rows = read_metrics(run.path)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40, 50]
    header = (run.path / "metrics.csv").read_text().splitlines()[0]
    assert "eval/return" in header and "train/loss" in header
    resumed = MetricsLogger(RunDir.open(run.path), tensorboard=False, resume_from_step=20)
    assert [r["step"] for r in resumed.rows] == [0, 10, 20]
    assert len((run.path / "metrics.csv").read_text().splitlines()) == 4


@dataclasses.dataclass
class _TinyConfig(AgentConfig):
    hidden: tuple[int, ...] = (8,)


@register_agent("_tiny_test_agent")
class _TinyAgent(Agent):
    config_class = _TinyConfig

    def __init__(self, config, observation_space, action_space, device="auto"):
        super().__init__(config, observation_space, action_space, device)
        self.net = MLP(observation_space.shape[0], action_space.shape[0], config.hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), 1e-3)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def _act(self, obs, deterministic):
        return torch.tanh(self.net(obs))


def test_checkpoint_round_trip(tmp_path):
    obs_space, act_space = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,))
    agent = _TinyConfig(seed=3).create(obs_space, act_space, device="cpu")
    loss = agent.net(torch.ones(4, 3)).pow(2).mean()
    loss.backward()
    agent.opt.step()
    agent.step = 7
    agent.save(tmp_path / "ck")
    again = load(tmp_path / "ck", device="cpu")
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), again.act(obs))
    assert again.step == 7 and again.config.hidden == (8,)
    assert again.opt.state_dict()["state"][0]["step"] == agent.opt.state_dict()["state"][0]["step"]
    assert again.predict(obs[0])[0].shape == (2,)
    meta = json.loads((tmp_path / "ck" / "agent.json").read_text())
    assert meta["agent"] == "_tiny_test_agent"
    with pytest.raises(CheckpointError):
        load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="valid keys"):
        _TinyConfig.from_dict({"hiden": [8]})


def test_seeding_is_reproducible():
    a = set_seed(5).normal(size=3), torch.rand(3)
    b = set_seed(5).normal(size=3), torch.rand(3)
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_merge_nested_unites_parallel_benchmark_parts():
    seed0_a = {"hopper": {"0": {"unio4": 1.0}}}
    seed0_b = {"hopper": {"0": {"iql": 2.0}, "1": {"unio4": 3.0}}}
    rerun = {"hopper": {"0": {"unio4": 4.0}}}
    merged = merge_nested([seed0_a, seed0_b, rerun], depth=3)
    assert merged == {"hopper": {"0": {"unio4": 4.0, "iql": 2.0}, "1": {"unio4": 3.0}}}
    # shallower depth: a later part's whole entry wins
    assert merge_nested([seed0_a, seed0_b], depth=1) == seed0_b
    assert seed0_a == {"hopper": {"0": {"unio4": 1.0}}}  # inputs untouched
