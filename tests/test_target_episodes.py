"""`rlpt.collect.video_render.collect_target_episodes`: target-task episodes with actions, rewards and true states under
held-out looks (the ContextWM transfer benchmark's downstream data), and the benchmark's ridge probe."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from rlpt.collect.video_render import collect_target_episodes
from rlpt.errors import ConfigError


@pytest.fixture(scope="module")
def episodes():
    return collect_target_episodes("cartpole-swingup", episodes=3, steps=12, size=16, texture_seeds=(5000, 5003),
                                   seed=7, quiet=True)


def test_layout_and_shapes(episodes):
    ds = episodes
    assert len(ds) == 36 and ds.num_episodes == 3
    assert ds.observations.dtype == np.uint8 and ds.observations.shape == (36, 16, 16, 3)
    assert ds.actions.shape == (36, 1) and np.all(np.abs(ds.actions) <= 1.0)
    assert ds.infos["states"].shape == (36, 4)  # cartpole: qpos (x, angle) + qvel
    assert ds.timeouts.sum() == 3 and not ds.terminals.any()
    assert np.isfinite(ds.rewards).all() and (ds.rewards >= 0).all()
    for s, e in zip(ds.episode_bounds().starts, ds.episode_bounds().ends, strict=True):
        # row i's successor is row i + 1 inside an episode (frames and states)
        np.testing.assert_array_equal(ds.next_observations[s:e - 1], ds.observations[s + 1:e])
        np.testing.assert_array_equal(ds.infos["next_states"][s:e - 1], ds.infos["states"][s + 1:e])
        assert len(set(ds.infos["texture_seed"][s:e].tolist())) == 1
    # the physics moves under the OU actions
    assert ds.infos["states"][:, 0].std() > 0


def test_held_out_distinct_textures_and_looks(episodes):
    ds = episodes
    seeds = ds.infos["texture_seed"][ds.episode_bounds().starts]
    assert sorted(seeds.tolist()) == [5000, 5001, 5002]  # all from the range, distinct per episode
    first = ds.observations[ds.episode_bounds().starts].astype(float)
    assert np.abs(first[0] - first[1]).mean() > 5  # different texture seeds look different


def test_deterministic(episodes):
    again = collect_target_episodes("cartpole-swingup", episodes=3, steps=12, size=16, texture_seeds=(5000, 5003),
                                    seed=7, quiet=True)
    np.testing.assert_array_equal(again.observations, episodes.observations)
    np.testing.assert_array_equal(again.actions, episodes.actions)
    np.testing.assert_array_equal(again.rewards, episodes.rewards)


def test_bad_input():
    with pytest.raises(ConfigError, match="not a dm_control task"):
        collect_target_episodes("tabletop-push", episodes=1, steps=5, size=16, quiet=True)
    with pytest.raises(ConfigError, match="steps >= 2"):
        collect_target_episodes("cartpole-swingup", episodes=1, steps=1, size=16, quiet=True)
    with pytest.raises(ConfigError, match="behaviour"):
        collect_target_episodes("cartpole-swingup", episodes=1, steps=5, size=16, behaviour="sine", quiet=True)
    with pytest.raises(ConfigError, match="texture-seeds"):
        collect_target_episodes("cartpole-swingup", episodes=1, steps=5, size=16, texture_seeds="9:3", quiet=True)


def _bench():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "contextwm.py"
    spec = importlib.util.spec_from_file_location("bench_contextwm", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_ridge_probe_recovers_linear_state_and_rejects_noise():
    bench = _bench()
    rng = np.random.default_rng(0)
    w = rng.normal(size=(20, 3))
    x = rng.normal(size=(400, 20))
    xe = rng.normal(size=(200, 20))
    groups = np.repeat(np.arange(8), 50)
    good = bench.ridge_probe(x, x @ w + 0.05 * rng.normal(size=(400, 3)), groups, xe, xe @ w)
    assert good["r2"] > 0.99 and len(good["r2_per_dim"]) == 3
    noise = bench.ridge_probe(x, rng.normal(size=(400, 3)), groups, xe, rng.normal(size=(200, 3)))
    assert noise["r2"] < 0.05
    # more features than rows (the pixel probe's case, solved in the dual): low-rank features still generalise
    mix = rng.normal(size=(3, 300))
    lat, lat_e = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))
    dual = bench.ridge_probe(lat @ mix + 0.01 * rng.normal(size=(60, 300)), lat[:, :2], np.repeat(np.arange(6), 10),
                             lat_e @ mix, lat_e[:, :2])
    assert dual["r2"] > 0.95
