"""Minari I/O: rlpt-written datasets load in Minari, Minari-made datasets load in rlpt, D4RL↔Minari conversion.

Every test points MINARI_DATASETS_PATH at a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import itertools
import json
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlpt.data import (
    Dataset,
    convert,
    dataset_normalized_score,
    export_minari,
    load_d4rl,
    load_minari,
)
from rlpt.errors import DatasetDtypeError, DatasetFileNotFoundError, DatasetShapeError, DatasetValueError, EnvSpecError

minari = pytest.importorskip("minari")

_ids = itertools.count()


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@st.composite
def episode_structures(draw, max_episodes=4, max_len=8):
    n_eps = draw(st.integers(1, max_episodes))
    terminals, timeouts = [], []
    for k in range(n_eps):
        length = draw(st.integers(1, max_len))
        end = draw(st.sampled_from(["terminal", "timeout"] + (["open"] if k == n_eps - 1 else [])))
        terminals += [False] * (length - 1) + [end == "terminal"]
        timeouts += [False] * (length - 1) + [end == "timeout"]
    return np.array(terminals), np.array(timeouts)


def make_dataset(terminals, timeouts, seed, with_next, obs_dtype=np.float32, metadata=None):
    rng = np.random.default_rng(seed)
    n = len(terminals)
    obs = rng.normal(size=(n, 3)).astype(obs_dtype)
    nxt = None
    if with_next:  # consistent with the rows inside each episode, fresh after each episode end
        nxt = np.concatenate([obs[1:], rng.normal(size=(1, 3)).astype(obs_dtype)])
        ends = np.flatnonzero(terminals | timeouts)
        nxt[ends] = rng.normal(size=(len(ends), 3)).astype(obs_dtype)
    return Dataset(observations=obs, actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
                   rewards=rng.normal(size=n).astype(np.float32), terminals=terminals, timeouts=timeouts,
                   next_observations=nxt, metadata=dict(metadata or {}))


def expected_transitions(ds: Dataset):
    """What a Minari export keeps: every transition whose successor is known (Dataset.transition_indices), the
    last kept step of each episode ending as the episode ended (terminal, else truncated)."""
    idx = ds.transition_indices()
    terminals = ds.terminals[idx]
    timeouts = ds.timeouts[idx].copy()
    b = ds.episode_bounds()
    for s, e in zip(b.starts, b.ends, strict=True):
        kept = idx[(idx >= s) & (idx < e)]
        if len(kept) and not ds.terminals[e - 1]:
            timeouts[np.searchsorted(idx, kept[-1])] = True
    return {"observations": ds.observations[idx], "next_observations": ds.next_obs(idx),
            "actions": ds.actions[idx], "rewards": ds.rewards[idx], "terminals": terminals, "timeouts": timeouts}


def assert_transitions(loaded: Dataset, want: dict):
    for key, value in want.items():
        got = getattr(loaded, key)
        assert got.dtype == np.asarray(value).dtype, key
        np.testing.assert_array_equal(got, value, err_msg=key)


def minari_flat(dataset_id):
    """Flatten what minari.load_dataset reports, episode by episode."""
    mds = minari.load_dataset(dataset_id)
    eps = list(mds.iterate_episodes())
    cat = lambda f: np.concatenate([f(ep) for ep in eps])
    return mds, eps, {
        "observations": cat(lambda ep: ep.observations[:-1]), "next_observations": cat(lambda ep: ep.observations[1:]),
        "actions": cat(lambda ep: ep.actions), "rewards": cat(lambda ep: ep.rewards),
        "terminals": cat(lambda ep: ep.terminations), "timeouts": cat(lambda ep: ep.truncations)}


# ------------------------------------------------------------------------------------------------ export → load
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(structure=episode_structures(), seed=st.integers(0, 2**16), with_next=st.booleans(),
       obs_dtype=st.sampled_from([np.float32, np.float64]))
def test_export_then_load_gives_the_same_transitions(structure, seed, with_next, obs_dtype):
    ds = make_dataset(*structure, seed, with_next, obs_dtype,
                      metadata={"env_id": "Hopper-v5", "policy": "random", "seed": seed, "tags": ["x"]})
    dataset_id = f"rlpt-test/prop/ds{next(_ids)}-v0"
    want = expected_transitions(ds)
    if not len(want["rewards"]):
        with pytest.raises(DatasetValueError, match="no transitions"):
            export_minari(ds, dataset_id, author="rlpt tests", description="property test")
        return
    export_minari(ds, dataset_id, author="rlpt tests", description="property test")
    mds, eps, flat = minari_flat(dataset_id)
    # Minari's own view: T+1 observations per episode, and the same transitions
    for ep in eps:
        assert len(ep.observations) == len(ep.rewards) + 1
        assert ep.terminations[-1] or ep.truncations[-1]
    assert mds.total_steps == len(want["rewards"])
    for key, value in want.items():
        np.testing.assert_array_equal(flat[key], value, err_msg=key)
    assert mds.env_spec.id == "Hopper-v5"
    # rlpt's view
    loaded = load_minari(dataset_id)
    assert_transitions(loaded, want)
    assert loaded.metadata["env_id"] == "Hopper-v5" and loaded.metadata["minari_id"] == dataset_id
    assert loaded.metadata["policy"] == "random" and loaded.metadata["tags"] == ["x"]
    dropped = 0 if with_next else int(ds.episode_bounds().truncated.sum())  # one row per time-limit end
    assert loaded.metadata["export_dropped_rows"] == dropped


def test_exported_images_are_lossless_and_reference_scores_carry_over(minari_root):
    rng = np.random.default_rng(0)
    n = 6
    ds = Dataset(observations=rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.uint8),
                 actions=rng.normal(size=(n, 1)).astype(np.float32), rewards=np.arange(n, dtype=np.float32),
                 terminals=np.eye(n, dtype=bool)[-1], timeouts=np.zeros(n, bool),
                 metadata={"ref_min_score": -5.0, "ref_max_score": 45.0})
    path = export_minari(ds, "pixels-v1", author="rlpt tests", description="images")
    assert path == minari_root / "pixels-v1"
    raw = json.loads((path / "data" / "metadata.json").read_text())
    assert raw["ref_min_score"] == -5.0 and raw["jpeg_encoding"] is False
    loaded = load_minari("pixels-v1")
    np.testing.assert_array_equal(loaded.observations, ds.observations)  # no JPEG loss
    assert loaded.observations.dtype == np.uint8
    assert minari.get_normalized_score(minari.load_dataset("pixels-v1"), np.array([20.0])) == pytest.approx(0.5)
    assert dataset_normalized_score(loaded, 20.0) == pytest.approx(50.0)


def test_export_refuses_bad_requests(minari_root):
    ds = make_dataset(np.array([False, True]), np.array([False, False]), 0, with_next=False)
    export_minari(ds, "once-v0")
    with pytest.raises(DatasetValueError, match="already exists"):
        export_minari(ds, "once-v0")
    export_minari(ds, "once-v0", overwrite=True)
    with pytest.raises(DatasetValueError, match="Malformed"):
        export_minari(ds, "no version!")
    with pytest.raises(EnvSpecError, match="NoSuchEnv-v0"):
        export_minari(ds, "env-v0", env_id="NoSuchEnv-v0")
    broken = Dataset(observations=np.arange(6, dtype=np.float32).reshape(3, 2), actions=np.zeros((3, 1), np.float32),
                     rewards=np.zeros(3, np.float32), terminals=np.array([False, False, True]),
                     timeouts=np.zeros(3, bool), next_observations=np.zeros((3, 2), np.float32))
    with pytest.raises(DatasetValueError, match="next_observations' row 0"):
        export_minari(broken, "broken-v0")
    assert not [p for p in minari_root.iterdir() if p.name.startswith(".")]  # no temp folders left


# ------------------------------------------------------------------------------------------------ Minari-made data
def _collect(env, steps, seed):
    env.action_space.seed(seed)
    env.reset(seed=seed)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()


def test_dataset_made_by_minari_data_collector_loads():
    pytest.importorskip("jax")  # DataCollector's episode buffers use jax.tree_util
    env = minari.DataCollector(gym.make("Pendulum-v1"), record_infos=False)
    _collect(env, 260, seed=0)  # one full 200-step episode plus an unfinished one that Minari truncates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset(dataset_id="rlpt-test/pendulum/random-v0", algorithm_name="random",
                           author="rlpt tests", code_permalink="https://example.invalid/rlpt",
                           description="random policy")
    env.close()
    mds, eps, flat = minari_flat("rlpt-test/pendulum/random-v0")
    ds = load_minari("rlpt-test/pendulum/random-v0")
    assert len(eps) == 2 and len(ds) == 260 == mds.total_steps
    for key in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(ds, key), flat[key], err_msg=key)
    np.testing.assert_array_equal(ds.episode_bounds().ends, [200, 260])
    assert ds.metadata["env_id"] == "Pendulum-v1" and ds.metadata["author"] == ["rlpt tests"]
    assert ds.metadata["timeouts_present"] is True
    # loading by folder path (dataset folder or its data/ folder) gives the same thing
    by_path = load_minari(mds.storage.data_path.parent)
    np.testing.assert_array_equal(by_path.observations, ds.observations)
    np.testing.assert_array_equal(load_minari(mds.storage.data_path).rewards, ds.rewards)


def test_minari_infos_are_aligned_with_observations(minari_root):
    # Minari's DataCollector records the reset info first, so per-step infos have T+1 rows like observations
    # (Hopper-v5's reset and step infos have different keys, which DataCollector refuses; build the buffers)
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(2)
    bufs, lengths = [], (5, 7)
    for i, t in enumerate(lengths):
        bufs.append(EpisodeBuffer(
            id=i, observations=rng.normal(size=(t + 1, 11)), actions=rng.uniform(-1, 1, size=(t, 3)),
            rewards=rng.normal(size=t), terminations=np.arange(t) == t - 1, truncations=np.zeros(t, bool),
            infos={"x_position": rng.normal(size=t + 1), "contact": {"foot": rng.normal(size=(t + 1, 2))},
                   "step_only": rng.normal(size=t)}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("rlpt-test/hopper/infos-v0", bufs, env="Hopper-v5",
                                           algorithm_name="random", author="rlpt tests")
    mds, eps, flat = minari_flat("rlpt-test/hopper/infos-v0")
    env = gym.make("Hopper-v5")
    ds = load_minari("rlpt-test/hopper/infos-v0", env=env)
    env.close()
    assert len(ds) == sum(lengths)
    np.testing.assert_array_equal(ds.observations, flat["observations"])
    np.testing.assert_array_equal(ds.infos["x_position"],
                                  np.concatenate([ep.infos["x_position"][:-1] for ep in eps]))
    np.testing.assert_array_equal(ds.infos["contact/foot"],
                                  np.concatenate([ep.infos["contact"]["foot"][:-1] for ep in eps]))
    np.testing.assert_array_equal(ds.infos["step_only"], np.concatenate([ep.infos["step_only"] for ep in eps]))
    with pytest.raises(DatasetShapeError, match="observations"):
        load_minari("rlpt-test/hopper/infos-v0", env=gym.make("Pendulum-v1"))


def test_dict_observation_space_is_refused(minari_root):
    from minari.data_collector import EpisodeBuffer

    obs_space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "vel": gym.spaces.Box(-1, 1, (2,))})
    act_space = gym.spaces.Box(-1, 1, (1,))
    buf = EpisodeBuffer(id=0, observations={"pos": np.zeros((3, 2), np.float32), "vel": np.zeros((3, 2), np.float32)},
                        actions=np.zeros((2, 1), np.float32), rewards=np.zeros(2), terminations=np.array([False, True]),
                        truncations=np.array([False, False]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("dicty-v0", [buf], observation_space=obs_space, action_space=act_space)
    with pytest.raises(DatasetDtypeError) as e:
        load_minari("dicty-v0")
    assert str(minari_root / "dicty-v0") in str(e.value) and "Dict" in str(e.value)
    assert "'observations'" in str(e.value)


def test_missing_minari_dataset_is_not_downloaded(minari_root, tmp_path):
    with pytest.raises(DatasetFileNotFoundError) as e:
        load_minari("mujoco/hopper/medium-v0")
    msg = str(e.value)
    assert "mujoco/hopper/medium-v0" in msg and str(minari_root) in msg and "never downloads" in msg
    assert not (minari_root / "mujoco").exists()
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(DatasetFileNotFoundError, match="metadata.json"):
        load_minari(empty)


# ------------------------------------------------------------------------------------------------ conversion
def test_convert_d4rl_to_minari_and_back(tmp_path, minari_root):
    n = 9
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[3] = True
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    src = tmp_path / "walker.hdf5"
    with h5py.File(src, "w") as f:  # a D4RL-style file written with plain h5py, next_observations included
        nxt = obs[1:].copy()
        nxt[3] = rng.normal(size=4)
        f["observations"], f["next_observations"] = obs[:n], nxt
        f["actions"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["rewards"] = rng.normal(size=(n, 1)).astype(np.float32)
        f["terminals"], f["timeouts"] = terminals, timeouts
        f["metadata/algorithm"] = "SAC"
    original = load_d4rl(src)

    out = convert(src, "rlpt-test/walker/converted-v0", author="rlpt tests")
    assert out == minari_root / "rlpt-test/walker/converted-v0"
    assert minari.load_dataset("rlpt-test/walker/converted-v0").total_steps == n
    back = convert("rlpt-test/walker/converted-v0", tmp_path / "back.hdf5")
    reloaded = load_d4rl(back)
    for key in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(reloaded, key), getattr(original, key), err_msg=key)
    assert reloaded.metadata["algorithm"] == "SAC"

    folder = convert(src, tmp_path / "as-folder")
    assert (folder / "data" / "metadata.json").is_file()
    assert json.loads((folder / "data" / "metadata.json").read_text())["dataset_id"] == "as-folder-v0"
    np.testing.assert_array_equal(load_minari(folder).observations, original.observations)
    with pytest.raises(DatasetValueError, match="already exists"):
        convert(folder, tmp_path / "back.hdf5")


# ------------------------------------------------------------------------------------------------ hostile input
def _tiny_d4rl(tmp_path):
    from rlpt.data import save_d4rl

    n = 6
    t = np.zeros(n, bool)
    t[-1] = True
    ds = Dataset(np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.zeros((n, 2), np.float32),
                 np.ones(n, np.float32), t, np.zeros(n, bool))
    return save_d4rl(ds, tmp_path / "tiny.hdf5")


def test_convert_to_a_relative_folder(tmp_path, monkeypatch, capsys):
    from rlpt.cli import main

    src = _tiny_d4rl(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "convert", str(src), "./relative/tiny-v0"]) == 0
    out = tmp_path / "relative" / "tiny-v0"
    assert (out / "data" / "metadata.json").is_file() and len(load_minari(out)) == 6
    assert main(["data", "convert", str(src), "relative2/tiny-v0"]) == 0  # an id: under MINARI_DATASETS_PATH
    capsys.readouterr()


@pytest.mark.parametrize("dst", ["tinyname", "ns/tinyname"])
def test_minari_id_without_a_version_is_a_clear_error(tmp_path, capsys, dst):
    from rlpt.cli import main

    src = _tiny_d4rl(tmp_path)
    with pytest.raises(DatasetValueError, match=r"name-v<N>.*-v0"):
        convert(src, dst)
    assert main(["data", "convert", str(src), dst]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpt: error:") and "Traceback" not in err


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000 + "]" * 100_000, "[1, 2]"])
def test_garbage_minari_metadata_is_a_dataset_value_error(tmp_path, text):
    src = _tiny_d4rl(tmp_path)
    out = convert(src, tmp_path / "ds" / "tiny-v0")
    (out / "data" / "metadata.json").write_text(text)
    with pytest.raises(DatasetValueError, match="metadata.json"):
        load_minari(out)
