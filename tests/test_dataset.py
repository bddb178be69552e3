"""The `Dataset` type: episode structure, returns, transitions, selection and validation, on random episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlpt.data import Dataset
from rlpt.errors import DatasetDtypeError, DatasetShapeError, DatasetValueError

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def datasets(draw, with_next=None):
    """A Dataset over a random episode structure (the last episode may be open) and its true episode list."""
    n_eps = draw(st.integers(1, 5))
    terminals, timeouts, episodes = [], [], []
    for k in range(n_eps):
        length = draw(st.integers(1, 8))
        end = draw(st.sampled_from(["terminal", "timeout", "both"] + (["open"] if k == n_eps - 1 else [])))
        episodes.append((len(terminals), len(terminals) + length, end))
        terminals += [False] * (length - 1) + [end in ("terminal", "both")]
        timeouts += [False] * (length - 1) + [end in ("timeout", "both")]
    n = len(terminals)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    with_next = draw(st.booleans()) if with_next is None else with_next
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    ds = Dataset(observations=obs, actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                 rewards=rng.normal(size=n).astype(np.float32), terminals=np.array(terminals),
                 timeouts=np.array(timeouts),
                 next_observations=rng.normal(size=(n, 3)).astype(np.float32) if with_next else None,
                 infos={"qpos": rng.normal(size=(n, 2))}, metadata={"seed": seed})
    return ds, episodes


@SETTINGS
@given(data=datasets())
def test_episode_bounds_follow_terminals_and_timeouts(data):
    ds, episodes = data
    b = ds.episode_bounds()
    assert [(int(s), int(e)) for s, e in zip(b.starts, b.ends, strict=True)] == [(s, e) for s, e, _ in episodes]
    np.testing.assert_array_equal(b.truncated, [end != "terminal" and end != "both" for _, _, end in episodes])
    assert ds.num_episodes == len(episodes)
    eps = list(ds.episodes())
    assert sum(len(ep["rewards"]) for ep in eps) == len(ds)
    for ep, (s, e, _) in zip(eps, episodes, strict=True):
        np.testing.assert_array_equal(ep["observations"], ds.observations[s:e])
        assert ("next_observations" in ep) == (ds.next_observations is not None)


@SETTINGS
@given(data=datasets(), gamma=st.floats(0.0, 1.0))
def test_returns_and_mc_returns_match_a_plain_loop(data, gamma):
    ds, episodes = data
    want_returns, want_mc = [], np.zeros(len(ds))
    for s, e, _ in episodes:
        want_returns.append(float(np.sum(ds.rewards[s:e], dtype=np.float64)))
        g = 0.0
        for i in reversed(range(s, e)):
            g = float(ds.rewards[i]) + gamma * g
            want_mc[i] = g
    np.testing.assert_allclose(ds.episode_returns(), want_returns, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.mc_returns(gamma), want_mc, rtol=1e-5, atol=1e-5)
    assert ds.mc_returns(gamma) is ds.mc_returns(gamma)  # cached


@SETTINGS
@given(data=datasets())
def test_transitions_only_use_rows_with_a_known_successor(data):
    ds, episodes = data
    idx = ds.transition_indices()
    if ds.next_observations is not None:
        np.testing.assert_array_equal(idx, np.arange(len(ds)))
        np.testing.assert_array_equal(ds.next_obs(idx), ds.next_observations)
        return
    dropped = {e - 1 for s, e, end in episodes if end in ("timeout", "open")}
    assert set(idx.tolist()) == set(range(len(ds))) - dropped
    nxt = ds.next_obs(idx)
    for row, succ in zip(idx, nxt, strict=True):
        want = ds.observations[row] if ds.terminals[row] else ds.observations[row + 1]
        np.testing.assert_array_equal(succ, want)


@SETTINGS
@given(data=datasets(), pick=st.lists(st.integers(0, 4), max_size=4, unique=True))
def test_select_episodes_and_concatenate(data, pick):
    ds, episodes = data
    pick = [i for i in pick if i < len(episodes)]
    sub = ds.select_episodes(pick)
    assert len(sub) == sum(episodes[i][1] - episodes[i][0] for i in pick)
    assert sub.metadata == ds.metadata and set(sub.infos) == {"qpos"}
    both = Dataset.concatenate([ds, ds])
    assert len(both) == 2 * len(ds)
    assert both.num_episodes == 2 * ds.num_episodes  # an open last episode is closed, not merged
    assert both.timeouts[len(ds) - 1] or both.terminals[len(ds) - 1]
    np.testing.assert_allclose(both.episode_returns(), np.concatenate([ds.episode_returns()] * 2), rtol=1e-6)


@SETTINGS
@given(data=datasets())
def test_content_hash_identifies_the_data(data):
    ds, _ = data
    same = ds.select(np.arange(len(ds)))
    assert same.content_hash() == ds.content_hash()
    changed = ds.select(np.arange(len(ds)))
    changed.rewards[0] += 1.0
    assert changed.content_hash() != ds.content_hash()


def test_sample_returns_float_tensors_from_valid_rows():
    ds = Dataset(observations=np.arange(20, dtype=np.float32).reshape(10, 2), actions=np.zeros((10, 1), np.float32),
                 rewards=np.arange(10, dtype=np.float32), terminals=np.eye(10, dtype=bool)[3],
                 timeouts=np.eye(10, dtype=bool)[7])
    batch = ds.sample(256, rng=np.random.default_rng(0), gamma=0.9)
    assert set(batch) == {"observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"}
    assert all(v.dtype == torch.float32 for v in batch.values())
    assert batch["observations"].shape == (256, 2) and batch["rewards"].shape == (256,)
    rows = batch["rewards"].long().numpy()
    assert 7 not in rows and 9 not in rows  # time-limit ends without a successor are never sampled
    np.testing.assert_array_equal(batch["terminals"].numpy(), (rows == 3).astype(np.float32))


def test_stats_are_cached_and_floored():
    obs = np.stack([np.arange(5, dtype=np.float32), np.ones(5, np.float32)], axis=1)
    ds = Dataset(obs, np.zeros((5, 1), np.float32), np.zeros(5, np.float32), np.zeros(5, bool), np.zeros(5, bool))
    stats = ds.stats()
    np.testing.assert_allclose(stats["obs_mean"], [2.0, 1.0])
    np.testing.assert_allclose(stats["obs_std"], [np.std(np.arange(5)), 1e-3])
    assert ds.stats() is stats


def _arrays(n=4):
    return dict(observations=np.zeros((n, 3), np.float32), actions=np.zeros((n, 2), np.float32),
                rewards=np.zeros(n, np.float32), terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool))


def test_validation_names_the_source_and_key():
    src = {"source": "/data/x.hdf5"}
    with pytest.raises(DatasetShapeError, match=r"/data/x.hdf5: key 'rewards' has 3 rows; expected 4"):
        Dataset(**{**_arrays(), "rewards": np.zeros(3, np.float32)}, metadata=src)
    with pytest.raises(DatasetDtypeError, match=r"/data/x.hdf5: key 'actions' has dtype <U1"):
        Dataset(**{**_arrays(), "actions": np.full((4, 2), "a")}, metadata=src)
    with pytest.raises(DatasetValueError, match=r"/data/x.hdf5: key 'observations' holds NaN .* row 2"):
        obs = np.zeros((4, 3), np.float32)
        obs[2, 1] = np.nan
        Dataset(**{**_arrays(), "observations": obs}, metadata=src)
    with pytest.raises(DatasetValueError, match="'terminals' holds values other than 0/1"):
        Dataset(**{**_arrays(), "terminals": np.array([0, 2, 0, 0])}, metadata=src)
    with pytest.raises(DatasetShapeError, match="'actions' has shape"):
        Dataset(**{**_arrays(), "actions": np.zeros(4, np.float32)}, metadata=src)
    with pytest.raises(DatasetShapeError, match="'next_observations' has shape"):
        Dataset(**_arrays(), next_observations=np.zeros((4, 5), np.float32), metadata=src)
    ok = Dataset(**{**_arrays(), "terminals": np.array([0.0, 1.0, 0.0, 0.0])})
    assert ok.terminals.dtype == np.bool_ and ok.num_episodes == 2


def test_check_spaces_against_hopper():
    env = gym.make("Hopper-v5")
    try:
        n = 3
        good = Dataset(np.zeros((n, 11), np.float32), np.zeros((n, 3), np.float32), np.zeros(n, np.float32),
                       np.zeros(n, bool), np.zeros(n, bool), metadata={"source": "hop.hdf5"})
        good.check_spaces(env.observation_space, env.action_space)
        with pytest.raises(DatasetShapeError, match=r"hop.hdf5: observations have shape \(3,\)"):
            Dataset(**_arrays(3), metadata={"source": "hop.hdf5"}).check_spaces(env.observation_space,
                                                                                 env.action_space)
    finally:
        env.close()
