"""GFlowNets (rlpt.gfn): balance identities, the exact evaluator, exact OC-GFN marginalisation, learning, I/O."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlpt
from rlpt.errors import CheckpointError, ConfigError
from rlpt.gfn import (
    OCGFN,
    BitSeq,
    GFlowNet,
    HyperGrid,
    OCGFNConfig,
    Terms,
    convert_exact,
    convert_exact_many,
    detailed_balance,
    exact_metrics,
    subtrajectory_balance,
    terminal_distribution,
    trajectory_balance,
)
from rlpt.gfn.gflownet import GFNAgentConfig, sample_trajectories

torch.set_num_threads(1)


def optimal_flow(env):
    """Hand-built GFlowNet for env's reward with uniform P_B: F(s) = R(s)[stop ok] + sum_children F(c) P_B(s|c)."""
    s = env.all_states
    n_par = env.backward_mask(s).sum(1).double()
    R = torch.zeros(len(s), dtype=torch.float64)
    R[env.terminal_index] = env.log_reward(env.terminals).double().exp()
    F = R.clone()
    trans = env.transitions
    for i in reversed(range(len(s))):
        ch = trans[i][trans[i] >= 0]
        F[i] = R[i] + (F[ch] / n_par[ch]).sum()
    pf = torch.zeros(len(s), env.n_actions, dtype=torch.float64)
    valid = trans >= 0
    pf[:, :-1][valid] = (F[trans[valid]] / n_par[trans[valid]]) / F[valid.nonzero()[:, 0]]
    pf[:, -1] = R / F
    return pf.log().float(), F.log().float(), n_par


def table_terms(env, traj, log_pf, log_f, n_par) -> Terms:
    """Terms of sampled trajectories read from tables (uniform P_B)."""
    B, T1, _ = traj.states.shape
    idx = env.state_index(traj.states.reshape(B * T1, -1)).reshape(B, T1)
    t = torch.arange(T1)[None]
    on = t <= traj.lengths[:, None]
    lpf = torch.where(on, log_pf[idx, traj.actions.clamp(min=0)], torch.zeros(()))
    edge = t[:, :-1] < traj.lengths[:, None]
    lpb = torch.cat([torch.where(edge, -n_par[idx[:, 1:]].log().float(), torch.zeros(())), torch.zeros(B, 1)], 1)
    lf = torch.cat([torch.where(on, log_f[idx], torch.zeros(())), torch.zeros(B, 1)], 1)
    lf = lf.scatter(1, (traj.lengths + 1)[:, None], env.log_reward(traj.terminals)[:, None])
    return Terms(lpf, lpb, lf, traj.lengths)


def brute_force_pt(env, log_pf) -> torch.Tensor:
    """P_T by enumerating every trajectory recursively."""
    pt = {}
    pf = log_pf.double().exp()

    def walk(s, p):
        i = int(env.state_index(s)[0])
        mask = env.forward_mask(s)[0]
        if mask[env.stop]:
            pt[i] = pt.get(i, 0.0) + p * float(pf[i, env.stop])
        for a in range(env.n_actions - 1):
            if mask[a]:
                walk(env.step(s, torch.tensor([a])), p * float(pf[i, a]))

    walk(env.initial_states(1), 1.0)
    return torch.tensor([pt.get(int(i), 0.0) for i in env.terminal_index], dtype=torch.float64)


@pytest.fixture(params=["hypergrid", "bitseq"])
def tiny(request):
    if request.param == "hypergrid":
        return HyperGrid(2, 4, reward={"name": "hypergrid", "R0": 0.1})
    return BitSeq(4, 2, reward={"name": "bitseq", "n_modes": 3, "beta": 3.0})


def reference_hypergrid_reward(x: torch.Tensor, side: int, R0: float, R1: float, R2: float) -> torch.Tensor:
    """torchgfn's "original" HyperGrid reward (gfn.gym.hypergrid.OriginalReward, EPS = 1e-12), written out here in
    float64: R0 + R1 * prod(0.25 + EPS < ax) + R2 * prod((0.3 + EPS < ax) & (ax < 0.4 - EPS)), ax = |x/(H-1) - 0.5|."""
    eps = 1e-12
    ax = (x.double() / (side - 1) - 0.5).abs()
    return R0 + (0.25 + eps < ax).all(-1).double() * R1 + ((0.3 + eps < ax) & (ax < 0.4 - eps)).all(-1).double() * R2


