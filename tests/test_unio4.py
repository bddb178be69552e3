"""Uni-O4: diversity terms, acceptance rule, dynamics ensemble, termination functions, the offline pipeline and
online PPO on a tiny goal-reaching task, checkpoints (round trip and mid-phase resume) and the image path."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import rlpt
from rlpt.agents.unio4 import UniO4, UniO4Config, accept_candidate, diversity_bc_losses
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError, DatasetShapeError
from rlpt.nets.dynamics import DynamicsEnsemble, get_termination_fn, hopper_termination, walker2d_termination
from rlpt.nets.policies import GaussianPolicy, PolicyEnsemble

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- a tiny task
class GoalEnv(gym.Env):
    """2-D point that should reach `GOAL`: `pos += 0.05 * a` with a in [-2, 2]^2, reward = -distance, 25 steps."""

    GOAL = np.array([0.5, 0.5], np.float32)
    HORIZON = 25

    def __init__(self, image: bool = False):
        self.image = image
        self.action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.observation_space = (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8) if image
                                  else gym.spaces.Box(-1.0, 1.0, (2,), np.float32))

    def _obs(self):
        return render_point(self.pos) if self.image else self.pos.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -2.0, 2.0)
        self.pos = np.clip(self.pos + 0.05 * action, -1.0, 1.0).astype(np.float32)
        self.t += 1
        reward = -float(np.linalg.norm(self.pos - self.GOAL))
        return self._obs(), reward, False, self.t >= self.HORIZON, {}


def render_point(pos: np.ndarray) -> np.ndarray:
    """An 8x8x3 uint8 frame with a bright pixel at the point's position (and a fixed goal marker)."""
    img = np.zeros((8, 8, 3), np.uint8)
    i, j = (np.clip((pos + 1) / 2 * 7.999, 0, 7)).astype(int)
    img[i, j, 0] = 255
    img[5, 5, 1] = 255
    return img


def expert_action(pos: np.ndarray) -> np.ndarray:
    return np.clip(20.0 * (GoalEnv.GOAL - pos), -2.0, 2.0)


def make_dataset(n_expert: int = 20, n_random: int = 20, seed: int = 0, image: bool = False) -> Dataset:
    """Noisy-expert plus uniformly random episodes."""
    rng = np.random.default_rng(seed)
    env = GoalEnv(image=image)
    cols = {k: [] for k in ("obs", "act", "rew", "next", "timeout")}
    for ep in range(n_expert + n_random):
        obs, _ = env.reset(seed=seed * 1000 + ep)
        done = False
        while not done:
            if ep < n_expert:
                action = np.clip(expert_action(env.pos) + rng.normal(0, 0.5, 2), -2, 2)
            else:
                action = rng.uniform(-2, 2, 2)
            action = action.astype(np.float32)
            next_obs, r, term, trunc, _ = env.step(action)
            done = term or trunc
            cols["obs"].append(obs)
            cols["act"].append(action)
            cols["rew"].append(r)
            cols["next"].append(next_obs)
            cols["timeout"].append(trunc)
            obs = next_obs
    n = len(cols["rew"])
    return Dataset(observations=np.stack(cols["obs"]), actions=np.stack(cols["act"]),
                   rewards=np.asarray(cols["rew"], np.float32), terminals=np.zeros(n, bool),
                   timeouts=np.asarray(cols["timeout"], bool), next_observations=np.stack(cols["next"]),
                   metadata={"source": "goal-test"})


def mean_return(act, episodes: int = 10, seed: int = 123, image: bool = False) -> float:
    env = GoalEnv(image=image)
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += r
            done = term or trunc
    return total / episodes


RANDOM_RETURN = mean_return(lambda obs: np.random.default_rng(0).uniform(-2, 2, 2))

