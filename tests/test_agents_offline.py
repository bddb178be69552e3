"""Offline and offline-to-online agents (BC, IQL, Cal-QL), their critics and buffers, and the SB3 adapters.

Learning is checked on a tiny 1-D "reach the goal" task where a few hundred updates of small nets suffice.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlpt
from rlpt.agents import BCConfig, CalQLConfig, IQLConfig, SB3PPOConfig, SB3SACConfig
from rlpt.data.buffers import MixedBuffer, ReplayBuffer
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.nets.critics import QEnsemble, ValueNet, cql_ood_values, expectile_loss, soft_update


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- tiny task
class GoalEnv(gym.Env):
    """Observation (x, goal) in [-1, 1]^2; action in [-2, 2] moves x by 0.125 * a; reward -|x - goal|; 15 steps."""

    observation_space = gym.spaces.Box(-3.0, 3.0, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    horizon = 15

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, self.goal], np.float32)

    def step(self, action):
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -2.0, 2.0))
        self.x = float(np.clip(self.x + 0.125 * a, -2.0, 2.0))
        self.t += 1
        return self._obs(), -abs(self.x - self.goal), False, self.t >= self.horizon, {}


def good_action(obs, rng, noise=0.5):
    return np.clip(8.0 * (obs[1] - obs[0]) + noise * rng.normal(), -2.0, 2.0)


def make_dataset(n_good=40, n_random=40, seed=0) -> Dataset:
    """Half noisy-expert episodes, half uniform-random ones."""
    env, rng = GoalEnv(), np.random.default_rng(seed)
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    for ep in range(n_good + n_random):
        obs, _ = env.reset(seed=seed * 1000 + ep)
        done = False
        while not done:
            a = good_action(obs, rng) if ep < n_good else rng.uniform(-2.0, 2.0)
            nxt, r, term, trunc, _ = env.step(np.array([a], np.float32))
            for k, v in zip(rows, (obs, [a], r, term, trunc, nxt), strict=True):
                rows[k].append(v)
            obs, done = nxt, term or trunc
    arr = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    return Dataset(observations=arr["observations"], actions=arr["actions"], rewards=arr["rewards"],
                   terminals=arr["terminals"].astype(bool), timeouts=arr["timeouts"].astype(bool),
                   next_observations=arr["next_observations"], metadata={"source": "goal-env test data"})


def evaluate(policy, episodes=20) -> float:
    env, total = GoalEnv(), 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + ep)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total += r
            done = term or trunc
    return total / episodes


def random_return() -> float:
    rng = np.random.default_rng(1)
    return evaluate(lambda obs: rng.uniform(-2.0, 2.0, 1))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset()


SMALL = {
    "bc": BCConfig(hidden=(64, 64), lr=1e-3, batch_size=64),
    "iql": IQLConfig(hidden=(64, 64), actor_lr=1e-3, critic_lr=1e-3, batch_size=64, buffer_size=5000,
                     log_interval=30),
    "calql": CalQLConfig(policy_hidden=(64, 64), q_hidden=(64, 64), policy_lr=1e-3, q_lr=1e-3, alpha_lr=1e-3,
                         batch_size=64, buffer_size=5000, log_interval=30),
}


@pytest.fixture(scope="module")
def random_score() -> float:
    return random_return()


MARGIN = 2.0  # return units; random scores about -8.7, the noisy expert about -1.5


# ---------------------------------------------------------------------------------------------- critics
def test_expectile_loss_half_is_half_mse_and_asymmetric():
    diff = torch.linspace(-2, 2, 41)
    assert torch.allclose(expectile_loss(diff, 0.5), 0.5 * diff.pow(2).mean())
    pos, neg = torch.tensor([1.0]), torch.tensor([-1.0])
    assert expectile_loss(pos, 0.7).item() == pytest.approx(0.7)
    assert expectile_loss(neg, 0.7).item() == pytest.approx(0.3)
    # the minimiser over a constant v of E[L(x - v)] is the tau-expectile: above the mean for tau > 0.5
    x = torch.tensor([0.0, 0.0, 0.0, 4.0])
    vs = torch.linspace(0, 4, 401)
    best = vs[torch.stack([expectile_loss(x - v, 0.9) for v in vs]).argmin()]
    assert best.item() > x.mean().item() + 1.0


def test_q_ensemble_members_are_independent_and_soft_update_moves_target():
    q = QEnsemble(3, 2, hidden=(16, 16), n=3)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    out = q(obs, act)
    assert out.shape == (3, 5)
    assert not torch.allclose(out[0], out[1])
    out[1].sum().backward()  # only member 1 gets gradient
    assert q.layers[0].weight.grad[0].abs().sum() == 0 and q.layers[0].weight.grad[1].abs().sum() > 0
    ortho = QEnsemble(3, 2, hidden=(16,), n=2, orthogonal_init=True)
    w = ortho.layers[0].weight[0]  # (in=5, out=16): orthogonal rows
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(5), atol=1e-5)
    v = ValueNet(3, (8,))
    assert v(obs).shape == (5,)
    target = QEnsemble(3, 2, hidden=(16, 16), n=3)
    before = target.out.bias.detach().clone()
    soft_update(target, q, 0.25)
    assert torch.allclose(target.out.bias, 0.75 * before + 0.25 * q.out.bias)


# ---------------------------------------------------------------------------------------------- buffers
def test_replay_buffer_mc_returns_ring_and_state_round_trip():
    buf = ReplayBuffer(4, (1,), 1, gamma=0.5)
    for r, trunc in [(1.0, False), (2.0, False), (3.0, True)]:
        buf.add([r], [0.0], r, [r + 1], terminated=False, truncated=trunc)
    assert buf.mc_returns[:3].tolist() == [2.75, 3.5, 3.0]
    buf.add([4.0], [0.0], 4.0, [5.0], terminated=False)  # an open episode: no MC return yet
    assert buf.num_completed == 3
    rng = np.random.default_rng(0)
    b = buf.sample(200, rng=rng, gamma=0.5)
    assert set(b["rewards"].tolist()) == {1.0, 2.0, 3.0}  # only completed episodes carry returns
    assert set(buf.sample(200, rng=rng)["rewards"].tolist()) == {1.0, 2.0, 3.0, 4.0}
    buf.add([5.0], [0.0], 5.0, [6.0], terminated=True)  # wraps: row of reward 1 is overwritten
    assert len(buf) == 4 and sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert buf.mc_returns[buf.rewards == 4.0][0] == pytest.approx(4.0 + 0.5 * 5.0)
    with pytest.raises(ConfigError):
        buf.sample(2, gamma=0.9)

    clone = ReplayBuffer(4, (1,), 1, gamma=0.5)
    clone.load_state_dict(buf.state_dict())
    a = buf.sample(32, rng=np.random.default_rng(3), gamma=0.5)
    c = clone.sample(32, rng=np.random.default_rng(3), gamma=0.5)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_mixed_buffer_ratio_and_union_sampling(dataset):
    buf = ReplayBuffer(100, (2,), 1, gamma=0.99)
    for _ in range(30):  # online rows are marked by observation 100
        buf.add([100.0, 100.0], [0.0], 0.0, [100.0, 100.0], terminated=False)
    rng = np.random.default_rng(0)
    online_rows = lambda b: int((b["observations"][:, 0] == 100.0).sum())
    assert online_rows(MixedBuffer(buf, dataset, 0.25).sample(64, rng=rng)) == 48
    assert online_rows(MixedBuffer(buf, dataset, 0.5).sample(64, rng=rng, gamma=0.99)) == 0  # open episode
    buf.end_episode()
    batch = MixedBuffer(buf, dataset, 0.5).sample(64, rng=rng, gamma=0.99)
    assert online_rows(batch) == 32 and batch["mc_returns"].shape == (64,)
    union = MixedBuffer(buf, dataset, None)
    frac = np.mean([online_rows(union.sample(64, rng=rng)) / 64 for _ in range(200)])
    assert frac == pytest.approx(30 / (30 + len(dataset)), abs=0.01)
    with pytest.raises(ConfigError):
        MixedBuffer(buf, dataset, 1.5)


# ---------------------------------------------------------------------------------------------- Cal-QL bound
def test_calql_bound_clips_policy_values_in_logsumexp():
    # one head, one state, two sampled actions per source, act_dim 1
    q_rand = torch.tensor([[[0.0, 1.0]]])
    q_pi, q_next = torch.tensor([[[-5.0, 2.0]]]), torch.tensor([[[-4.0, -3.0]]])
    logp_pi, logp_next = torch.tensor([[0.1, -0.2]]), torch.tensor([[0.3, 0.0]])
    q_data, mc = torch.tensor([[0.5]]), torch.tensor([-1.0])
    got = cql_ood_values(q_rand, q_pi, logp_pi, q_next, logp_next, q_data, mc, act_dim=1)
    log_u = math.log(0.5)
    terms = [0.0 - log_u, 1.0 - log_u,  # uniform actions minus log density
             max(-4.0, -1.0) - 0.3, max(-3.0, -1.0) - 0.0,  # a' ~ pi(s'): both lifted to G_MC = -1
             max(-5.0, -1.0) - 0.1, max(2.0, -1.0) + 0.2]  # a ~ pi(s): -5 lifted, 2 kept
    assert got.item() == pytest.approx(math.log(sum(math.exp(t) for t in terms)), rel=1e-6)
    plain = cql_ood_values(q_rand, q_pi, logp_pi, q_next, logp_next, q_data, None, act_dim=1)
    assert plain.item() < got.item()  # without the bound the low values count as they are
    no_is = cql_ood_values(q_rand, q_pi, logp_pi, q_next, logp_next, q_data, mc, act_dim=1,
                           importance_sample=False)
    raw = [0.0, 1.0, 0.5, -1.0, -1.0, -1.0, 2.0]
    assert no_is.item() == pytest.approx(math.log(sum(math.exp(t) for t in raw)), rel=1e-6)


# ---------------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def trained(dataset):
    """`trained(name)`: that agent fit offline for 300 steps on the goal task (built once, shared below)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            agent = SMALL[name].create(GoalEnv.observation_space, GoalEnv.action_space, device="cpu")
            agent.metrics = agent.fit(dataset, n_steps=300)
            cache[name] = agent
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["bc", "iql", "calql"])
def test_offline_fit_beats_random(trained, random_score, name):
    agent = trained(name)
    assert agent.step == 300
    score = evaluate(agent)
    assert score > random_score + MARGIN, f"{name}: {score:.2f} vs random {random_score:.2f}"
    if name == "calql":
        assert agent.metrics["train/calql_bound_rate"] > 0  # the MC lower bound is active on this data