def test_hypergrid_reward_has_the_standard_modes_and_is_symmetric():
    env = HyperGrid(2, 16, reward={"name": "hypergrid", "R0": 0.1, "R1": 0.5, "R2": 2.0})
    x = env.terminals
    r = env.log_reward(x).double().exp()
    top = x[r > 2.0 + 0.5]
    assert sorted(map(tuple, top.tolist())) == [(2, 2), (2, 13), (13, 2), (13, 13)]  # not {2, 12, 13}^2
    assert (env.reward.mode_group(x) >= 0).sum() == 4
    assert sorted(env.reward.mode_group(top).tolist()) == [0, 1, 2, 3]  # one cell per orthant
    for dim, side in [(1, 16), (2, 16), (3, 8), (4, 8), (2, 11), (2, 21), (3, 31), (2, 64)]:
        env = HyperGrid(dim, side, reward={"name": "hypergrid", "R0": 0.1})
        x = env.terminals
        lr = env.log_reward(x)
        for axis in range(dim):  # x -> H-1-x on any one axis leaves R unchanged
            m = x.clone()
            m[:, axis] = side - 1 - m[:, axis]
            assert torch.equal(env.log_reward(m), lr), (dim, side, axis)
        per_axis = int(HyperGrid(1, side, reward={"name": "hypergrid"}).reward._ring(torch.arange(side)[:, None]).sum())
        assert int((env.reward.mode_group(x) >= 0).sum()) == per_axis**dim
        groups = env.reward.mode_group(x)
        if per_axis:  # 2^D mode groups (side 11: 8/10 - 0.5 is exactly 0.4, so no cell is in the band)
            assert sorted(groups[groups >= 0].unique().tolist()) == list(range(2**dim))
        if side in (8, 16):
            assert per_axis == 2  # exactly 2^D top cells on the standard sides


@pytest.mark.parametrize("dim,side", [(1, 16), (2, 8), (2, 11), (2, 16), (2, 21), (3, 7), (3, 16), (2, 31), (2, 40)])
@pytest.mark.parametrize("R0", [1e-3, 0.1])
def test_hypergrid_reward_matches_torchgfn_definition(dim, side, R0):
    env = HyperGrid(dim, side, reward={"name": "hypergrid", "R0": R0, "R1": 0.5, "R2": 2.0})
    x = env.terminals
    ref = reference_hypergrid_reward(x, side, R0, 0.5, 2.0)
    assert torch.allclose(env.log_reward(x).double(), ref.log(), atol=1e-6)
    assert torch.equal(env.reward.mode_group(x) >= 0, ref > R0 + 2.0 - 1e-9)


def test_optimal_flow_has_zero_balance_losses(tiny):
    env = tiny
    log_pf, log_f, n_par = optimal_flow(env)
    traj = sample_trajectories(env, lambda s: log_pf[env.state_index(s)], 64, torch.Generator().manual_seed(0))
    terms = table_terms(env, traj, log_pf, log_f, n_par)
    log_z = log_f[0]
    assert trajectory_balance(terms, log_z).max() < 1e-8
    assert detailed_balance(terms).max() < 1e-8
    assert subtrajectory_balance(terms, 0.9).max() < 1e-8
    assert exact_metrics(env, log_pf)["l1"] < 1e-5  # the optimal flow samples R/Z exactly
    # a wrong log Z, a perturbed flow, a perturbed policy: every loss turns positive
    assert trajectory_balance(terms, log_z + 0.5).min() > 0.2
    bad_f = log_f + 0.3 * torch.randn(len(log_f), generator=torch.Generator().manual_seed(1))
    assert detailed_balance(table_terms(env, traj, log_pf, bad_f, n_par)).mean() > 1e-3
    assert subtrajectory_balance(table_terms(env, traj, log_pf, bad_f, n_par)).mean() > 1e-3
    bad_pf = torch.log_softmax(log_pf + 0.5 * torch.randn(log_pf.shape, generator=torch.Generator().manual_seed(2))
                               .masked_fill(~env.forward_mask(env.all_states), -1e9), -1)
    bad = table_terms(env, traj, bad_pf, log_f, n_par)
    assert trajectory_balance(bad, log_z).mean() > 1e-3 and detailed_balance(bad).mean() > 1e-3


