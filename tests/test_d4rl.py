"""D4RL HDF5 I/O, `qlearning_dataset` against a transcription of d4rl's loop, and normalized scores.

Files "shaped like the original format" are written here with plain h5py, never by rlpt.
"""

from __future__ import annotations

import gymnasium as gym
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlpt.data import (
    Dataset,
    dataset_normalized_score,
    load_d4rl,
    normalized_score,
    qlearning_dataset,
    reference_scores,
    save_d4rl,
)
from rlpt.data.d4rl import DERIVED_METADATA_KEYS
from rlpt.errors import (
    DatasetDtypeError,
    DatasetError,
    DatasetFileNotFoundError,
    DatasetKeyError,
    DatasetShapeError,
    DatasetValueError,
)

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------ helpers
@st.composite
def episode_structures(draw, max_episodes=5, max_len=9):
    """Per-row (terminals, timeouts) for a random sequence of episodes; the last one may stay open."""
    n_eps = draw(st.integers(1, max_episodes))
    terminals, timeouts = [], []
    for k in range(n_eps):
        length = draw(st.integers(1, max_len))
        end = draw(st.sampled_from(["terminal", "timeout", "both"] + (["open"] if k == n_eps - 1 else [])))
        terminals += [False] * (length - 1) + [end in ("terminal", "both")]
        timeouts += [False] * (length - 1) + [end in ("timeout", "both")]
    return np.array(terminals), np.array(timeouts)


def make_arrays(terminals, timeouts, seed, obs_dtype=np.float32, obs_shape=(3,)):
    rng = np.random.default_rng(seed)
    n = len(terminals)
    if np.dtype(obs_dtype).kind == "f":
        obs = rng.normal(size=(n, *obs_shape)).astype(obs_dtype)
    else:
        obs = rng.integers(0, 255, size=(n, *obs_shape)).astype(obs_dtype)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.asarray(terminals, bool),
        "timeouts": np.asarray(timeouts, bool),
    }


def write_plain_h5(path, arrays, metadata=None, infos=None, column_vectors=False):
    """A D4RL-layout file written with h5py only, the way D4RL's collection scripts write them."""
    with h5py.File(path, "w") as f:
        for key, arr in arrays.items():
            if column_vectors and key in ("rewards", "terminals", "timeouts"):
                arr = np.asarray(arr).reshape(-1, 1)
            f.create_dataset(key, data=arr)
        for key, arr in (infos or {}).items():
            f.create_dataset(f"infos/{key}", data=arr)
        for key, value in (metadata or {}).items():
            f.create_dataset(f"metadata/{key}", data=value)
    return path


def read_plain_h5(path):
    """What `d4rl.OfflineEnv.get_dataset` returns: every top-level dataset, (N,1) rewards/terminals squeezed."""
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
    for key in ("rewards", "terminals", "timeouts"):
        if key in data and data[key].ndim == 2 and data[key].shape[1] == 1:
            data[key] = data[key][:, 0]
    return data


def reference_qlearning_dataset(dataset, max_episode_steps=None, terminate_on_end=False):
    """A direct transcription of `d4rl.qlearning_dataset` (d4rl/__init__.py), with `env._max_episode_steps`
    replaced by `max_episode_steps`."""
    N = dataset["rewards"].shape[0]
    obs_ = []
    next_obs_ = []
    action_ = []
    reward_ = []
    done_ = []

    # The newer version of the dataset adds an explicit
    # timeouts field. Keep old method for backwards compatability.
    use_timeouts = False
    if "timeouts" in dataset:
        use_timeouts = True

    episode_step = 0
    for i in range(N - 1):
        obs = dataset["observations"][i].astype(np.float32)
        new_obs = dataset["observations"][i + 1].astype(np.float32)
        action = dataset["actions"][i].astype(np.float32)
        reward = dataset["rewards"][i].astype(np.float32)
        done_bool = bool(dataset["terminals"][i])

        if use_timeouts:
            final_timestep = dataset["timeouts"][i]
        else:
            final_timestep = (episode_step == max_episode_steps - 1)
        if (not terminate_on_end) and final_timestep:
            # Skip this transition and don't apply terminals on the last step of an episode
            episode_step = 0
            continue
        if done_bool or final_timestep:
            episode_step = 0

        obs_.append(obs)
        next_obs_.append(new_obs)
        action_.append(action)
        reward_.append(reward)
        done_.append(done_bool)
        episode_step += 1

    return {
        "observations": np.array(obs_),
        "actions": np.array(action_),
        "next_observations": np.array(next_obs_),
        "rewards": np.array(reward_),
        "terminals": np.array(done_),
    }