@pytest.mark.parametrize("name,mix_ratio", [("iql", None), ("calql", 0.5)])
def test_online_learn_with_offline_mixing_keeps_working(trained, dataset, random_score, name, mix_ratio):
    agent = trained(name)
    seen = []
    metrics = agent.learn(GoalEnv(), total_timesteps=90, offline=dataset, mix_ratio=mix_ratio,
                          callbacks=[lambda step, m: seen.append((step, m))])
    assert agent.online_steps == 90 and agent.step == 300 + 90
    assert len(agent.buffer) == 90 and agent.buffer.num_completed == 90  # 6 whole episodes
    assert [s for s, _ in seen] == [30, 60, 90]
    assert all(np.isfinite(m["online/episode_return"]) and m["online/episodes"] == 2 for _, m in seen)
    assert all(np.isfinite(v) for v in metrics.values())
    assert evaluate(agent) > random_score + MARGIN
    stopped = agent.learn(GoalEnv(), total_timesteps=100, offline=dataset, callbacks=[lambda s, m: False])
    assert agent.online_steps == 120 and "train/q_loss" in stopped  # stopped at the first callback (30 steps)


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["bc", "iql", "calql"])
def test_save_load_gives_identical_actions(trained, tmp_path, name):
    agent = trained(name)
    agent.save(tmp_path / name)
    loaded = rlpt.load(tmp_path / name, device="cpu")
    assert type(loaded) is type(agent) and loaded.step == agent.step
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    single, _ = loaded.predict(obs[0])
    assert single.shape == (1,) and np.all(np.abs(single) <= 2.0)
    assert torch.equal(loaded.obs_norm.mean, agent.obs_norm.mean)
    if getattr(agent, "buffer", None) is not None:
        assert len(loaded.buffer) == len(agent.buffer)
        np.testing.assert_array_equal(loaded.buffer.mc_returns[:len(agent.buffer)],
                                      agent.buffer.mc_returns[:len(agent.buffer)])


