"""`rlpt export`: the exported ONNX / TorchScript policy gives `agent.predict(obs, deterministic=True)` for every
agent type, `policy.json` carries a reproducible test vector, and bad inputs get specific errors."""

from __future__ import annotations

import importlib.util
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import rlpt
from rlpt.agents import BCConfig, CalQLConfig, IQLConfig, PPOConfig, SB3PPOConfig, SB3SACConfig, UniO4Config
from rlpt.cli import main
from rlpt.data.dataset import Dataset
from rlpt.errors import CheckpointError, ConfigError
from rlpt.export import FORMATS, export_policy, policy_module, verify_export

ACT_SPACE = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32), dtype=np.float32)
STATE_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
IMAGE_SPACE = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
OBS_MEAN, OBS_STD = np.array([0.5, -0.3, 0.1], np.float32), np.array([0.2, 0.1, 0.3], np.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- tiny task and agents
class TinyEnv(gym.Env):
    """Random-walk observations (3,) around OBS_MEAN; reward -|action|; 10 steps. Enough for SB3 to take steps."""

    observation_space, action_space = STATE_SPACE, ACT_SPACE

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.clip(OBS_MEAN + OBS_STD * self.np_random.normal(size=3), -1, 1).astype(np.float32)

    def step(self, action):
        self.t += 1
        return self._obs(), -float(np.abs(action).sum()), False, self.t >= 10, {}


def render(obs: np.ndarray) -> np.ndarray:
    img = np.zeros((8, 8, 3), np.uint8)
    i, j = np.clip((obs[:2] + 1) / 2 * 7.999, 0, 7).astype(int)
    img[i, j, 0] = 255
    img[:, :, 2] = np.uint8(127 * (obs[2] + 1))
    return img


def make_dataset(image: bool = False, episodes: int = 6, horizon: int = 10) -> Dataset:
    rng = np.random.default_rng(0)
    n = episodes * horizon
    obs = np.clip(OBS_MEAN + OBS_STD * rng.normal(size=(n + 1, 3)), -1, 1).astype(np.float32)
    actions = rng.uniform(ACT_SPACE.low, ACT_SPACE.high, (n, 2)).astype(np.float32)
    timeouts = (np.arange(n) % horizon) == horizon - 1
    if image:
        frames = np.stack([render(o) for o in obs])
        observations, next_observations = frames[:-1], frames[1:]
    else:
        observations, next_observations = obs[:-1], obs[1:]
    return Dataset(observations=observations, actions=actions, rewards=-np.abs(actions).sum(1).astype(np.float32),
                   terminals=np.zeros(n, bool), timeouts=timeouts, next_observations=next_observations,
                   metadata={"source": "export-test"})


class TinyCNN(nn.Module):
    def __init__(self, out_dim: int = 8):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) uint8 -> (B, out_dim)
        return self.net(x.float() / 255.0)


UNIO4_TINY = dict(critic_steps=4, dynamics_steps=4, bc_steps=4, improve_steps=4, batch_size=16, q_hidden=(16,),
                  v_hidden=(16,), policy_hidden=(16, 16), ensemble_size=2, dynamics_ensemble_size=2,
                  dynamics_elites=1, dynamics_hidden=(16,), dynamics_batch_size=16, dynamics_eval_interval=2,
                  ope_interval=2, ope_start_states=8, ope_horizon=2, bc_lr=1e-2, improve_lr=1e-2)


