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


# ------------------------------------------------------------------------------------------ damaged checkpoints
def _tiny_checkpoint(path, step=7):
    obs_space, act_space = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,))
    agent = _TinyConfig(seed=3).create(obs_space, act_space, device="cpu")
    agent.net(torch.ones(4, 3)).pow(2).mean().backward()
    agent.opt.step()
    agent.step = step
    return agent.save(path)


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(f, at=None):
    b = bytearray(f.read_bytes())
    i = len(b) - 5 if at is None else at
    b[i] ^= 0x01
    f.write_bytes(bytes(b))


@pytest.mark.parametrize("damage", [
    ("model.safetensors", _truncate), ("model.safetensors", lambda f: f.write_bytes(b"")),
    ("training_state.pt", _truncate), ("agent.json", lambda f: f.write_text("{not json")),
    ("agent.json", lambda f: f.write_text('["a list"]')), ("model.safetensors", _flip),
    ("training_state.pt", _flip), ("manifest.json", lambda f: f.write_text("garbage")),
    ("manifest.json", lambda f: f.unlink()),
])
def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path, damage):
    name, how = damage
    ck = _tiny_checkpoint(tmp_path / "ck")
    how(ck / name)
    with pytest.raises(CheckpointError) as e:
        load(ck, device="cpu")
    assert str(ck) in str(e.value)


def test_flipped_weight_bytes_are_caught_by_the_manifest_even_without_a_format_error(tmp_path):
    ck = _tiny_checkpoint(tmp_path / "ck")
    f = ck / "model.safetensors"
    _flip(f)  # the last bytes are float data: safetensors itself loads this file happily
    from safetensors.torch import load_file

    load_file(str(f))
    with pytest.raises(CheckpointError, match=r"model.safetensors.*SHA-256"):
        load(ck, device="cpu")


def test_nan_weights_are_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from rlpt.utils import write_manifest

    ck = _tiny_checkpoint(tmp_path / "ck")
    tensors = load_file(str(ck / "model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key][0] = float("nan")
    save_file(tensors, str(ck / "model.safetensors"))
    write_manifest(ck)  # a consistent checkpoint that holds NaN weights
    with pytest.raises(CheckpointError, match=f"{key}.*NaN"):
        load(ck, device="cpu")


def test_manifest_lists_every_file_with_its_checksum(tmp_path):
    ck = _tiny_checkpoint(tmp_path / "ck")
    manifest = json.loads((ck / "manifest.json").read_text())
    assert set(manifest["files"]) == {"agent.json", "model.safetensors", "training_state.pt"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (ck / name).stat().st_size and len(entry["sha256"]) == 64


def test_resume_falls_back_to_the_previous_intact_checkpoint(tmp_path, capsys):
    from rlpt.train import load_checkpoint_for_resume

    run = RunDir.create(tmp_path, "recipe", "env", 0)
    for step in (100, 200, 300):
        run.mark_latest(_tiny_checkpoint(run.checkpoint_dir(step), step=step))
    _truncate(run.checkpoint_dir(300) / "model.safetensors")
    _flip(run.checkpoint_dir(200) / "training_state.pt")
    ckpt, agent = load_checkpoint_for_resume(run)
    assert ckpt == run.checkpoint_dir(100) and agent.step == 100
    err = capsys.readouterr().err
    assert "step_000000300" in err and "step_000000200" in err
    _truncate(run.checkpoint_dir(100) / "agent.json")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_checkpoint_for_resume(run)


def test_cli_prints_a_damaged_checkpoint_as_one_error_line(tmp_path, capsys):
    from rlpt.cli import main

    ck = _tiny_checkpoint(tmp_path / "ck")
    _truncate(ck / "model.safetensors")
    assert main(["eval", str(ck), "--env", "Pendulum-v1", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpt: error:") and "model.safetensors" in err and "Traceback" not in err


def test_pretraining_checkpoint_has_a_manifest_and_a_damaged_state_is_a_checkpoint_error(tmp_path):
    from rlpt.pretrain.common import load_training_state, save_training_checkpoint

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    folder = tmp_path / "step_000000010"
    save_training_checkpoint(folder, lambda tmp: (tmp / "w.json").write_text("{}"), opt, 10,
                             np.random.default_rng(0))
    assert set(json.loads((folder / "manifest.json").read_text())["files"]) == {"w.json", "training_state.pt"}
    assert load_training_state(folder, opt, np.random.default_rng(1), torch.device("cpu")) == 10
    _flip(folder / "training_state.pt")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_training_state(folder, opt, np.random.default_rng(1), torch.device("cpu"))
    (folder / "manifest.json").unlink()  # an older checkpoint without a manifest: still no raw traceback
    _truncate(folder / "training_state.pt")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_training_state(folder, opt, np.random.default_rng(1), torch.device("cpu"))