def _params(agent) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.clone() for m, mod in agent.modules().items() for k, v in mod.state_dict().items()}


@pytest.mark.parametrize("name", ["iql", "calql", "bc"])
def test_resumed_training_matches_uninterrupted(dataset, tmp_path, name):
    iql_extras = {"normalize_reward": True, "actor_lr_decay_steps": 60}  # schedule and scale must resume too
    cfg = SMALL[name].replace(seed=3, **(iql_extras if name == "iql" else {}))
    space = (GoalEnv.observation_space, GoalEnv.action_space)
    a = cfg.create(*space, device="cpu")
    a.fit(dataset, 40)
    b = cfg.create(*space, device="cpu")
    b.fit(dataset, 20)
    b.save(tmp_path / "ckpt")
    c = rlpt.load(tmp_path / "ckpt", device="cpu")
    c.fit(dataset, 20)
    pa, pc = _params(a), _params(c)
    assert c.step == 40 and pa.keys() == pc.keys()
    for k in pa:
        torch.testing.assert_close(pc[k], pa[k], rtol=1e-5, atol=1e-6, msg=k)
    if name == "iql":
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * 39 / 60))  # set before the 40th step
        assert c.actor_opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert c.reward_factor == pytest.approx(1000.0 / np.ptp(dataset.episode_returns()))