def assert_same_qlearning(ours, ref):
    assert set(ours) == {"observations", "actions", "next_observations", "rewards", "terminals"}
    n = len(ref["rewards"])
    for key in ours:
        assert ours[key].dtype == np.float32, key
        assert len(ours[key]) == n, key
        if n:
            np.testing.assert_array_equal(ours[key], np.asarray(ref[key], dtype=np.float32), err_msg=key)


def assert_datasets_equal(a: Dataset, b: Dataset):
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "images"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert np.asarray(x).dtype == np.asarray(y).dtype, key
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    assert set(a.infos) == set(b.infos)
    for key in a.infos:
        assert a.infos[key].dtype == b.infos[key].dtype
        np.testing.assert_array_equal(a.infos[key], b.infos[key])


def assert_metadata_equal(original: dict, loaded: dict):
    want = {k: v for k, v in original.items() if k not in DERIVED_METADATA_KEYS}
    got = {k: v for k, v in loaded.items() if k not in DERIVED_METADATA_KEYS}
    assert set(want) == set(got)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value)
            assert got[key].dtype == value.dtype
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def hopper_spaces():
    env = gym.make("Hopper-v5")
    spaces = (env.observation_space, env.action_space)
    env.close()
    return spaces


# ------------------------------------------------------------------------------------------------ round trips
@SETTINGS
@given(structure=episode_structures(), seed=st.integers(0, 2**16),
       obs_dtype=st.sampled_from([np.float32, np.float64, np.uint8]),
       with_next=st.booleans(), with_infos=st.booleans(), compression=st.sampled_from([None, "gzip"]))
def test_save_load_round_trip_is_exact(tmp_path, structure, seed, obs_dtype, with_next, with_infos, compression):
    arrays = make_arrays(*structure, seed, obs_dtype=obs_dtype)
    n = len(arrays["rewards"])
    rng = np.random.default_rng(seed + 1)
    metadata = {"env_id": "Hopper-v5", "behavior": {"name": "sac", "steps": 5000}, "seed": seed, "ratio": 0.25,
                "flag": True, "note": "hello ✓", "nothing": None, "tags": ["a", "b"],
                "policy/fc0/weight": rng.normal(size=(4, 3)).astype(np.float32)}
    ds = Dataset(**arrays, metadata=metadata,
                 next_observations=(np.roll(arrays["observations"], -1, axis=0) if with_next else None),
                 infos={"qpos": rng.normal(size=(n, 4)), "success": rng.integers(0, 2, n).astype(bool)}
                 if with_infos else {})
    path = save_d4rl(ds, tmp_path / f"rt-{seed}-{with_next}.hdf5", compression=compression)
    loaded = load_d4rl(path)
    assert_datasets_equal(ds, loaded)
    assert_metadata_equal(metadata, loaded.metadata)
    assert loaded.metadata["source"] == str(path)
    assert loaded.metadata["timeouts_present"] is True
    # and back again: a second save of the loaded dataset is identical too
    again = load_d4rl(save_d4rl(loaded, tmp_path / f"rt2-{seed}.hdf5"))
    assert_datasets_equal(loaded, again)


