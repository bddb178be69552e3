"""Batched env stepping for the online loops: one env and a vector env of N worlds give the same transitions,
and Uni-O4 / IQL train online on a vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from test_unio4 import GoalEnv, make_dataset, tiny_agent

from rlpt.agents.rollout import BatchedEnv, gae
from rlpt.data.buffers import RolloutBuffer
from rlpt.errors import ConfigError


def vec(n: int, mode: AutoresetMode = AutoresetMode.SAME_STEP) -> SyncVectorEnv:
    return SyncVectorEnv([GoalEnv for _ in range(n)], autoreset_mode=mode)


def test_vector_worlds_step_like_single_envs_through_episode_ends():
    device = torch.device("cpu")
    single = [BatchedEnv(GoalEnv(), device, seed=s) for s in (0, 1, 2)]
    batched = BatchedEnv(vec(3), device, seed=0)  # gymnasium seeds world i with seed + i
    torch.testing.assert_close(batched.obs, torch.cat([e.obs for e in single]))
    rng = np.random.default_rng(0)
    for _ in range(GoalEnv.HORIZON + 5):  # crosses the 25-step time limit: every world resets once
        a = torch.as_tensor(rng.uniform(-2, 2, (3, 2)), dtype=torch.float32)
        out = batched.step(a)
        ref = [e.step(a[i:i + 1]) for i, e in enumerate(single)]
        for key in ("next_obs", "reward", "terminated", "done"):
            torch.testing.assert_close(out[key].float(), torch.cat([r[key] for r in ref]).float())
        torch.testing.assert_close(batched.obs, torch.cat([e.obs for e in single]))
    assert batched.stats.pop()["online/episodes"] == 3


def test_next_step_vector_envs_are_refused():
    with pytest.raises(ConfigError, match="SAME_STEP"):
        BatchedEnv(vec(2, AutoresetMode.NEXT_STEP), torch.device("cpu"), seed=0)


def test_gae_matches_a_per_world_loop():
    g = torch.Generator().manual_seed(0)
    T, N = 7, 3
    r, v, nv = (torch.randn(T, N, generator=g) for _ in range(3))
    term = (torch.rand(T, N, generator=g) < 0.2).float()
    done = torch.maximum(term, (torch.rand(T, N, generator=g) < 0.2).float())
    adv = gae(r, v, nv, term, done, 0.9, 0.8)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            delta = r[t, n] + 0.9 * (1 - term[t, n]) * nv[t, n] - v[t, n]
            running = delta + 0.9 * 0.8 * (1 - done[t, n]) * running
            assert abs(float(adv[t, n]) - float(running)) < 1e-5


def test_rollout_buffer_shapes():
    buf = RolloutBuffer(4, 3, (2,), 2, torch.device("cpu"))
    step = {"next_obs": torch.ones(3, 2), "reward": torch.ones(3), "terminated": torch.zeros(3),
            "done": torch.tensor([True, False, False])}
    buf.add(1, torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(3), step)
    assert buf.obs.shape == (4, 3, 2) and buf.done[1].tolist() == [1.0, 0.0, 0.0]


def test_unio4_ppo_trains_on_a_vector_env(dataset):
    agent = tiny_agent(critic_steps=50, dynamics_steps=50, bc_steps=50, improve_steps=0, online_rollout_steps=60)
    agent.fit(dataset, n_steps=agent.offline_total_steps)
    before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    metrics = agent.learn(vec(4), total_timesteps=120)
    assert agent.online_steps == 120  # 2 updates of 15 steps x 4 worlds
    assert "online/policy_loss" in metrics and np.isfinite(metrics["online/policy_loss"])
    assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in before.items())


def test_iql_fine_tunes_on_a_vector_env(dataset):
    from rlpt.agents import IQLConfig

    env = GoalEnv()
    agent = IQLConfig(batch_size=32, hidden=(16, 16), log_interval=10).create(env.observation_space,
                                                                              env.action_space, device="cpu")
    agent.fit(dataset, n_steps=20)
    metrics = agent.learn(vec(3), total_timesteps=60, offline=dataset)
    assert agent.online_steps == 60 and len(agent.buffer) == 60
    assert np.isfinite(metrics["train/actor_loss"])


@pytest.fixture(scope="module")
def dataset():


    return make_dataset()


def test_gymnasium_vector_env_reports_same_step():
    env = vec(2)
    assert getattr(env.metadata["autoreset_mode"], "name", None) == "SAME_STEP"
    assert isinstance(env, gym.vector.VectorEnv)


@pytest.mark.slow
def test_ppo_from_scratch_learns_the_goal_task_on_a_vector_env():
    from test_unio4 import RANDOM_RETURN, mean_return

    from rlpt.agents.ppo import PPOConfig

    env = GoalEnv()
    agent = PPOConfig(rollout_steps=400, epochs=5, actor_lr=3e-3, critic_lr=3e-3, hidden=(32, 32),
                      lr_decay_steps=10**9, seed=0).create(env.observation_space, env.action_space, device="cpu")
    logged = []
    agent.learn(vec(8), total_timesteps=12_000, callbacks=[lambda s, m: logged.append((s, m))])
    assert agent.online_steps == 12_000 and logged[-1][0] == 12_000 and len(logged) == 30
    ret = mean_return(agent.act)
    assert ret > RANDOM_RETURN + 5.0, (ret, RANDOM_RETURN)
    assert agent.obs_count == 12_000  # running observation statistics saw every collected observation
