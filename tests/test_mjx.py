"""MJX backend: parity with Gymnasium MuJoCo on CPU JAX, the vector env's API, and the torch CPU vector env.

Compiled MJX programs go to a persistent JAX cache (~/.cache/rlpt/jax, or $RLPT_JAX_CACHE): the first
run compiles (about 30 s per env on 2 idle cores), later runs load them.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlpt.envs import make_vec_env
from rlpt.errors import EnvSpecError

LOCOMOTION = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
N_WORLDS = 128  # one recorded CPU step per world: 128 steps checked in one batched MJX call
# Float32 MJX vs float64 C MuJoCo, one env step from the same state: measured max errors are
# ~2e-7 (positions) and ~1e-5 (velocities); these bounds leave 10-100x room.
OBS_ATOL, OBS_RTOL = 2e-4, 1e-4
REWARD_ATOL = 1e-3


def _mjx():
    pytest.importorskip("jax")
    pytest.importorskip("mujoco.mjx")
    from rlpt.envs.mjx import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(scope="module", params=LOCOMOTION)
def loco(request):
    _mjx()
    envs = make_vec_env(f"mujoco/{request.param}", N_WORLDS, backend="mjx", device="cpu", seed=0)
    yield request.param, envs
    envs.close()


def _cpu_trajectory(gym_id: str, n: int, seed: int = 0):
    """Random-action Gymnasium rollout: (qpos, qvel) before each step, actions, and what each step returned."""
    env = gym.make(gym_id).unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rec = {k: [] for k in ("qpos", "qvel", "action", "obs", "reward", "terminated")}
    for t in range(n):
        rec["qpos"].append(env.data.qpos.copy())
        rec["qvel"].append(env.data.qvel.copy())
        action = rng.uniform(-1.0, 1.0, env.action_space.shape)
        obs, reward, terminated, _, _ = env.step(action)
        for k, v in (("action", action), ("obs", obs), ("reward", reward), ("terminated", terminated)):
            rec[k].append(v)
        if terminated:
            env.reset(seed=seed + 1 + t)
    env.close()
    return {k: np.asarray(v) for k, v in rec.items()}


def test_locomotion_step_parity(loco):
    """From Gymnasium's states and actions, MJX gives the same observations, rewards and terminations."""
    gym_id, envs = loco
    ref = _cpu_trajectory(gym_id, N_WORLDS)
    envs.set_state(ref["qpos"], ref["qvel"])
    obs, reward, terminated, truncated, info = envs.step(torch.as_tensor(ref["action"]))
    # worlds that terminated were reset in the same step; their step's observation is in final_obs
    done = info["_final_obs"]
    assert torch.equal(done, terminated | truncated)
    stepped = torch.where(done[:, None], info["final_obs"], obs).double().numpy()
    np.testing.assert_allclose(stepped, ref["obs"], atol=OBS_ATOL, rtol=OBS_RTOL)
    np.testing.assert_allclose(reward.double().numpy(), ref["reward"], atol=REWARD_ATOL)
    np.testing.assert_array_equal(terminated.numpy(), ref["terminated"])
    assert not truncated.any()
    if gym_id != "HalfCheetah-v5":
        assert ref["terminated"].any(), "the reference rollout should include terminations"
    # the reward decomposes as Gymnasium's info says
    total = info["reward_forward"] + info["reward_ctrl"] + info.get("reward_survive", 0.0)
    torch.testing.assert_close(total, reward, atol=1e-5, rtol=1e-5)


def test_locomotion_reset_noise_and_seeding(loco):
    gym_id, envs = loco
    obs_a, _ = envs.reset(seed=3)
    qpos, qvel = envs.get_state()
    obs_b, _ = envs.reset(seed=3)
    torch.testing.assert_close(obs_a, obs_b, rtol=0, atol=0)
    obs_c, _ = envs.reset(seed=4)
    assert not torch.equal(obs_a, obs_c)
    assert torch.unique(obs_a, dim=0).shape[0] == N_WORLDS  # every world draws its own noise
    scale = 0.1 if gym_id == "HalfCheetah-v5" else 5e-3
    qpos0 = envs.task.mj_model.qpos0
    assert np.all(np.abs(qpos - qpos0) <= scale + 1e-7)
    assert np.abs(qpos - qpos0).max() > 0.5 * scale
    if gym_id == "HalfCheetah-v5":  # Gaussian velocity noise, std 0.1
        assert 0.08 < qvel.std() < 0.12
    else:
        assert np.all(np.abs(qvel) <= scale + 1e-7)
    assert obs_a.dtype == torch.float32 and obs_a.shape == (N_WORLDS, envs.single_observation_space.shape[0])