def test_rlpt_files_read_with_plain_h5py(tmp_path):
    arrays = make_arrays(*([False, True, False, False], [False, False, False, True]), seed=0)
    ds = Dataset(**arrays, images=np.zeros((4, 8, 8, 3), np.uint8), infos={"qpos": np.ones((4, 2))},
                 metadata={"algorithm": "SAC", "iteration": 7, "config": {"lr": 3e-4}})
    path = save_d4rl(ds, tmp_path / "plain.hdf5")
    with h5py.File(path, "r") as f:
        assert {"observations", "actions", "rewards", "terminals", "timeouts", "images", "infos", "metadata"} <= set(f)
        assert f["rewards"].shape == (4,) and f["terminals"].dtype == np.bool_
        assert f["metadata/algorithm"][()].decode() == "SAC"
        assert int(f["metadata/iteration"][()]) == 7
        assert f["metadata/config"].attrs["rlpt_json"]
        np.testing.assert_array_equal(f["infos/qpos"][()], np.ones((4, 2)))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file behind


def test_loads_file_written_by_plain_h5py(tmp_path):
    arrays = make_arrays(*([False] * 4 + [True] + [False] * 4 + [False], [False] * 9 + [True]), seed=3)
    arrays["terminals"] = arrays["terminals"].astype(np.float32)  # some D4RL files store 0/1 floats
    path = write_plain_h5(tmp_path / "hopper-medium-v2.hdf5", arrays, column_vectors=True,
                          infos={"qpos": np.arange(30.0).reshape(10, 3), "goal": np.zeros((10, 2))},
                          metadata={"algorithm": b"SAC", "iteration": 1000,
                                    "policy/fc0/weight": np.ones((4, 3), np.float32)})
    with h5py.File(path, "a") as f:
        f["metadata"].attrs["author"] = "d4rl"
        f.create_dataset("infos/scalar", data=1.0)  # not one row per step: reported, not loaded
    ds = load_d4rl(path)
    assert ds.rewards.shape == (10,) and ds.terminals.dtype == np.bool_
    np.testing.assert_array_equal(ds.terminals, arrays["terminals"].astype(bool))
    np.testing.assert_array_equal(ds.infos["qpos"], np.arange(30.0).reshape(10, 3))
    assert set(ds.infos) == {"qpos", "goal"}
    assert ds.metadata["algorithm"] == "SAC" and ds.metadata["iteration"] == 1000
    assert ds.metadata["author"] == "d4rl"
    assert ds.metadata["policy/fc0/weight"].shape == (4, 3)
    assert any("infos/scalar" in s for s in ds.metadata["skipped_keys"])
    assert ds.num_episodes == 2
    # the file name is a D4RL dataset name, so its reference scores apply
    assert dataset_normalized_score(ds, 3234.3) == pytest.approx(100.0)


def test_provenance_survives_saves(tmp_path):
    ds = Dataset(**_valid_arrays(), metadata={"source": "rlpt data make hopper-medium-v5", "name": "x"})
    first = load_d4rl(save_d4rl(ds, tmp_path / "one.hdf5"))
    assert first.metadata["source"] == str(tmp_path / "one.hdf5")
    assert first.metadata["origin"] == "rlpt data make hopper-medium-v5"
    second = load_d4rl(save_d4rl(first, tmp_path / "two.hdf5"))
    assert second.metadata["origin"] == "rlpt data make hopper-medium-v5" and second.metadata["name"] == "x"


def test_v0_file_without_timeouts(tmp_path):
    arrays = make_arrays(*([False, False, True, False, False], [False] * 5), seed=1)
    del arrays["timeouts"]
    path = write_plain_h5(tmp_path / "v0.hdf5", arrays)
    ds = load_d4rl(path)
    assert not ds.timeouts.any()
    assert ds.metadata["timeouts_present"] is False and "timeouts" in ds.metadata["timeouts_note"]
    # saving keeps the v0 layout, so loading again says the same
    out = save_d4rl(ds, tmp_path / "v0-again.hdf5")
    with h5py.File(out, "r") as f:
        assert "timeouts" not in f
    assert load_d4rl(out).metadata["timeouts_present"] is False
    with pytest.raises(DatasetKeyError, match="max_episode_steps"):
        qlearning_dataset(ds)