def test_exact_evaluator_matches_enumeration_and_sampling(tiny):
    env = tiny
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(env.n_states, env.n_actions, generator=g)
    log_pf = torch.log_softmax(logits.masked_fill(~env.forward_mask(env.all_states), float("-inf")), -1)
    pt = terminal_distribution(env, log_pf)
    assert torch.allclose(pt, brute_force_pt(env, log_pf), atol=1e-12)
    assert abs(float(pt.sum()) - 1) < 1e-6  # float32 policy
    traj = sample_trajectories(env, lambda s: logits[env.state_index(s)], 20000, g)
    pos = {int(i): k for k, i in enumerate(env.terminal_index)}
    counts = torch.bincount(torch.tensor([pos[int(i)] for i in env.state_index(traj.terminals)]),
                            minlength=len(pt)).double()
    assert float((counts / counts.sum() - pt).abs().sum()) < 0.06


def test_exact_marginalisation_matches_brute_force():
    env = HyperGrid(2, 3, reward={"name": "hypergrid", "R0": 0.1, "R2": 2.0})
    oc = OCGFN(env, OCGFNConfig(hidden=(32,), explorer_hidden=(32,)))  # untrained: imperfect conditionals
    ys = env.terminals
    w = env.true_distribution()
    cond_pf, _ = oc.conditional_tables(ys)
    mixture = sum(w[i] * brute_force_pt(env, cond_pf[i]) for i in range(len(ys)))
    converted = convert_exact(oc, env)
    assert torch.allclose(brute_force_pt(env, converted), mixture, atol=1e-6)
    other = env.with_reward({"name": "sparse", "k": 2, "seed": 3})  # one sweep over outcomes serves both rewards
    both = convert_exact_many(oc, [env, other], chunk=4)
    assert torch.allclose(both[0], converted, atol=1e-6)
    assert torch.allclose(both[1], convert_exact(oc, other), atol=1e-6)
    # with perfect conditional policies (hand-built flows for R(x|y) = 1[x = y]) the conversion samples R/Z
    perfect = []
    for i in range(len(ys)):
        rew = {"name": "sparse", "k": 1, "seed": 0, "high": 1.0, "low": 1e-30}
        e = env.with_reward(rew)
        e.reward.index = env.terminal_index[i:i + 1]  # make target y_i
        perfect.append(optimal_flow(e)[0])
    oc.conditional_tables = lambda y, **kw: (torch.stack(perfect)[env.state_index(y)], None)
    assert exact_metrics(env, convert_exact(oc, env))["l1"] < 1e-6


def test_outcome_mask_is_reachability(tiny):
    """A terminal y passes every component of outcome_mask(s) iff the DAG has a path s -> y; the edge mask of
    (s, a) is the reachability of the child (and y = s for stop)."""
    from rlpt.gfn.ocgfn import edge_outcome_mask

    env, s, ys = tiny, tiny.all_states, tiny.terminals
    reach = torch.eye(len(s), dtype=torch.bool)
    for i in reversed(range(len(s))):  # children come later in the topological order
        for c in env.transitions[i][env.transitions[i] >= 0]:
            reach[i] |= reach[c]
    want = reach[:, env.terminal_index]  # (n_states, n_terminals)
    mask = env.outcome_mask(s)  # (n_states, k, c)
    got = mask[:, torch.arange(env.state_len)[None, :], ys].all(-1)  # (n_states, n_terminals)
    assert torch.equal(got, want)
    rows, acts = torch.nonzero(env.forward_mask(s), as_tuple=True)
    edge = edge_outcome_mask(env, s[rows], acts)[:, torch.arange(env.state_len)[None, :], ys].all(-1)
    child = torch.where(acts == env.stop, rows, env.transitions[rows, acts.clamp(max=env.n_actions - 2)])
    expect = torch.where((acts == env.stop)[:, None], env.state_index(ys)[None] == rows[:, None],
                         want[child])
    assert torch.equal(edge, expect)