def test_locomotion_time_limit_and_autoreset(loco):
    gym_id, envs = loco
    assert envs.max_episode_steps == 1000  # Gymnasium's TimeLimit for the v5 envs
    obs0, _ = envs.reset(seed=0)
    qpos, qvel = envs.get_state()
    envs.set_state(qpos, qvel, elapsed=999)
    zeros = torch.zeros(N_WORLDS, envs.single_action_space.shape[0])
    obs, reward, terminated, truncated, info = envs.step(zeros)
    assert truncated.all() and info["_final_obs"].all()
    assert not torch.allclose(obs, info["final_obs"])  # obs is the next episode's first observation
    _, _, _, truncated, _ = envs.step(zeros)
    assert not truncated.any()  # the step counters restarted


def test_mjx_action_shape_error(loco):
    _, envs = loco
    envs.reset(seed=0)
    with pytest.raises(EnvSpecError, match="actions must have shape"):
        envs.step(np.zeros((N_WORLDS + 1, envs.single_action_space.shape[0])))


def test_data_make_mjx_backend(loco):
    """`make_dataset(..., backend="mjx")` rolls the behaviour policy out in batched worlds into a valid dataset."""
    gym_id, _ = loco
    if gym_id != "Hopper-v5":
        pytest.skip("one locomotion env is enough here")
    from rlpt.collect.generate import make_dataset

    ds = make_dataset("hopper-medium-v5", size=300, seed=0, n_envs=N_WORLDS, backend="mjx", device="cpu", quiet=True)
    assert len(ds) == 300 and ds.metadata["backend"] == "mjx" and ds.metadata["num_envs"] == N_WORLDS
    ends = ds.terminals | ds.timeouts
    assert ends[-1] and ends.sum() >= N_WORLDS  # 3 steps per world, each world's last row ends an episode
    cont = ~ends[:-1]  # within an episode, a row's successor is the next row
    np.testing.assert_array_equal(ds.next_observations[:-1][cont], ds.observations[1:][cont])
    with pytest.raises(Exception, match="backend 'mjx'"):
        make_dataset("tabletop-push-scripted", size=10, backend="mjx", quiet=True)


def test_mjx_option_errors():
    _mjx()
    with pytest.raises(EnvSpecError, match="pixels"):
        make_vec_env("hopper", 2, backend="mjx", pixels=True)
    with pytest.raises(EnvSpecError, match="has no env"):
        make_vec_env("dmc/cheetah-run", 2, backend="mjx")
    with pytest.raises(EnvSpecError, match="backend"):
        make_vec_env("hopper", 2, backend="warp")


def test_gymnasium_backend_torch_api():
    """backend='gymnasium' with a device: torch tensors, same-step autoreset with a dense final_obs."""
    envs = make_vec_env("mujoco/Hopper-v5", 2, device="cpu", seed=0)
    obs, _ = envs.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.dtype == torch.float32 and obs.shape == (2, 11)
    ended = False
    for _ in range(200):
        obs, reward, terminated, truncated, info = envs.step(torch.ones(2, 3))
        assert reward.dtype == torch.float32 and terminated.dtype == torch.bool
        assert info["final_obs"].shape == (2, 11) and info["x_velocity"].shape == (2,)
        if info["_final_obs"].any():
            i = int(torch.nonzero(info["_final_obs"])[0])
            assert terminated[i] or truncated[i]
            assert not torch.equal(info["final_obs"][i], obs[i])
            assert float(info["final_obs"][i][0]) < 0.8 or abs(float(info["final_obs"][i][1])) > 0.2  # unhealthy
            ended = True
            break
    assert ended
    envs.close()


def test_import_rlpt_does_not_import_jax():
    code = "import sys, rlpt, rlpt.envs, rlpt.agents, rlpt.data; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------------- tabletop
TABLETOP = ("reach", "push", "pick-place", "drawer-open")
TABLETOP_WORLDS = 40  # steps checked per task: the 40 around the first success (each costs 20 physics steps)
# Arm, target and drawer observations: float32 IK and physics vs float64, measured <= 1e-3 m.
# The block's pose while it is pushed differs by up to ~8 mm and 0.06 (quaternion) per step (MJX's
# box-box contacts and float32 solver), so it is not compared; the predicates and dense rewards are.
ARM_OBS = slice(0, 4)  # ee position, gripper opening
DENSE_ATOL = 0.05


def _tabletop_episode(task: str, seed: int = 0):
    """One scripted CPU episode: the full env state before each step, actions, successes, dense rewards."""
    from rlpt.envs.tabletop import TabletopEnv, scripted_policy

    env = TabletopEnv(task)
    policy = scripted_policy(env, rng=np.random.default_rng(seed))
    obs, _ = env.reset(seed=seed)
    keys = ("qpos", "qvel", "target_pos", "cabinet_x", "q_target", "ee_target", "finger_target", "qacc_warmstart")
    rec = {k: [] for k in (*keys, "action", "obs", "success", "dense")}
    for _ in range(env.max_episode_steps):
        for k, v in (("qpos", env.data.qpos), ("qvel", env.data.qvel), ("target_pos", env.target_pos),
                     ("cabinet_x", env.model.body_pos[env._cabinet_bid, 0]), ("q_target", env._q_target),
                     ("ee_target", env._ee_target), ("finger_target", env._finger_target),
                     ("qacc_warmstart", env.data.qacc_warmstart)):
            rec[k].append(np.array(v, copy=True))
        action = policy(obs)
        obs, _, _, _, info = env.step(action)
        rec["action"].append(action)
        rec["obs"].append(obs)
        rec["success"].append(info["success"])
        rec["dense"].append(info["reward_dense"])
    env.close()
    return {k: np.asarray(v) for k, v in rec.items()}, keys