def test_mmap_load_gives_identical_arrays(tmp_path):
    arrays = make_arrays(*([False] * 40 + [True], [False] * 41), seed=2, obs_shape=(5,))
    ds = Dataset(**arrays, next_observations=arrays["observations"][::-1].copy())
    path = save_d4rl(ds, tmp_path / "contiguous.hdf5")
    mm = load_d4rl(path, mmap=True)
    assert isinstance(mm.observations, np.memmap)
    assert isinstance(mm.next_observations, np.memmap)
    assert_datasets_equal(ds, mm)
    np.testing.assert_array_equal(qlearning_dataset(mm)["observations"], qlearning_dataset(ds)["observations"])
    # compressed (chunked) datasets cannot be mapped: they are read instead, with the same values
    gz = load_d4rl(save_d4rl(ds, tmp_path / "gz.hdf5", compression="gzip"), mmap=True)
    assert not isinstance(gz.observations, np.memmap)
    assert_datasets_equal(ds, gz)


# ------------------------------------------------------------------------------------------------ qlearning_dataset
@SETTINGS
@given(structure=episode_structures(max_episodes=6), seed=st.integers(0, 2**16), with_timeouts=st.booleans(),
       with_next=st.booleans(), terminate_on_end=st.booleans(), max_steps=st.integers(1, 8))
def test_qlearning_dataset_matches_d4rl_loop(tmp_path, structure, seed, with_timeouts, with_next,
                                            terminate_on_end, max_steps):
    arrays = make_arrays(*structure, seed)
    if not with_timeouts:
        del arrays["timeouts"]
    if with_next:  # present in newer files; d4rl ignores it, so garbage here must not matter
        arrays["next_observations"] = np.full_like(arrays["observations"], 7.0)
    path = write_plain_h5(tmp_path / f"q-{seed}-{with_timeouts}.hdf5", arrays, column_vectors=bool(seed % 2))
    ref = reference_qlearning_dataset(read_plain_h5(path), max_episode_steps=max_steps,
                                      terminate_on_end=terminate_on_end)
    ds = load_d4rl(path)
    assert_same_qlearning(qlearning_dataset(ds, terminate_on_end, max_episode_steps=max_steps), ref)
    # the dict form (what h5py / d4rl.get_dataset hands over) gives the same
    assert_same_qlearning(qlearning_dataset(read_plain_h5(path), terminate_on_end,
                                            max_episode_steps=max_steps), ref)


def test_qlearning_dataset_counts_episode_steps_like_d4rl():
    # no timeouts, 3-step limit: rows 2 and 5 are time-limit ends and are skipped; after the terminal at row 7
    # d4rl's counter restarts at 1 (not 0), so the next skipped row is 9, not 10.
    n = 12
    terminals = np.zeros(n, bool)
    terminals[7] = True
    data = {"observations": np.arange(n, dtype=np.float32)[:, None], "actions": np.zeros((n, 1)),
            "rewards": np.arange(n, dtype=np.float64), "terminals": terminals}
    out = qlearning_dataset(data, max_episode_steps=3)
    np.testing.assert_array_equal(out["observations"][:, 0], [0, 1, 3, 4, 6, 7, 8, 10])
    np.testing.assert_array_equal(out["next_observations"][:, 0], [1, 2, 4, 5, 7, 8, 9, 11])
    np.testing.assert_array_equal(out["terminals"], [0, 0, 0, 0, 0, 1, 0, 0])
    assert_same_qlearning(out, reference_qlearning_dataset(data, max_episode_steps=3))


# ------------------------------------------------------------------------------------------------ bad input
def _valid_arrays():
    return make_arrays(*([False, False, True, False, False, False], [False] * 5 + [True]), seed=5)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.hdf5"
    with pytest.raises(DatasetFileNotFoundError) as e:
        load_d4rl(path)
    assert str(path) in str(e.value)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "fake.hdf5"
    path.write_text("observations,actions\n1,2\n")
    with pytest.raises(DatasetError) as e:
        load_d4rl(path)
    assert str(path) in str(e.value) and "not an HDF5 file" in str(e.value)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals"])
