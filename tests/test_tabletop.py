"""Tests of the tabletop manipulation family (rlpt.envs.tabletop)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlpt.envs.tabletop import TASKS, TabletopEnv, scripted_policy
from rlpt.envs.tabletop.tasks import REGION_A
from rlpt.errors import EnvSpecError

torch.set_num_threads(1)


def run_episode(env: TabletopEnv, policy, seed: int | None = None, options=None) -> dict:
    obs, info = env.reset(seed=seed, options=options)
    for _ in range(env.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            break
    return info


def run_until_success(env: TabletopEnv, policy, obs) -> bool:
    for _ in range(env.max_episode_steps):
        obs, _, _, truncated, info = env.step(policy(obs))
        if info["success"]:
            return True
        if truncated:
            break
    return False


def _quiet_checks(env_factory) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec" notes from gymnasium's checker
        env = env_factory()
        gym_check_env(env, skip_render_check=False)
        env.close()
        env = env_factory()
        sb3_check_env(env, warn=True)
        env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_env_checkers_state(task):
    _quiet_checks(lambda: TabletopEnv(task, obs_mode="state", render_mode="rgb_array"))


@pytest.mark.parametrize("task,obs_mode", [("push", "pixels"), ("drawer-open", "pixels"),
                                           ("pick-place", "state+pixels")])
def test_env_checkers_pixels(task, obs_mode):
    _quiet_checks(lambda: TabletopEnv(task, obs_mode=obs_mode, render_mode="rgb_array"))


def test_joint_pos_control_passes_checkers_and_moves():
    _quiet_checks(lambda: TabletopEnv("reach", control="joint_pos"))
    env = TabletopEnv("reach", control="joint_pos")
    env.reset(seed=0)
    before = env.ee_pos
    for _ in range(5):
        env.step(np.array([1.0, 0, 0, 0, 0, 0, 1.0], np.float32))  # waist turns
    assert env.ee_pos[1] - before[1] > 0.05


def test_spaces_and_observations():
    env = TabletopEnv("push", obs_mode="state+pixels", image_size=48, camera="top", render_mode="rgb_array")
    obs, info = env.reset(seed=0)
    assert obs["state"].shape == (30,) and obs["state"].dtype == np.float32
    assert obs["pixels"].shape == (48, 48, 3) and obs["pixels"].dtype == np.uint8
    assert np.array_equal(env.render(), obs["pixels"])
    assert env.action_space.shape == (4,)
    assert set(info) >= {"success", "is_success", "reward_dense", "reward_sparse", "task"}
    assert isinstance(info["success"], bool) and isinstance(info["is_success"], bool)
    for cam in ("front", "side", "top", "wrist"):
        img = env.render_camera(cam, 32)
        assert img.shape == (32, 32, 3) and img.std() > 5  # a real picture, not a blank buffer
    before = env.render_camera("front")
    for _ in range(3):
        env.step(np.array([0.0, 1.0, -1.0, -1.0], np.float32))
    assert not np.array_equal(before, env.render_camera("front"))
    poses = env.object_poses()
    assert set(poses) == {"block", "target", "handle", "gripper"}
    for pos, quat in poses.values():
        assert pos.shape == (3,) and quat.shape == (4,) and abs(np.linalg.norm(quat) - 1) < 1e-6
    # the state vector lays out what the scene API reports
    state = env.state()
    assert np.allclose(state[:3], env.ee_pos, atol=1e-6) and np.allclose(state[4:7], env.block_pos, atol=1e-6)


def test_sparse_reward_and_truncation():
    env = TabletopEnv("reach", reward="sparse", max_episode_steps=7)
    env.reset(seed=0)
    policy = scripted_policy(env)
    rewards, truncs = [], []
    for _ in range(7):
        _, r, terminated, truncated, info = env.step(policy(None))
        rewards.append(r)
        truncs.append(truncated)
        assert r == (1.0 if info["success"] else 0.0) and not terminated
    assert truncs == [False] * 6 + [True]


@pytest.mark.parametrize("task,n", [("reach", 5), ("push", 5), ("drawer-open", 5), ("pick-place", 3)])
def test_scripted_policy_succeeds(task, n):
    # (reverse tasks are exercised by test_reverse_task_undoes_forward_reset_free)
    env = TabletopEnv(task, terminate_on_success=True)
    policy = scripted_policy(env)
    successes = [run_episode(env, policy, seed=s)["success"] for s in range(n)]
    assert np.mean(successes) >= 0.8, successes


@pytest.mark.parametrize("task", ["reach", "push", "drawer-open"])
def test_random_policy_rarely_succeeds(task):
    env = TabletopEnv(task)
    rng = np.random.default_rng(0)
    successes = [run_episode(env, lambda _: rng.uniform(-1, 1, 4), seed=s)["success"] for s in range(4)]
    assert np.mean(successes) <= 0.25, successes


def test_scripted_noise_degrades_pick_place():
    env = TabletopEnv("pick-place", terminate_on_success=True)
    clean = [run_episode(env, scripted_policy(env), seed=s)["success"] for s in range(4)]
    noisy_policy = scripted_policy(env, noise=1.5, rng=np.random.default_rng(0))
    noisy = [run_episode(env, noisy_policy, seed=s)["success"] for s in range(4)]
    assert np.mean(noisy) < np.mean(clean), (clean, noisy)


@pytest.mark.parametrize("forward", ["reach", "push", "pick-place", "drawer-open"])
def test_reverse_task_undoes_forward_reset_free(forward):
    env = TabletopEnv(forward)
    policy = scripted_policy(env)  # follows set_task
    obs, _ = env.reset(seed=3)
    start_block, start_drawer = env.block_pos, env.drawer_q
    assert run_until_success(env, policy, obs)
    reverse = TASKS[forward].reverse
    assert TASKS[reverse].reverse == forward
    qpos = env.data.qpos.copy()
    env.set_task(reverse)
    obs, info = env.reset(options={"reset_free": True})
    assert np.array_equal(env.data.qpos, qpos), "reset_free must keep the physical state"
    assert info["task"] == reverse and env._elapsed == 0
    assert run_until_success(env, policy, obs)
    if forward in ("push", "pick-place"):  # the block is back in its start region
        lo, hi = REGION_A
        assert np.all(env.block_pos[:2] > lo - 0.04) and np.all(env.block_pos[:2] < hi + 0.04)
        assert np.linalg.norm(env.block_pos[:2] - start_block[:2]) < 0.15
    if forward == "drawer-open":
        assert abs(env.drawer_q - start_drawer) < 0.02


@pytest.mark.parametrize("camera,size", [("front", 64), ("top", 64), ("side", 128), ("front", 128)])
def test_projection_matches_rendered_block(camera, size):
    env = TabletopEnv("push")
    env.reset(seed=2)
    img = env.render_camera(camera, size)
    (u, v), = env.project(env.block_pos[None], camera, size)
    assert 0 <= u < size and 0 <= v < size
    r, g, b = img[int(v), int(u)].astype(int)
    assert r > 100 and r > 2 * g and r > 2 * b, (camera, size, (u, v), (r, g, b))
    # a point far from the block (the table corner nearest the robot) is not block-coloured
    K, E = env.camera_intrinsics(camera, size), env.camera_extrinsics(camera)
    assert K.shape == (3, 3) and E.shape == (4, 4) and np.allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3))


def test_randomization_changes_image_and_is_deterministic():
    env = TabletopEnv("push", obs_mode="pixels")
    obs0, _ = env.reset(seed=0)
    env.randomize(np.random.default_rng(7))
    a = env.render_camera()
    assert np.abs(a.astype(int) - obs0.astype(int)).mean() > 5
    env.randomize(np.random.default_rng(8))
    assert not np.array_equal(a, env.render_camera())
    env.randomize(np.random.default_rng(7))
    assert np.array_equal(a, env.render_camera())
    env.randomize(np.random.default_rng(7), textures=False, colours=False, lighting=False, camera=False,
                  background=False)
    assert np.array_equal(obs0, env.render_camera())  # all groups off restores the default look
    # through reset options: same seed, same look and scene
    obs1, _ = env.reset(seed=5, options={"randomize": True})
    env2 = TabletopEnv("push", obs_mode="pixels")
    obs2, _ = env2.reset(seed=5, options={"randomize": True})
    assert np.array_equal(obs1, obs2)


def test_seeded_reset_is_reproducible():
    def rollout(seed):
        env = TabletopEnv("pick-place", obs_mode="state+pixels")
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        states, frames = [obs["state"]], [obs["pixels"]]
        for _ in range(10):
            obs, *_ = env.step(rng.uniform(-1, 1, 4))
            states.append(obs["state"])
            frames.append(obs["pixels"])
        return np.stack(states), np.stack(frames)

    s1, f1 = rollout(4)
    s2, f2 = rollout(4)
    s3, _ = rollout(5)
    assert np.array_equal(s1, s2) and np.array_equal(f1, f2)
    assert not np.allclose(s1[0], s3[0])


@pytest.mark.parametrize("kwargs,valid", [
    ({"task": "fly"}, "drawer-open"), ({"obs_mode": "rgb"}, "state+pixels"), ({"camera": "left"}, "wrist"),
    ({"control": "torque"}, "ee_delta"), ({"reward": "shaped"}, "sparse"),
])
def test_bad_options_raise_env_spec_error(kwargs, valid):
    with pytest.raises(EnvSpecError, match=re.escape(valid)) as exc:
        TabletopEnv(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(exc.value)


def test_bad_runtime_inputs():
    env = TabletopEnv("reach")
    env.reset(seed=0)
    with pytest.raises(EnvSpecError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(EnvSpecError, match="reach-reset"):
        env.set_task("nope")
    with pytest.raises(EnvSpecError, match="top"):
        env.render_camera("nope")
    with pytest.raises(EnvSpecError, match="reset_free"):
        env.reset(options={"resetfree": True})
    with pytest.raises(EnvSpecError, match=r"\(N, 3\)"):
        env.project(np.zeros(3))


def _evaluate(env, act, seeds) -> float:
    return float(np.mean([run_episode(env, act, seed=s)["success"] for s in seeds]))


# PPO steps for the reach test. Measured with these settings: 4000 steps gave 100% success (20 eval
# episodes) on each of 5 seeds, 2000 steps 20-85%; a uniform random policy 0-10%.
PPO_BUDGET = 4_000


@pytest.mark.slow
def test_ppo_learns_reach_better_than_random():
    from stable_baselines3 import PPO

    env = TabletopEnv("reach", max_episode_steps=25)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=10, learning_rate=3e-3, gamma=0.9,
                policy_kwargs={"log_std_init": -0.5}, seed=0, device="cpu")
    model.learn(PPO_BUDGET)
    eval_env = TabletopEnv("reach", max_episode_steps=25)
    seeds = range(1000, 1020)
    ppo = _evaluate(eval_env, lambda o: model.predict(o, deterministic=True)[0], seeds)
    rng = np.random.default_rng(0)
    random = _evaluate(eval_env, lambda _: rng.uniform(-1, 1, 4), seeds)
    assert ppo >= random + 0.4, (ppo, random)



def _block_pixels(env, camera: str, size: int) -> int:
    """Pixels showing the block in ``camera``'s image (MuJoCo segmentation render: geom ids)."""
    import mujoco  # after rlpt.envs.tabletop, which sets up offscreen rendering

    r = mujoco.Renderer(env.model, height=size, width=size)
    try:
        r.enable_segmentation_rendering()
        r.update_scene(env.data, camera=camera)
        seg = r.render()  # (H, W, 2): object id, object type
    finally:
        r.close()
    block = env.model.geom("block").id
    return int(((seg[..., 0] == block) & (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM)).sum())