TINY = dict(critic_steps=300, dynamics_steps=300, bc_steps=300, improve_steps=200, batch_size=128,
            q_hidden=(64, 64), v_hidden=(64, 64), policy_hidden=(64, 64), ensemble_size=3,
            dynamics_ensemble_size=3, dynamics_elites=2, dynamics_hidden=(64, 64), dynamics_eval_interval=100,
            dynamics_batch_size=64, critic_lr=1e-3, bc_lr=1e-3, improve_lr=1e-4, ope_interval=50,
            ope_start_states=64, ope_horizon=10, log_interval=100)


def tiny_agent(**overrides) -> UniO4:
    env = GoalEnv()
    return UniO4Config(**{**TINY, **overrides}).create(env.observation_space, env.action_space, device="cpu")


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One agent through the whole offline pipeline (shared by the pipeline, online and checkpoint tests)."""
    agent = tiny_agent()
    logged = []
    agent.fit(dataset, n_steps=agent.offline_total_steps, callbacks=[lambda s, m: logged.append((s, m))])
    path = agent.save(tmp_path_factory.mktemp("unio4") / "offline")
    return agent, logged, path


# ---------------------------------------------------------------------------------------------- diversity terms
def _ensemble_outputs(n=3, b=16, a=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, b, a, generator=g).tanh().requires_grad_(True)
    log_std = (-2 + torch.rand(n, b, a, generator=g)).requires_grad_(True)
    actions = torch.randn(b, a, generator=g).clamp(-1, 1)
    return mean, log_std, actions


def test_heuristic_diversity_is_scaled_bc():
    alpha = 0.1
    mean, log_std, actions = _ensemble_outputs()
    heuristic = diversity_bc_losses(mean, log_std, actions, alpha, "heuristic")
    g_h = torch.autograd.grad(heuristic.sum(), (mean, log_std))
    bc = diversity_bc_losses(mean, log_std, actions, alpha, "none")
    g_bc = torch.autograd.grad(bc.sum(), (mean, log_std))
    for gh, gb in zip(g_h, g_bc, strict=True):
        torch.testing.assert_close(gh, (1 + alpha) * gb)
    # the value is BC scaled by (1 + alpha) plus a constant (the detached best-other log-likelihood)
    with torch.no_grad():
        logp = Normal(mean, log_std.exp()).log_prob(actions).sum(-1)  # (N, B)
        best_other = torch.stack([torch.cat([logp[:i], logp[i + 1:]]).max(0).values for i in range(3)])
        torch.testing.assert_close(heuristic, (1 + alpha) * bc + alpha * best_other.mean(1))


def test_kl_diversity_is_a_real_kl_to_the_most_likely_other_member():
    alpha = 0.3
    n = 3
    mean, log_std, actions = _ensemble_outputs(n=n)
    loss = diversity_bc_losses(mean, log_std, actions, alpha, "kl")
    with torch.no_grad():
        dists = [Normal(mean[i], log_std[i].exp()) for i in range(n)]
        logp = torch.stack([d.log_prob(actions).sum(-1) for d in dists])  # (N, B)
        for i in range(n):
            kls = []
            for b in range(actions.shape[0]):
                j = max((j for j in range(n) if j != i), key=lambda j: logp[j, b].item())
                p = Normal(mean[i, b], log_std[i, b].exp())
                q = Normal(mean[j, b], log_std[j, b].exp())
                kls.append(kl_divergence(p, q).sum())
            expected = -logp[i].mean() - alpha * torch.stack(kls).mean()
            torch.testing.assert_close(loss[i], expected)
    # the gradient of member i's loss reaches only member i (the other member is a fixed target)
    g = torch.autograd.grad(loss[0], mean)[0]
    assert g[0].abs().sum() > 0 and g[1:].abs().sum() == 0
    # and it differs from plain BC's (the term acts)
    g_bc = torch.autograd.grad(diversity_bc_losses(mean, log_std, actions, alpha, "none")[0], mean)[0]
    assert not torch.allclose(g, (1 + alpha) * g_bc) and not torch.allclose(g, g_bc)


def test_bad_diversity_kind_is_rejected():
    mean, log_std, actions = _ensemble_outputs()
    with pytest.raises(ConfigError, match="diversity"):
        diversity_bc_losses(mean, log_std, actions, 0.1, "typo")
    with pytest.raises(ConfigError, match="diversity"):
        tiny_agent(diversity="typo")


# ---------------------------------------------------------------------------------------------- acceptance rule
def test_accept_candidate_only_on_strict_improvement():
    assert accept_candidate(candidate_score=1.0, best_score=2.0) is False
    assert accept_candidate(candidate_score=2.0, best_score=2.0) is False  # ties keep the reference
    assert accept_candidate(candidate_score=math.nan, best_score=-math.inf) is False
    assert accept_candidate(candidate_score=math.inf, best_score=2.0) is False
    assert accept_candidate(candidate_score=2.5, best_score=2.0) is True
    assert accept_candidate(candidate_score=-5.0, best_score=-math.inf) is True


def test_policy_ensemble_members_copy_by_value_and_match_the_batched_forward():
    torch.manual_seed(0)
    policies, refs = PolicyEnsemble(3, 3, 2, (8, 8)), PolicyEnsemble(3, 3, 2, (8, 8))
    x = torch.randn(5, 3)
    mean, log_std = policies(x)  # (3, 5, 2): one batched pass
    for i in range(3):  # a member copy computes what the batched ensemble computes for it
        m, s = policies.member(i)(x)
        torch.testing.assert_close(m, mean[i])
        torch.testing.assert_close(s, log_std[i])
    before = refs(x)
    refs.copy_member_from(policies, 1)  # an accepted candidate becomes member 1's reference
    after = refs(x)
    torch.testing.assert_close(after[0][1], mean[1])
    torch.testing.assert_close(after[0][[0, 2]], before[0][[0, 2]])  # the other members are untouched
    with torch.no_grad():  # a copy, not an alias: training the candidate further leaves the reference alone
        policies.net.layers[0].weight.add_(1.0)
    torch.testing.assert_close(refs(x)[0][1], after[0][1])
    single = GaussianPolicy(3, 2, (8, 8))
    refs.load_member(2, single)
    torch.testing.assert_close(refs(x)[0][2], single(x)[0])


# ---------------------------------------------------------------------------------------------- dynamics
def test_dynamics_ensemble_learns_a_linear_system_and_picks_elites():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    a_mat = np.array([[0.9, 0.1], [-0.1, 0.9]], np.float32)
    b_mat = np.array([[0.5, 0.0], [0.0, 0.3]], np.float32)
    n = 2000
    s = torch.as_tensor(rng.uniform(-1, 1, (n, 2)), dtype=torch.float32)
    a = torch.as_tensor(rng.uniform(-1, 1, (n, 2)), dtype=torch.float32)
    s2 = s @ torch.as_tensor(a_mat).T + a @ torch.as_tensor(b_mat).T + 0.01 * torch.randn(n, 2)
    r = s[:, 0] - 0.5 * a[:, 1]
    train, hold = slice(0, 1600), slice(1600, n)
    model = DynamicsEnsemble(2, 2, ensemble_size=4, num_elites=2, hidden=(32, 32))
    model.set_input_stats(torch.cat([s[train], a[train]], -1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = model.validation_loss(s[hold], a[hold], s2[hold], r[hold])
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        idx = torch.randint(0, 1600, (4, 64), generator=g)
        loss = model.loss(s[idx], a[idx], s2[idx], r[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.validation_loss(s[hold], a[hold], s2[hold], r[hold])  # (E,)
    assert (after < before / 10).all(), (before, after)
    # spoil members 0 and 3: the elites must be the other two, and the stored holdout loss is the one given
    with torch.no_grad():
        for i in (0, 3):
            model.layers[-1].weight[i].add_(1.0)
    val = model.validation_loss(s[hold], a[hold], s2[hold], r[hold])
    elites = model.select_elites(val)
    assert sorted(elites.tolist()) == [1, 2]
    assert set(elites.tolist()) == set(torch.argsort(val)[:2].tolist())
    # imagined steps from elites are close to the true system
    nxt, rew, done = model.step(s[hold], a[hold], generator=g)
    assert nxt.shape == (400, 2) and rew.shape == (400,) and done.dtype == torch.bool and not done.any()
    assert (nxt - s2[hold]).pow(2).mean() < 0.01


def test_dynamics_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="num_elites"):
        DynamicsEnsemble(2, 2, ensemble_size=3, num_elites=4)
    with pytest.raises(ConfigError, match="weight_decays"):
        DynamicsEnsemble(2, 2, hidden=(8, 8), weight_decays=[0.0])


def test_termination_functions_on_hand_made_states():
    def t(*rows):
        return torch.tensor(rows, dtype=torch.float32)

    s = torch.zeros(1, 11)
    a = torch.zeros(1, 3)
    hopper = t([1.25, 0.0] + [0.0] * 9, [0.5, 0.0] + [0.0] * 9, [1.25, 0.3] + [0.0] * 9,
               [1.25, 0.0, 150.0] + [0.0] * 8, [1.25, -0.1] + [5.0] * 9)
    assert hopper_termination(s, a, hopper).tolist() == [False, True, True, True, False]
    walker = t([1.2, 0.0] + [0.0] * 15, [0.5, 0.0] + [0.0] * 15, [2.5, 0.0] + [0.0] * 15,
               [1.2, -1.5] + [0.0] * 15, [1.0, 0.9] + [50.0] * 15)
    assert walker2d_termination(s, a, walker).tolist() == [False, True, True, True, False]
    assert get_termination_fn("halfcheetah")(s, a, t([-5.0] * 17)).tolist() == [False]
    assert get_termination_fn(None)(s, a, hopper).tolist() == [False] * 5
    # resolution by env id / dataset name, callables, and unknown names
    assert get_termination_fn("mujoco/Hopper-v5") is hopper_termination
    assert get_termination_fn("walker2d-medium-replay") is walker2d_termination
    fn = lambda o, act, n: n[:, 0] > 0
    assert get_termination_fn(fn) is fn
    with pytest.raises(ConfigError, match="unknown name"):
        get_termination_fn("ant")


# ---------------------------------------------------------------------------------------------- offline pipeline
def test_offline_pipeline_beats_random(trained, dataset):
    agent, logged, _ = trained
    assert agent.step == agent.offline_total_steps == 1100
    assert agent.phase()[0] == "done" and agent.handed_off
    # critics: Q of dataset actions tracks the discounted return (bounded by the reward range)
    assert all(math.isfinite(m.get("train/q_loss", 0.0)) for _, m in logged)
    # dynamics: elites are the members with the lowest held-out error
    hl = agent.dynamics.holdout_loss
    assert set(agent.dynamics.elites.tolist()) == set(torch.argsort(hl)[:2].tolist())
    assert hl[agent.dynamics.elites].max() < 0.01  # Δs is at most 0.1 per step; r is a smooth function
    # OPE: a baseline score per member, then one per member every ope_interval steps
    evals = 1 + agent.config.improve_steps // agent.config.ope_interval
    assert len(agent.ope_history) == evals * agent.config.ensemble_size
    assert [h[0] for h in agent.ope_history[: agent.config.ensemble_size]] == [900.0] * 3
    ope_logs = [m for _, m in logged if "ope/score" in m]
    assert len(ope_logs) >= evals - 1 and all(math.isfinite(m["ope/score"]) for m in ope_logs)
    # the hand-off is the best member by OPE, and its policy is that member's last iterate (hand_off_policy)
    assert agent.selected == int(np.argmax(agent.best_ope))
    x = torch.randn(4, 2)
    for out, ref in zip(agent.actor(x), agent.policies.member(agent.selected)(x), strict=True):  # mean and log-std
        torch.testing.assert_close(out, ref)
    # and it acts well: far better than random, close to the noisy expert's behaviour
    ret = mean_return(agent.act)
    assert ret > RANDOM_RETURN + 5.0, (ret, RANDOM_RETURN)


def test_online_ppo_continues_without_collapse(trained, tmp_path):
    agent = UniO4.load(trained[2], device="cpu")
    before = mean_return(agent.act)
    logged = []
    agent.config.online_rollout_steps = 250
    agent.config.online_minibatch = 50
    agent.config.online_epochs = 4
    agent.config.online_actor_lr = 1e-4
    metrics = agent.learn(GoalEnv(), total_timesteps=750, callbacks=[lambda s, m: logged.append((s, m))])
    assert agent.online_steps == 750 and [s for s, _ in logged] == [250, 500, 750]
    assert "online/episode_return" in metrics and math.isfinite(metrics["online/value_loss"])
    assert all(math.isfinite(m["online/approx_kl"]) for _, m in logged)
    after = mean_return(agent.act)
    assert after > RANDOM_RETURN + 5.0 and after > before - 2.0, (before, after, RANDOM_RETURN)
    # learn can be called again (more steps) and the counter keeps counting
    agent.learn(GoalEnv(), total_timesteps=100)
    assert agent.online_steps == 850


def test_ppo_from_scratch_uses_offline_stats_only_for_normalisation(dataset):
    agent = tiny_agent()
    agent.config.online_rollout_steps = 100
    agent.learn(GoalEnv(), total_timesteps=100, offline=dataset)
    assert agent.step == 0 and agent.online_steps == 100 and agent.handed_off
    torch.testing.assert_close(agent.normalizer.mean, torch.as_tensor(dataset.stats()["obs_mean"]))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_save_load_gives_identical_actions_and_state(trained, tmp_path):
    agent, _, path = trained
    loaded = rlpt.load(path, device="cpu")
    assert isinstance(loaded, UniO4)
    obs = np.random.default_rng(1).uniform(-1, 1, (16, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], UniO4.load(path, device="cpu").predict(obs)[0])
    assert loaded.step == 1100 and loaded.selected == agent.selected and loaded.handed_off
    assert loaded.best_ope == pytest.approx(agent.best_ope)
    np.testing.assert_array_equal(np.array(loaded.ope_history), np.array(agent.ope_history))
    torch.testing.assert_close(loaded.normalizer.std, agent.normalizer.std)
    assert loaded.dynamics.elites.tolist() == agent.dynamics.elites.tolist()
    assert loaded.config == agent.config


def test_resume_mid_phase_matches_an_uninterrupted_run(dataset, tmp_path):
    small = dict(critic_steps=40, dynamics_steps=40, bc_steps=40, improve_steps=40, ope_interval=20,
                 dynamics_eval_interval=20, log_interval=10)
    straight = tiny_agent(**small)
    straight.fit(dataset, n_steps=160)

    resumed = tiny_agent(**small)
    resumed.fit(dataset, n_steps=50)  # stop in the middle of the dynamics phase
    assert resumed.phase()[:2] == ("dynamics", 10)
    resumed.save(tmp_path / "a")
    resumed = rlpt.load(tmp_path / "a", device="cpu")
    assert resumed.step == 50 and resumed.phase()[:2] == ("dynamics", 10)
    resumed.fit(dataset, n_steps=80)  # ... and in the middle of improvement (after a baseline OPE)
    assert resumed.phase()[:2] == ("improve", 10) and len(resumed.ope_history) == 3
    resumed.save(tmp_path / "b")
    resumed = rlpt.load(tmp_path / "b", device="cpu")
    assert resumed.step == 130 and len(resumed.ope_history) == 3
    resumed.fit(dataset, n_steps=1000)  # stops at the end of the schedule
    assert resumed.step == straight.step == 160

    np.testing.assert_allclose(np.array(resumed.ope_history), np.array(straight.ope_history), rtol=1e-6)
    obs = np.random.default_rng(2).uniform(-1, 1, (8, 2)).astype(np.float32)
    np.testing.assert_allclose(resumed.predict(obs)[0], straight.predict(obs)[0], atol=1e-6)
    for name, mod in straight.modules().items():
        for (k, v), v2 in zip(mod.state_dict().items(), resumed.modules()[name].state_dict().values(), strict=True):
            torch.testing.assert_close(v, v2, msg=f"{name}.{k}")


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_get_specific_errors(dataset):
    agent = tiny_agent(select_by_env_return=True)
    with pytest.raises(ConfigError, match="eval_env"):
        agent.fit(dataset, n_steps=1)
    wrong = Dataset(observations=dataset.observations, actions=np.zeros((len(dataset), 3), np.float32),
                    rewards=dataset.rewards, terminals=dataset.terminals, timeouts=dataset.timeouts)
    with pytest.raises(DatasetShapeError, match="actions"):
        tiny_agent().fit(wrong, n_steps=1)
    with pytest.raises(ConfigError, match="encoder"):
        UniO4Config().create(GoalEnv(image=True).observation_space, GoalEnv().action_space, device="cpu")
    with pytest.raises(ConfigError, match="unknown name"):
        tiny_agent(termination_fn="nope")


def test_fit_after_online_start_and_mismatched_env_are_rejected(dataset):
    agent = tiny_agent(online_rollout_steps=20)
    agent.fit(dataset, n_steps=10)
    agent.learn(GoalEnv(), total_timesteps=20)
    with pytest.raises(ConfigError, match="unfinished"):
        agent.fit(dataset, n_steps=1)
    with pytest.raises(ConfigError, match="observation shape"):
        agent.learn(GoalEnv(image=True), total_timesteps=10)


def test_dynamics_split_skips_rows_without_a_successor(dataset):
    terminals = np.zeros(len(dataset), bool)
    terminals[[24, 49, 74]] = True  # three episodes end by a true terminal; no next_observations given
    timeouts = dataset.timeouts & ~terminals
    data = Dataset(observations=dataset.observations, actions=dataset.actions, rewards=dataset.rewards,
                   terminals=terminals, timeouts=timeouts)
    agent = tiny_agent()
    _, train_idx, hold_idx = agent._prepare(data)
    used = np.concatenate([train_idx, hold_idx])
    assert len(used) == len(np.unique(used)) == len(data) - int(timeouts.sum()) - 3
    assert not terminals[used].any() and not timeouts[used].any()
    assert len(hold_idx) == int(0.2 * len(used))
    agent.fit(data, n_steps=5)  # and the critics still train on terminal rows


def test_select_by_env_return_evaluates_top_members(dataset):
    agent = tiny_agent(critic_steps=50, dynamics_steps=50, bc_steps=50, improve_steps=20, ope_interval=10,
                       select_by_env_return=True, select_top_k=2, eval_episodes=2)
    metrics = agent.fit(dataset, n_steps=agent.offline_total_steps, eval_env=GoalEnv())
    evaluated = {int(k.rsplit("member", 1)[1]): v for k, v in metrics.items() if k.startswith("eval/return_member")}
    assert len(evaluated) == 2 and agent.selected == max(evaluated, key=evaluated.get)
    top2 = set(np.argsort(agent.best_ope)[::-1][:2].tolist())
    assert set(evaluated) == top2


def test_config_round_trips():
    cfg = UniO4Config(**TINY)
    again = UniO4Config.from_dict(cfg.to_dict())
    assert again == cfg and again.offline_total_steps == 1100
    assert UniO4Config().offline_total_steps == 2_000_000 + 100_000 + 400_000 + 10_000


# ---------------------------------------------------------------------------------------------- image path
class TinyCNN(nn.Module):
    def __init__(self, out_dim: int = 16):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) uint8 -> (B, out_dim)
        return self.net(x.float() / 255.0)


@pytest.mark.parametrize("freeze", [True, False])
def test_image_observations_with_an_encoder(freeze, tmp_path):
    torch.manual_seed(0)
    data = make_dataset(n_expert=3, n_random=2, image=True)
    env = GoalEnv(image=True)
    enc = TinyCNN()
    enc_before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = UniO4Config(**{**TINY, "critic_steps": 10, "dynamics_steps": 10, "bc_steps": 10, "improve_steps": 10,
                         "ope_interval": 5, "dynamics_eval_interval": 5, "batch_size": 16,
                         "online_rollout_steps": 20, "online_minibatch": 10, "online_epochs": 1,
                         "freeze_encoder": freeze})
    agent = cfg.create(env.observation_space, env.action_space, device="cpu", encoder=enc)
    agent.fit(data, n_steps=agent.offline_total_steps)
    assert agent.handed_off and len(agent.ope_history) == 3 * 3
    agent.learn(env, total_timesteps=20)
    changed = any(not torch.equal(v, enc.state_dict()[k]) for k, v in enc_before.items())
    assert changed is (not freeze)  # a frozen encoder stays put; a trainable one learns from the critics

    obs = data.observations[:5]  # (5, 8, 8, 3) uint8
    action = agent.predict(obs)[0]
    assert action.shape == (5, 2) and np.all(np.abs(action) <= 2.0)
    agent.save(tmp_path / "img")
    loaded = UniO4.load(tmp_path / "img", device="cpu", encoder=TinyCNN())
    np.testing.assert_array_equal(loaded.predict(obs)[0], action)
    assert loaded.predict(obs[0])[0].shape == (2,)


@pytest.mark.parametrize("crn", [True, False])
def test_ope_common_random_numbers_score_identical_policies_identically(trained, dataset, crn):
    agent = rlpt.load(trained[2])
    agent.config.ope_common_random_numbers = crn
    data = agent._prepare(dataset)[0]  # the training view
    scores = []
    for _ in range(2):
        n = len(agent.ope_history)
        agent._evaluate_members(data, agent.step)
        scores.append([h[2] for h in agent.ope_history[n:]])
    if crn:  # same start states and model noise: the same policy gets exactly the same score
        assert scores[0] == scores[1]
        assert agent.ope_start_idx is not None and len(agent.ope_start_idx) == agent.config.ope_start_states
        again = rlpt.load(agent.save(trained[2].parent / "crn"))  # the fixed start states survive a checkpoint
        assert np.array_equal(again.ope_start_idx, agent.ope_start_idx)
    else:  # fresh start states each time
        assert scores[0] != scores[1]


# ---------------------------------------------------------------------------------------------- one critic
def test_shared_critic_gives_identical_updates_in_iql_and_unio4():
    """Uni-O4's critic phase and IQL's critic are one implementation: from the same weights, statistics, rng
    state and data, five updates leave identical Q, target Q and V in both agents."""
    from rlpt.agents.iql import IQLConfig

    env, ds = GoalEnv(), make_dataset(n_expert=5, n_random=5)
    iql = IQLConfig(seed=3, hidden=(32, 32), batch_size=64, critic_lr=3e-4, normalize_reward=True).create(
        env.observation_space, env.action_space, device="cpu")
    unio4 = UniO4Config(seed=3, q_hidden=(32, 32), v_hidden=(32, 32), batch_size=64, critic_lr=3e-4,
                        target_update_interval=1, normalize_reward=True, critic_steps=5, **{
                            k: v for k, v in TINY.items() if k not in ("critic_steps", "q_hidden", "v_hidden",
                                                                       "batch_size", "critic_lr")}).create(
        env.observation_space, env.action_space, device="cpu")
    unio4.critic.load_state_dict(iql.critic.state_dict())
    iql.fit(ds, n_steps=5)
    unio4.fit(ds, n_steps=5)
    assert unio4.phase()[0] == "dynamics" and unio4.reward_factor == pytest.approx(iql.reward_factor)
    for name, tensor in iql.critic.state_dict().items():
        assert torch.equal(tensor, unio4.critic.state_dict()[name]), name
    before = {k: v.clone() for k, v in iql.critic.state_dict().items()}
    iql.fit(ds, n_steps=1)  # and the comparison can fail: another update moves the weights
    assert any(not torch.equal(before[k], v) for k, v in iql.critic.state_dict().items())


def test_hand_off_rescales_a_reward_normalised_v_to_online_reward_units():
    ds = make_dataset(n_expert=5, n_random=5)
    agent = tiny_agent(normalize_reward=True, online_reward_scale=0.1, critic_steps=20, dynamics_steps=0,
                       bc_steps=0, improve_steps=0)
    agent.fit(ds, n_steps=20)
    agent._hand_off(0)
    assert agent.reward_factor != 1.0
    x = torch.randn(16, 2)
    expected = agent.critic.v(x) * 0.1 / agent.reward_factor
    assert torch.allclose(agent.online_v(x), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- OPE noise
def test_accept_candidate_requires_more_than_the_margin():
    assert accept_candidate(candidate_score=2.5, best_score=2.0, margin=1.0) is False
    assert accept_candidate(candidate_score=3.0, best_score=2.0, margin=1.0) is False
    assert accept_candidate(candidate_score=3.01, best_score=2.0, margin=1.0) is True
    assert accept_candidate(candidate_score=-9.0, best_score=-math.inf, margin=1.0) is True


def test_ope_noise_rescores_fixed_policies_without_touching_training(trained, dataset):
    agent = trained[0] if isinstance(trained, tuple) else trained
    rng_state = agent.rng.bit_generator.state
    weights = {k: v.clone() for k, v in agent.policies.state_dict().items()}
    noise = agent.ope_noise(dataset, repeats=4)
    assert np.asarray(noise["scores"]).shape == (agent.config.ensemble_size, 4)
    assert math.isfinite(noise["sd"]) and noise["sd"] > 0  # fresh start states: the same policy scores differently
    assert noise == agent.ope_noise(dataset, repeats=4)  # its own seeded stream: repeatable
    assert agent.rng.bit_generator.state == rng_state
    assert all(torch.equal(v, agent.policies.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(ConfigError, match="repeats"):
        agent.ope_noise(dataset, repeats=1)


def test_acceptance_with_a_noise_margin_in_the_pipeline(dataset):
    with pytest.raises(ConfigError, match="ope_noise_repeats"):
        tiny_agent(ope_accept_margin=1.0)
    agent = tiny_agent(ope_noise_repeats=3, ope_accept_margin=1e6, critic_steps=100, dynamics_steps=100,
                       bc_steps=100, improve_steps=100)
    agent.fit(dataset, n_steps=agent.offline_total_steps)
    h = np.asarray(agent.ope_history)
    assert agent.ope_noise_sd > 0
    # the BC policies (first scores) are always accepted; nothing beats them by a million noise SDs
    assert h[:, 3].sum() == agent.config.ensemble_size and h[h[:, 3] == 1, 0].max() == h[0, 0]
    free = tiny_agent(critic_steps=100, dynamics_steps=100, bc_steps=100, improve_steps=100)
    free.fit(dataset, n_steps=free.offline_total_steps)
    assert np.asarray(free.ope_history)[:, 3].sum() > free.config.ensemble_size  # without the margin, more pass


def test_hand_off_policy_reference_hands_the_best_ope_reference(dataset):
    with pytest.raises(ConfigError, match="hand_off_policy"):
        tiny_agent(hand_off_policy="best")
    agent = tiny_agent(hand_off_policy="reference", critic_steps=100, dynamics_steps=100, bc_steps=100,
                       improve_steps=100)
    agent.fit(dataset, n_steps=agent.offline_total_steps)
    x = torch.randn(4, 2)
    for out, ref in zip(agent.actor(x), agent.ref_policies.member(agent.selected)(x), strict=True):
        torch.testing.assert_close(out, ref)