def test_missing_required_key(tmp_path, key):
    arrays = _valid_arrays()
    del arrays[key]
    path = write_plain_h5(tmp_path / "missing.hdf5", arrays)
    with pytest.raises(DatasetKeyError) as e:
        load_d4rl(path)
    msg = str(e.value)
    assert str(path) in msg and f"'{key}'" in msg
    assert "keys present" in msg and "'timeouts'" in msg  # lists what the file does hold


def test_dict_observations_group_is_refused(tmp_path):
    arrays = _valid_arrays()
    obs = arrays.pop("observations")
    path = write_plain_h5(tmp_path / "dict-obs.hdf5", arrays, infos=None)
    with h5py.File(path, "a") as f:
        f["observations/pos"], f["observations/vel"] = obs[:, :2], obs[:, 2:]
    with pytest.raises(DatasetDtypeError) as e:
        load_d4rl(path)
    assert str(path) in str(e.value) and "'observations' is a group" in str(e.value)


@pytest.mark.parametrize("key", ["actions", "rewards", "terminals", "timeouts", "next_observations"])
def test_mismatched_lengths(tmp_path, key):
    arrays = _valid_arrays()
    if key == "next_observations":
        arrays[key] = arrays["observations"]
    arrays[key] = arrays[key][:-1]
    path = write_plain_h5(tmp_path / "short.hdf5", arrays)
    with pytest.raises(DatasetShapeError) as e:
        load_d4rl(path)
    assert str(path) in str(e.value) and f"'{key}'" in str(e.value)
    assert "5 rows" in str(e.value) and "expected 6" in str(e.value)


@pytest.mark.parametrize("key", ["observations", "rewards", "terminals"])
def test_string_array_is_a_dtype_error(tmp_path, key):
    arrays = _valid_arrays()
    arrays[key] = np.array([b"x"] * len(arrays["rewards"]))
    path = write_plain_h5(tmp_path / "strings.hdf5", arrays)
    for mmap in (False, True):
        with pytest.raises(DatasetDtypeError) as e:
            load_d4rl(path, mmap=mmap)
        assert str(path) in str(e.value) and f"'{key}'" in str(e.value) and "|S1" in str(e.value)


@pytest.mark.parametrize("key,value", [("observations", np.nan), ("actions", np.inf), ("rewards", -np.inf)])
def test_nan_or_inf_is_a_value_error(tmp_path, key, value):
    arrays = _valid_arrays()
    arrays[key][3] = value
    path = write_plain_h5(tmp_path / "nan.hdf5", arrays)
    for mmap in (False, True):
        with pytest.raises(DatasetValueError) as e:
            load_d4rl(path, mmap=mmap)
        assert str(path) in str(e.value) and f"'{key}'" in str(e.value) and "row 3" in str(e.value)