def build(kind: str):
    """(agent, load kwargs) for an agent type, trained for a few steps on the tiny data or env."""
    torch.manual_seed(0)
    if kind in ("sb3_ppo", "sb3_sac"):
        cfg = (SB3PPOConfig(n_steps=16, batch_size=8, n_epochs=1, net_arch=(16, 16)) if kind == "sb3_ppo" else
               SB3SACConfig(learning_starts=8, batch_size=8, net_arch=(16, 16), buffer_size=64))
        agent = cfg.create(STATE_SPACE, ACT_SPACE, device="cpu")
        agent.learn(TinyEnv(), total_timesteps=16)
        return agent, {}
    if kind == "ppo":
        agent = PPOConfig(rollout_steps=16, minibatch=8, epochs=1, hidden=(16, 16)).create(STATE_SPACE, ACT_SPACE,
                                                                                          device="cpu")
        agent.learn(TinyEnv(), total_timesteps=32)
        return agent, {}
    if kind == "unio4_image":
        agent = UniO4Config(**UNIO4_TINY).create(IMAGE_SPACE, ACT_SPACE, device="cpu", encoder=TinyCNN())
        agent.fit(make_dataset(image=True), agent.offline_total_steps)
        return agent, {"encoder": TinyCNN()}
    cfg = {"bc": BCConfig(hidden=(16, 16), batch_size=16, lr=1e-2),
           "iql": IQLConfig(hidden=(16, 16), batch_size=16, actor_lr=1e-2),
           "calql": CalQLConfig(policy_hidden=(16, 16), q_hidden=(16,), batch_size=16, cql_n_actions=2, policy_lr=1e-2),
           "unio4": UniO4Config(**UNIO4_TINY)}[kind]
    agent = cfg.create(STATE_SPACE, ACT_SPACE, device="cpu")
    agent.fit(make_dataset(), agent.offline_total_steps if kind == "unio4" else 10)
    return agent, {}


