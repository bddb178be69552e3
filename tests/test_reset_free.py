"""Reset-free runner: task alternation, hard resets, and the episode recorder."""

import numpy as np
import pytest

from rlpt.data import load_d4rl
from rlpt.data.record import EpisodeRecorder
from rlpt.envs import make_env
from rlpt.envs.reset_free import ResetFreeWrapper
from rlpt.envs.tabletop import scripted_policy
from rlpt.errors import EnvSpecError


def run(env, policy, episodes):
    tasks, hard, lengths = [], [], []
    for _ in range(episodes):
        obs, info = env.reset()
        tasks.append(info["reset_free"]["task"])
        hard.append(info["reset_free"]["hard"])
        n, done = 0, False
        while not done:
            obs, r, term, trunc, info = env.step(policy(obs))
            n += 1
            done = term or trunc
        lengths.append(n)
    return tasks, hard, lengths


def test_tasks_alternate_and_scene_is_kept(tmp_path):
    base = make_env("tabletop/push", seed=0, terminate_on_success=True)
    recorder = EpisodeRecorder(tmp_path / "online.hdf5", save_every=2)
    env = ResetFreeWrapper(base, hard_reset_every=10_000, recorder=recorder)
    policy = scripted_policy(base.unwrapped, noise=0.0, rng=np.random.default_rng(0))
    env.reset(seed=0)
    env.unwrapped.set_task("push")  # the first reset above was hard; start counting from here
    tasks, hard, lengths = run(env, policy, 4)
    assert tasks == ["push-reset", "push", "push-reset", "push"]
    assert not any(hard)
    # the block stays where the previous episode left it: each reset-free episode starts where the last ended
    stats = env.stats()
    assert stats["reset_free/task_switches"] == 4 and stats["reset_free/hard_resets"] == 0
    assert stats["reset_free/success_rate_push-reset"] > 0  # scripted pushing back succeeds
    env.close()
    ds = load_d4rl(tmp_path / "online.hdf5")
    assert len(ds) == sum(lengths)  # every step of every episode is there (the first reset had no steps)
    assert ds.num_episodes == 4
    assert set(ds.metadata["tasks"]) >= {"push", "push-reset"}
    assert ds.infos["success"].any()


def test_hard_reset_every_n_steps():
    base = make_env("tabletop/reach", seed=1)
    env = ResetFreeWrapper(base, hard_reset_every=60)
    policy = lambda obs: np.zeros(4)  # noqa: E731 (never succeeds: episodes end by time limit, 50 steps)
    tasks, hard, lengths = run(env, policy, 4)
    assert lengths == [50, 50, 50, 50]
    assert hard == [True, False, True, False]  # 50 < 60 steps: switch; 100 >= 60: hard reset to forward
    assert tasks == ["reach", "reach-reset", "reach", "reach-reset"]
    assert env.stats()["reset_free/hard_resets"] == 1


def test_scene_persists_across_soft_reset():
    base = make_env("tabletop/push", seed=2)
    env = ResetFreeWrapper(base, hard_reset_every=1000)
    env.reset(seed=2)
    for _ in range(5):
        env.step(np.array([1.0, 0.0, -1.0, 1.0]))
    ee = env.unwrapped.ee_pos.copy()
    block = env.unwrapped.block_pos.copy()
    env.reset()
    assert np.allclose(env.unwrapped.ee_pos, ee, atol=5e-3)
    assert np.allclose(env.unwrapped.block_pos, block, atol=1e-3)


def test_needs_a_task_env():
    with pytest.raises(EnvSpecError, match="tasks"):
        ResetFreeWrapper(make_env("mujoco/Hopper-v5"))
    with pytest.raises(EnvSpecError, match="hard_reset_every"):
        ResetFreeWrapper(make_env("tabletop/reach"), hard_reset_every=0)