def test_parents_list_every_edge_once(tiny):
    env, s = tiny, tiny.all_states
    rows, par, a = env.parents(s)
    assert torch.equal(env.step(par, a), s[rows])  # undoing then redoing the action gives the state back
    edges = {(int(i), int(j)) for i, j in zip(env.state_index(par), rows, strict=True)}
    want = {(i, int(c)) for i in range(len(s)) for c in env.transitions[i] if c >= 0}
    assert edges == want and len(rows) == len(want)


def test_visit_probability_over_ancestors_matches_the_full_dp(tiny):
    """log_visit_exact (DP over the ancestors of s only, the amortized adapter's F(s|y)) equals the visit
    probability from the DP over the whole DAG, at every (state, outcome) pair, for an imperfect P_F."""
    from rlpt.gfn.evaluate import visit_probabilities

    env = tiny.with_reward({"name": "none"})
    oc = OCGFN(env, OCGFNConfig(hidden=(32,), explorer_hidden=(32,), seed=3))  # untrained: P_F far from exact
    ys, states = env.terminals, env.all_states
    want = visit_probabilities(env, oc.conditional_tables(ys, flows=False)[0]).log().float()  # (n_y, n_states)
    got = oc.log_visit_exact(states.repeat(len(ys), 1), ys.repeat_interleave(len(states), 0))
    assert torch.allclose(got.reshape(len(ys), -1), want, atol=1e-5)


def test_amortized_adapter_learns_a_new_reward_from_a_frozen_ocgfn():
    from rlpt.gfn import AmortizedTrainer
    from rlpt.gfn.evaluate import masked_log_softmax
    from rlpt.gfn.gflownet import uniform_log_pf

    base = HyperGrid(2, 4)
    oc = OCGFN(base, OCGFNConfig(hidden=(64, 64), explorer_hidden=(64, 64), seed=0))
    for _ in range(300):
        oc.train_step()
    env = base.with_reward({"name": "sparse", "k": 3, "low": 0.05, "high": 1.0, "seed": 1})
    frozen = {k: v.clone() for k, v in oc.model.state_dict().items()}
    am = AmortizedTrainer(oc, env, hidden=(64, 64), seed=0)
    s = env.all_states
    for _ in range(300):
        assert math.isfinite(am.train_step()["loss"])
    l1 = exact_metrics(env, masked_log_softmax(am.logits(s), env.forward_mask(s)))["l1"]
    uniform = exact_metrics(env, uniform_log_pf(env))["l1"]
    assert l1 < 0.5 * uniform, (l1, uniform)
    assert all(torch.equal(v, oc.model.state_dict()[k]) for k, v in frozen.items())  # the OC-GFN stays frozen


def test_tb_learns_a_tiny_grid():
    env = HyperGrid(2, 4, reward={"name": "sparse", "k": 3, "low": 0.1, "high": 1.0})  # side 4 has no R2 ring
    gfn = GFlowNet(env, "tb", backward="learned", hidden=(64, 64), seed=0)
    start = exact_metrics(env, gfn.log_pf_table())["l1"]
    for _ in range(300):
        gfn.train_step()
    end = exact_metrics(env, gfn.log_pf_table())
    assert start > 0.3 and end["l1"] < 0.15, (start, end)
    assert end["n_modes"] == 3 and end["modes_covered"] == 3
    assert abs(gfn.model.log_z.item() - math.log(float(env.log_reward(env.terminals).exp().sum()))) < 0.2


@pytest.mark.parametrize("loss", ["db", "subtb"])
def test_db_and_subtb_train_step_reduce_l1(loss):
    env = HyperGrid(2, 3, reward={"name": "hypergrid", "R0": 0.1})
    gfn = GFlowNet(env, loss, hidden=(32, 32), seed=0, batch_size=16)
    start = exact_metrics(env, gfn.log_pf_table())["l1"]
    for _ in range(80):
        assert math.isfinite(gfn.train_step()["loss"])
    assert exact_metrics(env, gfn.log_pf_table())["l1"] < start