def test_bad_config_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="expectile_typo"):
        IQLConfig.from_dict({"expectile_typo": 0.9})
    with pytest.raises(ConfigError):
        CalQLConfig.from_dict({"cql_alpha": 1.0, "nope": 1})
    with pytest.raises(ConfigError):
        BCConfig(policy="transformer").create(GoalEnv.observation_space, GoalEnv.action_space, device="cpu")
    assert IQLConfig.from_dict(IQLConfig(hidden=(32,)).to_dict()) == IQLConfig(hidden=(32,))


# ---------------------------------------------------------------------------------------------- SB3 adapters
def test_sb3_ppo_trains_through_learn_and_round_trips(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = SB3PPOConfig(n_steps=256, batch_size=64, n_epochs=2, net_arch=(32, 32), log_interval=256).create(
        env.observation_space, env.action_space, device="cpu")
    before = _params(agent)
    seen = []
    metrics = agent.learn(env, total_timesteps=1024, callbacks=[lambda s, m: seen.append((s, m))])
    assert agent.online_steps == 1024 and [s for s, _ in seen] == [256, 512, 768, 1024]
    assert "train/value_loss" in metrics and np.isfinite(metrics["online/episode_return"])
    after = _params(agent)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    agent.save(tmp_path / "ppo")
    loaded = rlpt.load(tmp_path / "ppo", device="cpu")
    assert loaded.online_steps == 1024
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    assert loaded.predict(obs[0])[0].shape == (1,)
    loaded.learn(env, total_timesteps=256)  # training continues from the checkpoint's counters
    assert loaded.online_steps == 1280
    with pytest.raises(ConfigError):
        agent.learn(env, 10, offline=make_dataset(2, 2))


def test_sb3_sac_checkpoint_keeps_replay_buffer_and_entropy(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = SB3SACConfig(learning_starts=50, batch_size=32, net_arch=(32, 32), buffer_size=1000,
                         log_interval=100).create(env.observation_space, env.action_space, device="cpu")
    agent.learn(env, total_timesteps=100)
    agent.save(tmp_path / "sac")
    loaded = rlpt.load(tmp_path / "sac", device="cpu")
    rb, lrb = agent.sb3_model.replay_buffer, loaded.sb3_model.replay_buffer
    assert lrb.pos == rb.pos == 100
    np.testing.assert_array_equal(lrb.observations[:100], rb.observations[:100])
    assert torch.equal(loaded.sb3_model.log_ent_coef, agent.sb3_model.log_ent_coef)
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])


def test_config_variants_train_with_finite_losses(dataset):
    space = (GoalEnv.observation_space, GoalEnv.action_space)
    iql = SMALL["iql"].replace(actor="deterministic").create(*space, device="cpu")
    assert not hasattr(iql.actor, "log_std")
    m = iql.fit(dataset, 5)
    assert all(np.isfinite(v) for v in m.values())
    calql = SMALL["calql"].replace(cql_lagrange=True, cql_importance_sample=False, max_target_backup=False,
                                   backup_entropy=True, calql_bound=False, auto_entropy=False).create(
        *space, device="cpu")
    before = calql.log_temps["log_alpha_prime"].item()
    m = calql.fit(dataset, 5)
    assert all(np.isfinite(v) for v in m.values()) and "train/calql_bound_rate" not in m
    assert calql.log_temps["log_alpha_prime"].item() != before  # the Lagrange multiplier is trained
    assert calql.log_temps["log_alpha"].item() == 0.0  # fixed entropy temperature