def test_observation_size_must_match_env(tmp_path, hopper_spaces):
    obs_space, act_space = hopper_spaces
    n = 6
    good = {"observations": np.zeros((n, 11), np.float32), "actions": np.zeros((n, 3), np.float32),
            "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
    load_d4rl(write_plain_h5(tmp_path / "good.hdf5", good), env=hopper_spaces)
    bad = dict(good, observations=np.zeros((n, 17), np.float32))
    path = write_plain_h5(tmp_path / "halfcheetah-shaped.hdf5", bad)
    with pytest.raises(DatasetShapeError) as e:
        load_d4rl(path, env=hopper_spaces)
    assert str(path) in str(e.value) and "observations" in str(e.value)
    assert "(17,)" in str(e.value) and "(11,)" in str(e.value)
    bad_act = dict(good, actions=np.zeros((n, 6), np.float32))
    path = write_plain_h5(tmp_path / "bad-act.hdf5", bad_act)
    env = gym.make("Hopper-v5")
    try:
        with pytest.raises(DatasetShapeError, match="actions"):
            load_d4rl(path, env=env)
    finally:
        env.close()


def test_non_serialisable_metadata_is_refused(tmp_path):
    ds = Dataset(**_valid_arrays(), metadata={"callback": object()})
    with pytest.raises(DatasetValueError, match="callback"):
        save_d4rl(ds, tmp_path / "bad-meta.hdf5")
    clash = Dataset(**_valid_arrays(), metadata={"policy": "sac", "policy/fc0/weight": np.ones(3)})
    with pytest.raises(DatasetValueError, match="policy"):
        save_d4rl(clash, tmp_path / "bad-meta.hdf5")
    assert not (tmp_path / "bad-meta.hdf5").exists()
    assert not list(tmp_path.iterdir())  # the temp file was removed too


# ------------------------------------------------------------------------------------------------ scores
@settings(max_examples=50, deadline=None)
@given(lo=st.floats(-1e4, 1e4), span=st.floats(1e-2, 1e4), a=st.floats(-1e4, 1e4), b=st.floats(-1e4, 1e4),
       w=st.floats(0, 1))
def test_normalized_score_is_affine(lo, span, a, b, w):
    hi = lo + span
    assert normalized_score("Hopper-v5", lo, ref_min=lo, ref_max=hi) == pytest.approx(0.0, abs=1e-9)
    assert normalized_score("Hopper-v5", hi, ref_min=lo, ref_max=hi) == pytest.approx(100.0)
    s = lambda r: normalized_score(None, r, ref_min=lo, ref_max=hi)
    mix = w * a + (1 - w) * b
    assert s(mix) == pytest.approx(w * s(a) + (1 - w) * s(b), rel=1e-9, abs=1e-6)
    arr = normalized_score(None, np.array([lo, hi, a]), ref_min=lo, ref_max=hi)
    assert isinstance(arr, np.ndarray) and arr.shape == (3,)
    np.testing.assert_allclose(arr, [0.0, 100.0, s(a)], atol=1e-6)


@pytest.mark.parametrize("name,lo,hi", [
    ("hopper", -20.272305, 3234.3), ("hopper-medium-replay-v2", -20.272305, 3234.3),
    ("hopper-medium-v0", -20.272305, 3234.3), ("halfcheetah-expert-v2", -280.178953, 12135.0),
    ("walker2d-medium-expert-v2", 1.629008, 4592.3), ("ant-random-v2", -325.6, 3879.7),
    ("antmaze-umaze-diverse-v2", 0.0, 1.0), ("pen-human-v1", 96.262799, 3076.8331017826877),
    ("door-cloned-v1", -56.512833, 2880.5693087298737), ("hammer-expert-v0", -274.856578, 12794.134825156867),
    ("relocate-human-v1", -6.425911, 4233.877797728884), ("HalfCheetah", -280.178953, 12135.0),
])
def test_d4rl_reference_names(name, lo, hi):
    assert reference_scores(name) == (lo, hi)
    assert normalized_score(name, lo) == pytest.approx(0.0, abs=1e-9)
    assert normalized_score(name, hi) == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["Hopper-v5", "hopper-medium-replay-v5", "Walker2d-v4", "mujoco/hopper/medium-v0",
                                  "cartpole", "kitchen-mixed-v0"])
def test_no_d4rl_reference_for_other_envs(name):
    with pytest.raises(DatasetKeyError) as e:
        normalized_score(name, 100.0)
    assert name in str(e.value) and "ref_min" in str(e.value)
    # explicit references always work
    assert normalized_score(name, 5.0, ref_min=0.0, ref_max=10.0) == pytest.approx(50.0)


def test_bad_explicit_references():
    with pytest.raises(DatasetValueError, match="both"):
        normalized_score("hopper", 1.0, ref_min=0.0)
    with pytest.raises(DatasetValueError, match="differ"):
        normalized_score("hopper", 1.0, ref_min=2.0, ref_max=2.0)