KINDS = ["bc", "iql", "calql", "unio4", "unio4_image", "ppo", "sb3_ppo", "sb3_sac"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trained(kind)` -> (agent, its checkpoint folder, load kwargs), built once per module."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            agent, kwargs = build(kind)
            cache[kind] = (agent, agent.save(tmp_path_factory.mktemp(kind) / "ckpt"), kwargs)
        return cache[kind]

    return get


def observations(agent, n: int, seed: int) -> np.ndarray:
    """Random observations in the exported input dtype; for vectors, half of them far outside the data."""
    space = agent.observation_space
    if space.dtype == np.uint8:
        return np.random.default_rng(seed).integers(0, 256, (n, *space.shape), dtype=np.uint8)
    obs = np.random.default_rng(seed).normal(size=(n, *space.shape)).astype(np.float32)
    obs[::2] *= 10.0  # exercises the normaliser's clip and the action bounds
    return obs


def check_parity(run, agent) -> None:
    """`run(obs)` (the exported file) equals agent.predict on random batches of 1 and 7, and one observation."""
    for seed, n in ((1, 1), (2, 7)):
        obs = observations(agent, n, seed)
        expected = agent.predict(obs, deterministic=True)[0]
        got = run(obs)
        assert got.shape == expected.shape == (n, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        assert np.all(got >= ACT_SPACE.low - 1e-6) and np.all(got <= ACT_SPACE.high + 1e-6)
    single = observations(agent, 1, 3)
    np.testing.assert_allclose(run(single)[0], agent.predict(single[0], deterministic=True)[0], rtol=0, atol=1e-5)


def check_policy_json(out, agent, ckpt, fmt: str) -> dict:
    info = json.loads((out / "policy.json").read_text())
    assert info["format"] == fmt and info["file"] == FORMATS[fmt] and info["agent"] == agent.agent_name
    assert info["source_checkpoint"] == str(ckpt.resolve()) and info["rlpt_version"] == rlpt.__version__
    assert info["input"] == {"name": "obs", "shape": ["batch", *agent.observation_space.shape],
                             "dtype": "uint8" if agent.observation_space.dtype == np.uint8 else "float32"}
    assert info["output"] == {"name": "action", "shape": ["batch", 2], "dtype": "float32"}
    assert info["action_space"] == {"shape": [2], "low": [-2.0, 0.0], "high": [2.0, 1.0]}
    tv = info["test_vector"]
    obs = np.asarray(tv["observations"], dtype=info["input"]["dtype"])
    assert obs.shape[0] >= 2
    np.testing.assert_allclose(tv["actions"], agent.predict(obs, deterministic=True)[0], rtol=0, atol=1e-6)
    assert verify_export(out)["ok"]
    return info


# ---------------------------------------------------------------------------------------------- parity per agent type
@pytest.mark.parametrize("kind", KINDS)
def test_torchscript_export_matches_predict(trained, kind, tmp_path):
    agent, ckpt, kwargs = trained(kind)
    rng_before = torch.get_rng_state()
    path = export_policy(ckpt, tmp_path / "ts", format="torchscript", **kwargs)
    assert path == tmp_path / "ts" / "policy.pt"
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading the checkpoint left the global RNG alone
    module = torch.jit.load(str(path))
    check_parity(lambda obs: module(torch.as_tensor(obs)).numpy(), agent)
    info = check_policy_json(tmp_path / "ts", agent, ckpt, "torchscript")
    assert info["parity"]["ok"] and info["parity"]["runtime"].startswith("torch.jit")
    # the in-memory module is the same function
    mod = policy_module(agent)
    check_parity(lambda obs: mod(torch.as_tensor(obs)).numpy(), agent)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export_matches_predict(trained, kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    agent, ckpt, kwargs = trained(kind)
    path = export_policy(ckpt, tmp_path / "onnx", format="onnx", **kwargs)
    assert path == tmp_path / "onnx" / "policy.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "obs" and out.name == "action" and isinstance(inp.shape[0], str)  # dynamic batch
    check_parity(lambda obs: session.run(None, {"obs": obs})[0], agent)
    info = check_policy_json(tmp_path / "onnx", agent, ckpt, "onnx")
    assert info["parity"]["runtime"].startswith("onnxruntime") and info["parity"]["max_abs_diff"] <= 1e-5


# ---------------------------------------------------------------------------------------------- errors and the CLI
def test_bad_sources_and_formats_get_specific_errors(trained, tmp_path):
    _, ckpt, _ = trained("bc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an rlpt agent checkpoint"):
        export_policy(tmp_path / "empty", tmp_path / "out", format="torchscript")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_policy(tmp_path / "missing", tmp_path / "out", format="torchscript")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("env: tiny\n")
    with pytest.raises(CheckpointError, match="without a checkpoint"):
        export_policy(run, tmp_path / "out", format="torchscript")
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_policy(ckpt, tmp_path / "out", format="tflite")
    assert not (tmp_path / "out").exists()


def test_image_agent_needs_its_encoder(trained, tmp_path):
    _, ckpt, _ = trained("unio4_image")
    with pytest.raises(ConfigError, match="encoder"):
        export_policy(ckpt, tmp_path / "x", format="torchscript")


def test_verify_export_detects_a_changed_test_vector_or_model_file(trained, tmp_path):
    _, ckpt, _ = trained("bc")
    out = tmp_path / "ts"
    path = export_policy(ckpt, out, format="torchscript")
    assert verify_export(out)["max_abs_diff"] <= 1e-5
    info = json.loads((out / "policy.json").read_text())
    info["test_vector"]["actions"][0][0] += 1e-3
    (out / "policy.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="test vector"):
        verify_export(out)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_export(out / "policy.json")


def test_cli_exports_a_run_folder_latest_checkpoint(trained, tmp_path, capsys):
    agent, _, _ = trained("bc")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("env: tiny\n")
    ckpt = agent.save(run / "checkpoints" / "step_000000010")
    (run / "checkpoints" / "latest").write_text("step_000000010\n")

    assert main(["export", str(run), "--format", "torchscript"]) == 0
    out = run / "export" / "step_000000010-torchscript"
    text = capsys.readouterr().out
    assert f"wrote {out / 'policy.pt'}" in text and "parity: OK" in text and "torch.jit" in text
    assert check_policy_json(out, agent, ckpt, "torchscript")["source_checkpoint"] == str(ckpt.resolve())

    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        assert main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "o")]) == 0
        assert "parity: OK, onnxruntime" in capsys.readouterr().out
        assert (tmp_path / "o" / "policy.onnx").exists() and verify_export(tmp_path / "o")["ok"]

    assert main(["export", str(tmp_path / "nope"), "--format", "torchscript"]) == 2
    assert "does not exist" in capsys.readouterr().err