@pytest.fixture(scope="module")
def tabletop():
    _mjx()
    envs = make_vec_env("tabletop/reach", TABLETOP_WORLDS, backend="mjx", device="cpu", seed=0)
    yield envs
    envs.close()


@pytest.mark.slow
def test_tabletop_success_parity_on_scripted_episodes(tabletop):
    """Steps of a scripted episode per task, each restarted from the CPU state in MJX: same success predicate.

    The 40 steps checked per task surround the first success, so both outcomes and the switch are covered.
    """
    for task in TABLETOP:
        rec, keys = _tabletop_episode(task)
        n = len(rec["action"])
        assert rec["success"].any() and not rec["success"].all(), f"{task}: the episode should succeed midway"
        start = int(np.clip(np.argmax(rec["success"]) - TABLETOP_WORLDS // 2, 0, n - TABLETOP_WORLDS))
        idx = np.arange(start, start + TABLETOP_WORLDS)
        assert rec["success"][idx].any() and not rec["success"][idx].all()
        tabletop.set_task(task)
        tabletop.set_state(**{k: rec[k][idx] for k in keys})
        obs, reward, terminated, truncated, info = tabletop.step(torch.as_tensor(rec["action"][idx]))
        np.testing.assert_array_equal(info["success"].numpy(), rec["success"][idx], err_msg=f"{task}: success")
        np.testing.assert_allclose(info["reward_dense"].numpy(), rec["dense"][idx], atol=DENSE_ATOL, err_msg=task)
        torch.testing.assert_close(reward, info["reward_dense"])  # dense is the default reward
        stepped = torch.where(info["_final_obs"][:, None], info["final_obs"], obs).numpy()
        ref = rec["obs"][idx]
        np.testing.assert_allclose(stepped[:, ARM_OBS], ref[:, ARM_OBS], atol=2e-3, err_msg=task)
        np.testing.assert_allclose(stepped[:, 11:18], ref[:, 11:18], atol=2e-3, err_msg=task)  # target, drawer
        assert not terminated.any()  # terminate_on_success is off by default


@pytest.mark.slow
def test_tabletop_reset_samples_the_cpu_regions(tabletop):
    from rlpt.envs.tabletop import tasks as T

    tabletop.set_task("push")
    obs, _ = tabletop.reset(seed=1)
    o = obs.numpy()
    ee, block, target = o[:, 0:3], o[:, 4:7], o[:, 11:14]
    assert np.all((block[:, :2] >= T.REGION_A[0] - 1e-6) & (block[:, :2] <= T.REGION_A[1] + 1e-6))
    assert np.all((target[:, :2] >= T.REGION_B[0] - 1e-6) & (target[:, :2] <= T.REGION_B[1] + 1e-6))
    assert np.abs(ee - T.HOME_EE).max() < 0.03  # home +- 2 cm jitter, reached by the JAX IK
    assert np.unique(block[:, 0]).size == TABLETOP_WORLDS
    assert tabletop.max_episode_steps == 80
    again, _ = tabletop.reset(seed=1)
    torch.testing.assert_close(obs, again, rtol=0, atol=0)


def test_rlpt_train_runs_ppo_on_mjx_worlds(tmp_path):
    """`rlpt train RECIPE env_options.backend=mjx env_options.num_envs=N`: the agent trains on N MJX worlds
    (the same compiled Hopper program as the parity tests), evaluation runs CPU Gymnasium."""
    _mjx()
    import yaml

    from rlpt.train import load_recipe, train

    recipe = {"agent": "ppo", "env": "mujoco/Hopper-v5", "source": "test", "offline_steps": 0,
              "online_steps": 512, "online_eval_interval": 512, "eval_episodes": 1, "video_steps": 0,
              "config": {"rollout_steps": 256, "minibatch": 128, "epochs": 1, "hidden": [16, 16]}}
    path = tmp_path / "ppo-mjx.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = train(load_recipe(str(path), ["env_options.backend=mjx", f"env_options.num_envs={N_WORLDS}",
                                            "env_options.device=cpu"]), out_root=tmp_path / "runs", quiet=True)
    assert np.isfinite(summary["online_score"])
    saved = yaml.safe_load((tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir()) /
                            "config.yaml").read_text())
    assert saved["recipe"]["env_options"] == {"backend": "mjx", "num_envs": N_WORLDS, "device": "cpu"}
