"""Recipes with learned rewards: the `reward:` and `reset_free:` sections of `rlpt train`, and the factory."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rlpt.data import load_d4rl
from rlpt.data.dataset import Dataset
from rlpt.envs import make_env
from rlpt.errors import ConfigError
from rlpt.rewards.factory import build_reward_model, cut_at_first_success, offline_rewards, wrap_with_reward
from rlpt.train import Recipe, train

TINY = {"batch_size": 32, "policy_hidden": [32, 32], "q_hidden": [32, 32], "cql_n_actions": 2}


def tiny_recipe(**kw) -> Recipe:
    base = dict(agent="calql", env="tabletop/push", dataset=["tabletop-push-noisy", "tabletop-push-reset-noisy"],
                dataset_size=240, offline_steps=10, online_steps=120, eval_interval=10, online_eval_interval=60,
                eval_episodes=1, video_steps=0, name="tiny-rf", config=TINY,
                reward={"model": {"type": "ground_truth"}, "offset": -1.0, "terminate_on_success": True,
                        "offline": "success"},
                reset_free={"hard_reset_every": 100})
    base.update(kw)
    return Recipe(**base)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_reset_free_recipe_with_ground_truth_reward(tmp_path, data_root):
    s = train(tiny_recipe(), out_root=tmp_path, data_root=data_root, quiet=True)
    assert s["online_steps"] == 120 and s["online_success_rate"] is not None
    assert s["success_plot"].endswith("success_rate.png") and Path(s["success_plot"]).exists()
    online = load_d4rl(f"{s['run']}/online_data.hdf5")
    assert len(online) == 120
    # the agent saw 0 on success steps and -1 elsewhere; the env's own reward is kept beside it
    assert set(np.unique(online.rewards)) <= {-1.0, 0.0}
    assert np.array_equal(online.rewards == 0.0, online.infos["success"])
    assert (online.infos["reward_env"] >= 0).all()
    assert set(online.metadata["tasks"]) <= {"push", "push-reset"}
    import json

    last = [json.loads(line) for line in open(f"{s['run']}/metrics.jsonl")][-1]
    assert last["reward_model/calls"] == 120 and last["reward_model/fallbacks"] == 0
    assert "reset_free/task_switches" in last


def test_kagi_recipe_runs(tmp_path, data_root):
    reward = {"model": {"type": "kagi", "proposer": {"type": "oracle", "noise": 0.05}}, "env_offset": -1.0,
              "terminate_on_success": True, "offline": "success"}
    s = train(tiny_recipe(reward=reward, online_steps=60), out_root=tmp_path, data_root=data_root, quiet=True)
    online = load_d4rl(f"{s['run']}/online_data.hdf5")
    r = online.rewards
    assert ((r >= -1.0) & (r <= 0.0)).all() and len(np.unique(r)) > 2  # dense, bounded in [-1, 0]


def _episodes(success_rows: list[list[bool]]) -> Dataset:
    succ = np.concatenate([np.array(s, bool) for s in success_rows])
    n = len(succ)
    ends = np.cumsum([len(s) for s in success_rows]) - 1
    timeouts = np.zeros(n, bool)
    timeouts[ends] = True
    return Dataset(np.arange(n, dtype=np.float32)[:, None], np.zeros((n, 1), np.float32), succ.astype(np.float32),
                   np.zeros(n, bool), timeouts, infos={"success": succ})


def test_offline_success_labels_cut_episodes_at_first_success():
    ds = _episodes([[False, False, True, True, False], [False, False, False]])
    cut = cut_at_first_success(ds, ds.infos["success"])
    assert cut.observations[:, 0].tolist() == [0, 1, 2, 5, 6, 7]
    assert cut.terminals.tolist() == [False, False, True, False, False, False]
    out = offline_rewards(ds, {"offset": -1.0, "terminate_on_success": True, "offline": "success"}, None)
    assert out.rewards.tolist() == [-1, -1, 0, -1, -1, -1]
    kagi_like = offline_rewards(ds, {"env_offset": -1.0, "offline": "success"}, None)  # not cut
    assert kagi_like.rewards.tolist() == [-1, -1, 0, 0, -1, -1, -1, -1]
    with pytest.raises(ConfigError, match="offline"):
        offline_rewards(ds, {"offline": "bogus"}, None)
    with pytest.raises(ConfigError, match="success labels"):
        offline_rewards(dataclasses.replace(ds, infos={}), {"offline": "success"}, None)


def test_factory_errors_name_the_problem():
    env = make_env("tabletop/push")
    with pytest.raises(ConfigError, match="valid types"):
        build_reward_model({"type": "nope"})
    with pytest.raises(ConfigError, match="'type'"):
        build_reward_model({"path": "x"})
    with pytest.raises(ConfigError, match="unknown key"):
        wrap_with_reward(env, {"model": {"type": "ground_truth"}, "scael": 2})
    with pytest.raises(ConfigError, match="'model' key"):
        wrap_with_reward(env, {"scale": 2})
    with pytest.raises(ConfigError, match="no options"):
        build_reward_model({"type": "ground_truth", "x": 1})
    with pytest.raises(ConfigError, match="success predicate"):
        wrap_with_reward(make_env("mujoco/Hopper-v5"), {"model": {"type": "ground_truth"}})


def test_shipped_reward_recipes_build():
    from rlpt.rewards.factory import BUILDERS, WRAPPER_KEYS
    from rlpt.train import load_recipe

    kagi = load_recipe("kagi/tabletop-push")
    wrapped, model = wrap_with_reward(make_env(kagi.env), kagi.reward)
    assert model.stateful and wrapped.env_offset == -1.0
    robofume = load_recipe("robofume/tabletop-push")
    assert robofume.reward["model"]["type"] in BUILDERS
    assert set(robofume.reward) <= {"model", "offline", *WRAPPER_KEYS}
