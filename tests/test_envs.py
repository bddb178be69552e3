"""make_env / make_vec_env / check_env / env catalog: shapes, wrappers, seeding, checkers, errors."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlpt.envs import (
    DMCEnv,
    EnvSpec,
    check_env,
    list_envs,
    load_env_spec,
    make_env,
    make_vec_env,
    resolve_spec,
)
from rlpt.errors import EnvSpecError

SPECS = ["mujoco/Hopper-v5", "dmc/cheetah-run", "dmc/walker-walk"]
STATE_DIMS = {"mujoco/Hopper-v5": 11, "dmc/cheetah-run": 17, "dmc/walker-walk": 24}
REPO = Path(__file__).resolve().parent.parent


def _actions(env: gym.Env, n: int, seed: int = 0) -> list[np.ndarray]:
    space = env.action_space
    rng = np.random.default_rng(seed)
    return [rng.uniform(space.low, space.high).astype(np.float32) for _ in range(n)]


def _rollout(env: gym.Env, actions, seed: int):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return observations, rewards


# ---------------------------------------------------------------- shapes and wrappers


@pytest.mark.parametrize("spec", SPECS)
def test_state_observations(spec):
    env = make_env(spec, seed=0)
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (STATE_DIMS[spec],) and obs.dtype == np.float32
        assert env.observation_space.contains(obs)
        assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.dtype == np.float32
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and np.isfinite(obs).all() and isinstance(reward, float)
    finally:
        env.close()


@pytest.mark.parametrize("spec", SPECS)
def test_pixel_observations_and_frame_stack(spec):
    env = make_env(spec, pixels=True, image_size=48, frame_stack=3, seed=0)
    try:
        assert env.observation_space.shape == (3, 48, 48, 3) and env.observation_space.dtype == np.uint8
        obs, info = env.reset(seed=0)
        assert obs.shape == (3, 48, 48, 3) and obs.dtype == np.uint8
        assert (obs[0] == obs[1]).all() and (obs[1] == obs[2]).all()  # stack starts filled with frame 0
        assert obs.std() > 0  # a real render, not a blank buffer
        first = obs[-1].copy()
        for _ in range(5):
            obs, _, _, _, info = env.step(env.action_space.sample())
        assert (obs[-1] != first).any()  # the scene moved
        assert info["state"].shape == (STATE_DIMS[spec],)  # state kept beside the pixels
        assert env.render().shape == (48, 48, 3)
    finally:
        env.close()


def test_renders_stay_correct_with_several_envs_in_one_process():
    # Gymnasium's viewer and dm_control each track "their" current GL context; mixing them (and
    # garbage-collecting an unclosed env) used to give blank or frozen frames in the other env.
    import gc

    def frames(env):
        obs, _ = env.reset(seed=0)
        out = [obs]
        for _ in range(6):
            out.append(env.step(np.zeros(env.action_space.shape, np.float32))[0])
        return np.stack(out)

    dmc = make_env("dmc/cheetah-run", pixels=True, image_size=32, seed=0)
    reference_dmc = frames(dmc)
    assert len({f.tobytes() for f in reference_dmc}) > 1
    hopper = make_env("mujoco/Hopper-v5", pixels=True, image_size=32, seed=0)
    reference_hopper = frames(hopper)
    np.testing.assert_array_equal(frames(dmc), reference_dmc)
    dropped = make_env("mujoco/Hopper-v5", pixels=True, image_size=32, seed=0)
    np.testing.assert_array_equal(frames(dropped), reference_hopper)
    del dropped  # not closed: freed by the garbage collector
    gc.collect()
    np.testing.assert_array_equal(frames(dmc), reference_dmc)
    np.testing.assert_array_equal(frames(hopper), reference_hopper)
    hopper.close()
    np.testing.assert_array_equal(frames(dmc), reference_dmc)
    dmc.close()


def test_flat_frame_stack_concatenates():
    env = make_env("dmc/cheetah-run", frame_stack=2, seed=0)
    obs0, _ = env.reset(seed=0)
    assert obs0.shape == (34,) and env.observation_space.shape == (34,)
    np.testing.assert_array_equal(obs0[:17], obs0[17:])
    obs1, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs1[:17], obs0[17:])  # oldest first
    env.close()


@pytest.mark.parametrize("spec", ["mujoco/Hopper-v5", "dmc/cheetah-run"])
def test_action_repeat_sums_rewards(spec):
    k = 3
    repeated, single = make_env(spec, action_repeat=k, seed=5), make_env(spec, seed=5)
    actions = _actions(single, 4, seed=1)
    obs_r, _ = repeated.reset(seed=11)
    obs_s, _ = single.reset(seed=11)
    np.testing.assert_array_equal(obs_r, obs_s)
    for a in actions:
        obs_r, reward_r, term_r, trunc_r, _ = repeated.step(a)
        total = 0.0
        for _ in range(k):
            obs_s, reward_s, term_s, trunc_s, _ = single.step(a)
            total += reward_s
            if term_s or trunc_s:
                break
        assert reward_r == pytest.approx(total, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(obs_r, obs_s)
        assert (term_r, trunc_r) == (term_s, trunc_s)
        if term_r or trunc_r:
            break
    repeated.close()
    single.close()


def test_action_repeat_stops_at_termination():
    # Hopper falls over quickly under a constant extreme action: the repeat must stop there.
    env = make_env("mujoco/Hopper-v5", action_repeat=50, seed=0)
    env.reset(seed=0)
    steps = 0
    for _ in range(50):
        _, _, terminated, truncated, _ = env.step(np.ones(3, np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert terminated and not truncated and steps < 50
    env.close()


@pytest.mark.parametrize(("spec", "action_repeat"), [("mujoco/Hopper-v5", 1), ("dmc/walker-walk", 2)])
def test_time_limit_truncates_at_the_right_step(spec, action_repeat):
    limit = 7
    env = make_env(spec, time_limit=limit, action_repeat=action_repeat, seed=0)
    env.reset(seed=0)
    for step in range(1, limit + 1):
        # tiny actions: Hopper stays upright, so only the time limit can end the episode
        _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        assert not terminated
        assert truncated == (step == limit)
    env.close()


def test_dmc_default_limit_is_truncation_after_1000_steps():
    env = make_env("dmc/cheetah-run", seed=0)
    assert env.unwrapped.max_episode_steps == 1000
    env.reset(seed=0)
    zero = np.zeros(6, np.float32)
    for step in range(1, 1001):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (step == 1000)
    env.close()


def test_dmc_hyphenated_and_underscored_names():
    env = make_env("dmc/ball_in_cup-catch", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (8,) and env.action_space.shape == (2,)
    env.close()


def test_dmc_reset_seed_matches_suite_random():
    from dm_control import suite

    env = DMCEnv("walker", "walk")
    obs, _ = env.reset(seed=7)
    reference = suite.load("walker", "walk", task_kwargs={"random": 7}).reset().observation
    np.testing.assert_allclose(obs, np.concatenate([np.ravel(v) for v in reference.values()]), rtol=1e-6)
    env.close()


def test_bare_gymnasium_ids_and_catalog_names():
    env = make_env("Pendulum-v1", seed=0)
    assert env.observation_space.shape == (3,)
    env.close()
    env = make_env("Hopper-v5", seed=0)
    assert env.observation_space.shape == (11,)
    env.close()
    assert resolve_spec("hopper")[0] == "mujoco/Hopper-v5"
    assert resolve_spec(REPO / "envs" / "cheetah-run.yaml")[0] == "dmc/cheetah-run"


# ---------------------------------------------------------------- checkers and seeding


@pytest.mark.parametrize(
    ("spec", "pixels"),
    [(s, False) for s in SPECS] + [("mujoco/Hopper-v5", True), ("dmc/cheetah-run", True)],
)
def test_gymnasium_and_sb3_checkers_pass(spec, pixels):
    report = check_env(spec, pixels=pixels, episodes=1, time_limit=20)
    assert report["ok"], report["checks"]
    assert report["checks"]["gymnasium"]["passed"] and report["checks"]["sb3"]["passed"]
    assert len(report["episode_returns"]) == 1 and 1 <= report["episode_lengths"][0] <= 20
    assert report["steps_per_second"] > 0


@pytest.mark.parametrize(("spec", "pixels"), [(s, False) for s in SPECS] + [("dmc/cheetah-run", True)])
def test_same_seed_same_observations(spec, pixels):
    envs = [make_env(spec, pixels=pixels, seed=3) for _ in range(2)]
    actions = _actions(envs[0], 10 if pixels else 30, seed=4)
    (obs_a, rew_a), (obs_b, rew_b) = (_rollout(e, actions, seed=3) for e in envs)
    assert len(obs_a) == len(obs_b)
    for a, b in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rew_a == rew_b
    # a different seed gives a different initial state
    other, _ = envs[0].reset(seed=4)
    assert not np.array_equal(other, obs_a[0])
    for e in envs:
        e.close()


def test_make_env_seed_makes_first_reset_reproducible():
    a, b = make_env("dmc/walker-walk", seed=9), make_env("dmc/walker-walk", seed=9)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())
    a.close()
    b.close()


def test_sync_vector_env():
    envs = make_vec_env("mujoco/Hopper-v5", 3, seed=0)
    obs, _ = envs.reset()
    assert obs.shape == (3, 11) and obs.dtype == np.float32
    assert not np.array_equal(obs[0], obs[1])  # seeds seed + i
    obs, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (3, 11) and rewards.shape == (3,) and terminated.shape == (3,)
    envs.close()


def test_sync_vector_env_pixels():
    envs = make_vec_env("dmc/cheetah-run", 2, seed=0, pixels=True, image_size=32, frame_stack=2)
    obs, _ = envs.reset()
    assert obs.shape == (2, 2, 32, 32, 3) and obs.dtype == np.uint8
    envs.close()


def test_async_vector_env():
    # fork keeps the test fast; the default start method ("spawn") is the safe choice with GL contexts
    envs = make_vec_env("Pendulum-v1", 2, vectorization="async", seed=0, context="fork")
    try:
        obs, _ = envs.reset()
        assert isinstance(envs, gym.vector.AsyncVectorEnv) and obs.shape == (2, 3)
        obs, rewards, *_ = envs.step(envs.action_space.sample())
        assert obs.shape == (2, 3) and rewards.shape == (2,)
    finally:
        envs.close()


# ---------------------------------------------------------------- catalog


def test_catalog_lists_every_spec_file():
    specs = list_envs()
    names = {s.name for s in specs}
    files = {p.stem for p in (REPO / "envs").glob("*.yaml")}
    assert files <= names
    expected = {"hopper", "halfcheetah", "walker2d", "cheetah-run", "walker-walk", "tabletop-reach",
                "tabletop-push", "tabletop-pick-place", "tabletop-drawer-open"}
    assert expected <= names
    by_name = {s.name: s for s in specs}
    assert {by_name[n].d4rl_name for n in ("hopper", "halfcheetah", "walker2d")} == {
        "hopper", "halfcheetah", "walker2d"}
    assert by_name["tabletop-drawer-open"].reverse_id == "tabletop/drawer-close"


@pytest.mark.parametrize("path", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_catalog_spec_makes_its_env(path):
    spec = load_env_spec(path)
    for env_spec in (spec.name, str(path)):
        env = make_env(env_spec, seed=0)
        obs, _ = env.reset()
        assert env.observation_space.contains(obs)
        env.step(env.action_space.sample())
        env.close()
    if spec.reverse_id:
        env = make_env(spec.reverse_id, seed=0)
        env.reset()
        env.close()


def test_spec_file_options_apply_and_explicit_arguments_win(tmp_path, monkeypatch):
    (tmp_path / "stacked.yaml").write_text(
        "id: dmc/cheetah-run\ndescription: cheetah with stacked states\noptions:\n  frame_stack: 2\n"
        "  time_limit: 5\n"
    )
    monkeypatch.setenv("RLPT_ENVS_DIR", str(tmp_path))
    assert [s.name for s in list_envs()] == ["stacked"]
    env = make_env("stacked", seed=0)
    assert env.observation_space.shape == (34,)
    env.reset()
    assert [env.step(np.zeros(6, np.float32))[3] for _ in range(5)] == [False] * 4 + [True]
    env.close()
    env = make_env(tmp_path / "stacked.yaml", frame_stack=1)
    assert env.observation_space.shape == (17,)
    env.close()
    assert isinstance(load_env_spec(tmp_path / "stacked.yaml"), EnvSpec)


def test_tabletop_through_make_env():
    env = make_env("tabletop/reach", pixels=True, image_size=32, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    env.step(env.action_space.sample())
    env.close()
    report = check_env("tabletop/push", episodes=1, time_limit=5)
    assert report["ok"], report["checks"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("mujoco/Hoper-v5", "Hopper-v5"),
        ("dmc/cheetah-rn", "dmc/cheetah-run"),
        ("dmc/cheetah", "dmc/"),
        ("hoper", "hopper"),
        ("no-such-env-anywhere", "unknown env spec"),
        ("envs/missing.yaml", "does not exist"),
        ("tabletop/fly", "tabletop"),
        ("", "non-empty"),
    ],
)
def test_unknown_specs_raise_with_hints(spec, hint):
    with pytest.raises(EnvSpecError, match=hint.replace("/", "/")):
        make_env(spec)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("dmc/cheetah-run", {"image_size": 0}, "image_size"),
        ("dmc/cheetah-run", {"frame_stack": 0}, "frame_stack"),
        ("dmc/cheetah-run", {"action_repeat": 0}, "action_repeat"),
        ("dmc/cheetah-run", {"time_limit": -3}, "time_limit"),
        ("dmc/cheetah-run", {"camera": "overhead"}, "unknown camera 'overhead'.*side"),
        ("dmc/cheetah-run", {"camera": 7}, "unknown camera 7"),
        ("mujoco/Hopper-v5", {"camera": "overhead"}, "unknown camera 'overhead'.*track"),
        ("mujoco/Hopper-v5", {"pixels": True, "render_mode": "human"}, "render_mode"),
        ("Pendulum-v1", {"camera": "side"}, "camera"),
        ("mujoco/Hopper-v5", {"not_an_option": 1}, "not_an_option"),
    ],
)
def test_bad_options_raise(spec, options, message):
    with pytest.raises(EnvSpecError, match=message):
        make_env(spec, **options)


def test_bad_spec_files_raise(tmp_path):
    bad = {
        "unknown_key.yaml": ("id: dmc/cheetah-run\ndescription: x\nfoo: 1\n", "unknown key"),
        "no_id.yaml": ("description: x\n", "'id'"),
        "bad_options.yaml": ("id: dmc/cheetah-run\ndescription: x\noptions: [1, 2]\n", "'options'"),
        "bad_target.yaml": ("id: dmc/nope-nope\ndescription: x\n", "dm_control task"),
        "not_a_mapping.yaml": ("- 1\n- 2\n", "mapping"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(EnvSpecError, match=message):
            make_env(tmp_path / name)


def test_vec_env_argument_errors():
    with pytest.raises(EnvSpecError, match="num_envs"):
        make_vec_env("Pendulum-v1", 0)
    with pytest.raises(EnvSpecError, match="vectorization"):
        make_vec_env("Pendulum-v1", 2, vectorization="threads")
    with pytest.raises(EnvSpecError, match="unknown env spec"):
        make_vec_env("no-such-env-anywhere", 2)