def test_workspace_camera_frames_the_task():
    """The "workspace" camera shows the block about 3x larger (in pixels) than "front" at 32x32, and the block's start
    and goal regions both lie inside its image."""
    env = TabletopEnv("push", obs_mode="pixels", image_size=32, camera="workspace")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.std() > 5
    assert np.array_equal(obs, env.render_camera("workspace", 32))
    counts = {cam: _block_pixels(env, cam, 32) for cam in ("front", "workspace")}
    assert counts["front"] >= 1 and counts["workspace"] >= 2.5 * counts["front"], counts  # 17 vs 6 when written
    corners = [[x, y, 0.0] for x in (0.22, 0.32) for y in (-0.16, 0.02)]  # tasks.REGION_A / REGION_B extremes
    uv = env.project(np.array(corners), "workspace", 32)
    assert np.isfinite(uv).all() and (uv > 2).all() and (uv < 30).all(), uv


def test_workspace_camera_jitter_is_deterministic():
    env = TabletopEnv("push", obs_mode="pixels", image_size=32, camera="workspace")
    env.reset(seed=0)
    cid = env.model.camera("workspace").id
    default_pos = env.model.cam_pos[cid].copy()
    env.randomize(np.random.default_rng(3))
    a = env.render_camera("workspace")
    moved = env.model.cam_pos[cid] - default_pos
    assert 0 < np.abs(moved).max() <= 0.03 + 1e-9  # jittered like the other static cameras
    env.randomize(np.random.default_rng(4))
    assert not np.array_equal(a, env.render_camera("workspace"))
    env.randomize(np.random.default_rng(3))
    assert np.array_equal(a, env.render_camera("workspace"))
    env.randomize(np.random.default_rng(3), camera=False)
    assert np.array_equal(env.model.cam_pos[cid], default_pos)