def test_dataset_normalized_score_uses_metadata():
    arrays = _valid_arrays()
    ds = Dataset(**arrays, metadata={"env_id": "Hopper-v5", "ref_min_score": 10.0, "ref_max_score": 110.0})
    assert dataset_normalized_score(ds, 60.0) == pytest.approx(50.0)
    np.testing.assert_allclose(dataset_normalized_score(ds, np.array([10.0, 110.0])), [0.0, 100.0])
    no_refs = Dataset(**arrays, metadata={"env_id": "Hopper-v5", "source": "/data/hopper_rlpt.hdf5"})
    with pytest.raises(DatasetKeyError) as e:
        dataset_normalized_score(no_refs, 1.0)
    assert "/data/hopper_rlpt.hdf5" in str(e.value) and "ref_min_score" in str(e.value)
    d4rl_named = Dataset(**arrays, metadata={"env_id": "hopper-medium-v2"})
    assert dataset_normalized_score(d4rl_named, -20.272305) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------------------ hostile files
def test_zero_row_file_is_refused(tmp_path):
    arrays = {k: v[:0] for k, v in _valid_arrays().items()}
    path = write_plain_h5(tmp_path / "empty.hdf5", arrays)
    with pytest.raises(DatasetShapeError, match="0 rows; expected at least one step") as e:
        load_d4rl(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("key", ["observations", "rewards", "infos/qpos"])
def test_huge_declared_array_is_refused_before_reading(tmp_path, key):
    import time

    path = tmp_path / "huge.hdf5"
    arrays = _valid_arrays()
    with h5py.File(path, "w") as f:
        for k, arr in arrays.items():
            if k != key:
                f.create_dataset(k, data=arr)
        n = 10**12 if key == "rewards" else len(arrays["rewards"])
        shape = (n,) if key == "rewards" else (n, 10**9)  # declared, never written: chunked and unallocated
        f.create_dataset(key, shape=shape, dtype=np.float32, chunks=(1,) + shape[1:2] if len(shape) == 1
                         else (1, 1024), compression="gzip")
    t0 = time.monotonic()
    with pytest.raises(DatasetShapeError, match=f"key '{key}' declares shape") as e:
        load_d4rl(path)
    assert str(path) in str(e.value) and "GiB" in str(e.value) and time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a": ' * 100 + "1" + "}" * 100, "nested deeper than 64"),
])
def test_bad_json_metadata_is_a_dataset_value_error(tmp_path, text, expected):
    path = write_plain_h5(tmp_path / "meta.hdf5", _valid_arrays())
    with h5py.File(path, "a") as f:
        d = f.create_dataset("metadata/config", data=text)
        d.attrs["rlpt_json"] = True
    with pytest.raises(DatasetValueError, match=expected) as e:
        load_d4rl(path)
    assert "metadata/config" in str(e.value) and str(path) in str(e.value)


def test_cli_data_info_prints_one_line_for_hostile_files(tmp_path, capsys):
    from rlpt.cli import main

    arrays = {k: v[:0] for k, v in _valid_arrays().items()}
    path = write_plain_h5(tmp_path / "empty.hdf5", arrays)
    assert main(["data", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpt: error:") and "0 rows" in err and "Traceback" not in err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=5),
                         lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=4), k, max_size=3),
                         max_leaves=10),
       garble=st.integers(0, 40))
def test_property_metadata_json_round_trips_or_fails_cleanly(tmp_path, meta, garble):
    import json

    path = write_plain_h5(tmp_path / "p.hdf5", _valid_arrays())
    text = json.dumps({"x": meta})
    text = text[:len(text) - garble] if garble < len(text) else text
    with h5py.File(path, "a") as f:
        if "metadata/x" in f:
            del f["metadata/x"]
        d = f.create_dataset("metadata/x", data=text)
        d.attrs["rlpt_json"] = True
    try:
        ds = load_d4rl(path)
    except DatasetValueError as e:
        assert "metadata/x" in str(e)
    else:
        assert ds.metadata["x"] == json.loads(text)