def test_gym_env_pays_reward_at_stop_and_flags_invalid_actions():
    import rlpt.gfn  # noqa: F401  (registers the ids)

    env = gym.make("rlpt/HyperGrid-v0", dim=2, side=4, reward={"name": "hypergrid", "R0": 0.1})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,) and env.action_space.n == 3
    obs, r, term, _, _ = env.step(0)
    assert r == 0 and not term
    obs, r, term, _, info = env.step(2)  # stop at (1, 0)
    assert term and r == pytest.approx(0.1) and info["terminal"] == [1, 0]
    env.reset()
    for _ in range(3):
        env.step(1)
    assert not env.unwrapped.action_masks()[1]
    _, r, term, _, info = env.step(1)  # past the edge
    assert term and r == 0 and info["invalid_action"]


def test_agent_save_load_round_trip_and_pretrain_cli(tmp_path):
    from rlpt.cli import main

    env = gym.make("rlpt/HyperGrid-v0", dim=2, side=3, reward={"name": "hypergrid", "R0": 0.1})
    agent = GFNAgentConfig(hidden=(32,), log_interval=5).create(env.observation_space, env.action_space)
    m = agent.learn(env, 10)
    assert "exact/l1" in m and agent.online_steps == 10
    agent.save(tmp_path / "ckpt")
    loaded = rlpt.load(tmp_path / "ckpt")
    assert torch.equal(loaded.log_pf_table(), agent.log_pf_table())
    assert loaded.online_steps == 10 and env.action_space.contains(int(loaded.predict(env.reset()[0])[0]))

    out = tmp_path / "oc"
    assert main(["--quiet", "pretrain", "gfn", "--side", "3", "--steps", "6", "--eval-every", "3", "--out",
                 str(out)]) == 0
    oc = OCGFN.load(out)
    ys = oc.env.terminals[:3]
    fresh_pf, fresh_f = oc.conditional_tables(ys)
    again_pf, again_f = OCGFN.load(out).conditional_tables(ys)
    assert torch.equal(fresh_pf, again_pf) and torch.equal(fresh_f, again_f)
    assert 0 <= oc.success_rate() <= 1

    exact = GFNAgentConfig(mode="exact", pretrained=str(out)).create(env.observation_space, env.action_space)
    m = exact.learn(env, 1)
    assert m["exact/l1"] < 2
    exact.save(tmp_path / "exact")
    assert torch.equal(rlpt.load(tmp_path / "exact").log_pf_table(), exact.log_pf_table())


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="dim >= 1"):
        HyperGrid(0, 4)
    with pytest.raises(ConfigError, match="unknown GFlowNet reward"):
        HyperGrid(2, 4, reward={"name": "nope"})
    with pytest.raises(ConfigError, match="length % word"):
        BitSeq(5, 2)
    with pytest.raises(ConfigError, match="needs `pretrained`"):
        GFNAgentConfig(mode="exact")
    with pytest.raises(ConfigError, match="failure must be"):
        OCGFNConfig(failure="ignore")
    with pytest.raises(ConfigError, match="unknown GFlowNet loss"):
        GFlowNet(HyperGrid(2, 3), loss="fm")
    with pytest.raises(ConfigError, match="Discrete action space"):
        GFNAgentConfig().create(gym.spaces.Box(0, 1, (4,)), gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(CheckpointError, match="not an OC-GFN checkpoint"):
        OCGFN.load(tmp_path)
    oc = OCGFN(HyperGrid(2, 3), OCGFNConfig(hidden=(16,), explorer_hidden=(16,)))
    with pytest.raises(ConfigError, match="pretrained on"):
        convert_exact(oc, HyperGrid(2, 4))
    from rlpt.gfn import AmortizedTrainer

    with pytest.raises(ConfigError, match="flows must be"):
        AmortizedTrainer(oc, oc.env, flows="visit")
    with pytest.raises(ValueError, match="log_pf must end with shape"):
        terminal_distribution(HyperGrid(2, 3), torch.zeros(5, 3))
    assert np.isfinite(exact_metrics(HyperGrid(2, 3), oc.conditional_tables(oc.env.terminals[:1])[0][0])["l1"])
